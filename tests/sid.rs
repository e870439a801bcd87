//! The Debian sid chroot as test infrastructure (`tests/support/sid.rs`,
//! `tests/setup/sid.sh`): it is set up (or reused), commands run inside it
//! with a private `/proc` and leave no mount behind, its interpreters are
//! the versions dpkg says are installed, our binary runs inside, and a
//! scratch folder is shared between host and chroot and removed afterwards.

mod support;

use support::sid;

/// `python3.X` inside reports the upstream version of the installed
/// Debian package `python3.X` (read from dpkg, not written here).
fn interpreter_matches_dpkg(xy: &str) {
    let deb = sid::dpkg_version(&format!("python{xy}"));
    let want = sid::upstream_version(&deb);
    assert!(
        want.starts_with(&format!("{xy}.")),
        "dpkg's python{xy} is {deb}, not a {xy}.x"
    );
    let python = format!("/usr/bin/python{xy}");
    let got = sid::run_text(
        &[
            &python,
            "-I",
            "-c",
            "import sys; print('%d.%d.%d' % sys.version_info[:3])",
        ],
        &[],
    );
    assert_eq!(
        got.trim(),
        want,
        "{python} inside the chroot against dpkg's {deb}"
    );
    // The facts tests use: archive and python.o where its sysconfig says.
    let p = sid::python(xy);
    assert_eq!(p.version, want);
    assert!(sid::host_path(&p.archive).is_file(), "{}", p.archive);
}

#[test]
fn sid_python314_matches_dpkg() {
    interpreter_matches_dpkg("3.14");
}

#[test]
fn sid_python315_matches_dpkg() {
    interpreter_matches_dpkg("3.15");
}

/// Inside: a private /proc (its own pid 1 namespace is not asked for, but
/// /proc/self must be the chroot's process), the given environment only,
/// and no mount left on the host afterwards.
#[test]
fn sid_run_is_isolated() {
    let out = sid::run_text(
        &[
            "sh",
            "-c",
            "cat /proc/self/cmdline | tr '\\0' ' '; echo; env | sort",
        ],
        &[("PYFREEZE_PROBE", "a b=c")],
    );
    let mut lines = out.lines();
    assert_eq!(lines.next().unwrap().trim(), "cat /proc/self/cmdline");
    let env: Vec<&str> = lines.collect();
    assert!(env.contains(&"PYFREEZE_PROBE=a b=c"), "{env:?}");
    assert!(env.contains(&"HOME=/root"), "{env:?}");
    assert!(
        !env.iter().any(|l| l.starts_with("CARGO")),
        "the host's environment leaked in: {env:?}"
    );
    // Exit statuses come through.
    assert_eq!(
        sid::run(&["sh", "-c", "exit 7"], &[]).status.code(),
        Some(7)
    );
    let root = sid::root().to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
    assert!(left.is_empty(), "mounts left under the chroot: {left:?}");
}

/// Our binary runs inside and reads a file written from the host into a
/// scratch folder, which is gone once dropped.
#[test]
fn sid_tool_and_scratch() {
    let tool = sid::install_tool();
    let host_copy = sid::host_path(tool);
    let ours = std::fs::read(env!("CARGO_BIN_EXE_pyfreeze-obj")).unwrap();
    assert!(
        std::fs::read(&host_copy).unwrap() == ours,
        "{tool} differs from the host's binary"
    );
    let help = sid::run_text(&[tool, "--help"], &[]);
    assert!(help.contains("relink"), "{help}");
    let scratch = sid::Scratch::new("selftest");
    let host_dir = scratch.host().to_path_buf();
    let file = scratch.write("x.txt", b"from the host\n");
    let out = support::run_text(&mut scratch.command(&["sh", "-c", "pwd; cat x.txt"], &[]));
    assert_eq!(out, format!("{}\nfrom the host\n", scratch.inside()));
    assert!(sid::host_path(&file).is_file());
    drop(scratch);
    assert!(!host_dir.exists(), "{} not removed", host_dir.display());
}
