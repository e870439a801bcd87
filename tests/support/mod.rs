//! Shared helpers for the integration tests.
//!
//! * [`builds`]: the one matrix of reference CPython builds (version, build,
//!   architecture, how to link and run it, gcc's `deepfreeze.o` as the
//!   oracle) and our objects for them, for every target and scheme.
//! * [`objgraph`]: reading any object file and comparing object graphs,
//!   with the object model taken from the library's layout tables;
//!   [`compare`]: the graph checks written once (ours against gcc's, one
//!   format against another) and the differences by design.
//! * [`disasm`]: the one `llvm-objdump` stub checker; [`regrtest`]: the one
//!   runner of CPython's test modules against the stock link; [`relinked`]:
//!   checks on relinked interpreters; [`dwarf`]: DWARF facts of an archive;
//!   [`sid`]: the Debian sid chroot holding CPython 3.14 and 3.15.
//!
//! A missing reference or tool is a test failure with a message saying
//! what to install, never a silent skip.

#![allow(dead_code)]

/// Tests that each call one check: `tests! { name: check(args); ... }`.
#[allow(unused_macros)]
macro_rules! tests {
    ($($name:ident: $check:expr;)*) => {
        $(#[test] fn $name() { $check; })*
    };
}

pub mod builds;
pub mod compare;
pub mod disasm;
pub mod dwarf;
pub mod objgraph;
pub mod regrtest;
pub mod relinked;
pub mod sid;

pub use builds::{build, BuildId};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every target `emit` writes, the reference (ELF x86_64) first.
pub const TARGETS: [&str; 6] = [
    "x86_64-linux",
    "aarch64-linux",
    "x86_64-macos",
    "aarch64-macos",
    "x86_64-windows",
    "aarch64-windows",
];

/// Modules deep-frozen by a stock CPython 3.11 or 3.12 build.
pub const STOCK_MODULES: usize = 23;

pub const HELLO: &str = "import __hello__; __hello__.main()";

/// `cmd` as a shell would show it (long arguments cut).
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.len() > 200 {
            s.push_str(&format!("{}...[{} bytes]", &a[..120], a.len()));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run to completion (a panic if it cannot start).
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)))
}

/// `cmd`, its status and the tails of its output, for messages.
pub fn show(cmd: &Command, out: &Output) -> String {
    format!(
        "`{}` ({}):\n--- stdout\n{}\n--- stderr\n{}",
        describe(cmd),
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), 60),
        tail(&String::from_utf8_lossy(&out.stderr), 60)
    )
}

/// Run to completion; panic with the command line and its output unless it
/// exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = output(cmd);
    assert!(out.status.success(), "failed: {}", show(cmd, &out));
    out
}

/// [`run_ok`]'s standard output.
pub fn stdout_of(cmd: &mut Command) -> Vec<u8> {
    run_ok(cmd).stdout
}

/// [`run_ok`]'s standard output as text.
pub fn run_text(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd).stdout).expect("UTF-8 output")
}

/// Panics (a failure, not a skip) unless `tool --version` runs.
pub fn require_tool(tool: &str, install: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "required tool `{tool}` is missing or broken: {install}; this test cannot run without it"
    );
}

/// The first of `names` that exists (absolute paths as given, others
/// looked up on `PATH`); panics saying what to install otherwise.
pub fn find_tool(names: &[&str], install: &str) -> PathBuf {
    for n in names {
        let p = Path::new(n);
        if p.is_absolute() {
            if p.is_file() {
                return p.to_path_buf();
            }
            continue;
        }
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            if dir.join(n).is_file() {
                return dir.join(n);
            }
        }
    }
    panic!(
        "tool missing: none of {names:?} is installed; {install}; this test cannot run without it"
    )
}

/// The interpreter of pyenv's CPython `version` outside the matrix
/// (`tests/layout_dwarf.rs`'s 3.13.0, which has no deep-freezing).
pub fn pyenv_python(version: &str) -> PathBuf {
    let xy = version.rsplit_once('.').map_or(version, |(a, _)| a);
    let p = builds::pyenv_prefix(version).join(format!("bin/python{xy}"));
    assert!(p.is_file(), "pyenv CPython {version}: no {}", p.display());
    p
}

/// `libpythonX.Y.a` in the `LIBPL` of [`pyenv_python`]`(version)`.
pub fn pyenv_archive(version: &str) -> PathBuf {
    let python = pyenv_python(version);
    let code =
        "import sysconfig as s; print(s.get_config_var('LIBPL'), s.get_config_var('LIBRARY'))";
    let text = run_text(clean_python(&python).args(["-I", "-c", code]));
    let (libpl, library) = text.trim().split_once(' ').expect("LIBPL LIBRARY");
    let a = Path::new(libpl).join(library);
    assert!(
        a.is_file(),
        "pyenv CPython {version} has no static library at {}",
        a.display()
    );
    a
}

/// A command running a stock interpreter with no `PYTHON*` variable
/// inherited.
pub fn clean_python(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PYTHON") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Our binary.
pub fn ours() -> Command {
    clean_python(Path::new(env!("CARGO_BIN_EXE_pyfreeze-obj")))
}

/// A fresh, empty folder for one test, under cargo's per-target tmp dir
/// (kept after the run, for inspection).
pub fn work_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    d
}

/// A fresh, uniquely named directory under the system temp dir, removed
/// when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!(
            "pyfreeze-obj-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// Write `bytes` to `name` inside; its path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A frozen-module header as CPython's freezer writes it (16 values a
/// line) for the array `_Py_M__<symbol>` holding `data`.
pub fn frozen_header(symbol: &str, data: &[u8]) -> String {
    let mut s = format!(
        "/* Auto-generated by Programs/_freeze_module.py */\nconst unsigned char _Py_M__{symbol}[] = {{\n"
    );
    for chunk in data.chunks(16) {
        s.push_str("    ");
        for b in chunk {
            s.push_str(&format!("{b},"));
        }
        s.push('\n');
    }
    s.push_str("};\n");
    s
}

/// Marshal bytes of `source` compiled as `<frozen NAME>` by the reference
/// interpreter of build `id`.
pub fn compiled(id: BuildId, source: &str, name: &str) -> Vec<u8> {
    run_ok(build(id).host_python().args([
        "-c",
        "import sys, marshal; sys.stdout.buffer.write(marshal.dumps(compile(sys.argv[1], \
         '<frozen ' + sys.argv[2] + '>', 'exec')))",
        source,
        name,
    ]))
    .stdout
}

/// Copy the folder `from` to `to`, recursively (a scratch copy of an
/// installed tree to damage).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}
