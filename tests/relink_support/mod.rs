//! Helpers for the relink tests (`tests/relink.rs`, `tests/fixtures_frozen.rs`):
//! find pyenv's CPython 3.12.1, emit our object, and link real interpreters
//! from its `libpython3.12.a` the way REFERENCE.md section 4 describes:
//!
//! ```text
//! cp libpython3.12.a tmp.a; ar d tmp.a deepfreeze.o
//! cc -o python $LIBPL/python.o OURS.o tmp.a $LIBS $SYSLIBS $LINKFORSHARED $LOCALMODLIBS
//! ```
//!
//! Every missing tool or reference is a test *failure* that says what to
//! install (`.ci/run` installs all of it), never a silent skip.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The CPython this suite relinks.
pub const VERSION: &str = "3.12.1";

/// pyenv's CPython 3.12.1 and what linking an interpreter from it needs.
pub struct Py312 {
    /// `pyenv prefix 3.12.1`; also the `PYTHONHOME` of every relinked interpreter.
    pub prefix: PathBuf,
    /// The stock (pyenv-built) interpreter, used as an oracle and to compile `.py`.
    pub python: PathBuf,
    /// `sysconfig.get_config_var('LIBPL')`.
    pub libpl: PathBuf,
    /// `$LIBPL/libpython3.12.a`, unmodified.
    pub archive: PathBuf,
    /// `$LIBPL/python.o` (the interpreter's `main`).
    pub python_o: PathBuf,
    /// `LIBS SYSLIBS LINKFORSHARED LOCALMODLIBS` from its sysconfig, split.
    pub link_flags: Vec<String>,
}

/// Panics (a failure, not a skip) unless `tool` runs.
pub fn require_tool(tool: &str, version_arg: &str, package: &str) {
    let ok = Command::new(tool)
        .arg(version_arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "required tool `{tool}` is missing or broken: install the Debian package `{package}` \
         (.ci/run does)"
    );
}

/// Every external tool these tests call.
pub fn require_tools() {
    require_tool("cc", "--version", "gcc");
    require_tool("ar", "--version", "binutils");
    require_tool("readelf", "--version", "binutils");
    require_tool("nm", "--version", "binutils");
}

fn find_prefix() -> PathBuf {
    if let Ok(out) = Command::new("pyenv").args(["prefix", VERSION]).output() {
        if out.status.success() {
            let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if p.is_dir() {
                return p;
            }
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(r) = std::env::var_os("PYENV_ROOT") {
        roots.push(r.into());
    }
    if let Some(h) = std::env::var_os("HOME") {
        roots.push(Path::new(&h).join(".pyenv"));
    }
    for r in &roots {
        let p = r.join("versions").join(VERSION);
        if p.join("bin").is_dir() {
            return p;
        }
    }
    panic!(
        "pyenv CPython {VERSION} is required (its libpython3.12.a is relinked): \
         `pyenv prefix {VERSION}` failed and it is not under {roots:?}; \
         install it with `pyenv install {VERSION}`"
    );
}

/// Discovered once per test binary.
pub fn py312() -> &'static Py312 {
    static CELL: OnceLock<Py312> = OnceLock::new();
    CELL.get_or_init(|| {
        require_tools();
        let prefix = find_prefix();
        let python = prefix.join("bin/python3.12");
        let out = run_ok(Command::new(&python).args([
            "-c",
            "import sysconfig as s\n\
             print(s.get_config_var('LIBPL'))\n\
             print(' '.join(s.get_config_var(k) or '' for k in \
             ('LIBS', 'SYSLIBS', 'LINKFORSHARED', 'LOCALMODLIBS')))",
        ]));
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let libpl = PathBuf::from(lines.next().expect("LIBPL").trim());
        let link_flags: Vec<String> = lines
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect();
        let archive = libpl.join("libpython3.12.a");
        let python_o = libpl.join("python.o");
        for p in [&archive, &python_o] {
            assert!(p.is_file(), "pyenv CPython {VERSION} lacks {}", p.display());
        }
        Py312 {
            prefix,
            python,
            libpl,
            archive,
            python_o,
            link_flags,
        }
    })
}

/// A fresh, empty folder for one test (under cargo's target tmp dir).
pub fn work_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("relink")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run to completion; panic with the command line and its output unless it
/// exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)));
    assert!(
        out.status.success(),
        "`{}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `pyfreeze-obj emit --python 3.12 ARGS...`.
pub fn emit<I, S>(out: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pyfreeze-obj"));
    cmd.args(["emit", "--python", "3.12", "-o"])
        .arg(out)
        .args(args);
    let o = run_ok(&mut cmd);
    assert!(out.is_file(), "emit did not write {}", out.display());
    o
}

/// Our object for the stock module set, taken from the archive's `frozen.o`.
pub fn emit_stock(out: &Path) {
    let py = py312();
    emit(out, [OsStr::new("--modules-from"), py.archive.as_os_str()]);
}

/// A copy of the archive without its `deepfreeze.o`.
pub fn stripped_archive(dir: &Path) -> PathBuf {
    let py = py312();
    let a = dir.join("libpython-nodeepfreeze.a");
    std::fs::copy(&py.archive, &a).unwrap();
    run_ok(Command::new("ar").arg("d").arg(&a).arg("deepfreeze.o"));
    let listing = run_ok(Command::new("ar").arg("t").arg(&a));
    let names = String::from_utf8_lossy(&listing.stdout);
    assert!(
        !names.lines().any(|l| l.trim() == "deepfreeze.o"),
        "ar d left deepfreeze.o in {}",
        a.display()
    );
    a
}

/// `cc -o OUT [PRE...] python.o OBJS... ARCHIVE <sysconfig flags>`.
pub fn link_interpreter(out: &Path, pre: &[&str], objs: &[&Path], archive: &Path) {
    let py = py312();
    let mut cmd = Command::new("cc");
    cmd.arg("-o").arg(out).args(pre).arg(&py.python_o);
    for o in objs {
        cmd.arg(o);
    }
    cmd.arg(archive).args(&py.link_flags);
    run_ok(&mut cmd);
}

/// A command running a relinked interpreter: `PYTHONHOME` = pyenv's
/// prefix, no other `PYTHON*` variable inherited, in `cwd`.
pub fn python(exe: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(exe);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PYTHON") {
            cmd.env_remove(k);
        }
    }
    cmd.env("PYTHONHOME", &py312().prefix).current_dir(cwd);
    cmd
}

/// Run `-c CODE` under `exe`; stdout on success, panic otherwise.
pub fn python_c(exe: &Path, cwd: &Path, code: &str) -> String {
    let out = run_ok(python(exe, cwd).args(["-c", code]));
    String::from_utf8(out.stdout).unwrap()
}

/// What `tests/relink.rs` shares between its tests (built once).
pub struct Relinked {
    pub dir: PathBuf,
    /// Our object for the stock module set.
    pub ours_o: PathBuf,
    /// The archive without `deepfreeze.o`.
    pub stripped: PathBuf,
    /// `python.o + ours_o + stripped`.
    pub ours: PathBuf,
    /// `python.o + unmodified archive`, same flags.
    pub stock: PathBuf,
}

pub fn relinked() -> &'static Relinked {
    static CELL: OnceLock<Relinked> = OnceLock::new();
    CELL.get_or_init(|| {
        let py = py312();
        let dir = work_dir("shared");
        let ours_o = dir.join("deepfreeze-ours.o");
        emit_stock(&ours_o);
        let stripped = stripped_archive(&dir);
        let ours = dir.join("python-ours");
        link_interpreter(&ours, &[], &[&ours_o], &stripped);
        let stock = dir.join("python-stock");
        link_interpreter(&stock, &[], &[], &py.archive);
        Relinked {
            dir,
            ours_o,
            stripped,
            ours,
            stock,
        }
    })
}

/// `readelf ARGS FILE` stdout.
pub fn readelf(args: &[&str], file: &Path) -> String {
    let out = run_ok(Command::new("readelf").args(args).arg(file));
    String::from_utf8(out.stdout).unwrap()
}
