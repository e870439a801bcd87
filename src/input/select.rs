//! Module selection beyond a fixed list, resolved by the `--compile-with`
//! interpreter on its own full path: its standard library, its venv's
//! site-packages (or the installation's), the folders `.pth` files add,
//! `PYTHONPATH`, and the `--path` folders (first). The working directory is
//! not searched (the output would depend on it).
//!
//! - `--freeze NAME`: a module or package; a package from outside the
//!   standard library (a site-packages or application package) with all its
//!   submodules, as `NAME.*`, and the stdlib modules that they import (their
//!   module-level `import` statements, followed through the stdlib);
//! - `--freeze NAME.*`: a package and all its submodules, recursively;
//! - `--freeze stdlib`: every pure-Python module of the standard library
//!   (test packages excluded);
//! - `--trace CODE`: every pure-Python module that running CODE imports.
//!
//! Only modules with Python source are selected; what is not (extension and
//! built-in modules, namespace packages, the traced program's `__main__`,
//! modules a `.pth` file imported at start-up) is reported with the reason.
//! Each selected module says where it was found: in the standard library
//! (frozen as CPython freezes its own modules) or elsewhere on the path (an
//! application module: its code keeps its file name). The result is sorted
//! by name, so the output does not depend on import order or file-system
//! order.

use crate::error::{Error, Result};
use crate::layout::Layout;
use std::path::{Path, PathBuf};

/// Where a selected module was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// In the interpreter's standard library folder, at the place its name
    /// gives (`json/decoder.py`).
    Stdlib,
    /// Elsewhere on the path: site-packages, a `.pth` folder, `PYTHONPATH`,
    /// `--path`.
    App,
}

/// A selected module: its name, source file, whether it is a package and
/// where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub name: String,
    pub source: PathBuf,
    pub is_package: bool,
    pub location: Location,
}

/// What the selection chose, and what it passed over with the reason.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub chosen: Vec<Selected>,
    /// (module, why it is not frozen), sorted by module.
    pub skipped: Vec<(String, String)>,
}

// Arguments: X.Y, then `N:NAME` (never selected but by name), `P:DIR` (a
// --path folder), `F:SPEC` (a --freeze item) or `T:CODE` (a --trace
// snippet). Runs with -S: the `stdlib` items are resolved on the standard
// library alone (a .pth file's meta-path hook, such as setuptools' distutils
// shim, must not swap stdlib modules); site.main() then adds the site
// folders for everything else. Prints "+\tNAME\tIS_PACKAGE\tWHERE\tPATH" per
// module chosen and "-\tNAME\tREASON" per module passed over.
const SCRIPT: &str = r#"
import sys, os, ast, importlib, importlib.util, importlib.machinery, pkgutil, subprocess
want = sys.argv[1]
have = "%d.%d" % sys.version_info[:2]
if have != want:
    sys.stderr.write("interpreter is Python %s, not %s\n" % (have, want))
    sys.exit(3)
# Not the working directory (-c put it first): the output must not depend on it.
if sys.path and sys.path[0] == "":
    del sys.path[0]
STDLIB = os.path.dirname(os.__file__)
EXT = tuple(importlib.machinery.EXTENSION_SUFFIXES)
found = {}
skipped = {}
never = {}
paths = []

def where(name, origin, is_pkg):
    # stdlib: the file the standard library folder has for that name (a
    # site-packages folder inside it is not the standard library)
    rel = os.path.join(*name.split(".")) + (os.sep + "__init__.py" if is_pkg else ".py")
    return "stdlib" if origin == os.path.join(STDLIB, rel) else "app"

def why_not(spec, name):
    # why a module with this spec has no source to freeze (None: it has)
    if spec is None:
        return "no module of that name on the interpreter's path (site-packages, .pth folders, PYTHONPATH and --path included)"
    origin = spec.origin
    if origin is None and spec.submodule_search_locations is not None:
        return "a namespace package (no __init__.py; portions in %s): nothing to freeze but its submodules" % ", ".join(spec.submodule_search_locations)
    if origin == "built-in":
        return "a built-in module (compiled into the interpreter)"
    if origin and origin.endswith(EXT):
        return "an extension module (%s): only pure-Python modules can be frozen" % origin
    if origin and origin.endswith(".pyc"):
        return "bytecode only (%s): no source to compile" % origin
    if not spec.has_location or not origin or not origin.endswith(".py"):
        return "no Python source (origin %r)" % (origin,)
    return None

def lookup(name):
    # ((path, is_package), None) or (None, why not)
    try:
        spec = importlib.util.find_spec(name)
    except Exception as e:
        return None, "cannot be looked up (%s: %s)" % (type(e).__name__, e)
    if spec is not None and spec.origin == "frozen":
        # Frozen stdlib modules: their source still sits in the stdlib.
        parent, _, last = name.rpartition(".")
        try:
            path = importlib.import_module(parent).__path__ if parent else None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
        except Exception:
            return None, "frozen, and its source cannot be found"
        if spec is None:
            return None, "frozen, and its source cannot be found"
    why = why_not(spec, name)
    if why:
        return None, why
    return (spec.origin, spec.submodule_search_locations is not None), None

def has_data(pkg_init):
    # Files other than Python sources beside a package's modules: read
    # through importlib.resources, which the frozen importer cannot serve.
    top = os.path.dirname(pkg_init)
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        if any(not f.endswith((".py", ".pyc")) for f in filenames):
            return True
    return False

def skip(name, why):
    if name not in found:
        skipped.setdefault(name, why)

def choose(name, path, is_pkg):
    found[name] = (path, is_pkg, where(name, path, is_pkg))
    skipped.pop(name, None)

def add(name, strict):
    if name in never and not strict:
        skip(name, never[name])
        return
    r, why = lookup(name)
    if r is None:
        if strict:
            sys.stderr.write("--freeze %s: %s\n" % (name, why))
            sys.exit(4)
        skip(name, why)
        return
    if r[1] and not strict and where(name, *r) == "stdlib" and has_data(r[0]):
        skip(name, "a stdlib package with data files, which a stock frozen package cannot serve: name it to freeze it")
        return
    choose(name, *r)

TESTS = ("test", "tests", "idle_test")
def walk(pkg, skip_tests, named=True):
    # named: the package was asked for by name (NAME.*), so it must exist
    # and is frozen even if it ships data files.
    add(pkg, named)
    try:
        mod = importlib.import_module(pkg)
    except Exception as e:
        if not named:
            raise
        sys.stderr.write("--freeze %s: importing it to list its submodules failed (%s: %s)\n"
                         % (pkg, type(e).__name__, e))
        sys.exit(4)
    failed = lambda n: skip(n + ".*", "its submodules are not listed: importing %s failed (%r)" % (n, sys.exc_info()[1]))
    for info in pkgutil.walk_packages(mod.__path__, pkg + ".", onerror=failed):
        last = info.name.rsplit(".", 1)[-1]
        if skip_tests and (last in TESTS or any(p in TESTS for p in info.name.split("."))):
            continue
        add(info.name, False)

def imports_of(path):
    # The absolute names a module's import statements name when it is
    # imported: module level, class bodies, if/try/with blocks (not
    # function bodies, which run later if ever). (name, level, from-names)
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return []
    out = []
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            out.extend((a.name, 0, ()) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level, tuple(a.name for a in node.names)))
        stack.extend(c for c in ast.iter_child_nodes(node)
                     if isinstance(c, (ast.stmt, ast.excepthandler, ast.match_case)))
    return out

def with_stdlib_imports(roots):
    # The stdlib modules that the modules `roots` (app modules: name ->
    # path) import, and the stdlib modules those import, and so on.
    seen = set()
    todo = sorted(roots.items())
    outside = {}
    while todo:
        name, path = todo.pop()
        for mod, level, names in imports_of(path):
            if level:
                continue  # within the package: frozen with it
            top = mod.partition(".")[0]
            if not top:
                continue
            if top not in sys.stdlib_module_names:
                if top not in roots_top and name in roots:
                    outside.setdefault(top, name)
                continue
            parts = mod.split(".")
            cands = [".".join(parts[:i + 1]) for i in range(len(parts))]
            cands += [mod + "." + n for n in names if n != "*"]
            for c in cands:
                if c in seen:
                    continue
                seen.add(c)
                r, why = lookup(c)
                if r is None or where(c, *r) != "stdlib":
                    continue  # built-in, extension, an attribute, an alias
                add(c, False)
                if c in found:
                    todo.append((c, r[0]))
    for top, by in outside.items():
        if top not in found:
            skip(top, "imported by %s, from outside the standard library, not named: name it with --freeze to freeze it" % by)

def stdlib():
    lib = os.path.dirname(os.__file__)
    for info in pkgutil.iter_modules([lib]):
        if info.name in TESTS or info.name in ("__main__", "antigravity", "this") or info.name.startswith("_test"):
            continue
        if info.ispkg:
            try:
                walk(info.name, True, named=False)
            except Exception:
                pass
        else:
            add(info.name, False)

PROBE = r"""
import sys, os
if sys.path and sys.path[0] == "":
    del sys.path[0]
sys.path[0:0] = sys.argv[2:]
before = set(sys.modules)
exec(compile(sys.argv[1], "<trace>", "exec"))
for n, m in sorted(sys.modules.items()):
    s = getattr(m, "__spec__", None)
    if s is None:
        how = "nospec"
    elif getattr(m, "__name__", None) != n:
        how = "alias:%s" % getattr(m, "__name__", "?")
    else:
        how = "spec"
    origin = (s.origin or "") if s is not None else ""
    pkg = int(s is not None and s.submodule_search_locations is not None)
    locs = os.pathsep.join(s.submodule_search_locations) if pkg and not origin else ""
    print("%s\t%d\t%s\t%d\t%s\t%s" % (n, n in before, how, pkg, locs, origin))
"""

def trace(code):
    r = subprocess.run([sys.executable, "-X", "frozen_modules=off", "-c", PROBE, code] + paths,
                       capture_output=True, text=True)
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        said = (": " + lines[-1]) if lines else " without a message"
        sys.stderr.write("--trace %r: the traced code exited with status %d%s\n" % (code, r.returncode, said))
        sys.exit(5)
    for line in r.stdout.splitlines():
        name, before, how, pkg, locs, origin = line.split("\t", 5)
        if name == "__main__":
            skip(name, "the traced program itself, not a module")
        elif how == "nospec":
            skip(name, "no module spec (set up by hand, not imported)")
        elif how.startswith("alias:"):
            skip(name, "another name for %s (sys.modules entry)" % how[6:])
        elif not origin.endswith(".py"):
            spec = importlib.machinery.ModuleSpec(name, None, origin=origin or None, is_package=pkg == "1")
            if pkg == "1" and not origin:
                spec.submodule_search_locations = locs.split(os.pathsep)
            skip(name, why_not(spec, name) or "no Python source")
        elif where(name, origin, pkg == "1") == "stdlib":
            add(name, False)
        elif before == "1":
            skip(name, "imported at start-up (by site or a .pth file), not by the traced code: name it with --freeze to freeze it")
        else:
            choose(name, origin, pkg == "1")

args = [a.partition(":") for a in sys.argv[2:]]
for kind, _, value in args:
    if kind == "N":
        name, _, why = value.partition("\t")
        never[name] = "not selected but by name: " + why
    elif kind == "P":
        paths.append(value)
# The standard library alone first, then the whole path.
for kind, _, value in args:
    if kind == "F" and value == "stdlib":
        stdlib()
import site
site.main()
sys.path[0:0] = paths
importlib.invalidate_caches()
named_app = set()
for kind, _, value in args:
    if kind == "F" and value != "stdlib":
        name = value[:-2] if value.endswith(".*") else value
        add(name, True)
        path, is_pkg, at = found[name]
        if at == "app":
            named_app.add(name)
        if is_pkg and (at == "app" or value.endswith(".*")):
            walk(name, False)
    elif kind == "T":
        trace(value)
# An application package comes with the stdlib modules it imports.
roots_top = {n.partition(".")[0] for n in named_app}
roots = {n: found[n][0] for n in found
         if found[n][2] == "app" and n.partition(".")[0] in roots_top}
with_stdlib_imports(roots)

# A frozen module whose parent package is a namespace package (never frozen)
# imports only where that package's folders are on sys.path.
for name in sorted(found):
    parent = name.rpartition(".")[0]
    if parent and parent not in found and parent not in skipped:
        try:
            spec = importlib.util.find_spec(parent)
        except Exception:
            continue
        if spec is not None and spec.origin is None and spec.submodule_search_locations is not None:
            skip(parent, why_not(spec, parent) + "; %s and its other frozen submodules import only with its folder on sys.path" % name)

for name in sorted(found):
    path, pkg, at = found[name]
    print("+\t%s\t%d\t%s\t%s" % (name, pkg, at, path))
for name in sorted(skipped):
    if name not in found:
        print("-\t%s\t%s" % (name, skipped[name].replace("\n", " ")))
"#;

/// Modules never selected by `stdlib`, `NAME.*` or `--trace` (only by
/// name), and why: frozen, they would behave differently.
pub const UNFREEZABLE: &[(&str, &str)] = &[
    (
        "importlib.resources._common",
        "finds its caller by comparing frames' file names with __file__; stdlib code frozen as \
         CPython freezes it is named <frozen NAME>, so files() without an argument would look \
         in the wrong package",
    ),
    // Debian ships one in the stdlib folder, which site imports at every
    // start-up (so --trace sees it).
    (
        "sitecustomize",
        "site imports it by name from the path at start-up, where users and distributions put \
         theirs; frozen, it would hide the one on PYTHONPATH",
    ),
    (
        "usercustomize",
        "site imports it by name from the path at start-up, where users put theirs; frozen, it \
         would hide the one on PYTHONPATH",
    ),
];

/// Resolve `--freeze` items and `--trace` snippets with `python`, on its
/// full path with the `paths` folders first (made absolute). Stdlib
/// packages that ship data files are only selected by name (a stock frozen
/// package has no resource reader).
pub fn resolve(
    python: &Path,
    layout: &Layout,
    freeze: &[String],
    trace: &[String],
    paths: &[PathBuf],
) -> Result<Selection> {
    if freeze.is_empty() && trace.is_empty() {
        return Ok(Selection::default());
    }
    for item in freeze {
        let name = item.strip_suffix(".*").unwrap_or(item);
        if name != "stdlib" {
            super::check_module_name(name)
                .map_err(|m| Error::msg(format!("--freeze {item}: {m}")))?;
        }
    }
    let mut dirs = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p)
            .map_err(|e| Error::file(p, format!("--path: cannot make it absolute: {e}")))?;
        if !abs.is_dir() {
            return Err(Error::file(p, "--path: not a folder"));
        }
        let text = abs
            .to_str()
            .ok_or_else(|| Error::file(p, "--path: the folder's name is not UTF-8"))?;
        dirs.push(format!("P:{text}"));
    }
    let never = UNFREEZABLE.iter().map(|(n, why)| format!("N:{n}\t{why}"));
    let args = never.chain(dirs).chain(
        freeze
            .iter()
            .map(|f| format!("F:{f}"))
            .chain(trace.iter().map(|t| format!("T:{t}"))),
    );
    let stdout =
        super::compile::run_script(python, layout, SCRIPT, args, "module selection", false)?;
    let text = String::from_utf8(stdout)
        .map_err(|_| Error::file(python, "module selection: output is not UTF-8"))?;
    parse(python, &text)
}

/// The script's "+" and "-" lines.
fn parse(python: &Path, text: &str) -> Result<Selection> {
    let mut sel = Selection::default();
    let bad = |line: &str| {
        Error::file(
            python,
            format!("module selection: unexpected output line {line:?}"),
        )
    };
    for line in text.lines() {
        let f: Vec<&str> = line.splitn(5, '\t').collect();
        match f[..] {
            ["+", name, pkg, at, path] => sel.chosen.push(Selected {
                name: name.to_string(),
                source: PathBuf::from(path),
                is_package: pkg == "1",
                location: match at {
                    "stdlib" => Location::Stdlib,
                    "app" => Location::App,
                    _ => return Err(bad(line)),
                },
            }),
            ["-", name, why] => sel.skipped.push((name.to_string(), why.to_string())),
            _ => return Err(bad(line)),
        }
    }
    Ok(sel)
}
