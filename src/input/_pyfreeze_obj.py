"""Real files for the modules pyfreeze-obj froze from outside the standard
library (site-packages, an application's folder).

The frozen importer derives a module's __file__ and a package's __path__
from sys._stdlib_dir and the module's name: right for the standard
library, wrong for these. Each of them calls fix() first thing (a prologue
pyfreeze-obj compiles in, after the docstring and __future__ imports), which
gives the module what importing it from its file would: __file__, __path__
(so submodules that are not frozen, and data files, are found where they
are), the spec's loader_state.filename, and a loader that reads the files
beside it (pkgutil.get_data, importlib.resources). The spec's origin stays
"frozen": the code is the frozen one. With -X frozen_modules=off neither
this module nor the others are used; they are imported from their files.
"""

import os
from _frozen_importlib import FrozenImporter


class FrozenFileLoader(FrozenImporter):
    """The frozen importer, for a frozen module whose source file is known:
    also the loader of the data files beside it."""

    def __init__(self, name, path):
        self.name = name
        self.path = path

    def get_filename(self, name=None):
        return self.path

    def get_data(self, path):
        with open(path, "rb") as f:
            return f.read()

    def get_resource_reader(self, name):
        from importlib.resources.readers import FileReader

        return FileReader(self)


def fix(g, file):
    """Give the module whose globals are `g` its source file `file`."""
    g["__file__"] = file
    spec = g.get("__spec__")
    if spec is None or spec.loader is not FrozenImporter:
        # executed some other way than by the frozen importer
        return
    state = getattr(spec, "loader_state", None)
    if state is not None:
        state.filename = file
    locations = spec.submodule_search_locations
    if locations is not None:
        # the very list that is the package's __path__
        locations[:] = [os.path.dirname(file)]
        if g.get("__path__") is not locations:
            g["__path__"] = locations
    spec.loader = g["__loader__"] = FrozenFileLoader(spec.name, file)
