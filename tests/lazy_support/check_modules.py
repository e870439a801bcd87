# Run by a relinked (or stock) interpreter for tests/lazy.rs.
#
#   check_modules.py frozen NAME...   every NAME is frozen and looks like a
#                                     stock frozen module (origin 'frozen',
#                                     __file__, __path__, getsource, code
#                                     equal to compile() of its source)
#   check_modules.py source NAME...   under -X frozen_modules=off: every NAME
#                                     is imported from its source file
#   check_modules.py traceback        the frames of two tracebacks through
#                                     library code (json, posixpath)
#   check_modules.py names            the interpreter's frozen module names
#
# Prints "ok NAME" or "FAIL NAME: why" per module, then "checked N"; the Rust
# side collects the FAIL lines (this script does not stop at the first).
import importlib
import importlib.machinery
import inspect
import linecache
import os
import sys
import traceback
import warnings

import _imp

warnings.simplefilter("ignore")


def source_path(name):
    """The stdlib source file of module `name` (found on the path, as an
    unfrozen interpreter would), and whether it is a package."""
    parent, _, _ = name.rpartition(".")
    path = importlib.import_module(parent).__path__ if parent else None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    assert spec is not None and spec.origin.endswith(".py"), (name, spec)
    return spec.origin, spec.submodule_search_locations is not None


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def check_frozen(name):
    # "+NAME": a module we added from the interpreter's own stdlib, whose
    # code names its real file (stock frozen modules keep "<frozen NAME>").
    added = name.startswith("+")
    name = name.lstrip("+")
    assert _imp.is_frozen(name), "not in the frozen tables"
    mod = importlib.import_module(name)
    spec = mod.__spec__
    assert spec.origin == "frozen", "origin %r" % spec.origin
    assert spec.loader is importlib.machinery.FrozenImporter, spec.loader
    assert mod.__loader__ is importlib.machinery.FrozenImporter, mod.__loader__
    path, is_pkg = source_path(name)
    assert getattr(mod, "__file__", None) == path, "__file__ %r, want %r" % (
        getattr(mod, "__file__", None), path)
    assert spec.loader_state.filename == path, spec.loader_state
    if is_pkg:
        want = [os.path.dirname(path)]
        assert mod.__path__ == want, "__path__ %r, want %r" % (mod.__path__, want)
        assert spec.submodule_search_locations == want, spec.submodule_search_locations
    else:
        assert not hasattr(mod, "__path__"), "module has __path__ %r" % mod.__path__
    src = read(path)
    if src:
        assert inspect.getsource(mod) == src, "inspect.getsource differs from the file"
    else:
        # an empty file (urllib/__init__.py): inspect finds no source, as
        # for the module imported from it
        try:
            inspect.getsource(mod)
        except OSError:
            pass
        else:
            raise AssertionError("inspect.getsource found source in an empty file")
    assert inspect.getsourcefile(mod) == path, inspect.getsourcefile(mod)
    code = _imp.get_frozen_object(name)
    filename = path if added else "<frozen %s>" % name
    assert code == compile(src, filename, "exec"), "code differs from compile()"
    assert code.co_filename == filename, code.co_filename
    assert _imp.is_frozen_package(name) == is_pkg, "is_frozen_package"


def check_source(name):
    assert not _imp.is_frozen(name), "frozen although frozen_modules=off"
    mod = importlib.import_module(name)
    path, is_pkg = source_path(name)
    spec = mod.__spec__
    assert spec.origin == path, "origin %r, want %r" % (spec.origin, path)
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader), spec.loader
    assert mod.__file__ == path, mod.__file__
    if is_pkg:
        assert mod.__path__ == [os.path.dirname(path)], mod.__path__
    if read(path):
        assert inspect.getsource(mod) == read(path)
    funcs = [v for v in vars(mod).values()
             if inspect.isfunction(v) and v.__module__ == name]
    for f in funcs[:3]:
        assert f.__code__.co_filename == path, f.__code__.co_filename


def frames(fn):
    try:
        fn()
    except Exception:
        tb = sys.exc_info()[2]
    else:
        raise AssertionError("no exception")
    out = []
    for fs in traceback.extract_tb(tb)[1:]:
        f = fs.filename
        if f.startswith("<frozen ") and f.endswith(">"):
            mod = sys.modules[f[len("<frozen "):-1]]
            src_line = linecache.getline(mod.__file__, fs.lineno).strip()
            where = "frozen:" + mod.__name__
        else:
            src_line = fs.line
            where = "file:" + os.path.relpath(f, os.path.dirname(os.__file__))
        print("frame\t%s\t%d\t%s\t%s\t%s" % (where, fs.lineno, fs.name, fs.line or "", src_line))


def main():
    mode, names = sys.argv[1], sys.argv[2:]
    if mode == "names":
        for n in sorted(_imp._frozen_module_names()):
            print(n)
        return
    if mode == "traceback":
        import json, posixpath
        print("traceback json.loads")
        frames(lambda: json.loads("{"))
        print("traceback posixpath.join")
        frames(lambda: posixpath.join(1))
        return
    check = {"frozen": check_frozen, "source": check_source}[mode]
    for name in names:
        try:
            check(name)
        except BaseException as e:
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
        else:
            print("ok %s" % name)
    print("checked %d" % len(names))


main()
sys.stdout.flush()
