//! CPython 3.13 (pyenv's 3.13.0, the matrix's `Pyenv313` row): the layout
//! table, the object in every format, the relinked interpreter.
//!
//! 3.13 removed deep-freezing; the object replaces `frozen.o`, and the link
//! wraps `PyMarshal_ReadObjectFromString` (and the runtime's per-interpreter
//! code teardown) so that loading a frozen module returns its static code
//! object.
//!
//! * The table is `gen-layout`'s output; its quickening facts are checked
//!   against the interpreter (a wrong counter macro is refused).
//! * `relink` (stock set, CLI set) prints Hello world and runs the CLI
//!   workload as the installed interpreter does; every frozen code object
//!   is static, immortal, equal to `marshal.loads` of its bytes and
//!   quickened as the runtime does (`tests/py313_support/check_static.py`),
//!   with the whole stdlib frozen too; copies of the bytes, pointers one
//!   byte off a module's bytes, other sizes, subinterpreters and
//!   `-X no_debug_ranges` get the runtime's unmarshalling.
//! * An embedding program survives three init/fini cycles with pristine
//!   code objects (`tests/py313_support/embed_cycle.py`), under memcheck too.
//! * Slow tier: CPython's test modules give the stock link's outcomes.
//! * Every target's data and read-only tables equal ELF x86_64's; the hooks
//!   use each architecture's offsets; the objects link into shared objects;
//!   output is reproducible; archives the table is not for are refused.
//!
//! A missing reference build or tool fails the tests with what to install;
//! nothing is skipped.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use support::builds::{build, Build, BuildId::Pyenv313, Scheme};
use support::{ours, run_ok, run_text, HELLO};

const TABLE: &str = "src/layout/py313.rs";

fn b() -> &'static Build {
    build(Pyenv313)
}

fn python() -> PathBuf {
    b().python.clone()
}

fn archive() -> PathBuf {
    b().archive.clone()
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
        "{TABLE} is not what gen-layout writes for {} (regenerate it with \
         `pyfreeze-obj gen-layout --archive {} -o {TABLE}`): {}",
        b().label,
        archive().display(),
        first_difference(&want, &got)
    );
    let g = pyfreeze_obj::genlayout::generate(&pyfreeze_obj::genlayout::Options {
        archive: archive(),
        python: Some(python()),
        include: None,
        types: None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        format!("{:#?}", g.layout),
        format!("{:#?}", pyfreeze_obj::layout::PY313)
    );
}

/// The quickening facts come from the headers and are checked against the
/// interpreter: a counter macro that disagrees with what the interpreter's
/// constructor writes is refused in one line, naming the bytecode.
#[test]
fn gen_layout_checks_quickening_against_the_interpreter() {
    let dir = support::TempDir::new("py313-gen");
    let include = dir.path().join("include");
    support::copy_tree(&b().include, &include);
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

/// A command running interpreter `exe` of this build: its PYTHONHOME, no
/// other PYTHON* variable, an empty working folder beside it.
fn interp(exe: &Path) -> Command {
    let cwd = exe.with_extension("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    b().python(exe, &cwd)
}

/// Standard output of `cmd`, which must succeed.
fn text(cmd: &mut Command) -> String {
    run_text(cmd)
}

/// `CC -o OUT python.o OBJS... -Wl,--whole-archive ARCHIVE
/// -Wl,--no-whole-archive <link flags> EXTRA`: every object of the library
/// linked, as CPython links its own interpreter (an archive link leaves out
/// members nothing references, which extension modules such as
/// `_testinternalcapi` and `_interpreters` need).
fn link_whole(out: &Path, main_o: &Path, objs: &[&Path], archive: &Path, extra: &[String]) {
    let b = b();
    run_ok(
        Command::new(b.cc)
            .arg("-o")
            .arg(out)
            .args(b.pie_flags())
            .arg(main_o)
            .args(objs)
            .arg("-Wl,--whole-archive")
            .arg(archive)
            .arg("-Wl,--no-whole-archive")
            .args(&b.link_flags)
            .args(extra),
    );
}

/// A copy of the archive without frozen.o (what our object replaces).
fn archive_without_frozen(dir: &Path) -> PathBuf {
    b().stripped_archive(dir, &b().archive, &["frozen.o"])
}

/// The link flags the 3.13 contract says the object needs.
fn wrap_flags() -> Vec<String> {
    pyfreeze_obj::version::PY313.contract.entry.link_flags()
}

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
            let dir = b().work_dir(&format!("relink-{set}"));
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
        let dir = b().work_dir("full");
        let obj = b().object_at(None, Scheme::Lazy).0;
        let lib = archive_without_frozen(&dir);
        let stock = dir.join("python-stock");
        link_whole(&stock, &b().python_o, &[], &b().archive, &[]);
        let ours_exe = dir.join("python-ours");
        link_whole(&ours_exe, &b().python_o, &[obj], &lib, &wrap_flags());
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
        assert_eq!(text(interp(&exe).args(["-c", HELLO])), "Hello world!\n");
        let code = format!(
            "{CLI}\nimport sys\nprint(json.dumps({{'a': [1, None]}}), \
             re.sub('b+', 'x', 'abbbc'), tomllib.loads('a = 1'), \
             argparse.ArgumentParser(prog='p').parse_args(['x'] if False else []))"
        );
        let want = text(interp(&python()).args(["-c", &code]));
        assert_eq!(text(interp(&exe).args(["-c", &code])), want);
    }
}

fn check_static(exe: &Path, min_frozen: usize) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py313_support/check_static.py");
    let work = exe.parent().unwrap();
    let out = text(
        interp(exe)
            .env("PY313_WORK", work)
            .env("PY313_MIN_FROZEN", min_frozen.to_string())
            .env(
                "PY313_VERSION_OFF",
                (pyfreeze_obj::layout::PY313.code.version.unwrap().off).to_string(),
            )
            .arg(&script),
    );
    assert!(out.starts_with("ok "), "{out}");
    out
}

/// Every frozen module's code (and every code object inside it) is one
/// static, immortal object in the executable's image, equal to
/// `marshal.loads` of its bytes field by field, quickened as the runtime's
/// constructor does, its names interned, its `co_version` unique among
/// live code objects; a copy of the bytes, and another interpreter, get
/// the runtime's unmarshalling.
#[test]
fn frozen_code_is_static_and_equal_to_its_marshal_bytes() {
    // relink links every member of the archive, as CPython does: the
    // `_interpreters` extension module loads and subinterpreters run.
    let out = check_static(&relinked_stock(), 25);
    assert!(out.contains("subinterpreter: checked"), "{out}");
    check_static(&relinked_cli(), 100);
    let out = check_static(&full_links().ours, 25);
    assert!(out.contains("subinterpreter: checked"), "{out}");
}

/// With the whole pure-Python stdlib frozen (600 modules and more: the
/// load wrapper's binary search over that many blobs takes ten probes),
/// every module's bytes, read in place, give its static code object, and
/// no pointer one byte past (or before) a blob's start, nor another size,
/// does (`check_static.py`, which also runs on the sets above).
#[test]
fn many_modules_load_statically_and_only_from_their_start() {
    let exe = relinked("stdlib", &["--freeze", "stdlib"]);
    let out = check_static(&exe, 600);
    assert!(
        out.contains("loads near their bytes the runtime's"),
        "{out}"
    );
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
    let want = text(interp(&python()).args(["-X", "no_debug_ranges", "-c", code]));
    assert_eq!(want, "False ['NoneType']\n");
    let got = text(interp(&relinked_stock()).args(["-X", "no_debug_ranges", "-c", code]));
    assert_eq!(got, want);
    let got = text(interp(&relinked_stock()).args(["-c", code]));
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
    let b = b();
    let dir = b.work_dir("embed");
    let obj = dir.join("ours.o");
    b.emit(&obj, b.target, &["--trace", "import json, argparse"]);
    let lib = archive_without_frozen(&dir);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let main_o = dir.join("embed.o");
    run_ok(
        Command::new(b.cc)
            .args(["-c", "-O1", "-Wall", "-Werror"])
            .arg(format!("-I{}", b.include.display()))
            .arg(manifest.join("tests/lazy_support/embed.c"))
            .arg("-o")
            .arg(&main_o),
    );
    let exe = dir.join("embed");
    link_whole(&exe, &main_o, &[&obj], &lib, &wrap_flags());
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
        text(cmd)
    };
    let out = run(&mut interp(&exe), "cycle1.marshal");
    for c in 1..=3 {
        assert!(out.contains(&format!("cycle {c} ok:")), "{out}");
        assert!(
            out.contains(&format!("embed: cycle {c} finalized")),
            "{out}"
        );
    }
    // Cycle 1 did hang state on every runtime-state field but the ones this
    // build never sets.
    let set: String = out.lines().filter(|l| l.starts_with("cycle 1:")).collect();
    for (f, r) in l.runtime_state.iter().zip(l.release) {
        if *r != pyfreeze_obj::layout::Release::Unused {
            let shown = [
                format!("[{}", f.off),
                format!(" {},", f.off),
                format!(" {}]", f.off),
            ];
            assert!(
                shown.iter().any(|s| set.contains(s.as_str())),
                "cycle 1 never set the field at {}: {out}",
                f.off
            );
        }
    }
    support::require_tool("valgrind", "install it with `apt-get install valgrind`");
    let mut cmd = support::clean_python(Path::new("valgrind"));
    cmd.args([
        "--tool=memcheck",
        "--leak-check=no",
        "--error-exitcode=99",
        "-q",
    ])
    .arg(&exe)
    .env("PYTHONHOME", &b.home)
    .env("PYTHONMALLOC", "malloc")
    .current_dir(&dir);
    let out = run(&mut cmd, "memcheck.marshal");
    assert!(out.contains("cycle 3 ok:"), "{out}");
}

// ---------------------------------------------------------------------------
// CPython's own tests (slow tier)

/// `test_frozen test_code test_importlib test_site test_sys test_inspect
/// test_traceback test_embed` give the same outcome for every test case
/// with our object as with the stock link of the same archive (both linked
/// as CPython links its interpreter, so that the extension modules the
/// tests need load), through the one runner of `tests/support/regrtest.rs`.
#[test]
fn slow_cpython_tests_as_stock() {
    let l = full_links();
    let suite = support::regrtest::Suite {
        tests: &support::regrtest::frozen_and_code(&["test_embed"]),
        jobs: 2,
        min_cases: 2000,
        ..Default::default()
    };
    let dir = b().work_dir("suite");
    support::regrtest::check_matches_stock(b(), &l.stock, &l.ours, &dir, &suite);
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
    let dir = b().work_dir("refusals");
    let l = &pyfreeze_obj::layout::PY313;
    let deopt = l.code.quicken.as_ref().unwrap().deopt[0];
    let main = l.interp.main.field.off as u64;
    let next = l.interp.next_func_version.unwrap().field.off as u64;
    for (ar, want) in [
        (
            patched_archive(&dir, "compile.o", "_PyOpcode_Deopt", deopt.0 as u64, 0),
            "_PyOpcode_Deopt (how bytecode is quickened) differs from the table's",
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

// ---------------------------------------------------------------------------
// Every target format

use support::objgraph::ObjFile;

/// Our object for `target` (the stock set), parsed.
fn parsed(target: &str) -> ObjFile<'static> {
    let bytes = b().object(Some(target), Scheme::Lazy);
    ObjFile::parse(bytes).unwrap_or_else(|e| panic!("{target}: {e}"))
}

/// The object for `target` lays out exactly the ELF x86_64 one's data and
/// read-only tables (placement does not depend on the format or the
/// architecture; only the main interpreter's address would move, by the
/// layout's per-architecture shift, which 3.13 does not need there);
/// it defines the wrappers, references the runtime's through `__real_`, and
/// no deep-freeze entry point.
fn image_equals_x86_64_elf(target: &'static str) {
    let ours = parsed(target);
    let theirs = parsed(support::TARGETS[0]);
    let (a, b) = (
        support::compare::image(&ours, target),
        support::compare::image(&theirs, support::TARGETS[0]),
    );
    assert!(
        b.data.len() > 500_000 && b.relocs.len() > 100 && b.rodata.len() > 50_000,
        "the x86_64-linux object is too small to compare: {} data bytes, {} relocations, \
         {} read-only bytes",
        b.data.len(),
        b.relocs.len(),
        b.rodata.len()
    );
    assert_eq!(a.rodata, b.rodata, "{target}: read-only tables differ");
    assert!(a.data == b.data, "{target}: data bytes differ");
    let arch = pyfreeze_obj::target::Target::parse(target).unwrap().arch;
    let main = &pyfreeze_obj::layout::PY313.interp.main;
    let shift = main.on(arch).off as i64 - main.field.off as i64;
    let moved: std::collections::BTreeMap<u64, String> = (a.relocs.iter())
        .map(|(k, v)| {
            let main_at = format!("_PyRuntime+{} ", main.on(arch).off);
            let v = match v.strip_prefix(&main_at) {
                Some(rest) => format!("_PyRuntime+{} {rest}", main.on(arch).off as i64 - shift),
                None => v.clone(),
            };
            (*k, v)
        })
        .collect();
    let differ: Vec<String> = (b.relocs.iter())
        .filter(|(k, v)| moved.get(k) != Some(v))
        .map(|(k, v)| format!("+{k}: x86_64-linux {v}, {target} {:?}", moved.get(k)))
        .take(10)
        .collect();
    assert!(
        differ.is_empty() && moved.len() == b.relocs.len(),
        "{target}: data relocations differ:\n{}",
        differ.join("\n")
    );
    for w in pyfreeze_obj::version::PY313.contract.entry.wrapped() {
        let wrap = format!("__wrap_{w}");
        assert!(
            (ours.symbols.iter()).any(|s| s.name == wrap && !s.undefined && s.global),
            "{target}: {wrap} is not defined"
        );
        assert!(
            ours.undefined().contains(&format!("__real_{w}")),
            "{target}: __real_{w} is not referenced"
        );
    }
    assert_eq!(
        ours.undefined(),
        theirs.undefined(),
        "{target}: undefined symbols"
    );
    assert!(
        !(ours.symbols.iter()).any(|s| s.name.starts_with("_Py_Deepfreeze")),
        "{target}: a deep-freeze entry point in a 3.13 object"
    );
    eprintln!(
        "{target}: {} data bytes, {} data relocations, {} read-only bytes equal to x86_64-linux's",
        a.data.len(),
        a.relocs.len(),
        a.rodata.len()
    );
}

#[test]
fn aarch64_linux_image_equals_x86_64_elf() {
    image_equals_x86_64_elf("aarch64-linux");
}

#[test]
fn x86_64_macos_image_equals_x86_64_elf() {
    image_equals_x86_64_elf("x86_64-macos");
}

#[test]
fn aarch64_macos_image_equals_x86_64_elf() {
    image_equals_x86_64_elf("aarch64-macos");
}

#[test]
fn x86_64_windows_image_equals_x86_64_elf() {
    image_equals_x86_64_elf("x86_64-windows");
}

#[test]
fn aarch64_windows_image_equals_x86_64_elf() {
    image_equals_x86_64_elf("aarch64-windows");
}

/// The instructions of function `func` in `obj`, as llvm-objdump prints
/// them.
fn disassembly(obj: &Path, func: &str) -> String {
    let tool = support::find_tool(&["llvm-objdump", "llvm-objdump-14"], "apt-get install llvm");
    let all = run_text(
        Command::new(tool)
            .args(["-d", "--no-show-raw-insn"])
            .arg(obj),
    );
    let start = format!("<{func}>:");
    let body: Vec<&str> = (all.lines())
        .skip_while(|l| !l.ends_with(&start))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(!body.is_empty(), "{}: no function {func}", obj.display());
    body.join("\n")
}

/// The hooks read the runtime's structures at the layout's offsets for the
/// target's architecture (aarch64: past the GIL state's two larger glibc
/// mutexes): the load wrapper `PyThreadState.interp` and
/// `config.code_debug_ranges`, module initialization the interpreter's
/// function version counter.
#[test]
fn hooks_read_the_runtime_at_each_architectures_offsets() {
    let i = &pyfreeze_obj::layout::PY313.interp;
    let next = i.next_func_version.unwrap();
    for (target, arch, pattern) in [
        (
            "x86_64-linux",
            pyfreeze_obj::arch::Arch::X86_64,
            (|off: u32| format!("{off}(%")) as fn(u32) -> String,
        ),
        (
            "aarch64-linux",
            pyfreeze_obj::arch::Arch::Aarch64,
            |off: u32| format!("#{off}"),
        ),
    ] {
        let obj = b().object_at(Some(target), Scheme::Lazy).0;
        let load = disassembly(obj, "__wrap_PyMarshal_ReadObjectFromString");
        for f in [i.tstate_interp, i.requires[0]] {
            let want = pattern(f.on(arch).off);
            assert!(load.contains(&want), "{target}: no {want} in\n{load}");
        }
        let init = disassembly(obj, "pyfreeze_init_module");
        let want = pattern(next.on(arch).off);
        assert!(init.contains(&want), "{target}: no {want} in\n{init}");
    }
    assert_ne!(
        next.on(pyfreeze_obj::arch::Arch::Aarch64),
        next.field,
        "the layout knows no aarch64 shift"
    );
}

/// The objects link into shared objects (PIC: no text relocation; the
/// runtime's symbols left to the loader): ELF aarch64 with the cross gcc,
/// Mach-O (both architectures) with ld64.lld.
#[test]
fn objects_link_into_shared_objects() {
    let dir = b().work_dir("shared-objects");
    let gcc = support::find_tool(
        &["aarch64-linux-gnu-gcc"],
        "apt-get install gcc-aarch64-linux-gnu",
    );
    let so = dir.join("aarch64.so");
    run_ok(
        Command::new(gcc)
            .args(["-shared", "-nostdlib", "-Wl,-z,text", "-o"])
            .arg(&so)
            .arg(b().object_at(Some("aarch64-linux"), Scheme::Lazy).0),
    );
    let ld64 = support::find_tool(
        &["ld64.lld", "ld64.lld-14", "ld64.lld-19"],
        "apt-get install lld",
    );
    for (target, arch) in [("x86_64-macos", "x86_64"), ("aarch64-macos", "arm64")] {
        let out = dir.join(format!("{target}.dylib"));
        run_ok(
            Command::new(&ld64)
                .args(["-arch", arch, "-platform_version", "macos", "11.0", "11.0"])
                .args(["-dylib", "-undefined", "dynamic_lookup", "-o"])
                .arg(&out)
                .arg(b().object_at(Some(target), Scheme::Lazy).0),
        );
        assert!(out.is_file(), "{}", out.display());
    }
}

/// The same inputs give byte-identical objects from any working folder;
/// `emit -v` and `emit --help` say what the interpreter's link needs.
#[test]
fn reproducible_and_the_link_flags_are_printed() {
    let dir = b().work_dir("reproducible");
    let flags = wrap_flags().join(" ");
    assert!(
        flags.contains("--wrap=PyMarshal_ReadObjectFromString"),
        "{flags}"
    );
    let mut objects = Vec::new();
    for (i, cwd) in [dir.clone(), std::env::temp_dir()].iter().enumerate() {
        let out = dir.join(format!("o{i}.o"));
        let o = support::output(
            ours()
                .current_dir(cwd)
                .args(["emit", "-v", "--python", "3.13", "--modules-from"])
                .arg(archive())
                .arg("--compile-with")
                .arg(python())
                .args(["--trace", "import json", "-o"])
                .arg(&out),
        );
        assert!(
            o.status.success(),
            "{}",
            support::show(&Command::new("emit"), &o)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("link the interpreter with: {flags}")),
            "{err}"
        );
        objects.push(std::fs::read(&out).unwrap());
    }
    assert!(objects[0] == objects[1], "two emits differ");
    let help = run_text(ours().args(["emit", "--help"]));
    assert!(help.contains(&format!("CPython 3.13: {flags}")), "{help}");
}
