//! The command line: help, version, one-line errors with file and byte
//! offset, exit codes, atomic output, reproducible output, and equivalence
//! of the input kinds (frozen headers, .pyc, .marshal, --modules-from).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::{build, BuildId};

fn bin() -> Command {
    support::ours()
}

fn python312() -> PathBuf {
    build(BuildId::Pyenv312).python.clone()
}

/// A fresh folder under the temp dir (kept, for inspection).
fn tmpdir(name: &str) -> &'static Path {
    Box::leak(Box::new(support::TempDir::new(&format!("cli-{name}")))).path()
}

/// Run and expect failure with exit code 1 and exactly one line on stderr.
fn fails(cmd: &mut Command) -> String {
    let out: Output = cmd.output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit code 1, stderr: {err}"
    );
    assert_eq!(
        err.lines().count(),
        1,
        "expected one line on stderr, got: {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("pyfreeze-obj: error: "), "{err}");
    err
}

/// Marshal bytes of `source` compiled as `<frozen name>` by CPython 3.12.
fn compile312(source: &str, name: &str) -> Vec<u8> {
    support::compiled(BuildId::Pyenv312, source, name)
}

/// `pyfreeze-obj emit --python 3.12 -o OUT ARGS...` in `dir`.
fn emit_cmd(dir: &Path, out: &str, args: &[&str]) -> Command {
    let mut cmd = bin();
    cmd.current_dir(dir)
        .args(["emit", "--python", "3.12", "-o", out])
        .args(args);
    cmd
}

fn emit(dir: &Path, out: &str, args: &[&str]) -> Output {
    emit_cmd(dir, out, args).output().unwrap()
}

/// [`emit`] with `-o x.o`, expected to fail: its one line.
fn emit_fails(dir: &Path, args: &[&str]) -> String {
    fails(&mut emit_cmd(dir, "x.o", args))
}

/// [`emit`], expected to succeed.
fn emit_ok(dir: &Path, out: &str, args: &[&str]) {
    let o = emit(dir, out, args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn help_and_version() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("emit"), "{text}");
    let out = bin().args(["emit", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "--target",
        "--python",
        "--modules-from",
        "--compile-with",
        "FILE:MODNAME",
        "Examples",
    ] {
        assert!(text.contains(want), "emit --help lacks {want}: {text}");
    }
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("pyfreeze-obj {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_are_one_line() {
    let e = fails(bin().args(["emit", "-o", "x.o"]));
    assert!(e.contains("--python"), "{e}");
    let e = fails(bin().args(["frobnicate"]));
    assert!(e.contains("frobnicate"), "{e}");
}

#[test]
fn unsupported_targets_and_versions() {
    let d = tmpdir("targets");
    let e = emit_fails(d, &["--target", "sparc-sun-solaris", "a.h:a"]);
    assert!(
        e.contains("sparc-sun-solaris") && e.contains("operating system solaris is not one"),
        "{e}"
    );
    // An OS whose runtime layout is unknown is refused, whatever its
    // object format (FreeBSD's ELF is not Linux's runtime).
    for (target, what) in [
        (
            "x86_64-unknown-freebsd",
            "operating system freebsd is not one",
        ),
        (
            "aarch64-unknown-netbsd",
            "operating system netbsd is not one",
        ),
        (
            "powerpc64le-unknown-linux-gnu",
            "x86_64 and aarch64 only, not powerpc64le",
        ),
        (
            "riscv64gc-unknown-linux-gnu",
            "x86_64 and aarch64 only, not riscv64gc",
        ),
    ] {
        let e = emit_fails(d, &["--target", target, "a.h:a"]);
        assert!(e.contains(target) && e.contains(what), "{target}: {e}");
    }
    let e = emit_fails(d, &["--target", "nonsense", "a.h:a"]);
    assert!(e.contains("unknown target 'nonsense'"), "{e}");
    for (python, want) in [
        ("3.16", "3.16 is not supported yet"),
        ("3.10", "3.11 and later only"),
        ("three", "expected MAJOR.MINOR"),
    ] {
        let e = fails(
            bin()
                .current_dir(d)
                .args(["emit", "--python", python, "-o", "x.o", "a.h:a"]),
        );
        assert!(e.contains(want), "{e}");
    }
    assert!(!d.join("x.o").exists());
}

#[test]
fn input_errors_name_file_and_offset() {
    let d = tmpdir("inputs");
    let good = compile312("x = (1, 'two', 3.0)\n", "m");
    // Missing file.
    let e = emit_fails(d, &["nope.marshal:m"]);
    assert!(e.contains("nope.marshal: cannot read"), "{e}");
    // No colon.
    let e = emit_fails(d, &["nope.marshal"]);
    assert!(e.contains("expected FILE:MODNAME"), "{e}");
    // Bad module name.
    std::fs::write(d.join("m.marshal"), &good).unwrap();
    let e = emit_fails(d, &["m.marshal:1bad"]);
    assert!(e.contains("invalid module name '1bad'"), "{e}");
    // Truncated marshal: every proper prefix fails cleanly, naming a byte.
    for cut in [1, 5, good.len() / 2, good.len() - 1] {
        std::fs::write(d.join("t.marshal"), &good[..cut]).unwrap();
        let e = emit_fails(d, &["t.marshal:m"]);
        assert!(e.contains("t.marshal: byte "), "{e}");
        assert!(e.contains("truncated"), "{e}");
    }
    // Unknown type code at byte 0.
    std::fs::write(d.join("u.marshal"), b"\x01").unwrap();
    let e = emit_fails(d, &["u.marshal:m"]);
    assert!(
        e.contains("u.marshal: byte 0: module m: unknown marshal type code 0x01"),
        "{e}"
    );
    // A top-level object that is not code.
    std::fs::write(d.join("i.marshal"), b"i\x01\x00\x00\x00").unwrap();
    let e = emit_fails(d, &["i.marshal:m"]);
    assert!(
        e.contains("expected a code object at the top level, found int"),
        "{e}"
    );
    // .pyc of another version.
    let mut pyc = vec![0xa7, 0x0d, b'\r', b'\n'];
    pyc.extend([0; 12]);
    pyc.extend(&good);
    std::fs::write(d.join("m.pyc"), &pyc).unwrap();
    let e = emit_fails(d, &["m.pyc:m"]);
    assert!(
        e.contains("m.pyc: byte 0: pyc magic 3495 (CPython 3.11) does not match --python 3.12"),
        "{e}"
    );
    // Malformed header: the offset points at the bad number.
    let h = "/* Auto-generated by Programs/_freeze_module.py */\nconst unsigned char _Py_M__m[] = {\n    227,0,999,\n};\n";
    std::fs::write(d.join("m.h"), h).unwrap();
    let e = emit_fails(d, &["m.h:m"]);
    let at = h.find("999").unwrap();
    assert!(
        e.contains(&format!(
            "m.h: byte {at}: malformed frozen header: byte value 999"
        )),
        "{e}"
    );
    // A header whose data is corrupt marshal: the offset is in the header's text.
    let h = "/* Auto-generated by Programs/_freeze_module.py */\nconst unsigned char _Py_M__m[] = {\n    1,\n};\n";
    std::fs::write(d.join("c.h"), h).unwrap();
    let e = emit_fails(d, &["c.h:m"]);
    assert!(
        e.contains(&format!(
            "c.h: byte {}: module m: unknown marshal type code",
            h.find("1,").unwrap()
        )),
        "{e}"
    );
    assert!(!d.join("x.o").exists());
}

#[test]
fn compile_with_refuses_other_versions() {
    let d = tmpdir("compile");
    std::fs::write(d.join("m.py"), "x = 1\n").unwrap();
    let py311 = build(BuildId::Pyenv311).python.to_str().unwrap();
    let e = emit_fails(d, &["--compile-with", py311, "m.py:m"]);
    assert!(e.contains("interpreter is CPython 3.11.7, not 3.12"), "{e}");
    let e = emit_fails(d, &["m.py:m"]);
    assert!(e.contains("--compile-with"), "{e}");
    std::fs::write(d.join("bad.py"), "def (:\n").unwrap();
    let py312 = python312();
    let e = emit_fails(
        d,
        &["--compile-with", py312.to_str().unwrap(), "bad.py:bad"],
    );
    assert!(e.contains("bad.py: line 1"), "{e}");
    // And the same source compiles when the interpreter matches.
    emit_ok(
        d,
        "x.o",
        &["--compile-with", py312.to_str().unwrap(), "m.py:m"],
    );
}

#[test]
fn errors_leave_existing_output_untouched() {
    let d = tmpdir("atomic");
    std::fs::write(d.join("out.o"), b"previous contents").unwrap();
    std::fs::write(d.join("t.marshal"), b"c\x00\x00").unwrap();
    fails(&mut emit_cmd(d, "out.o", &["t.marshal:m"]));
    assert_eq!(
        std::fs::read(d.join("out.o")).unwrap(),
        b"previous contents"
    );
    // An unwritable output (a directory in the way) is a clean error too.
    std::fs::write(d.join("m.marshal"), compile312("x = 1\n", "m")).unwrap();
    std::fs::create_dir_all(d.join("dir.o")).unwrap();
    let e = fails(&mut emit_cmd(d, "dir.o", &["m.marshal:m"]));
    assert!(e.contains("dir.o: output is a folder"), "{e}");
    assert!(
        d.join("dir.o").is_dir(),
        "the directory in the way must stay"
    );
    let e = fails(&mut emit_cmd(d, "no/such/dir/x.o", &["m.marshal:m"]));
    assert!(
        e.contains("output folder no/such/dir does not exist"),
        "{e}"
    );
    // relink refuses alike, before any work (it used to create the folder).
    let py = python312();
    let relink = [
        "relink",
        "--python",
        py.to_str().unwrap(),
        "-o",
        "no/such/dir/py",
    ];
    let e = fails(bin().current_dir(d).args(relink));
    assert!(
        e.contains("output folder no/such/dir does not exist"),
        "{e}"
    );
    assert!(!d.join("no").exists(), "relink created the missing folder");
    let no_tmp = || {
        let names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.ends_with(".tmp")),
            "temporary file left behind: {names:?}"
        );
    };
    no_tmp();
    // A successful run replaces it (a reader of the old file keeps the
    // old contents), twice in a row, leaving no temporary file.
    let mut reader = std::fs::File::open(d.join("out.o")).unwrap();
    for _ in 0..2 {
        emit_ok(d, "out.o", &["m.marshal:m"]);
        assert_eq!(&std::fs::read(d.join("out.o")).unwrap()[..4], b"\x7fELF");
    }
    let mut old = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut old).unwrap();
    assert_eq!(old, b"previous contents");
    no_tmp();
    // A symbolic link as the output is replaced by the file, as rename does.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("out.o", d.join("link.o")).unwrap();
        emit_ok(d, "link.o", &["m.marshal:m"]);
        let meta = std::fs::symlink_metadata(d.join("link.o")).unwrap();
        assert!(meta.file_type().is_file());
    }
}

/// Frozen headers as CPython's freezer writes them, from marshal bytes.
fn write_header(path: &Path, symbol: &str, data: &[u8]) {
    std::fs::write(path, support::frozen_header(symbol, data)).unwrap();
}

#[test]
fn headers_pyc_marshal_and_archive_agree_and_output_is_reproducible() {
    let ar = &build(BuildId::Pyenv312).archive;
    let layout = support::objgraph::model("3.12").l;
    let mods = pyfreeze_obj::input::archive::read(ar, layout).unwrap();
    assert_eq!(mods.len(), 23, "pyenv 3.12.1 deep-freezes 23 modules");
    let d = tmpdir("agree");
    let (mut headers, mut pycs, mut raws) = (vec![], vec![], vec![]);
    for (i, m) in mods.iter().enumerate() {
        let data = &m
            .code
            .as_ref()
            .expect("3.12 frozen.o keeps marshal bytes")
            .data;
        let mangled = m.name.replace('.', "_");
        write_header(&d.join(format!("{}.h", m.name)), &mangled, data);
        headers.push(format!("{}.h:{}", m.name, m.name));
        let mut pyc = vec![0xcb, 0x0d, b'\r', b'\n'];
        pyc.extend([0; 12]);
        pyc.extend(data);
        std::fs::write(d.join(format!("{i}.pyc")), pyc).unwrap();
        pycs.push(format!("{i}.pyc:{}", m.name));
        std::fs::write(d.join(format!("{i}.marshal")), data).unwrap();
        raws.push(format!("{i}.marshal:{}", m.name));
    }
    // frozen_only's accessor is named after the module name CPython's
    // build gives it, not its frozen name (__hello_only__).
    let fix = |v: &mut Vec<String>| {
        let last = v.last_mut().unwrap();
        *last = last.replace(":__hello_only__", ":frozen_only");
    };
    fix(&mut headers);
    fix(&mut pycs);
    fix(&mut raws);
    let run = |dir: &Path, out: &str, args: &[String]| {
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        emit_ok(dir, out, &args);
        std::fs::read(dir.join(out)).unwrap()
    };
    let from_headers = run(d, "h.o", &headers);
    let from_pyc = run(d, "p.o", &pycs);
    let from_raw = run(d, "r.o", &raws);
    let from_archive = run(
        d,
        "a.o",
        &["--modules-from".to_string(), ar.display().to_string()],
    );
    assert!(
        from_headers == from_pyc,
        "headers and .pyc inputs give different objects"
    );
    assert!(
        from_headers == from_raw,
        "headers and .marshal inputs give different objects"
    );
    assert!(
        from_headers == from_archive,
        "headers and --modules-from give different objects"
    );
    // Reproducible: again, from another working directory, with absolute paths.
    let other = tmpdir("agree-other");
    let abs: Vec<String> = headers
        .iter()
        .map(|h| format!("{}/{h}", d.display()))
        .collect();
    let again = run(other, "h.o", &abs);
    assert!(
        again == from_headers,
        "output depends on the working directory or the run"
    );
}

#[test]
fn every_target_gets_its_object_format() {
    let d = tmpdir("formats");
    std::fs::write(d.join("m.marshal"), compile312("x = 1\n", "m")).unwrap();
    // (target, leading bytes of the object)
    const ELF: &[u8] = b"\x7fELF\x02\x01";
    const MACHO_X64: &[u8] = &[0xcf, 0xfa, 0xed, 0xfe, 0x07, 0x00, 0x00, 0x01];
    const MACHO_A64: &[u8] = &[0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0x00, 0x00, 0x01];
    let (coff_x64, coff_a64): (&[u8], &[u8]) = (&[0x64, 0x86], &[0x64, 0xaa]);
    let cases: [(&str, &[u8]); 12] = [
        ("x86_64-w64-mingw32", coff_x64),
        ("x86_64-apple-macosx11.0", MACHO_X64),
        ("x86_64-linux", ELF),
        ("x86_64-unknown-linux-gnu", ELF),
        ("aarch64-linux", ELF),
        ("aarch64-unknown-linux-gnu", ELF),
        ("x86_64-macos", MACHO_X64),
        ("aarch64-apple-darwin", MACHO_A64),
        ("x86_64-windows", coff_x64),
        ("x86_64-pc-windows-gnu", coff_x64),
        ("aarch64-windows", coff_a64),
        ("aarch64-pc-windows-msvc", coff_a64),
    ];
    for (t, magic) in cases {
        // Outside Linux the runtime's layout is not known: refused unless asked.
        let linux = t.contains("linux");
        if !linux {
            let e = emit_fails(d, &["--target", t, "m.marshal:m"]);
            assert!(
                e.contains("only known for Linux builds") && e.contains("--assume-linux-runtime"),
                "{t}: {e}"
            );
        }
        let args: &[&str] = if linux {
            &["--target", t, "m.marshal:m"]
        } else {
            &["--target", t, "--assume-linux-runtime", "m.marshal:m"]
        };
        emit_ok(d, "t.o", args);
        let obj = std::fs::read(d.join("t.o")).unwrap();
        assert!(
            obj.starts_with(magic),
            "{t}: object starts with {:02x?}",
            &obj[..8]
        );
    }
}

#[test]
fn depfile_lists_every_input() {
    let d = tmpdir("depfile");
    std::fs::write(d.join("a b.marshal"), compile312("x = 1\n", "a")).unwrap();
    std::fs::write(d.join("m.py"), "y = 2\n").unwrap();
    let py = python312();
    let py_str = py.to_str().unwrap();
    let depfile = ["--depfile", "out.d"];
    emit_ok(
        d,
        "out.o",
        &[
            &depfile[..],
            &["--compile-with", py_str, "a b.marshal:a", "m.py:m"],
        ]
        .concat(),
    );
    let dep = std::fs::read_to_string(d.join("out.d")).unwrap();
    let rule: String = dep.split("\n\n").next().unwrap().replace("\\\n", " ");
    let (target, deps) = rule.split_once(':').unwrap();
    assert_eq!(target, "out.o");
    for want in [
        "a\\ b.marshal",
        "m.py",
        py_str,
        env!("CARGO_BIN_EXE_pyfreeze-obj"),
    ] {
        assert!(
            format!("{deps} ").contains(&format!(" {want} ")),
            "{want} missing from {dep}"
        );
    }
    // Each dependency also has an empty rule (deleting one keeps make working).
    assert!(dep.contains("\nm.py:\n"), "{dep}");
    // Errors leave no depfile behind either.
    std::fs::remove_file(d.join("out.d")).unwrap();
    fails(&mut emit_cmd(
        d,
        "out.o",
        &[&depfile[..], &["nope.marshal:n"]].concat(),
    ));
    assert!(!d.join("out.d").exists());
}

#[test]
fn linux_without_glibc_is_refused_unless_asked() {
    let d = tmpdir("musl");
    std::fs::write(d.join("m.marshal"), compile312("x = 1\n", "m")).unwrap();
    for t in ["x86_64-unknown-linux-musl", "aarch64-linux-android"] {
        let e = emit_fails(d, &["--target", t, "m.marshal:m"]);
        assert!(
            e.contains("only known for Linux builds with glibc"),
            "{t}: {e}"
        );
    }
    let musl = ["--target", "x86_64-unknown-linux-musl"];
    emit_ok(
        d,
        "t.o",
        &[&musl[..], &["--assume-linux-runtime", "m.marshal:m"]].concat(),
    );
}

/// Issue #15: no silent mix of builds or versions. An archive of another
/// version than --python, a --compile-with of another release than the
/// archive's, and a failing interpreter each give one line naming what
/// differs.
#[test]
fn mismatched_archives_and_interpreters_are_refused() {
    let d = tmpdir("mismatch");
    let (p311, p312, deb) = (
        build(BuildId::Pyenv311),
        build(BuildId::Pyenv312),
        build(BuildId::Debian311),
    );
    // `emit --python X.Y -o x.o ARGS...` fails with a message containing
    // every one of `want`.
    let refused = |xy: &str, args: &[&std::ffi::OsStr], want: &[&str]| {
        let e = fails(
            bin()
                .current_dir(d)
                .args(["emit", "--python", xy, "-o", "x.o"])
                .args(args),
        );
        assert!(want.iter().all(|w| e.contains(w)), "{want:?}: {e}");
    };
    let (ar, cw): (&std::ffi::OsStr, &std::ffi::OsStr) =
        ("--modules-from".as_ref(), "--compile-with".as_ref());
    fn os(p: &Path) -> &std::ffi::OsStr {
        p.as_os_str()
    }
    // --python 3.11 with a 3.12 archive, and the other way round.
    refused(
        "3.11",
        &[cw, os(&p311.python), ar, os(&p312.archive)],
        &["archive is CPython 3.12.1, not 3.11 (--python 3.11)"],
    );
    refused(
        "3.12",
        &[ar, os(&deb.archive)],
        &["archive is CPython 3.11.2, not 3.12 (--python 3.12)"],
    );
    // Debian's 3.11.2 archive compiled by pyenv's 3.11.7: both named.
    refused(
        "3.11",
        &[cw, os(&p311.python), ar, os(&deb.archive)],
        &["--compile-with is CPython 3.11.7", "is 3.11.2"],
    );
    // The archive's modules need compiling: the message says with what.
    refused(
        "3.11",
        &[ar, os(&deb.archive)],
        &["keeps no marshal bytes", "--compile-with"],
    );
    // A .py input without --compile-with names the file and the version.
    std::fs::write(d.join("m.py"), "x = 1\n").unwrap();
    refused(
        "3.11",
        &["m.py:m".as_ref()],
        &["m.py: a .py input needs --compile-with", "3.11"],
    );
    // --stdlib must be a stdlib.
    refused(
        "3.11",
        &[
            "--stdlib".as_ref(),
            ".".as_ref(),
            cw,
            os(&deb.python),
            ar,
            os(&deb.archive),
        ],
        &["--stdlib: not a CPython standard library folder"],
    );
    // A failing interpreter (a launcher explaining itself over several
    // lines) is summarized on the one line, not cut to its last line.
    let shim = d.join("python-shim");
    std::fs::write(&shim, "#!/bin/sh\necho 'pyenv: python3.11: command not found' >&2\necho >&2\necho 'The `python3.11` command exists in these Python versions:' >&2\necho '  3.11.7' >&2\nexit 127\n").unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    refused(
        "3.11",
        &["m.py:m".as_ref(), cw, os(&shim)],
        &["command not found", "3.11.7"],
    );
    // Traced code that exits says so, with its status.
    refused(
        "3.12",
        &[
            "--trace".as_ref(),
            "raise SystemExit(3)".as_ref(),
            cw,
            os(&p312.python),
            ar,
            os(&p312.archive),
        ],
        &["exited with status 3 without a message"],
    );
    // clap's hint survives on the one line.
    let e = fails(bin().args(["emit", "--pythn", "3.12", "-o", "x.o"]));
    assert!(
        e.contains("'--pythn'") && e.contains("a similar argument exists: '--python'"),
        "{e}"
    );
}
