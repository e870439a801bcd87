//! Packaging (issue #16): `pip install <checkout>` builds a maturin `bin`
//! wheel (pyproject.toml) whose `pyfreeze-obj` command lands in the venv;
//! the sdist carries the workspace's `arch/` crate, so a wheel builds from
//! it alone; `cargo install --path .` keeps working.
//!
//! Needs PyPI (pip fetches maturin, the build backend) and a Rust
//! toolchain; either missing is a failure with pip's or cargo's message,
//! never a skip. The three builds share one cargo target folder under
//! cargo's tmp dir (not `target/`, which the running `cargo test` holds).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::{build, run_ok, run_text, work_dir, BuildId};

const CHECKOUT: &str = env!("CARGO_MANIFEST_DIR");

/// `python -m venv DIR` with pyenv's CPython 3.12.1; DIR/bin.
fn venv(dir: &Path) -> PathBuf {
    run_ok(
        build(BuildId::Pyenv312)
            .host_python()
            .args(["-m", "venv"])
            .arg(dir),
    );
    dir.join("bin")
}

/// A command from `bin`, building into the shared target folder.
fn tool(bin: &Path, name: &str, target: &Path) -> Command {
    let mut cmd = support::clean_python(&bin.join(name));
    cmd.env("CARGO_TARGET_DIR", target)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1");
    cmd
}

/// `pip install ARGS` in the venv, failing with pip's output (a network
/// or index problem included).
fn pip_install(bin: &Path, target: &Path, args: &[&Path]) {
    let mut cmd = tool(bin, "pip", target);
    cmd.arg("install").args(args);
    let out = support::output(&mut cmd);
    assert!(
        out.status.success(),
        "pip install failed (it needs PyPI for the build backend, maturin, and a Rust \
         toolchain to build the binary): {}",
        support::show(&cmd, &out)
    );
}

fn version_of(exe: &Path) -> String {
    assert!(exe.is_file(), "{} was not installed", exe.display());
    run_text(Command::new(exe).arg("--version"))
        .trim()
        .to_string()
}

fn want_version() -> String {
    format!("pyfreeze-obj {}", env!("CARGO_PKG_VERSION"))
}

#[test]
fn slow_pip_install_checkout_sdist_and_cargo_install() {
    let dir = work_dir("wheel");
    let target = dir.join("cargo-target");

    // pip install <checkout>: the command is in the venv
    let bin = venv(&dir.join("venv-checkout"));
    pip_install(&bin, &target, &[Path::new(CHECKOUT)]);
    assert_eq!(version_of(&bin.join("pyfreeze-obj")), want_version());
    // more than --version: the subcommands are there
    let help = run_text(Command::new(bin.join("pyfreeze-obj")).args(["relink", "--help"]));
    assert!(help.contains("--freeze"), "{help}");

    // the sdist: built by maturin, holds the arch crate, and installs alone
    let tools = venv(&dir.join("venv-maturin"));
    pip_install(&tools, &target, &[Path::new("maturin>=1.5,<2")]);
    let sdist_dir = dir.join("sdist");
    run_ok(
        tool(&tools, "maturin", &target)
            .current_dir(CHECKOUT)
            .args(["sdist", "-o"])
            .arg(&sdist_dir),
    );
    let sdists: Vec<PathBuf> = std::fs::read_dir(&sdist_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    assert_eq!(sdists.len(), 1, "maturin sdist wrote {sdists:?}");
    let list = run_text(Command::new("tar").arg("tzf").arg(&sdists[0]));
    for want in [
        "/arch/Cargo.toml",
        "/arch/src/lib.rs",
        "/pyproject.toml",
        "/Cargo.lock",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(want)),
            "the sdist lacks {want}:\n{list}"
        );
    }
    let bin = venv(&dir.join("venv-sdist"));
    pip_install(&bin, &target, &[&sdists[0]]);
    assert_eq!(version_of(&bin.join("pyfreeze-obj")), want_version());

    // cargo install --path . (README's other route)
    let root = dir.join("cargo-root");
    run_ok(
        Command::new("cargo")
            .args(["install", "--locked", "--path", CHECKOUT, "--root"])
            .arg(&root)
            .arg("--target-dir")
            .arg(&target),
    );
    assert_eq!(version_of(&root.join("bin/pyfreeze-obj")), want_version());
}
