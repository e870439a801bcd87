"""The command line: `hello-app hello --name NAME`."""

import sys

import click
from rich.console import Console
from rich.table import Table

from . import greeting


@click.group()
def main():
    """Greets, in a table."""


@main.command()
@click.option("--name", default="world", help="Whom to greet.")
def hello(name):
    """Print the greeting and where the modules came from."""
    table = Table("module", "origin", title="%s, %s!" % (greeting(), name))
    for mod in ("hello_app", "hello_app.cli", "click", "rich.table", "json"):
        __import__(mod)
        table.add_row(mod, sys.modules[mod].__spec__.origin)
    Console(width=60, color_system=None).print(table)
