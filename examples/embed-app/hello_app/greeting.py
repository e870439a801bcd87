"""The greeting, read from the package's data file."""

import importlib.resources
import pkgutil


def greeting():
    text = importlib.resources.files(__package__).joinpath("greeting.txt").read_text()
    # the same file through the older API
    assert pkgutil.get_data(__package__, "greeting.txt").decode() == text
    return text.strip()
