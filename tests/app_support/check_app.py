# Run by interpreters relinked with an application's packages frozen
# (tests/app.rs), or by the stock link in the application's venv.
#
#   check_app.py frozen SITE     click and rich (imported with rich.console and
#                                rich.table) are frozen and keep their files
#                                under SITE: __file__, __path__, loader
#                                state, inspect.getsource, co_filename,
#                                tracebacks with source lines, package data;
#                                SITE is not on sys.path
#   check_app.py source SITE     under -X frozen_modules=off: they are
#                                imported from their files under SITE
#   check_app.py render          a rich table, rendered without colours
#
# Prints "ok WHAT" or "FAIL WHAT: why" per check, then "checked N"; the Rust
# side collects the FAIL lines (this script does not stop at the first).
import importlib
import importlib.machinery
import importlib.resources
import inspect
import io
import os
import pkgutil
import sys
import traceback

import _imp

checks = []


def check(what):
    def register(fn):
        checks.append((what, fn))
        return fn
    return register


def module_file(site, name, is_pkg):
    base = os.path.join(site, *name.split("."))
    return os.path.join(base, "__init__.py") if is_pkg else base + ".py"


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def image_ranges():
    """Address ranges mapped from the executable file itself."""
    exe = os.path.realpath(sys.executable)
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and os.path.realpath(parts[5]) == exe:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi))
    assert out, "no mapping of %s" % exe
    return out


IMAGE = []


def static(o):
    if not IMAGE:
        IMAGE.extend(image_ranges())
    return any(lo <= id(o) < hi for lo, hi in IMAGE)


def immortal(o):
    # 3.12+: the immortal refcount (_Py_IMMORTAL_REFCNT, 2**32 - 1 on 64-bit
    # builds), which increments and decrements leave alone. 3.11 has no
    # immortal objects (its deep-frozen ones are static, with a large
    # refcount): nothing to check there.
    if sys.version_info < (3, 12):
        return True
    if hasattr(sys, "_is_immortal"):
        return sys._is_immortal(o)
    return sys.getrefcount(o) >= 2**32 - 1


def walk(code):
    yield code
    for c in code.co_consts:
        if isinstance(c, type(code)):
            yield from walk(c)


def app_modules():
    return sorted(n for n in sys.modules if n.split(".")[0] in ("click", "rich"))


def frozen_checks(site):
    import click
    import rich.console
    import rich.table

    names = app_modules()

    @check("site-packages is not on sys.path")
    def _():
        assert not any(os.path.realpath(p) == os.path.realpath(site) for p in sys.path), sys.path

    @check("%d click/rich modules imported" % len(names))
    def _():
        for must in ("click", "click.types", "click.core", "rich", "rich.console", "rich.table"):
            assert must in names, must

    for name in names:
        @check("frozen, with its file: " + name)
        def _(name=name):
            mod = sys.modules[name]
            spec = mod.__spec__
            assert _imp.is_frozen(name), "not in the frozen tables"
            assert spec.origin == "frozen", spec.origin
            assert isinstance(spec.loader, importlib.machinery.FrozenImporter), spec.loader
            assert mod.__loader__ is spec.loader, (mod.__loader__, spec.loader)
            is_pkg = hasattr(mod, "__path__")
            assert _imp.is_frozen_package(name) == is_pkg, "is_frozen_package"
            path = module_file(site, name, is_pkg)
            assert mod.__file__ == path, "__file__ %r, want %r" % (mod.__file__, path)
            assert spec.loader_state.filename == path, spec.loader_state
            if is_pkg:
                want = [os.path.dirname(path)]
                assert mod.__path__ == want, "__path__ %r, want %r" % (mod.__path__, want)
                assert spec.submodule_search_locations == want, spec.submodule_search_locations
            src = read(path)
            assert inspect.getsource(mod) == src, "inspect.getsource differs from the file"
            assert inspect.getsourcefile(mod) == path, inspect.getsourcefile(mod)
            code = _imp.get_frozen_object(name)
            assert code.co_filename == path, code.co_filename
            # through the frozen loader (3.13+: the wrapped unmarshalling
            # of the table's bytes): one static code object, the one the
            # module ran (its functions' code objects are inside it)
            assert _imp.get_frozen_object(name) is code, "two loads gave two code objects"
            assert static(code), "its code object is not in the executable's image"
            assert immortal(code), "its code object is mortal"
            inner = {id(c) for c in walk(code)}
            funcs = [v for v in vars(mod).values()
                     if inspect.isfunction(v) and v.__module__ == name]
            for f in funcs:
                if f.__code__.co_filename == path:
                    assert id(f.__code__) in inner, "%s: its code is not the frozen module's" % (
                        f.__qualname__)
            for f in funcs[:3]:
                assert f.__code__.co_filename == path, f.__code__.co_filename
                assert inspect.getsource(f) in src, "getsource of %s" % f.__qualname__

    @check("a stdlib module they import is frozen, its code naming its stdlib file")
    def _():
        import inspect as m
        assert m.__spec__.origin == "frozen", m.__spec__
        path = os.path.join(os.path.dirname(os.__file__), "inspect.py")
        assert m.__file__ == path, m.__file__
        # added from the interpreter's own stdlib: the real file, so
        # tracebacks show its lines (stock frozen modules keep <frozen NAME>)
        assert _imp.get_frozen_object("inspect").co_filename == path
        assert _imp.get_frozen_object("posixpath").co_filename == "<frozen posixpath>"

    @check("traceback through click.Choice.convert shows click/types.py and its lines")
    def _():
        try:
            click.Choice(["a"]).convert("b", None, None)
        except click.BadParameter:
            tb = traceback.extract_tb(sys.exc_info()[2])
        else:
            raise AssertionError("no exception")
        types_py = module_file(site, "click.types", False)
        lines = read(types_py).splitlines()
        frames = [f for f in tb if f.filename == types_py]
        assert len(frames) >= 2, [(f.filename, f.lineno) for f in tb]
        for f in frames:
            assert f.line and f.line == lines[f.lineno - 1].strip(), (f.lineno, f.line)
        text = "".join(traceback.format_list(tb))
        assert 'click/types.py", line' in text and "self.fail(" in text, text

    @check("package data: importlib.resources and pkgutil.get_data")
    def _():
        for pkg in ("click", "rich"):
            typed = os.path.join(site, pkg, "py.typed")
            assert os.path.isfile(typed), typed
            root = importlib.resources.files(pkg)
            assert str(root) == os.path.join(site, pkg), root
            assert root.joinpath("py.typed").is_file()
            assert root.joinpath("py.typed").read_bytes() == open(typed, "rb").read()
            assert pkgutil.get_data(pkg, "py.typed") == open(typed, "rb").read()
            names = {p.name for p in root.iterdir()}
            assert "__init__.py" in names, names

    @check("relative imports inside the packages")
    def _():
        from click import types
        from rich import box
        assert types is sys.modules["click.types"] and box is sys.modules["rich.box"]


def source_checks(site):
    import click
    import rich.console
    import rich.table

    for name in ("click", "click.types", "rich", "rich.console", "rich.table"):
        @check("from its file: " + name)
        def _(name=name):
            mod = sys.modules[name]
            assert not _imp.is_frozen(name), "frozen although frozen_modules=off"
            is_pkg = hasattr(mod, "__path__")
            path = module_file(site, name, is_pkg)
            assert mod.__spec__.origin == path, mod.__spec__.origin
            assert isinstance(mod.__spec__.loader, importlib.machinery.SourceFileLoader)
            assert mod.__file__ == path, mod.__file__


def render():
    from rich.console import Console
    from rich.table import Table
    table = Table("package", "module", title="frozen")
    table.add_row("click", "click.types")
    table.add_row("rich", "rich.table")
    out = io.StringIO()
    Console(file=out, width=40, color_system=None, force_terminal=False).print(table)
    sys.stdout.write(out.getvalue())


def main():
    mode = sys.argv[1]
    if mode == "render":
        render()
        return
    {"frozen": frozen_checks, "source": source_checks}[mode](sys.argv[2])
    for what, fn in checks:
        try:
            fn()
        except BaseException as e:
            print("FAIL %s: %s: %s" % (what, type(e).__name__, e))
        else:
            print("ok %s" % what)
    print("checked %d" % len(checks))


main()
sys.stdout.flush()
