//! `--compile-with PYTHON`: code for modules given as `.py` sources, or
//! known only by name (3.11's `frozen.o` keeps no marshal bytes), compiled
//! by that interpreter exactly as CPython's freezer does:
//! `compile(source, "<frozen NAME>", "exec")`, then `marshal.dumps`.
//!
//! Modules from outside the standard library ([`Code::App`]) are compiled
//! with their file name instead, so tracebacks and `inspect` find their
//! source, after a one-line prologue that gives the module its real file
//! (see [`HELPER`]).

use super::{Marshalled, OffsetMap};
use crate::error::{Error, Result};
use crate::layout::Layout;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The module every [`Code::App`] module's prologue calls, frozen with
/// them: the frozen importer derives `__file__` and `__path__` from
/// `sys._stdlib_dir` and the module's name, which is wrong for modules
/// that are not in the standard library.
pub const HELPER: &str = "_pyfreeze_obj";

/// [`HELPER`]'s source.
pub const HELPER_SOURCE: &str = include_str!("_pyfreeze_obj.py");

/// Where a module's code comes from.
#[derive(Debug, Clone)]
pub enum Code {
    /// A stdlib source file (or a `FILE:MODNAME` input), compiled as
    /// `<frozen NAME>` like CPython's freezer does.
    Stdlib(PathBuf),
    /// A stdlib source file at the place the interpreter's runtime will
    /// find it (an added module of the interpreter's own install): compiled
    /// with that file name, so tracebacks and `inspect` show its source.
    StdlibAt(PathBuf),
    /// A source file from outside the stdlib: compiled with its own file
    /// name, after the prologue `__import__('_pyfreeze_obj').fix(globals(),
    /// FILE)` (placed after the docstring and `__future__` imports, on the
    /// line of the first statement after them).
    App(PathBuf),
    /// The code the interpreter itself froze under this name, as
    /// `_imp.get_frozen_object` gives it: for modules whose source no
    /// stdlib ships, such as 3.11's `frozen_only`.
    Frozen(String),
    /// Source text, compiled as `<frozen NAME>` ([`HELPER`]).
    Text(String),
}

/// What to compile: a module name, its accessor and where its code comes
/// from.
#[derive(Debug, Clone)]
pub struct Request {
    pub name: String,
    pub accessor: String,
    pub code: Code,
}

// Arguments: the X.Y wanted, then one per module, KIND<TAB>NAME<TAB>VALUE:
// `S` compile the file VALUE as `<frozen NAME>`; `F` compile the file VALUE
// with its own name; `A` compile the file VALUE
// with its own name and the prologue; `T` compile the text VALUE as
// `<frozen NAME>`; `O` the code the interpreter itself froze under VALUE.
const SCRIPT: &str = r#"
import sys, os, marshal, importlib, importlib.util, _imp, ast
want = sys.argv[1]
have = "%d.%d" % sys.version_info[:2]
if have != want:
    sys.stderr.write("interpreter is Python %s, not %s\n" % (have, want))
    sys.exit(3)

def renamed(code, filename):
    consts = tuple(renamed(c, filename) if isinstance(c, type(code)) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)

def cached(path, source, filename):
    # The interpreter's own bytecode cache, when it is fresh for this very
    # source (timestamp .pyc: mtime and size; hash .pyc: the source hash),
    # is what compile() would give but for co_filename: reuse it.
    try:
        pyc = importlib.util.cache_from_source(path)
        with open(pyc, "rb") as f:
            data = f.read()
        if data[:4] != importlib.util.MAGIC_NUMBER:
            return None
        flags = int.from_bytes(data[4:8], "little")
        if flags == 0:
            st = os.stat(path)
            if (int.from_bytes(data[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
                    or int.from_bytes(data[12:16], "little") != st.st_size & 0xFFFFFFFF):
                return None
        elif data[8:16] != _imp.source_hash(importlib.util._RAW_MAGIC_NUMBER, source):
            return None
        return renamed(marshal.loads(data[16:]), filename)
    except Exception:
        return None

def is_docstring(node):
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))

def with_prologue(source, path):
    # The module's own code, after one call that gives it its real file;
    # the docstring and __future__ imports stay first (they must).
    tree = ast.parse(source, path)
    body = tree.body
    i = 1 if body and is_docstring(body[0]) else 0
    while i < len(body) and isinstance(body[i], ast.ImportFrom) and body[i].module == "__future__":
        i += 1
    line = body[i].lineno if i < len(body) else (body[-1].end_lineno if body else 1)
    call = ast.parse("__import__(%r).fix(globals(), %r)" % (HELPER, path)).body
    for stmt in call:
        for node in ast.walk(stmt):
            if "lineno" in node._attributes:
                node.lineno = node.end_lineno = line
                node.col_offset = node.end_col_offset = 0
    body[i:i] = call
    return compile(tree, path, "exec", dont_inherit=True)

def syntax_error(path, e):
    sys.stderr.write("%s: line %s: %s\n" % (path, e.lineno, e.msg))
    sys.exit(5)

HELPER = sys.argv[2]
out = sys.stdout.buffer
out.write(b"pyfreeze-obj\n")
for arg in sys.argv[3:]:
    kind, name, value = arg.split("\t", 2)
    path = None
    if kind == "O":
        try:
            code = _imp.get_frozen_object(value)
        except Exception:
            sys.stderr.write("module %s: the target's stdlib has no source of it, and the interpreter has no frozen %s; give FILE:%s\n" % (name, value, name))
            sys.exit(4)
    elif kind == "T":
        code = compile(value, "<frozen %s>" % name, "exec", dont_inherit=True)
    else:
        path = value
        with open(path, "rb") as f:
            source = f.read()
        try:
            if kind == "A":
                code = with_prologue(source, path)
            elif kind == "F":
                code = cached(path, source, path)
                if code is None:
                    code = compile(source, path, "exec")
            else:
                code = cached(path, source, "<frozen %s>" % name)
                if code is None:
                    code = compile(source, "<frozen %s>" % name, "exec")
        except SyntaxError as e:
            syntax_error(path, e)
    data = marshal.dumps(code)
    origin = (path or "").encode("utf-8", "surrogateescape")
    out.write(len(origin).to_bytes(4, "little"))
    out.write(origin)
    out.write(len(data).to_bytes(4, "little"))
    out.write(data)
"#;

/// What an interpreter says of itself.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// `platform.python_version()`: `3.11.2`.
    pub version: String,
    /// `platform.python_build()[1]`: `Apr 28 2025 14:11:48`.
    pub built: String,
    /// Its standard library folder (where its `os` module is: `sysconfig`
    /// would need the host platform's `_sysconfigdata`, which a
    /// `PYTHONHOME` pointed at another platform's tree lacks).
    pub stdlib: PathBuf,
}

const PROBE: &str = r#"
import sys, os, platform
sys.stdout.write("%s\n%s\n%s\n" % (platform.python_version(), platform.python_build()[1], os.path.dirname(os.__file__)))
"#;

/// Ask `python` (given as `option`) its version, build and stdlib, and
/// refuse an interpreter of another X.Y than `layout`'s.
pub fn probe(python: &Path, layout: &Layout, option: &str) -> Result<Interpreter> {
    let out = run_python(python, &["-S", "-c", PROBE], option)?;
    let text = String::from_utf8_lossy(&out);
    let mut lines = text.lines();
    let (Some(version), Some(built), Some(stdlib)) = (lines.next(), lines.next(), lines.next())
    else {
        return Err(Error::file(
            python,
            format!("{option}: unexpected output (is this CPython?)"),
        ));
    };
    let (a, b) = layout.version;
    if !version.starts_with(&format!("{a}.{b}.")) {
        return Err(Error::file(
            python,
            format!("{option}: interpreter is CPython {version}, not {a}.{b} (--python {a}.{b})"),
        ));
    }
    Ok(Interpreter {
        version: version.to_string(),
        built: built.to_string(),
        stdlib: PathBuf::from(stdlib),
    })
}

/// Run `python` with `args`; its stdout, or an error naming `option` with
/// what it said on stderr.
fn run_python(python: &Path, args: &[&str], option: &str) -> Result<Vec<u8>> {
    let out = Command::new(python)
        .args(args)
        .output()
        .map_err(|e| Error::file(python, format!("cannot run the {option} interpreter: {e}")))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(Error::file(
        python,
        format!(
            "{option} failed ({}): {}",
            out.status,
            stderr_summary(&out.stderr)
        ),
    ))
}

/// What a failing interpreter said, on one line: a Python traceback's last
/// line (the exception), else every non-empty line joined (a launcher such
/// as a pyenv shim explains itself over several lines).
pub fn stderr_summary(stderr: &[u8]) -> String {
    let err = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = err
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return "it printed nothing on stderr".to_string();
    }
    if err.contains("Traceback (most recent call last)") {
        return lines[lines.len() - 1].to_string();
    }
    let mut s = lines.join(" | ");
    if s.len() > 600 {
        let cut = (0..=600)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
        s.push_str(" ...");
    }
    s
}

/// Compile every request, spread over one interpreter process per core
/// (results in request order).
pub fn compile(python: &Path, layout: &Layout, reqs: &[Request]) -> Result<Vec<Marshalled>> {
    if reqs.is_empty() {
        return Ok(Vec::new());
    }
    // A process costs ~20 ms to start: only split sizeable batches.
    let procs = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
        .min(reqs.len().div_ceil(32));
    if procs <= 1 {
        return compile_batch(python, layout, reqs);
    }
    let chunk = reqs.len().div_ceil(procs);
    let results: Vec<Result<Vec<Marshalled>>> = std::thread::scope(|s| {
        let handles: Vec<_> = reqs
            .chunks(chunk)
            .map(|part| s.spawn(move || compile_batch(python, layout, part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("compiler thread panicked"))
            .collect()
    });
    let mut out = Vec::with_capacity(reqs.len());
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// Compile `reqs` with one run of `python`.
fn compile_batch(python: &Path, layout: &Layout, reqs: &[Request]) -> Result<Vec<Marshalled>> {
    let args = std::iter::once(HELPER.to_string()).chain(reqs.iter().map(|r| {
        let (kind, value) = match &r.code {
            Code::Stdlib(p) => ("S", p.display().to_string()),
            Code::App(p) => ("A", p.display().to_string()),
            Code::StdlibAt(p) => ("F", p.display().to_string()),
            Code::Frozen(f) => ("O", f.clone()),
            Code::Text(t) => ("T", t.clone()),
        };
        format!("{kind}\t{}\t{value}", r.name)
    }));
    let stdout = run_script(python, layout, SCRIPT, args, "--compile-with", false)?;
    let mut rest = stdout
        .strip_prefix(b"pyfreeze-obj\n".as_slice())
        .ok_or_else(|| {
            Error::file(
                python,
                "--compile-with: unexpected output (is this CPython?)",
            )
        })?;
    let mut result = Vec::with_capacity(reqs.len());
    for r in reqs {
        let bad = || {
            Error::file(
                python,
                format!("--compile-with: output for {} is truncated", r.name),
            )
        };
        let mut field = || -> Result<Vec<u8>> {
            let n = u32::from_le_bytes(rest.get(..4).ok_or_else(bad)?.try_into().unwrap()) as usize;
            let v = rest.get(4..4 + n).ok_or_else(bad)?.to_vec();
            rest = &rest[4 + n..];
            Ok(v)
        };
        let origin = field()?;
        let data = field()?;
        // The source the interpreter compiled (none: its own frozen code).
        let origin = match String::from_utf8(origin) {
            Ok(p) if !p.is_empty() => PathBuf::from(p),
            _ => python.to_path_buf(),
        };
        result.push(Marshalled {
            name: r.name.clone(),
            accessor: r.accessor.clone(),
            data,
            origin,
            offsets: OffsetMap::Generated,
        });
    }
    Ok(result)
}

/// Run `script` with `python` (with or without `site`), the wanted X.Y and
/// `args`; its
/// stdout, or an error with the last line it wrote on stderr (exit 3: the
/// interpreter is of another X.Y).
pub fn run_script(
    python: &Path,
    layout: &Layout,
    script: &str,
    args: impl IntoIterator<Item = String>,
    what: &str,
    site: bool,
) -> Result<Vec<u8>> {
    let (a, b) = layout.version;
    let out = Command::new(python)
        .args((!site).then_some("-S"))
        .args(["-c", script, &format!("{a}.{b}")])
        .args(args)
        .output()
        .map_err(|e| {
            Error::file(
                python,
                format!("cannot run --compile-with interpreter: {e}"),
            )
        })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let why = if out.status.code() == Some(3) {
        "refused"
    } else {
        "failed"
    };
    Err(Error::file(
        python,
        format!("{what} {why}: {}", stderr_summary(&out.stderr)),
    ))
}
