//! CPython 3.13 (pyenv's 3.13.0): the layout table, the object, the
//! relinked interpreter.
//!
//! 3.13 removed deep-freezing; the object replaces `frozen.o`, and the link
//! wraps `PyMarshal_ReadObjectFromString` (and the runtime's code and
//! interned-string teardown) so that loading a frozen module returns its
//! static code object.
//!
//! A missing reference build or tool fails the tests with what to install;
//! nothing is skipped.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const PYENV: &str = "3.13.0";
const TABLE: &str = "src/layout/py313.rs";

fn python() -> PathBuf {
    support::pyenv_python(PYENV)
}

fn archive() -> PathBuf {
    support::pyenv_archive(PYENV)
}

fn ours() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pyfreeze-obj"))
}

/// The first lines where `want` and `got` differ.
fn first_difference(want: &str, got: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let i = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    format!(
        "line {}:\n- {}\n+ {}",
        i + 1,
        a.get(i).unwrap_or(&"<end>"),
        b.get(i).unwrap_or(&"<end>")
    )
}

// ---------------------------------------------------------------------------
// The layout table

/// The committed table is byte for byte what `gen-layout` writes from
/// pyenv's archive, headers and interpreter, and compiles to the value the
/// generator derives. (The generator itself checks its quickening facts
/// against the interpreter's own quickened bytecode.)
#[test]
fn layout_table_is_what_gen_layout_writes() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE);
    let want = std::fs::read_to_string(&committed).unwrap();
    let out = ours()
        .arg("gen-layout")
        .arg("--archive")
        .arg(archive())
        .arg("--python")
        .arg(python())
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gen-layout failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        got == want,
        "{TABLE} is not what gen-layout writes for pyenv {PYENV} (regenerate it with \
         `pyfreeze-obj gen-layout --archive {} -o {TABLE}`): {}",
        archive().display(),
        first_difference(&want, &got)
    );
    let g = pyfreeze_obj::genlayout::generate(&pyfreeze_obj::genlayout::Options {
        archive: archive(),
        python: Some(python()),
        include: None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        format!("{:#?}", g.layout),
        format!("{:#?}", pyfreeze_obj::layout::PY313)
    );
}

fn copy_tree(from: &Path, to: &Path) {
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

/// The quickening facts come from the headers and are checked against the
/// interpreter: a counter macro that disagrees with what the interpreter's
/// constructor writes is refused in one line, naming the bytecode.
#[test]
fn gen_layout_checks_quickening_against_the_interpreter() {
    let dir = support::TempDir::new("py313-gen");
    let include = dir.path().join("include");
    let installed = python()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("include/python3.13");
    copy_tree(&installed, &include);
    let h = include.join("internal/pycore_backoff.h");
    let text = std::fs::read_to_string(&h).unwrap();
    let edited = text.replace(
        "#define JUMP_BACKWARD_INITIAL_VALUE 16",
        "#define JUMP_BACKWARD_INITIAL_VALUE 17",
    );
    assert_ne!(
        text,
        edited,
        "{} has no JUMP_BACKWARD_INITIAL_VALUE 16",
        h.display()
    );
    std::fs::write(&h, edited).unwrap();
    let out = ours()
        .arg("gen-layout")
        .arg("--archive")
        .arg(archive())
        .arg("--python")
        .arg(python())
        .arg("--include")
        .arg(&include)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("quickening differs from the interpreter's") && !err.contains("panicked"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// The build, and interpreters linked from it

/// pyenv's 3.13.0 installation, as its sysconfig describes it.
struct Build {
    prefix: PathBuf,
    libpl: PathBuf,
    /// `LINKFORSHARED LIBS SYSLIBS LOCALMODLIBS` (and LDFLAGS), split.
    flags: Vec<String>,
}

fn build() -> &'static Build {
    static B: OnceLock<Build> = OnceLock::new();
    B.get_or_init(|| {
        let out = support::stdout_of(Command::new(python()).args([
            "-I",
            "-c",
            "import sys, sysconfig as s\n\
             print(sys.prefix)\n\
             print(s.get_config_var('LIBPL'))\n\
             print(' '.join(s.get_config_var(k) or '' for k in \
             ('LDFLAGS', 'LINKFORSHARED', 'LIBS', 'SYSLIBS', 'LOCALMODLIBS')))",
        ]));
        let text = String::from_utf8(out).unwrap();
        let l: Vec<&str> = text.lines().collect();
        assert_eq!(l.len(), 3, "unexpected sysconfig output: {text}");
        for tool in ["cc", "ar"] {
            let ok = Command::new(tool).arg("--version").output().is_ok();
            assert!(ok, "{tool} is missing: install gcc and binutils");
        }
        Build {
            prefix: l[0].into(),
            libpl: l[1].into(),
            flags: l[2].split_whitespace().map(String::from).collect(),
        }
    })
}

/// A fresh folder under cargo's per-target tmp dir (kept for inspection).
fn work_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("py313")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run to completion; panic with the command and its output unless it
/// exits 0. Its standard output.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command running interpreter `exe` of this build: its PYTHONHOME, no
/// other PYTHON* variable, an empty working folder.
fn interp(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PYTHON") {
            cmd.env_remove(k);
        }
    }
    let cwd = exe.with_extension("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    cmd.env("PYTHONHOME", &build().prefix).current_dir(cwd);
    cmd
}

const HELLO: &str = "import __hello__; __hello__.main()";

/// The acceptance's command-line tool workload.
const CLI: &str = "import argparse, json, re, typing, dataclasses, pathlib, logging, \
                   subprocess, tomllib, email.message";

/// `pyfreeze-obj relink` of pyenv's 3.13.0, with `extra` arguments, once per
/// test binary and set.
fn relinked(set: &'static str, extra: &[&str]) -> PathBuf {
    static DONE: OnceLock<std::sync::Mutex<std::collections::HashMap<&str, PathBuf>>> =
        OnceLock::new();
    let mut done = DONE.get_or_init(Default::default).lock().unwrap();
    done.entry(set)
        .or_insert_with(|| {
            let dir = work_dir(&format!("relink-{set}"));
            let exe = dir.join("python");
            run_ok(
                ours()
                    .arg("relink")
                    .arg("--python")
                    .arg(python())
                    .args(extra)
                    .arg("-o")
                    .arg(&exe),
            );
            exe
        })
        .clone()
}

fn relinked_stock() -> PathBuf {
    relinked("stock", &[])
}

fn relinked_cli() -> PathBuf {
    relinked("cli", &["--trace", CLI])
}

/// Interpreters linked as CPython links its own (every object of the
/// library, not only the archive members something references, so that
/// extension modules such as `_testinternalcapi` and `_interpreters` load):
/// `stock` from the unmodified archive, `ours` with our object for the
/// stock set plus the CLI set, frozen.o removed and the contract's link
/// flags. Once per test binary.
struct FullLinks {
    stock: PathBuf,
    ours: PathBuf,
}

fn full_links() -> &'static FullLinks {
    static L: OnceLock<FullLinks> = OnceLock::new();
    L.get_or_init(|| {
        let b = build();
        let dir = work_dir("full");
        let obj = dir.join("ours.o");
        run_ok(
            ours()
                .args(["emit", "--python", "3.13", "--modules-from"])
                .arg(archive())
                .arg("--compile-with")
                .arg(python())
                .args(["--trace", CLI, "-o"])
                .arg(&obj),
        );
        let lib = dir.join("libpython3.13.a");
        std::fs::copy(archive(), &lib).unwrap();
        run_ok(Command::new("ar").arg("d").arg(&lib).arg("frozen.o"));
        let link = |out: &Path, objs: &[&Path], archive: &Path, extra: &[String]| {
            run_ok(
                Command::new("cc")
                    .arg("-o")
                    .arg(out)
                    .arg(b.libpl.join("python.o"))
                    .args(objs)
                    .arg("-Wl,--whole-archive")
                    .arg(archive)
                    .arg("-Wl,--no-whole-archive")
                    .args(&b.flags)
                    .args(extra),
            );
        };
        let stock = dir.join("python-stock");
        link(&stock, &[], &archive(), &[]);
        let ours_exe = dir.join("python-ours");
        let wrap = pyfreeze_obj::version::PY313.contract.entry.link_flags();
        link(&ours_exe, &[&obj], &lib, &wrap);
        FullLinks {
            stock,
            ours: ours_exe,
        }
    })
}

// ---------------------------------------------------------------------------
// Relinked interpreters

/// `relink` (the stock set, and the CLI set traced) gives interpreters
/// that print Hello world, and run the CLI workload as the installed
/// interpreter does.
#[test]
fn relinked_interpreters_print_hello_world() {
    for exe in [relinked_stock(), relinked_cli()] {
        assert_eq!(run_ok(interp(&exe).args(["-c", HELLO])), "Hello world!\n");
        let code = format!(
            "{CLI}\nimport sys\nprint(json.dumps({{'a': [1, None]}}), \
             re.sub('b+', 'x', 'abbbc'), tomllib.loads('a = 1'), \
             argparse.ArgumentParser(prog='p').parse_args(['x'] if False else []))"
        );
        let want = run_ok(interp(&python()).args(["-c", &code]));
        assert_eq!(run_ok(interp(&exe).args(["-c", &code])), want);
    }
}

fn check_static(exe: &Path, min_frozen: usize) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py313_support/check_static.py");
    let work = exe.parent().unwrap();
    let out = run_ok(
        interp(exe)
            .env("PY313_WORK", work)
            .env("PY313_MIN_FROZEN", min_frozen.to_string())
            .arg(&script),
    );
    assert!(out.starts_with("ok "), "{out}");
    out
}

/// Every frozen module's code (and every code object inside it) is one
/// static, immortal object in the executable's image, equal to
/// `marshal.loads` of its bytes field by field, quickened as the runtime's
/// constructor does, its names interned; a copy of the bytes, and another
/// interpreter, get the runtime's unmarshalling.
#[test]
fn frozen_code_is_static_and_equal_to_its_marshal_bytes() {
    let out = check_static(&relinked_stock(), 25);
    assert!(out.contains("subinterpreter: unavailable"), "{out}");
    check_static(&relinked_cli(), 100);
    let out = check_static(&full_links().ours, 100);
    assert!(out.contains("subinterpreter: checked"), "{out}");
}

/// Where the runtime's constructor would build other code objects than
/// the marshal bytes say (`-X no_debug_ranges` drops column positions),
/// the load is the runtime's: the same positions as the installed
/// interpreter gives.
#[test]
fn no_debug_ranges_falls_back_to_unmarshalling() {
    let code = "import _imp\n\
                data = _imp.find_frozen('posixpath', withdata=True)[0]\n\
                a = _imp.get_frozen_object('posixpath', data)\n\
                b = _imp.get_frozen_object('posixpath', data)\n\
                print(a is b, sorted({type(p[2]).__name__ for p in a.co_positions()}))";
    let want = run_ok(interp(&python()).args(["-X", "no_debug_ranges", "-c", code]));
    assert_eq!(want, "False ['NoneType']\n");
    let got = run_ok(interp(&relinked_stock()).args(["-X", "no_debug_ranges", "-c", code]));
    assert_eq!(got, want);
    let got = run_ok(interp(&relinked_stock()).args(["-c", code]));
    assert!(got.starts_with("True [") && got.contains("'int'"), "{got}");
}
