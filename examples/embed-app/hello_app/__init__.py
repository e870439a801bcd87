"""A small command-line application for the embedding example: click for
its command line, rich for its output, a data file read through
importlib.resources."""

from .greeting import greeting

__all__ = ["greeting"]
