//! Shared helpers for the integration tests: finding the reference CPython
//! builds on this machine, and running our binary.
//!
//! A missing reference is a test failure with a message saying what to
//! install, never a silent skip.

#![allow(dead_code)]

pub mod objgraph;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The installation prefix of pyenv's CPython `version` (e.g. "3.12.1").
/// Panics with instructions when it is not installed.
pub fn pyenv_prefix(version: &str) -> PathBuf {
    if let Ok(out) = Command::new("pyenv").args(["prefix", version]).output() {
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
    roots.push("/root/.pyenv".into());
    for r in &roots {
        let p = r.join("versions").join(version);
        if p.join("bin").is_dir() {
            return p;
        }
    }
    panic!(
        "reference interpreter missing: pyenv CPython {version} is not installed \
         (`pyenv prefix {version}` failed; looked in {roots:?}). \
         Install it with `pyenv install {version}`; this test cannot run without it."
    );
}

/// The interpreter's `LIBPL` (where `libpython3.X.a` lives).
pub fn libpl(prefix: &Path, xy: &str) -> PathBuf {
    libpl_of(&prefix.join("bin").join(format!("python{xy}")))
}

/// `LIBPL` of the interpreter at `python`.
pub fn libpl_of(python: &Path) -> PathBuf {
    let out = Command::new(python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('LIBPL'))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// "3.12.1" -> "3.12".
fn major_minor(version: &str) -> &str {
    version.rsplit_once('.').map_or(version, |(a, _)| a)
}

/// The `python3.X` interpreter of pyenv's CPython `version`.
pub fn pyenv_python(version: &str) -> PathBuf {
    let p = pyenv_prefix(version)
        .join("bin")
        .join(format!("python{}", major_minor(version)));
    assert!(
        p.is_file(),
        "pyenv CPython {version} has no interpreter at {}",
        p.display()
    );
    p
}

/// `libpython3.X.a` of pyenv's CPython `version`.
pub fn pyenv_archive(version: &str) -> PathBuf {
    interpreter_archive(&pyenv_python(version), major_minor(version))
}

/// An interpreter outside pyenv (e.g. Debian's `/usr/bin/python3.11`);
/// panics with instructions when it is missing.
pub fn system_python(path: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.is_file(),
        "reference interpreter missing: {path} does not exist. Install it with \
         `apt-get install {package}`; this test cannot run without it."
    );
    p
}

/// `libpython<xy>.a` in the `LIBPL` of the interpreter `python`; panics
/// when the interpreter has none.
pub fn interpreter_archive(python: &Path, xy: &str) -> PathBuf {
    let a = libpl_of(python).join(format!("libpython{xy}.a"));
    assert!(
        a.is_file(),
        "{} has no static library at {} (pyenv: build with the default static \
         libpython; Debian: `apt-get install libpython{xy}-dev`)",
        python.display(),
        a.display()
    );
    a
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
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run our binary with `args`; panic with its stderr unless it succeeds.
pub fn run_ours(args: &[&std::ffi::OsStr]) {
    let bin = env!("CARGO_BIN_EXE_pyfreeze-obj");
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    assert!(
        out.status.success(),
        "pyfreeze-obj {:?} failed ({}): {}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pyfreeze-obj emit --python X.Y --modules-from ARCHIVE -o OUT` (plus
/// `extra` arguments); returns the object's bytes.
pub fn emit_from_archive(python: &str, archive: &Path, extra: &[&str]) -> Vec<u8> {
    let dir = TempDir::new("emit");
    let out = dir.path().join("deepfreeze.o");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "emit".as_ref(),
        "--python".as_ref(),
        python.as_ref(),
        "--modules-from".as_ref(),
        archive.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    run_ours(&args);
    std::fs::read(&out).unwrap_or_else(|e| panic!("read {}: {e}", out.display()))
}
