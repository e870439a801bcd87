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
/// stock set (as the tests expect: which modules are frozen is what some
/// test), frozen.o removed and the contract's link flags. Once per test
/// binary.
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
                .arg("-o")
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
    let out = check_static(&full_links().ours, 25);
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

// ---------------------------------------------------------------------------
// Teardown: an embedding program, three init/fini cycles

/// `tests/lazy_support/embed.c` (three `Py_Initialize`/`Py_FinalizeEx`
/// cycles running the same code) linked with our object (the stock set
/// plus json and argparse) in place of `python.o`: every cycle starts from
/// pristine code objects, though cycle 1 specialized them and hung weak
/// references (one leaked), cached attributes, `co_extra` and monitoring
/// data on them (`tests/py313_support/embed_cycle.py`); our static strings
/// are the interned ones in every cycle. Under valgrind's memcheck (with
/// the system allocator), nothing frees or touches memory it should not.
#[test]
fn embed_three_cycles_see_pristine_code() {
    let b = build();
    let dir = work_dir("embed");
    let obj = dir.join("ours.o");
    run_ok(
        ours()
            .args(["emit", "--python", "3.13", "--modules-from"])
            .arg(archive())
            .arg("--compile-with")
            .arg(python())
            .args(["--trace", "import json, argparse", "-o"])
            .arg(&obj),
    );
    let lib = dir.join("libpython3.13.a");
    std::fs::copy(archive(), &lib).unwrap();
    run_ok(Command::new("ar").arg("d").arg(&lib).arg("frozen.o"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let main_o = dir.join("embed.o");
    run_ok(
        Command::new("cc")
            .args(["-c", "-O1", "-Wall", "-Werror"])
            .arg(format!(
                "-I{}",
                b.prefix.join("include/python3.13").display()
            ))
            .arg(manifest.join("tests/lazy_support/embed.c"))
            .arg("-o")
            .arg(&main_o),
    );
    let exe = dir.join("embed");
    run_ok(
        Command::new("cc")
            .arg("-o")
            .arg(&exe)
            .arg(&main_o)
            .arg(&obj)
            .arg("-Wl,--whole-archive")
            .arg(&lib)
            .arg("-Wl,--no-whole-archive")
            .args(&b.flags)
            .args(pyfreeze_obj::version::PY313.contract.entry.link_flags()),
    );
    let code =
        std::fs::read_to_string(manifest.join("tests/py313_support/embed_cycle.py")).unwrap();
    let l = pyfreeze_obj::layout::PY313.code.clone();
    let list = |v: &[pyfreeze_obj::layout::Field]| {
        v.iter()
            .map(|f| f.off.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let run = |cmd: &mut Command, state: &str| {
        cmd.env("PY313_RUNTIME_STATE", list(l.runtime_state))
            .env("PY313_SCALARS", list(l.runtime_scalars))
            .env("PY313_EMBED_STATE", dir.join(state))
            .arg(&code);
        run_ok(cmd)
    };
    let out = run(&mut interp(&exe), "cycle1.marshal");
    for c in 1..=3 {
        assert!(out.contains(&format!("cycle {c} ok:")), "{out}");
        assert!(
            out.contains(&format!("embed: cycle {c} finalized")),
            "{out}"
        );
    }
    // Cycle 1 did hang state on every kind of runtime-state field but the
    // ones this build never sets.
    for (f, r) in l.runtime_state.iter().zip(l.release) {
        if *r != pyfreeze_obj::layout::Release::Unused {
            assert!(
                out.contains(&format!(" {}", f.off)) || out.contains(&format!("[{}", f.off)),
                "cycle 1 never set the field at {}: {out}",
                f.off
            );
        }
    }
    let valgrind = Command::new("valgrind").arg("--version").output();
    assert!(
        valgrind.is_ok_and(|o| o.status.success()),
        "valgrind is missing: install it (`apt-get install valgrind`)"
    );
    let mut cmd = Command::new("valgrind");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PYTHON") {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "--tool=memcheck",
        "--leak-check=no",
        "--error-exitcode=99",
        "-q",
    ])
    .arg(&exe)
    .env("PYTHONHOME", &b.prefix)
    .env("PYTHONMALLOC", "malloc")
    .current_dir(&dir);
    let out = run(&mut cmd, "memcheck.marshal");
    assert!(out.contains("cycle 3 ok:"), "{out}");
}

// ---------------------------------------------------------------------------
// CPython's own tests (slow tier)

/// CPython's test modules of the acceptance.
const SUITE: &[&str] = &[
    "test_frozen",
    "test_code",
    "test_importlib",
    "test_site",
    "test_sys",
    "test_inspect",
    "test_traceback",
    "test_embed",
];

/// `python -m test -j2 --junit-xml` of `SUITE` with interpreter `exe`:
/// each test case's outcome, and regrtest's totals line.
fn run_suite(exe: &Path, tag: &str) -> (std::collections::BTreeMap<String, String>, String) {
    let dir = work_dir(&format!("suite-{tag}"));
    let xml = dir.join("junit.xml");
    let out = interp(exe)
        .current_dir(&dir)
        .args(["-m", "test", "-j2", "--timeout=900", "--junit-xml"])
        .arg(&xml)
        .args(SUITE)
        .output()
        .unwrap();
    // Not required to exit 0: a test may fail on the stock link as well.
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(xml.is_file(), "{tag}: regrtest wrote no junit file:\n{log}");
    let summary = run_ok(
        Command::new(python())
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/relink_support/junit_summary.py"),
            )
            .arg(&xml),
    );
    let cases = summary
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let totals = log
        .lines()
        .find(|l| l.starts_with("Total tests:"))
        .unwrap_or_else(|| panic!("{tag}: no totals line:\n{log}"))
        .to_string();
    (cases, totals)
}

/// `SUITE` gives the same outcome for every test case with our object as
/// with the stock link of the same archive (both linked as CPython links
/// its interpreter, so that the extension modules the tests need load).
#[test]
fn slow_cpython_tests_as_stock() {
    let l = full_links();
    let (stock, stock_totals) = run_suite(&l.stock, "stock");
    let (ours, ours_totals) = run_suite(&l.ours, "ours");
    assert!(stock.len() > 2000, "only {} test cases ran", stock.len());
    let differ: Vec<String> = stock
        .iter()
        .filter(|(k, v)| ours.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: stock {v}, ours {:?}", ours.get(k)))
        .chain(
            (ours.keys())
                .filter(|k| !stock.contains_key(*k))
                .map(|k| format!("{k}: only ours")),
        )
        .collect();
    assert!(differ.is_empty(), "outcomes differ:\n{}", differ.join("\n"));
    assert_eq!(ours_totals, stock_totals);
    eprintln!("CPython 3.13 suite, stock and ours: {ours_totals}");
}

// ---------------------------------------------------------------------------
// Refusals

/// A copy of the 3.13 archive with `byte` written at `delta` bytes into
/// symbol `sym` of member `member`.
fn patched_archive(dir: &Path, member: &str, sym: &str, delta: u64, byte: u8) -> PathBuf {
    use object::{Object, ObjectSection, ObjectSymbol};
    let mut data = std::fs::read(archive()).unwrap();
    let at = {
        let ar = object::read::archive::ArchiveFile::parse(&*data).unwrap();
        let m = ar
            .members()
            .map(Result::unwrap)
            .find(|m| m.name() == member.as_bytes())
            .unwrap_or_else(|| panic!("no {member}"));
        let (start, size) = m.file_range();
        // A copy: object files want their alignment, archive members have 2.
        let bytes =
            pyfreeze_obj::dwarf::Aligned::new(&data[start as usize..(start + size) as usize]);
        let obj = object::File::parse(bytes.bytes()).unwrap();
        let s = obj
            .symbol_by_name(sym)
            .unwrap_or_else(|| panic!("no {sym}"));
        let sec = obj.section_by_index(s.section_index().unwrap()).unwrap();
        start + sec.file_range().unwrap().0 + (s.address() - sec.address()) + delta
    };
    data[at as usize] = byte;
    let out = dir.join(format!("{member}-{sym}-{delta}.a"));
    std::fs::write(&out, data).unwrap();
    out
}

/// An archive the table is not right for (another build's runtime or
/// quickening) is refused in one line naming what differs; `--eager`,
/// and emitting without the tables, are refused for 3.13.
#[test]
fn builds_the_table_is_not_for_are_refused() {
    let dir = work_dir("refusals");
    let l = &pyfreeze_obj::layout::PY313;
    let deopt = l.code.quicken.as_ref().unwrap().deopt[0];
    let main = l.interp.main.field.off as u64;
    let next = l.interp.next_func_version.unwrap().field.off as u64;
    for (ar, want) in [
        (
            patched_archive(&dir, "compile.o", "_PyOpcode_Deopt", deopt.0 as u64, 0),
            "compile.o's _PyOpcode_Deopt (how bytecode is quickened) differs from the table's",
        ),
        (
            patched_archive(&dir, "pylifecycle.o", "_PyRuntime", main + next, 7),
            "main interpreter's function version counter is not where the table says",
        ),
        (
            patched_archive(
                &dir,
                "pylifecycle.o",
                "_PyRuntime",
                l.runtime.small_ints as u64 + 16,
                9,
            ),
            "does not hold the small int -5 where the table says",
        ),
    ] {
        let out = ours()
            .args(["emit", "--python", "3.13", "--modules-from"])
            .arg(&ar)
            .arg("-o")
            .arg(dir.join("x.o"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(want) && err.contains(ar.to_str().unwrap()),
            "{err}"
        );
        assert!(
            err.contains("gen-layout") && !err.contains("panicked"),
            "{err}"
        );
    }
    let out = ours()
        .args(["relink", "--eager", "--python"])
        .arg(python())
        .arg("-o")
        .arg(dir.join("x"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no eager scheme"), "{err}");
    let header = dir.join("m.h");
    std::fs::write(&header, support::frozen_header("m", &[0xe3, 0, 0])).unwrap();
    let out = ours()
        .args(["emit", "--python", "3.13", "-o"])
        .arg(dir.join("x.o"))
        .arg(format!("{}:m", header.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("give --modules-from"), "{err}");
}
