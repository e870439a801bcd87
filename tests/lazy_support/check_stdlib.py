# Run by an interpreter relinked with `--freeze stdlib` (and by the stock
# one, for reference) for tests/lazy.rs.
#
#   check_stdlib.py code            every frozen module's code object equals
#                                   compile() of its source: "code NAME ok",
#                                   "code NAME FAIL: why" or "code NAME nosource"
#   check_stdlib.py import NAME...  imports each module in turn (one process)
#                                   and prints "import NAME\tOUTCOME" where
#                                   OUTCOME is "frozen", "source" (where it was
#                                   loaded from) or the exception it raised
#   check_stdlib.py resources DIR   package data through importlib.resources:
#                                   ensurepip's bundled wheels (what `python
#                                   -m ensurepip` and `-m venv` read), and
#                                   files() without an anchor called from a
#                                   package written to DIR; one
#                                   "resources WHAT\tRESULT" line each
import importlib
import importlib.machinery
import os
import sys
import warnings

import _imp

warnings.simplefilter("ignore")


def source_of(name):
    parent, _, _ = name.rpartition(".")
    try:
        path = importlib.import_module(parent).__path__ if parent else None
    except Exception:
        return None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return spec.origin


def code_check():
    names = sorted(_imp._frozen_module_names())
    for name in names:
        try:
            got = _imp.get_frozen_object(name)
            src_path = source_of(name)
            if src_path is None:
                print("code %s nosource" % name)
                continue
            with open(src_path, "rb") as f:
                src = f.read()
            want = compile(src, "<frozen %s>" % name, "exec")
            if got == want:
                print("code %s ok" % name)
            else:
                print("code %s FAIL: differs from compile() of %s" % (name, src_path))
        except BaseException as e:
            print("code %s FAIL: %s: %s" % (name, type(e).__name__, e))
    print("checked %d" % len(names))


def import_check(names):
    for name in names:
        try:
            mod = importlib.import_module(name)
            origin = getattr(mod.__spec__, "origin", None)
            outcome = "frozen" if origin == "frozen" else "source"
        except BaseException as e:
            msg = str(e).splitlines()[0] if str(e) else ""
            # addresses and paths differ between runs: keep the type and
            # a stable prefix of the message
            outcome = "%s: %s" % (type(e).__name__, msg[:60])
        print("import %s\t%s" % (name, outcome))
        sys.stdout.flush()
    print("checked %d" % len(names))


def outcome(fn):
    try:
        return repr(fn())
    except BaseException as e:
        return "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")


def resources_check(tmp):
    import importlib.resources as res

    bundled = lambda: res.files("ensurepip") / "_bundled"
    print("resources ensurepip._bundled is_dir\t%s" % outcome(lambda: bundled().is_dir()))
    print("resources ensurepip._bundled wheels\t%s" % outcome(
        lambda: sorted(p.name for p in bundled().iterdir())))
    print("resources ensurepip wheel bytes\t%s" % outcome(lambda: sum(
        len(p.read_bytes()) > 0 for p in bundled().iterdir() if p.name.endswith(".whl"))))
    print("resources email is package dir\t%s" % outcome(
        lambda: res.files("email").joinpath("architecture.rst").is_file()))
    pkg = os.path.join(tmp, "lazy_respkg")
    os.makedirs(pkg, exist_ok=True)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write("import importlib.resources as res\n"
                "def read():\n"
                "    return res.files().joinpath('data.txt').read_text(encoding='utf-8')\n")
    with open(os.path.join(pkg, "data.txt"), "w") as f:
        f.write("package data")
    sys.path.insert(0, tmp)
    import lazy_respkg
    print("resources files() without anchor\t%s" % outcome(lazy_respkg.read))
    print("checked 5")


if sys.argv[1] == "code":
    code_check()
elif sys.argv[1] == "resources":
    resources_check(sys.argv[2])
else:
    import_check(sys.argv[2:])
sys.stdout.flush()
