//! Module selection beyond a fixed list, resolved by the `--compile-with`
//! interpreter on its own path:
//!
//! - `--freeze NAME`: a module or package;
//! - `--freeze NAME.*`: a package and all its submodules, recursively;
//! - `--freeze stdlib`: every pure-Python module of the standard library
//!   (test packages excluded);
//! - `--trace CODE`: every pure-Python module that running CODE imports.
//!
//! Only modules with Python source are selected (extension and built-in
//! modules cannot be frozen); the result is sorted by name, so the output
//! does not depend on import order or file-system order.

use crate::error::{Error, Result};
use crate::layout::Layout;
use std::path::{Path, PathBuf};

/// A selected module: its name, source file and whether it is a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub name: String,
    pub source: PathBuf,
    pub is_package: bool,
}

// Arguments: X.Y, then `F:SPEC` (a --freeze item) or `T:CODE` (a --trace
// snippet). Prints one "name\tis_package\tpath" line per module.
const SCRIPT: &str = r#"
import sys, os, importlib, importlib.util, importlib.machinery, pkgutil, subprocess
want = sys.argv[1]
have = "%d.%d" % sys.version_info[:2]
if have != want:
    sys.stderr.write("interpreter is Python %s, not %s\n" % (have, want))
    sys.exit(3)
found = {}

def source_of(name):
    try:
        spec = importlib.util.find_spec(name)
    except Exception as e:
        return None
    if spec is None or not spec.has_location or not spec.origin or not spec.origin.endswith(".py"):
        # Frozen stdlib modules: their source still sits in the stdlib.
        if spec is not None and spec.origin == "frozen":
            parent, _, last = name.rpartition(".")
            try:
                path = importlib.import_module(parent).__path__ if parent else None
                spec = importlib.machinery.PathFinder.find_spec(name, path)
            except Exception:
                return None
            if spec is None or not spec.origin or not spec.origin.endswith(".py"):
                return None
        else:
            return None
    return spec.origin, spec.submodule_search_locations is not None

never = {}

def has_data(pkg_init):
    # Files other than Python sources beside a package's modules: read
    # through importlib.resources, which the frozen importer cannot serve.
    top = os.path.dirname(pkg_init)
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        if any(not f.endswith((".py", ".pyc")) for f in filenames):
            return True
    return False

def add(name, strict):
    if name in never and not strict:
        return
    r = source_of(name)
    if r is None:
        if strict:
            sys.stderr.write("--freeze %s: no pure-Python module of that name\n" % name)
            sys.exit(4)
        return
    if r[1] and not strict and has_data(r[0]):
        return
    found[name] = r

TESTS = ("test", "tests", "idle_test")
def walk(pkg, skip_tests, named=True):
    # named: the package was asked for by name (NAME.*), so it must exist
    # and is frozen even if it ships data files.
    add(pkg, named)
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + ".", onerror=lambda n: None):
        last = info.name.rsplit(".", 1)[-1]
        if skip_tests and (last in TESTS or any(p in TESTS for p in info.name.split("."))):
            continue
        add(info.name, False)

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

for arg in sys.argv[2:]:
    kind, _, value = arg.partition(":")
    if kind == "N":
        never[value] = True
    elif kind == "F":
        if value == "stdlib":
            stdlib()
        elif value.endswith(".*"):
            walk(value[:-2], False)
        else:
            add(value, True)
    else:
        probe = ("import sys\nexec(compile(sys.argv[1], '<trace>', 'exec'))\n"
                 "for n, m in sorted(sys.modules.items()):\n"
                 "    s = getattr(m, '__spec__', None)\n"
                 "    if n != '__main__' and getattr(m, '__name__', None) == n and s is not None and s.origin and s.origin.endswith('.py'):\n"
                 "        print(n)\n")
        r = subprocess.run([sys.executable, "-X", "frozen_modules=off", "-c", probe, value],
                           capture_output=True, text=True)
        if r.returncode != 0:
            lines = r.stderr.strip().splitlines()
            said = (": " + lines[-1]) if lines else " without a message"
            sys.stderr.write("--trace %r: the traced code exited with status %d%s\n" % (value, r.returncode, said))
            sys.exit(5)
        for name in r.stdout.split():
            add(name, False)

for name in sorted(found):
    path, pkg = found[name]
    print("%s\t%d\t%s" % (name, pkg, path))
"#;

/// Modules never selected by `stdlib`, `NAME.*` or `--trace` (only by
/// name), and why: frozen, they would behave differently.
pub const UNFREEZABLE: &[(&str, &str)] = &[(
    "importlib.resources._common",
    "finds its caller by comparing frames' file names with __file__; frozen code is named \
     <frozen NAME>, so files() without an argument would look in the wrong package",
)];

/// Resolve `--freeze` items and `--trace` snippets with `python`. Packages
/// that ship data files are only selected by name (the frozen importer has
/// no resource reader for them). Resolution runs without `site`: only the
/// standard library's modules are found (the frozen importer gives every
/// module a `__file__` in the standard library, wrong for site-packages).
pub fn resolve(
    python: &Path,
    layout: &Layout,
    freeze: &[String],
    trace: &[String],
) -> Result<Vec<Selected>> {
    if freeze.is_empty() && trace.is_empty() {
        return Ok(Vec::new());
    }
    for item in freeze {
        let name = item.strip_suffix(".*").unwrap_or(item);
        if name != "stdlib" {
            super::check_module_name(name)
                .map_err(|m| Error::msg(format!("--freeze {item}: {m}")))?;
        }
    }
    let never = UNFREEZABLE.iter().map(|(n, _)| format!("N:{n}"));
    let args = never.chain(
        freeze
            .iter()
            .map(|f| format!("F:{f}"))
            .chain(trace.iter().map(|t| format!("T:{t}"))),
    );
    let stdout =
        super::compile::run_script(python, layout, SCRIPT, args, "module selection", false)?;
    let text = String::from_utf8(stdout)
        .map_err(|_| Error::file(python, "module selection: output is not UTF-8"))?;
    let mut result = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(3, '\t');
        let (Some(name), Some(pkg), Some(path)) = (f.next(), f.next(), f.next()) else {
            return Err(Error::file(
                python,
                format!("module selection: unexpected output line {line:?}"),
            ));
        };
        result.push(Selected {
            name: name.to_string(),
            source: PathBuf::from(path),
            is_package: pkg == "1",
        });
    }
    Ok(result)
}
