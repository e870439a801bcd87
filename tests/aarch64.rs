//! Acceptance tests for `--target aarch64-linux`.
//!
//! Setup: `tests/setup/arm64.sh` (called from here; idempotent, a no-op
//! when done) installs the cross toolchain, qemu-user and llvm, and unpacks
//! Debian's arm64 CPython 3.11 packages into a cache folder without
//! installing them (REFERENCE.md section 4). A missing tool or package is
//! a test failure saying what to run, never a skip.
//!
//! CPython 3.11 (Debian's arm64 `libpython3.11.a`, which holds gcc's
//! `deepfreeze.o`):
//!
//! * `py311_hello_world`, `py311_frozen_code_equals_stock`: the archive
//!   relinked with our object instead of gcc's, run under qemu, prints
//!   `Hello world!` and hands out, for every frozen module, a code object
//!   equal to the stock link's.
//! * `slow_py311_cpython_tests_match_stock`: CPython's `test_frozen` and
//!   `test_code` give the same per-test outcomes with ours as with the
//!   stock link (same archive, unmodified).
//! * `py311_graph_equals_gcc` and its companions: our object's object
//!   graph equals gcc's arm64 `deepfreeze.o`, module by module (the
//!   comparer of `tests/support/objgraph.rs`, with its AArch64 accessor
//!   rule); one difference by design ([`KNOWN_311`]).
//! * `py311_stubs_disassemble_as_intended`, `py311_relocation_types`.
//!
//! CPython 3.12 (no arm64 archive exists; pyenv 3.12.1's x86_64 stock set):
//!
//! * `py312_aarch64_graph_equals_x86_64`: the aarch64 object's data graph
//!   equals the x86_64 object's (both ours).
//! * `py312_stubs_disassemble_as_intended`: `llvm-objdump -d -r` shows the
//!   intended instructions, relocations and branch targets, and the
//!   operands address what they should.
//!
//! Inputs of the 3.11 object: the modules named by the archive's
//! `frozen.o`, compiled by the host's Debian `/usr/bin/python3.11` (the same
//! 3.11.2 source) from the *arm64 package's* stdlib: the emit runs with
//! `PYTHONHOME` at the unpacked tree, because Debian's security updates
//! change frozen modules' sources between package revisions (e.g.
//! `posixpath.expandvars`), and the host's revision may differ from the
//! one apt downloads.
//!
//! Time: ~5 s for everything but the `slow_` test; that one runs the two
//! CPython test modules under qemu on both interpreters in parallel (~10 s;
//! skip it with `-- --skip slow_`).

mod support;

use object::{Object, ObjectSection, RelocationFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use support::objgraph::{
    accessor_code, all_objects, reachable_objects, Accept, Comparer, KnownDifference, Loc, ObjFile,
    PyModel, Reloc, Target, View, X64Model, PY311_X64, PY312_X64,
};

/// Modules deep-frozen by a stock CPython 3.11 or 3.12 build.
const EXPECTED_MODULES: usize = 23;

const HELLO: &str = "import __hello__; __hello__.main()";

/// The host's Debian interpreter: same CPython source as the arm64 archive.
const HOST_PYTHON: &str = "/usr/bin/python3.11";

// ---------------------------------------------------------------------------
// Running things
// ---------------------------------------------------------------------------

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run to completion; panic with the command line and its output unless
/// it exits 0.
fn run_ok(cmd: &mut Command) -> Output {
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

fn stdout(out: Output) -> String {
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A fresh, empty folder (under cargo's per-target tmp dir).
fn work_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("aarch64")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    d
}

// ---------------------------------------------------------------------------
// Setup: toolchain, qemu, Debian's arm64 CPython 3.11
// ---------------------------------------------------------------------------

const SETUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/setup/arm64.sh");

/// What the arm64 tests use, located once.
struct Arm64 {
    /// The folder the packages were unpacked into (`<root>/usr/lib/...`).
    root: PathBuf,
    /// `libpython3.11.a` in its LIBPL,
    /// `usr/lib/python3.11/config-3.11-aarch64-linux-gnu` (with gcc's `deepfreeze.o`).
    archive: PathBuf,
    python_o: PathBuf,
    /// Static `libexpat.a`, `libz.a` (arm64).
    static_libs: Vec<PathBuf>,
}

fn require_tool(tool: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "required tool `{tool}` is missing or broken: run `{SETUP}` (as root, or with sudo \
         available; .ci/run does)"
    );
}

fn arm64() -> &'static Arm64 {
    static CELL: OnceLock<Arm64> = OnceLock::new();
    CELL.get_or_init(|| {
        let out = Command::new("bash")
            .arg(SETUP)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SETUP}: {e}"));
        assert!(
            out.status.success(),
            "{SETUP} failed ({}); run it by hand (as root, or with sudo available) \
             to install the arm64 toolchain, qemu-user, llvm and Debian's arm64 CPython \
             3.11 packages:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for tool in [
            "aarch64-linux-gnu-gcc",
            "qemu-aarch64",
            "llvm-objdump",
            "ar",
        ] {
            require_tool(tool);
        }
        let root = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .expect("the setup script prints the unpacked folder")
                .trim(),
        );
        let libpl = root.join("usr/lib/python3.11/config-3.11-aarch64-linux-gnu");
        let lib = root.join("usr/lib/aarch64-linux-gnu");
        let a = Arm64 {
            archive: libpl.join("libpython3.11.a"),
            python_o: libpl.join("python.o"),
            static_libs: vec![lib.join("libexpat.a"), lib.join("libz.a")],
            root,
        };
        for p in [&a.archive, &a.python_o].into_iter().chain(&a.static_libs) {
            assert!(
                p.is_file(),
                "{} is missing: run `{SETUP}` (it unpacks Debian's arm64 packages)",
                p.display()
            );
        }
        a
    })
}

/// The host's Debian CPython 3.11.2.
fn host_python() -> PathBuf {
    let p = support::system_python(HOST_PYTHON, "python3.11");
    let v = stdout(run_ok(Command::new(&p).args([
        "-I",
        "-c",
        "import sys; print('%d.%d.%d' % sys.version_info[:3])",
    ])));
    assert_eq!(
        v.trim(),
        "3.11.2",
        "{HOST_PYTHON} must be Debian's CPython 3.11.2 (the arm64 archive's source)"
    );
    p
}

// ---------------------------------------------------------------------------
// Our objects
// ---------------------------------------------------------------------------

/// `pyfreeze-obj emit ARGS -o OUT`, with `PYTHON*` variables cleared and
/// `env` set.
fn emit(out: &Path, args: &[&OsStr], env: &[(&str, &OsStr)]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pyfreeze-obj"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PYTHON") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied())
        .arg("emit")
        .args(args)
        .arg("-o")
        .arg(out);
    run_ok(&mut cmd);
    assert!(out.is_file(), "emit did not write {}", out.display());
}

/// Our 3.11 arm64 object for the archive's module set (see the module
/// documentation for why `PYTHONHOME`).
fn ours_311(out: &Path) {
    let a = arm64();
    let python = host_python();
    emit(
        out,
        &[
            "--target".as_ref(),
            "aarch64-linux".as_ref(),
            "--python".as_ref(),
            "3.11".as_ref(),
            "--modules-from".as_ref(),
            a.archive.as_os_str(),
            "--compile-with".as_ref(),
            python.as_os_str(),
        ],
        &[("PYTHONHOME", a.root.join("usr").as_os_str())],
    );
}

/// Our 3.12 object for pyenv 3.12.1's stock set, for `target`.
fn ours_312(out: &Path, target: &str) {
    let archive = support::pyenv_archive("3.12.1");
    emit(
        out,
        &[
            "--target".as_ref(),
            target.as_ref(),
            "--python".as_ref(),
            "3.12".as_ref(),
            "--modules-from".as_ref(),
            archive.as_os_str(),
        ],
        &[],
    );
}

fn leak_file(p: &Path) -> &'static [u8] {
    Vec::leak(std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
}

/// Two objects to compare, read once per test binary.
struct Pair {
    ours: ObjFile<'static>,
    theirs: ObjFile<'static>,
    ours_path: PathBuf,
    theirs_path: PathBuf,
}

impl Pair {
    fn new(ours_path: PathBuf, theirs_path: PathBuf) -> Pair {
        Pair {
            ours: ObjFile::parse(leak_file(&ours_path))
                .unwrap_or_else(|e| panic!("{}: {e}", ours_path.display())),
            theirs: ObjFile::parse(leak_file(&theirs_path))
                .unwrap_or_else(|e| panic!("{}: {e}", theirs_path.display())),
            ours_path,
            theirs_path,
        }
    }
}

/// 3.11: ours (aarch64) and gcc's `deepfreeze.o` from the arm64 archive.
fn py311() -> &'static Pair {
    static CELL: OnceLock<Pair> = OnceLock::new();
    CELL.get_or_init(|| {
        let a = arm64();
        let dir = work_dir("py311-objects");
        let ours = dir.join("deepfreeze-ours.o");
        ours_311(&ours);
        let archive = std::fs::read(&a.archive).unwrap();
        let gcc = support::objgraph::archive_member(&archive, "deepfreeze.o")
            .unwrap_or_else(|e| panic!("{}: {e}", a.archive.display()));
        let theirs = dir.join("deepfreeze-gcc.o");
        std::fs::write(&theirs, gcc).unwrap();
        Pair::new(ours, theirs)
    })
}

/// 3.12: ours for aarch64 ("ours") and ours for x86_64 ("theirs").
fn py312() -> &'static Pair {
    static CELL: OnceLock<Pair> = OnceLock::new();
    CELL.get_or_init(|| {
        arm64(); // the tools
        let dir = work_dir("py312-objects");
        let a64 = dir.join("deepfreeze-aarch64.o");
        let x64 = dir.join("deepfreeze-x86_64.o");
        ours_312(&a64, "aarch64-linux");
        ours_312(&x64, "x86_64-linux");
        Pair::new(a64, x64)
    })
}

// ---------------------------------------------------------------------------
// Relinked arm64 interpreters
// ---------------------------------------------------------------------------

/// Interpreters linked from the arm64 archive, run under qemu.
///
/// Each is `DIR/bin/python3.11-<tag>`: a shell script that runs
/// `qemu-aarch64 -L /usr/aarch64-linux-gnu -0 $0 $0.elf "$@"`, so that
/// `sys.executable` names the script and the tests' subprocesses run
/// under qemu too (there is no binfmt_misc here). `DIR/lib` links to the
/// unpacked `usr/lib`, so an interpreter that ignores `PYTHONHOME` (`-I`,
/// `-E`) still finds its stdlib next to itself. The guest's
/// `LD_LIBRARY_PATH` names the unpacked arm64 libraries (libffi for
/// ctypes).
struct Linked {
    /// Our object.
    ours_o: PathBuf,
    /// `python.o + ours_o + archive without deepfreeze.o`.
    ours: PathBuf,
    /// `python.o + archive`, same flags.
    stock: PathBuf,
}

/// `aarch64-linux-gnu-gcc -no-pie -o OUT python.o OBJS... ARCHIVE libexpat.a
/// libz.a -ldl -lm -lpthread -lutil -Xlinker -export-dynamic` (exported
/// symbols: the extension modules in lib-dynload link against them).
fn link(out: &Path, objs: &[&Path], archive: &Path) {
    let a = arm64();
    let mut cmd = Command::new("aarch64-linux-gnu-gcc");
    cmd.args(["-no-pie", "-o"]).arg(out).arg(&a.python_o);
    cmd.args(objs).arg(archive).args(&a.static_libs);
    cmd.args([
        "-ldl",
        "-lm",
        "-lpthread",
        "-lutil",
        "-Xlinker",
        "-export-dynamic",
    ]);
    run_ok(&mut cmd);
}

/// The script `DIR/bin/python3.11-<tag>` for the arm64 executable `elf`.
fn qemu_wrapper(dir: &Path, tag: &str, elf: &Path) -> PathBuf {
    let a = arm64();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let lib = dir.join("lib");
    if !lib.exists() {
        std::os::unix::fs::symlink(a.root.join("usr/lib"), &lib).unwrap();
    }
    let script = bin.join(format!("python3.11-{tag}"));
    let target = bin.join(format!("python3.11-{tag}.elf"));
    std::fs::rename(elf, &target).unwrap();
    let text = format!(
        "#!/bin/sh\nexec qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH={} \
         -0 \"$0\" \"$0.elf\" \"$@\"\n",
        a.root.join("usr/lib/aarch64-linux-gnu").display()
    );
    std::fs::write(&script, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn linked() -> &'static Linked {
    static CELL: OnceLock<Linked> = OnceLock::new();
    CELL.get_or_init(|| {
        let a = arm64();
        let dir = work_dir("relinked");
        let ours_o = dir.join("deepfreeze-ours.o");
        ours_311(&ours_o);
        // The archive without gcc's deepfreeze.o (the host `ar` handles
        // the foreign archive).
        let stripped = dir.join("libpython3.11-nodeepfreeze.a");
        std::fs::copy(&a.archive, &stripped).unwrap();
        run_ok(
            Command::new("ar")
                .arg("d")
                .arg(&stripped)
                .arg("deepfreeze.o"),
        );
        let members = stdout(run_ok(Command::new("ar").arg("t").arg(&stripped)));
        assert!(
            !members.lines().any(|l| l.trim() == "deepfreeze.o"),
            "ar d left deepfreeze.o in {}",
            stripped.display()
        );
        assert!(members.lines().count() > 100, "{members}");
        let ours_elf = dir.join("python-ours");
        link(&ours_elf, &[&ours_o], &stripped);
        let stock_elf = dir.join("python-stock");
        link(&stock_elf, &[], &a.archive);
        Linked {
            ours: qemu_wrapper(&dir, "ours", &ours_elf),
            stock: qemu_wrapper(&dir, "stock", &stock_elf),
            ours_o,
        }
    })
}

/// A command running an arm64 interpreter: `PYTHONHOME` = the unpacked
/// `usr`, no other `PYTHON*` variable inherited, in `cwd`.
fn python(exe: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(exe);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PYTHON") {
            cmd.env_remove(k);
        }
    }
    cmd.env("PYTHONHOME", arm64().root.join("usr"))
        .current_dir(cwd);
    cmd
}

fn python_c(exe: &Path, cwd: &Path, code: &str) -> String {
    stdout(run_ok(python(exe, cwd).args(["-c", code])))
}

#[test]
fn py311_hello_world() {
    let l = linked();
    let cwd = work_dir("hello");
    assert_eq!(python_c(&l.stock, &cwd, HELLO), "Hello world!\n");
    assert_eq!(python_c(&l.ours, &cwd, HELLO), "Hello world!\n");
    // Really the arm64 build, really deep-frozen importlib; and our object
    // defines what the stripped archive lost.
    let probe = "import _imp, platform, sys, importlib._bootstrap as b\n\
                 print(platform.machine(), sys.version_info[:3], _imp.is_frozen('__hello__'), \
                 b.__spec__.origin)";
    assert_eq!(
        python_c(&l.ours, &cwd, probe),
        "aarch64 (3, 11, 2) True frozen\n"
    );
    let ours = ObjFile::parse(leak_file(&l.ours_o)).unwrap();
    for want in [
        "_Py_Deepfreeze_Init",
        "_Py_Deepfreeze_Fini",
        "_Py_get___hello___toplevel",
        "_Py_get_importlib__bootstrap_toplevel",
    ] {
        assert!(ours.symbol(want).is_some(), "our object lacks {want}");
    }
}

/// The stock link marshals `_imp.get_frozen_object(name)` for every frozen
/// module (gcc's deep-frozen code); ours must hand out equal code objects.
#[test]
fn py311_frozen_code_equals_stock() {
    let l = linked();
    let cwd = work_dir("frozen-code");
    let dump = cwd.join("stock-frozen.marshal");
    let dump_s = dump.to_str().unwrap();
    python_c(
        &l.stock,
        &cwd,
        &format!(
            "import _imp, marshal\n\
             names = sorted(_imp._frozen_module_names())\n\
             codes = {{n: _imp.get_frozen_object(n) for n in names}}\n\
             open({dump_s:?}, 'wb').write(marshal.dumps(codes))"
        ),
    );
    let report = python_c(
        &l.ours,
        &cwd,
        &format!(
            "import _imp, marshal\n\
             stock = marshal.loads(open({dump_s:?}, 'rb').read())\n\
             names = sorted(_imp._frozen_module_names())\n\
             assert names == sorted(stock), (names, sorted(stock))\n\
             def count(c):\n\
             \x20   return 1 + sum(count(k) for k in c.co_consts if hasattr(k, 'co_code'))\n\
             bad = [n for n in names if _imp.get_frozen_object(n) != stock[n]]\n\
             print(len(names), sum(count(_imp.get_frozen_object(n)) for n in names), bad)"
        ),
    );
    let mut parts = report.split_whitespace();
    let modules: usize = parts.next().unwrap().parse().unwrap();
    let codes: usize = parts.next().unwrap().parse().unwrap();
    let bad = parts.collect::<Vec<_>>().join(" ");
    assert_eq!(
        bad, "[]",
        "frozen modules whose code differs from gcc's: {bad}"
    );
    assert!(
        modules >= 20 && codes >= 700,
        "suspiciously small frozen set: {report}"
    );
}

// ---------------------------------------------------------------------------
// CPython's own tests under qemu, ours vs stock
// ---------------------------------------------------------------------------

const SUITE: &[&str] = &["test_frozen", "test_code"];

/// Summarize regrtest's `--junit-xml` as "TEST_ID<TAB>OUTCOME" lines
/// (passed, skipped, failure, error). Run by the host interpreter.
const JUNIT_SUMMARY: &str = r##"
import sys, xml.etree.ElementTree as ET
seen = {}
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    kinds = {child.tag for child in case}
    for k in ("error", "failure", "skipped"):
        if k in kinds:
            outcome = k
            break
    else:
        st = (case.get("status"), case.get("result"))
        outcome = "passed" if st in ((None, None), ("run", "completed")) else "%s/%s" % st
    name = case.get("name") or "?"
    n = seen.get(name, 0)
    seen[name] = n + 1
    print("%s%s\t%s" % (name, "#%d" % n if n else "", outcome))
"##;

/// One `python -m test` run: test id -> outcome.
struct SuiteRun {
    cases: BTreeMap<String, String>,
    log: String,
}

impl SuiteRun {
    /// Per test module: [total, passed, skipped, failure, error].
    fn counts(&self) -> BTreeMap<String, [usize; 5]> {
        let mut m: BTreeMap<String, [usize; 5]> = BTreeMap::new();
        for (id, outcome) in &self.cases {
            let module = id.split('.').nth(1).unwrap_or(id).to_string();
            let c = m.entry(module).or_default();
            c[0] += 1;
            c[match outcome.as_str() {
                "passed" => 1,
                "skipped" => 2,
                "failure" => 3,
                _ => 4,
            }] += 1;
        }
        m
    }
}

fn run_suite(exe: &Path, dir: &Path, tag: &str) -> SuiteRun {
    let cwd = dir.join(format!("cwd-{tag}"));
    let _ = std::fs::remove_dir_all(&cwd);
    std::fs::create_dir_all(&cwd).unwrap();
    let xml = dir.join(format!("junit-{tag}.xml"));
    let _ = std::fs::remove_file(&xml);
    let out = python(exe, &cwd)
        .args(["-m", "test", "--timeout=600", "--junit-xml"])
        .arg(&xml)
        .args(SUITE)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    // The exit status is not required to be 0: a test failing on the
    // stock link as well is not ours to fix; equality is what counts.
    let log = format!(
        "[{tag}: {}]\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        xml.is_file(),
        "regrtest wrote no junit file ({tag}):\n{log}"
    );
    let summary = stdout(run_ok(
        Command::new(HOST_PYTHON)
            .args(["-I", "-c", JUNIT_SUMMARY])
            .arg(&xml),
    ));
    let cases = summary
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    SuiteRun { cases, log }
}

/// Both interpreters, in parallel.
fn run_both(l: &Linked, dir: &Path, tag: &str) -> (SuiteRun, SuiteRun) {
    std::thread::scope(|s| {
        let stock = s.spawn(|| run_suite(&l.stock, dir, &format!("stock{tag}")));
        let ours = run_suite(&l.ours, dir, &format!("ours{tag}"));
        (ours, stock.join().unwrap())
    })
}

/// Test ids on which the runs disagree.
fn disagreements(ours: &SuiteRun, stock: &SuiteRun) -> Vec<String> {
    let ids: BTreeSet<&String> = ours.cases.keys().chain(stock.cases.keys()).collect();
    ids.into_iter()
        .filter_map(|id| {
            let (a, b) = (ours.cases.get(id), stock.cases.get(id));
            (a != b).then(|| format!("{id}: ours {a:?}, stock {b:?}"))
        })
        .collect()
}

#[test]
fn slow_py311_cpython_tests_match_stock() {
    let l = linked();
    let dir = work_dir("cpython-tests");
    let (mut ours, mut stock) = run_both(l, &dir, "");
    for (tag, run) in [("stock", &stock), ("ours", &ours)] {
        let counts = run.counts();
        for m in SUITE {
            assert!(
                counts.get(*m).is_some_and(|c| c[0] >= 3),
                "{tag}: no results for {m}:\n{}",
                run.log
            );
        }
        assert!(
            run.cases.len() >= 25,
            "{tag}: only {} test cases ran:\n{}",
            run.cases.len(),
            run.log
        );
    }
    let mut bad = disagreements(&ours, &stock);
    if !bad.is_empty() {
        // one re-run, to tell a flaky test from a real difference
        eprintln!("re-running after a first disagreement: {bad:#?}");
        (ours, stock) = run_both(l, &dir, "-rerun");
        bad = disagreements(&ours, &stock);
    }
    assert!(
        bad.is_empty(),
        "ours and stock disagree:\n  {}\n\n{}\n\n{}",
        bad.join("\n  "),
        ours.log,
        stock.log
    );
    assert_eq!(ours.counts(), stock.counts());
    let summary: Vec<String> = ours
        .counts()
        .iter()
        .map(|(m, [t, p, s, f, e])| {
            format!("{m}: {t} run, {p} passed, {s} skipped, {f} failed, {e} errors")
        })
        .collect();
    eprintln!(
        "under qemu, identical on ours and stock:\n  {}",
        summary.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Object graphs
// ---------------------------------------------------------------------------

/// `_Py_get_os_toplevel` -> `os`.
fn module_of(accessor: &str) -> &str {
    accessor
        .strip_prefix("_Py_get_")
        .and_then(|s| s.strip_suffix("_toplevel"))
        .unwrap_or(accessor)
}

fn accessor_names(f: &ObjFile) -> BTreeSet<String> {
    f.accessors().into_keys().collect()
}

/// Compare every module's graph (rooted at what each side's accessor
/// returns); the first mismatch of each module that has one.
fn compare_all<'a>(
    p: &'a Pair,
    model: &'a dyn PyModel,
    known: &'a [KnownDifference],
    labels: (&'a str, &'a str),
) -> (Vec<String>, Comparer<'a, 'static>) {
    let mut cmp = Comparer::new(&p.ours, &p.theirs, model, known).labels(labels.0, labels.1);
    let mut failures = Vec::new();
    let names = accessor_names(&p.theirs);
    assert_eq!(
        names.len(),
        EXPECTED_MODULES,
        "{}: accessors {names:?}",
        p.theirs_path.display()
    );
    for name in names {
        let root = format!("{} toplevel", module_of(&name));
        let ra = match p.ours.accessor_object(&name) {
            Ok(l) => l,
            Err(e) => {
                failures.push(format!("{}: {e}", labels.0));
                continue;
            }
        };
        let rb = p
            .theirs
            .accessor_object(&name)
            .unwrap_or_else(|e| panic!("{}: {e}", labels.1));
        if let Err(m) = cmp.compare(&root, ra, rb) {
            failures.push(m.to_string());
        }
    }
    (failures, cmp)
}

/// Graph equality of every module, every object of `theirs` reached, and
/// every known difference needed.
fn assert_graphs_equal(
    p: &Pair,
    model: &dyn PyModel,
    known: &[KnownDifference],
    labels: (&str, &str),
) {
    let (failures, cmp) = compare_all(p, model, known, labels);
    eprintln!("compared: {:?}", cmp.stats);
    assert!(
        failures.is_empty(),
        "object graphs differ ({} vs {}) in {} modules (first difference of each):\n  {}",
        p.ours_path.display(),
        p.theirs_path.display(),
        failures.len(),
        failures.join("\n  ")
    );
    for (label, f, reached) in [
        (labels.0, &p.ours, &cmp.reached_a),
        (labels.1, &p.theirs, &cmp.reached_b),
    ] {
        let all = all_objects(f, model);
        assert_eq!(
            reached.len(),
            all.len(),
            "the comparison reached {} of {label}'s {} objects",
            reached.len(),
            all.len()
        );
    }
    let stale: Vec<&str> = known
        .iter()
        .enumerate()
        .filter(|(i, _)| !cmp.stats.known_used.contains_key(i))
        .map(|(_, k)| k.reason)
        .collect();
    assert!(
        stale.is_empty(),
        "known differences never needed: {stale:?}"
    );
}

/// No object that no accessor reaches, on either side.
fn assert_every_object_reached(p: &Pair, model: &dyn PyModel) {
    for (label, f) in [("ours", &p.ours), ("theirs", &p.theirs)] {
        let roots: Vec<Loc> = accessor_names(f)
            .iter()
            .map(|n| {
                f.accessor_object(n)
                    .unwrap_or_else(|e| panic!("{label}: {e}"))
            })
            .collect();
        let reached =
            reachable_objects(f, model, &roots).unwrap_or_else(|e| panic!("{label}: {e}"));
        let all = all_objects(f, model);
        let mut orphans: Vec<&Loc> = all.difference(&reached).collect();
        orphans.sort();
        assert!(
            orphans.is_empty(),
            "{label}: {} of {} objects no accessor reaches, e.g. {:?}",
            orphans.len(),
            all.len(),
            &orphans[..orphans.len().min(5)]
        );
        assert_eq!(
            all, reached,
            "{label}: reached something that is not an object"
        );
    }
}

fn assert_same_symbols(p: &Pair) {
    let (a, b) = (accessor_names(&p.ours), accessor_names(&p.theirs));
    assert_eq!(
        a,
        b,
        "accessor sets differ: only ours {:?}, only theirs {:?}",
        a.difference(&b).collect::<Vec<_>>(),
        b.difference(&a).collect::<Vec<_>>()
    );
    let (a, b) = (p.ours.undefined(), p.theirs.undefined());
    assert_eq!(
        a,
        b,
        "undefined symbols differ: only ours {:?}, only theirs {:?}",
        a.difference(&b).collect::<Vec<_>>(),
        b.difference(&a).collect::<Vec<_>>()
    );
}

// --- 3.11: ours vs gcc's arm64 deepfreeze.o ---------------------------------------

/// 3.11 `PyCompactUnicodeObject` (src/layout/py311.rs; LP64, the same on
/// x86-64 and AArch64): `wstr`, `utf8_length`, `wstr_length`, data.
const WSTR: u64 = 40;
const STR311_UTF8_LENGTH: u64 = 48;
const STR311_WSTR_LENGTH: u64 = 64;
const STR311_DATA: u64 = 72;
/// `sizeof(wchar_t)` on AArch64 Linux.
const WCHAR_SIZE: u64 = 4;

/// 3.11's one difference by design (as in tests/graph_gcc.rs).
const KNOWN_311: &[KnownDifference] = &[KnownDifference {
    ty: "PyUnicode_Type",
    via: None,
    bytes: WSTR..STR311_DATA,
    accept: Accept::Range(wstr_is_own_data),
    reason: "3.11 `wstr`/`wstr_length` of compact non-ASCII strings whose kind equals \
             sizeof(wchar_t) (4 on AArch64 Linux too): we write them statically (a \
             relocation to the string's own data, wstr_length = length); gcc's object \
             leaves both 0 and its accessor stores them at run time (checked by \
             py311_accessors_return_new_references). Accepted only for such strings, \
             with our pointer to exactly this object's data, wstr_length equal to the \
             length, utf8/utf8_length 0 on both sides and gcc's 40..72 all zero.",
}];

/// A compact, non-ASCII str of kind `sizeof(wchar_t)` (3.11 state bits:
/// kind 2-4, compact 5, ascii 6).
fn is_wchar_str(v: &View) -> bool {
    let state = v.int(32, 4);
    (state >> 2) & 7 == WCHAR_SIZE && (state >> 5) & 1 == 1 && (state >> 6) & 1 == 0
}

fn wstr_is_own_data(ours: &View, theirs: &View) -> bool {
    let zero = |v: &View, r: std::ops::Range<u64>| {
        v.bytes
            .get(r.start as usize..r.end as usize)
            .is_some_and(|b| b.iter().all(|&x| x == 0))
            && v.reloc_offsets(r).is_empty()
    };
    let own_data = matches!(
        ours.reloc(WSTR),
        Some(Reloc { target: Target::Local(l), size: 8, pcrel: false })
            if *l == ours.at.add(STR311_DATA as i64)
    );
    let length = ours.int(16, 8);
    is_wchar_str(ours)
        && is_wchar_str(theirs)
        && length > 0
        && theirs.int(16, 8) == length
        && zero(theirs, WSTR..STR311_DATA)
        && own_data
        && ours.reloc_offsets(WSTR..STR311_DATA) == [WSTR]
        && zero(ours, STR311_UTF8_LENGTH..STR311_WSTR_LENGTH)
        && ours.int(STR311_WSTR_LENGTH, 8) == length
}

#[test]
fn py311_graph_equals_gcc() {
    assert_graphs_equal(py311(), &PY311_X64, KNOWN_311, ("ours", "gcc's"));
}

#[test]
fn py311_every_object_is_reached_from_an_accessor() {
    assert_every_object_reached(py311(), &PY311_X64);
}

#[test]
fn py311_same_accessors_and_undefined_symbols() {
    let p = py311();
    for must in [
        "_PyStaticCode_InternStrings",
        "_PyStaticCode_Dealloc",
        "_PyStaticUnicode_Dealloc",
        "_PyRuntime",
    ] {
        assert!(p.theirs.undefined().contains(must), "gcc's lacks {must}");
    }
    assert_same_symbols(p);
    for (label, f) in [("ours", &p.ours), ("gcc's", &p.theirs)] {
        assert!(
            f.symbols.iter().all(|s| s.name != "_Py_next_func_version"),
            "{label} object defines _Py_next_func_version (3.12 only)"
        );
    }
}

/// Each accessor returns a new reference: both sides increment the
/// refcount of exactly the object they return, once. Ours touches nothing
/// else; gcc's also holds its module's inlined wstr patch-ups: each other
/// place it touches is the `wstr`, `wstr_length` or data of a UCS-4 str.
#[test]
fn py311_accessors_return_new_references() {
    let p = py311();
    let objects = all_objects(&p.theirs, &PY311_X64);
    let wchar_str = |at: Loc| -> bool {
        objects.contains(&at)
            && matches!(p.theirs.reloc_at(at.add(8)).map(|r| &r.target),
                Some(Target::Extern { name, addend: 0 }) if name == "PyUnicode_Type")
            && p.theirs.bytes(at, STR311_DATA).is_ok_and(|b| {
                is_wchar_str(&View {
                    at,
                    bytes: b,
                    relocs: &[],
                })
            })
    };
    let mut patchups = 0;
    for name in accessor_names(&p.theirs) {
        let ours = p.ours.accessor_code(&name).unwrap();
        let theirs = p
            .theirs
            .accessor_code(&name)
            .unwrap_or_else(|e| panic!("gcc's: {e}"));
        let (ra, rb) = (ours.returned.unwrap(), theirs.returned.unwrap());
        assert_eq!(ours.increments, [ra], "{name}: ours {ours:?}");
        assert!(ours.other.is_empty(), "{name}: ours also touches {ours:?}");
        assert_eq!(theirs.increments, [rb], "{name}: gcc's {theirs:?}");
        for t in &theirs.other {
            let ok = matches!(t, Target::Local(l) if [WSTR, STR311_WSTR_LENGTH, STR311_DATA]
                .iter()
                .any(|&off| l.offset >= off && wchar_str(l.add(-(off as i64)))));
            assert!(ok, "{name}: gcc's accessor also touches {t:?}: {theirs:?}");
            patchups += 1;
        }
    }
    assert!(patchups > 0, "gcc's accessors hold no wstr patch-ups?");
    eprintln!("gcc's accessors hold {patchups} wstr patch-up operands");
}

/// Relocation types: AArch64 ELF, exactly ADRP/ADD pairs and CALL26 in
/// code, ABS64 in data; every ADRP's ADD follows it against the same
/// symbol and addend.
#[test]
fn py311_relocation_types() {
    use object::elf;
    let p = py311();
    let bytes = leak_file(&p.ours_path);
    let file = object::File::parse(bytes).unwrap();
    assert_eq!(file.architecture(), object::Architecture::Aarch64);
    assert_eq!(file.format(), object::BinaryFormat::Elf);
    assert!(file.is_little_endian() && file.is_64());
    let mut seen: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for s in file.sections() {
        let relocs: Vec<_> = s.relocations().collect();
        for (i, (off, r)) in relocs.iter().enumerate() {
            let RelocationFlags::Elf { r_type } = r.flags() else {
                panic!("non-ELF relocation flags {:?}", r.flags())
            };
            *seen
                .entry((s.name().unwrap().to_string(), r_type))
                .or_default() += 1;
            if r_type == elf::R_AARCH64_ADR_PREL_PG_HI21 {
                let (next_off, next) = relocs.get(i + 1).expect("an ADD after the ADRP");
                assert_eq!(*next_off, off + 4, "ADD right after ADRP at {off:#x}");
                assert_eq!(
                    next.flags(),
                    RelocationFlags::Elf {
                        r_type: elf::R_AARCH64_ADD_ABS_LO12_NC
                    }
                );
                assert_eq!((next.target(), next.addend()), (r.target(), r.addend()));
            }
        }
    }
    let kinds: BTreeSet<(&str, u32)> = seen.keys().map(|(s, t)| (s.as_str(), *t)).collect();
    let want: BTreeSet<(&str, u32)> = [
        (".text", elf::R_AARCH64_ADR_PREL_PG_HI21),
        (".text", elf::R_AARCH64_ADD_ABS_LO12_NC),
        (".text", elf::R_AARCH64_CALL26),
        (".data", elf::R_AARCH64_ABS64),
    ]
    .into_iter()
    .collect();
    assert_eq!(kinds, want, "relocation types per section: {seen:?}");
}

// --- 3.12: aarch64 vs x86_64, both ours ------------------------------------------------

#[test]
fn py312_aarch64_graph_equals_x86_64() {
    let p = py312();
    assert_eq!(p.ours.arch, object::Architecture::Aarch64);
    assert_eq!(p.theirs.arch, object::Architecture::X86_64);
    assert_graphs_equal(p, &PY312_X64, &[], ("aarch64", "x86_64"));
    assert_every_object_reached(p, &PY312_X64);
    assert_same_symbols(p);
    let a = p.ours.read_u32_symbol("_Py_next_func_version").unwrap();
    let b = p.theirs.read_u32_symbol("_Py_next_func_version").unwrap();
    assert!(
        b > 1 && a == b,
        "_Py_next_func_version: aarch64 {a}, x86_64 {b}"
    );
}

/// The 3.12 comparison (both sides ours, from the same code) can fail:
/// one flipped byte in the aarch64 object's `os` module code is found.
#[test]
fn py312_negative_flipped_byte_is_found() {
    let p = py312();
    let bytes = std::fs::read(&p.ours_path).unwrap();
    let name = "_Py_get_os_toplevel";
    let top = p.ours.accessor_object(name).unwrap();
    let field = PY312_X64
        .code_fields
        .iter()
        .find(|x| x.2 == "co_firstlineno")
        .unwrap()
        .0;
    let file = object::File::parse(&bytes[..]).unwrap();
    let section = file
        .section_by_index(object::SectionIndex(top.section))
        .unwrap();
    let at = section.file_range().unwrap().0 + top.offset + field;
    let mut bent = bytes.clone();
    bent[at as usize] ^= 0x40;
    let bent = ObjFile::parse(&bent).unwrap();
    let mut cmp = Comparer::new(&bent, &p.theirs, &PY312_X64, &[]);
    let err = cmp
        .compare(
            "os toplevel",
            bent.accessor_object(name).unwrap(),
            p.theirs.accessor_object(name).unwrap(),
        )
        .expect_err("a flipped byte went unnoticed");
    assert!(
        err.path == "os toplevel" && err.what.contains("co_firstlineno"),
        "unexpected report: {err}"
    );
}

// ---------------------------------------------------------------------------
// The stubs, disassembled
// ---------------------------------------------------------------------------

/// One instruction as `llvm-objdump -d -r --no-show-raw-insn` shows it.
#[derive(Debug, Clone)]
struct Insn {
    /// Offset in the section.
    addr: u64,
    mnemonic: String,
    operands: String,
    /// (relocation type without `R_AARCH64_`, symbol expression).
    relocs: Vec<(String, String)>,
}

/// Every function of the object's `.text`, by name, in order.
fn disassemble(obj: &Path) -> BTreeMap<String, Vec<Insn>> {
    let text = stdout(run_ok(
        Command::new("llvm-objdump")
            .args(["-d", "-r", "--no-show-raw-insn"])
            .arg(obj),
    ));
    let mut funcs: BTreeMap<String, Vec<Insn>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line
            .strip_suffix(">:")
            .and_then(|l| l.split_once(" <"))
            .map(|(_, n)| n.to_string())
        {
            funcs.insert(name.clone(), Vec::new());
            current = Some(name);
            continue;
        }
        let Some(f) = current.as_ref().and_then(|n| funcs.get_mut(n)) else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("\t\t") {
            // "0000000000000000:  R_AARCH64_ADR_PREL_PG_HI21\tsym+0x10"
            let (at, what) = rest.split_once(':').expect("relocation line");
            let (kind, sym) = what.trim().split_once('\t').unwrap_or((what.trim(), ""));
            let at = u64::from_str_radix(at.trim(), 16).unwrap();
            let insn = f.last_mut().expect("relocation before any instruction");
            assert_eq!(insn.addr, at, "relocation not at an instruction: {line}");
            insn.relocs.push((
                kind.trim_start_matches("R_AARCH64_").to_string(),
                sym.to_string(),
            ));
            continue;
        }
        let Some((at, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(at.trim(), 16) else {
            continue;
        };
        let mut parts = rest.split('\t').map(str::trim).filter(|s| !s.is_empty());
        let Some(mnemonic) = parts.next() else {
            continue;
        };
        f.push(Insn {
            addr,
            mnemonic: mnemonic.to_string(),
            operands: parts.next().unwrap_or("").to_string(),
            relocs: Vec::new(),
        });
    }
    funcs
}

/// The instructions of function `name` inside its symbol's extent
/// (llvm-objdump also lists the alignment padding after it, which must
/// be `nop`s).
fn body<'a>(funcs: &'a BTreeMap<String, Vec<Insn>>, f: &ObjFile, name: &str) -> &'a [Insn] {
    let insns = funcs
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in the disassembly"));
    let sym = f.symbol(name).unwrap_or_else(|| panic!("no symbol {name}"));
    let (at, len) = f.function_extent(sym).unwrap();
    assert_eq!(insns.first().map(|i| i.addr), Some(at.offset), "{name}");
    let n = insns
        .iter()
        .take_while(|i| i.addr < at.offset + len)
        .count();
    assert!(
        insns[n..].iter().all(|i| i.mnemonic == "nop"),
        "{name}: after its end: {:?}",
        &insns[n..]
    );
    &insns[..n]
}

/// Instructions as comparable text: branch targets as `@N` (index in the
/// function), `adrp`'s page operand dropped, relocations as `[TYPE]` or,
/// for calls, `[CALL26 symbol]`.
fn render(insns: &[Insn]) -> Vec<String> {
    let index_of = |addr: u64| {
        insns
            .iter()
            .position(|i| i.addr == addr)
            .map_or_else(|| format!("?{addr:#x}"), |k| format!("@{k}"))
    };
    insns
        .iter()
        .map(|i| {
            let ops = match i.mnemonic.as_str() {
                "adrp" => i.operands.split(',').next().unwrap().to_string(),
                "bl" => String::new(),
                "b" | "b.hs" | "tbnz" | "tbz" | "cbz" | "cbnz" | "b.lo" | "b.ne" | "b.eq" => {
                    // the last operand is "0x324 <name+0x44>"
                    let (head, target) = i
                        .operands
                        .rsplit_once(", ")
                        .map_or(("", i.operands.as_str()), |(h, t)| (h, t));
                    let addr = target.split_whitespace().next().unwrap();
                    let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
                    if head.is_empty() {
                        index_of(addr)
                    } else {
                        format!("{head}, {}", index_of(addr))
                    }
                }
                _ => i.operands.clone(),
            };
            let mut s = if ops.is_empty() {
                i.mnemonic.clone()
            } else {
                format!("{} {ops}", i.mnemonic)
            };
            for (kind, sym) in &i.relocs {
                if kind == "CALL26" {
                    s.push_str(&format!(" [{kind} {sym}]"));
                } else {
                    s.push_str(&format!(" [{kind}]"));
                }
            }
            s
        })
        .collect()
}

/// The intended accessor: `adrp x0` + `add x0, x0` (the code object), for
/// 3.11 an increment of its refcount, `ret`.
fn expected_accessor(incref: bool) -> Vec<String> {
    let mut v = vec![];
    if incref {
        // The reference count (at offset 0) through IP0 and IP1.
        v.push("adrp x16 [ADR_PREL_PG_HI21]".to_string());
        v.push("add x16, x16, #0 [ADD_ABS_LO12_NC]".to_string());
        v.push("ldr x17, [x16]".to_string());
        v.push("add x17, x17, #1".to_string());
        v.push("str x17, [x16]".to_string());
    }
    v.push("adrp x0 [ADR_PREL_PG_HI21]".to_string());
    v.push("add x0, x0, #0 [ADD_ABS_LO12_NC]".to_string());
    v.push("ret".to_string());
    v
}

/// The frame of a non-leaf AAPCS64 function, checked on its rendered
/// instructions: `stp x29, x30, [sp, #-N]!` and `mov x29, sp`, then
/// `str`/`stp` of callee-saved registers (x19..x28, which must include
/// `must_save`) to distinct slots inside the frame; at the end `ldr`/`ldp`
/// of exactly those registers from the same slots, `ldp x29, x30, [sp],
/// #N` and `ret`. Returns the lengths of prologue and epilogue.
fn check_frame(name: &str, insns: &[String], must_save: &[u32]) -> (usize, usize) {
    let n: u64 = insns
        .first()
        .and_then(|s| s.strip_prefix("stp x29, x30, [sp, #-"))
        .and_then(|s| s.strip_suffix("]!"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{name}: no frame record push: {insns:#?}"));
    assert!(n % 16 == 0 && n >= 16, "{name}: frame of {n} bytes");
    assert_eq!(
        insns.get(1).map(String::as_str),
        Some("mov x29, sp"),
        "{name}"
    );
    // "stp x19, x20, [sp, #16]" -> [(19, 16), (20, 24)]
    let slots = |s: &str, single: &str, pair: &str| -> Option<Vec<(u32, u64)>> {
        let (regs, rest) = if let Some(r) = s.strip_prefix(single) {
            (1, r)
        } else {
            (2, s.strip_prefix(pair)?)
        };
        let (names, addr) = rest.split_once(", [sp, #")?;
        let off: u64 = addr.strip_suffix(']')?.parse().ok()?;
        let names: Vec<u32> = names
            .split(", ")
            .map(|r| r.strip_prefix('x').and_then(|r| r.parse().ok()))
            .collect::<Option<_>>()?;
        (names.len() == regs).then(|| {
            names
                .iter()
                .enumerate()
                .map(|(i, &r)| (r, off + 8 * i as u64))
                .collect()
        })
    };
    let mut saved = BTreeSet::new();
    let mut p = 2;
    while let Some(v) = insns.get(p).and_then(|s| slots(s, "str ", "stp ")) {
        saved.extend(v);
        p += 1;
    }
    let len = insns.len();
    assert_eq!(insns[len - 1], "ret", "{name}");
    assert_eq!(
        insns[len - 2],
        format!("ldp x29, x30, [sp], #{n}"),
        "{name}: frame record pop"
    );
    let mut restored = BTreeSet::new();
    let mut e = 2;
    while let Some(v) = insns[..len - e]
        .last()
        .and_then(|s| slots(s, "ldr ", "ldp "))
    {
        restored.extend(v);
        e += 1;
    }
    assert_eq!(saved, restored, "{name}: registers saved vs restored");
    let regs: BTreeSet<u32> = saved.iter().map(|x| x.0).collect();
    let offs: BTreeSet<u64> = saved.iter().map(|x| x.1).collect();
    assert_eq!(offs.len(), saved.len(), "{name}: two registers in one slot");
    assert!(
        offs.iter().all(|&o| o >= 16 && o + 8 <= n),
        "{name}: a slot outside the frame: {saved:?}"
    );
    assert!(
        regs.iter().all(|r| (19..=28).contains(r)),
        "{name}: saves a register that is not callee-saved: {saved:?}"
    );
    for r in must_save {
        assert!(regs.contains(r), "{name}: uses x{r} but does not save it");
    }
    (p, e)
}

/// The intended body of `_Py_Deepfreeze_Init`/`_Fini` between prologue
/// and epilogue (`p` = prologue length, for branch targets): `x21` = the
/// data, then for each `(callee, check)` a loop over a table of 32-bit
/// offsets (`x19` cursor, `x20` end) calling `callee(data + offset)`; with
/// `check`, a negative result makes the function return -1. Returns 0.
fn expected_walk(loops: &[(&str, bool)], p: usize) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "adrp x21 [ADR_PREL_PG_HI21]".into(),
        "add x21, x21, #0 [ADD_ABS_LO12_NC]".into(),
    ];
    let at = |v: &Vec<String>| p + v.len();
    for (callee, check) in loops {
        v.push("adrp x19 [ADR_PREL_PG_HI21]".into());
        v.push("add x19, x19, #0 [ADD_ABS_LO12_NC]".into());
        v.push("adrp x20 [ADR_PREL_PG_HI21]".into());
        v.push("add x20, x20, #0 [ADD_ABS_LO12_NC]".into());
        let top = at(&v);
        v.push("cmp x19, x20".into());
        let exit = v.len();
        v.push(String::new()); // b.hs: after the loop, filled in below
        v.push("ldr w0, [x19]".into());
        v.push("add x0, x21, x0".into());
        v.push(format!("bl [CALL26 {callee}]"));
        v.push("add x19, x19, #4".into());
        if *check {
            v.push("tbnz w0, #31, @FAIL".into());
        }
        v.push(format!("b @{top}"));
        v[exit] = format!("b.hs @{}", at(&v));
    }
    v.push("mov w0, #0".into());
    if loops.iter().any(|l| l.1) {
        let fail = at(&v) + 1;
        v.push(format!("b @{}", fail + 1)); // to the epilogue
        v.push("mov w0, #-1".into());
        for s in v.iter_mut() {
            *s = s.replace("@FAIL", &format!("@{fail}"));
        }
    }
    v
}

/// Where the relocation on instruction `index` of function `name` points.
fn operand(f: &ObjFile, name: &str, index: u64) -> Target {
    let sym = f.symbol(name).unwrap_or_else(|| panic!("no {name}"));
    let at = sym.loc.unwrap().add(4 * index as i64);
    f.reloc_at(at)
        .unwrap_or_else(|| panic!("{name}: no relocation on instruction {index}"))
        .target
        .clone()
}

/// The objects a walk's table names: its `adrp`/`add` operands give the
/// table's start and end (x19, x20) and the data base (x21); every 32-bit
/// entry is an offset from the base.
fn table_objects(f: &ObjFile, name: &str, setup: u64, base: &Target) -> Vec<Loc> {
    let local = |t: Target| match t {
        Target::Local(l) => l,
        t => panic!("{name}: table operand {t:?}"),
    };
    let (start, end) = (
        local(operand(f, name, setup)),
        local(operand(f, name, setup + 2)),
    );
    for (i, half) in [(setup + 1, start), (setup + 3, end)] {
        assert_eq!(
            local(operand(f, name, i)),
            half,
            "{name}: adrp/add pair {i}"
        );
    }
    assert_eq!(start.section, end.section);
    assert!(end.offset >= start.offset && (end.offset - start.offset) % 4 == 0);
    let base = match base {
        Target::Local(l) => *l,
        t => panic!("{name}: data base {t:?}"),
    };
    f.bytes(start, end.offset - start.offset)
        .unwrap()
        .chunks_exact(4)
        .map(|c| Loc {
            section: base.section,
            offset: base.offset + u32::from_le_bytes(c.try_into().unwrap()) as u64,
        })
        .collect()
}

/// Objects of type `ty` in `f`.
fn objects_of(f: &ObjFile, model: &dyn PyModel, ty: &str) -> BTreeSet<Loc> {
    all_objects(f, model)
        .into_iter()
        .filter(|l| {
            matches!(f.reloc_at(l.add(8)).map(|r| &r.target),
                Some(Target::Extern { name, addend: 0 }) if name == ty)
        })
        .collect()
}

/// Exactly the set `want`, each once.
fn assert_each_once(name: &str, got: &[Loc], want: &BTreeSet<Loc>) {
    let set: BTreeSet<Loc> = got.iter().copied().collect();
    assert_eq!(set.len(), got.len(), "{name}: an object listed twice");
    assert_eq!(
        &set,
        want,
        "{name}: table lists {} objects, want {}",
        set.len(),
        want.len()
    );
}

/// The co_filename of the code object at `at` is `<frozen NAME>` with
/// NAME mangled as the accessor's.
fn assert_module_code(f: &ObjFile, model: &X64Model, accessor: &str, at: Loc) {
    assert!(
        matches!(f.reloc_at(at.add(8)).map(|r| &r.target),
            Some(Target::Extern { name, addend: 0 }) if name == "PyCode_Type"),
        "{accessor} does not return a code object"
    );
    let field = model
        .code_fields
        .iter()
        .find(|x| x.2 == "co_filename")
        .unwrap()
        .0;
    let s = match &f.reloc_at(at.add(field as i64)).unwrap().target {
        Target::Local(l) => *l,
        t => panic!("{accessor}: co_filename {t:?}"),
    };
    let len = u64::from_le_bytes(f.bytes(s, 24).unwrap()[16..24].try_into().unwrap());
    let name = f.bytes(s.add(model.ascii_header as i64), len).unwrap();
    let name = std::str::from_utf8(name).unwrap();
    let module = name
        .strip_prefix("<frozen ")
        .and_then(|n| n.strip_suffix('>'))
        .unwrap_or_else(|| panic!("{accessor}: co_filename {name:?}"));
    assert_eq!(module.replace('.', "_"), module_of(accessor), "{accessor}");
}

/// Accessors, `_Py_Deepfreeze_Init` and `_Fini` of our aarch64 object at
/// `path`, against the intended instructions; then what their operands
/// address.
fn assert_stubs(
    path: &Path,
    f: &ObjFile,
    model: &X64Model,
    incref: bool,
    init: &[(&str, bool)],
    fini: &[(&str, bool)],
    fini_tables: &[&str],
) {
    let funcs = disassemble(path);
    let accessors = accessor_names(f);
    assert_eq!(accessors.len(), EXPECTED_MODULES);
    for name in &accessors {
        let got = render(body(&funcs, f, name));
        assert_eq!(got, expected_accessor(incref), "{name}:\n{got:#?}");
        let code = f.accessor_code(name).unwrap();
        let obj = code.returned.unwrap();
        assert_eq!(operand(f, name, 0), Target::Local(obj));
        assert_eq!(
            code.increments,
            if incref { vec![obj] } else { vec![] },
            "{name}"
        );
        assert!(code.other.is_empty(), "{name}: {code:?}");
        assert_module_code(f, model, name, obj);
    }
    let codes = objects_of(f, model, "PyCode_Type");
    for (name, loops, tables) in [
        ("_Py_Deepfreeze_Init", init, &["PyCode_Type"][..]),
        ("_Py_Deepfreeze_Fini", fini, fini_tables),
    ] {
        let got = render(body(&funcs, f, name));
        let (p, e) = check_frame(name, &got, &[19, 20, 21]);
        let want = expected_walk(loops, p);
        let mid = &got[p..got.len() - e];
        assert_eq!(
            mid,
            &want[..],
            "{name} between prologue and epilogue: got\n{got:#?}\nwant\n{want:#?}"
        );
        let sym = f.symbol(name).unwrap();
        assert!(sym.global, "{name} is not global");
        // x21: the data base (the adrp/add pair after the prologue)
        let p = p as u64;
        let base = operand(f, name, p);
        assert_eq!(operand(f, name, p + 1), base);
        let mut setup = p + 2;
        for (k, ty) in tables.iter().enumerate() {
            let listed = table_objects(f, name, setup, &base);
            let want = objects_of(f, model, ty);
            assert!(!want.is_empty());
            assert_each_once(&format!("{name} loop {k}"), &listed, &want);
            setup += if loops[k].1 { 12 } else { 11 };
        }
    }
    assert!(!codes.is_empty());
}

#[test]
fn py311_stubs_disassemble_as_intended() {
    let p = py311();
    assert_stubs(
        &p.ours_path,
        &p.ours,
        &PY311_X64,
        true,
        &[("_PyStaticCode_InternStrings", true)],
        &[
            ("_PyStaticCode_Dealloc", false),
            ("_PyStaticUnicode_Dealloc", false),
        ],
        &["PyCode_Type", "PyUnicode_Type"],
    );
}

#[test]
fn py312_stubs_disassemble_as_intended() {
    let p = py312();
    assert_stubs(
        &p.ours_path,
        &p.ours,
        &PY312_X64,
        false,
        &[("_PyStaticCode_Init", true)],
        &[("_PyStaticCode_Fini", false)],
        &["PyCode_Type"],
    );
}

// ---------------------------------------------------------------------------
// The AArch64 accessor rule itself (tests/support/objgraph.rs)
// ---------------------------------------------------------------------------

fn loc(offset: u64) -> Loc {
    Loc { section: 3, offset }
}

fn local(offset: u64) -> Reloc {
    Reloc {
        target: Target::Local(loc(offset)),
        size: 0,
        pcrel: false,
    }
}

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn decode(ws: &[u32], relocs: &[(u64, &Reloc)]) -> Result<support::objgraph::AccessorCode, String> {
    accessor_code(object::Architecture::Aarch64, &words(ws), relocs)
}

/// Our accessor shape and gcc's (anchor + offset, inlined wstr patch-ups,
/// the increment through another register) decode to what they do.
#[test]
fn aarch64_rule_decodes_both_compilers() {
    let obj = local(0x1000);
    // adrp x0; add x0, x0, :lo12:; ldr x1, [x0]; add x1, x1, #1; str x1, [x0]; ret
    let ours = [
        0x9000_0000,
        0x9100_0000,
        0xf940_0001,
        0x9100_0421,
        0xf900_0001,
        0xd65f_03c0,
    ];
    let c = decode(&ours, &[(0, &obj), (4, &obj)]).unwrap();
    assert_eq!(c.returned, Some(loc(0x1000)));
    assert_eq!(c.increments, [loc(0x1000)]);
    assert!(c.other.is_empty());
    // gcc's __hello__ (3.11, AArch64): anchors at 0x44000 (x2) and
    // 0x82b00 (x1); the str at 0x82b00+424 gets wstr = its data
    // (+496 = +424+72) and wstr_length = 1; the code object at
    // 0x44000+3456 is returned with its refcount incremented.
    let (a2, a1) = (local(0x44000), local(0x82b00));
    let gcc = [
        0x9000_0002, // adrp x2
        0x9100_0042, // add x2, x2, :lo12:
        0x9000_0001, // adrp x1
        0x9100_0021, // add x1, x1, :lo12:
        0x9106_a024, // add x4, x1, #424
        0x9107_c021, // add x1, x1, #496
        0xf946_c043, // ldr x3, [x2, #3456]
        0xd280_0025, // mov x5, #1
        0x9136_0040, // add x0, x2, #3456
        0xf900_1481, // str x1, [x4, #40]
        0x8b05_0061, // add x1, x3, x5
        0xf900_2085, // str x5, [x4, #64]
        0xf906_c041, // str x1, [x2, #3456]
        0xd65f_03c0, // ret
    ];
    let c = decode(&gcc, &[(0, &a2), (4, &a2), (8, &a1), (12, &a1)]).unwrap();
    let code = loc(0x44000 + 3456);
    let s = 0x82b00 + 424;
    assert_eq!(c.returned, Some(code));
    assert_eq!(c.increments, [code]);
    assert_eq!(
        c.other,
        [
            Target::Local(loc(s + 40)),
            Target::Local(loc(s + 72)),
            Target::Local(loc(s + 64)),
        ]
    );
    // sub and ldur/stur with a negative offset (gcc's __phello__.ham)
    let ham = [
        0x9000_0001, // adrp x1
        0x9100_0021, // add x1, x1, :lo12:
        0xd101_c020, // sub x0, x1, #112
        0xf859_0022, // ldur x2, [x1, #-112]
        0x9100_0442, // add x2, x2, #1
        0xf819_0022, // stur x2, [x1, #-112]
        0xd65f_03c0, // ret
    ];
    let c = decode(&ham, &[(0, &a1), (4, &a1)]).unwrap();
    assert_eq!(c.returned, Some(loc(0x82b00 - 112)));
    assert_eq!(c.increments, [loc(0x82b00 - 112)]);
    assert!(c.other.is_empty());
}

/// What the rule must not accept as an accessor returning a new reference.
#[test]
fn aarch64_rule_is_strict() {
    let obj = local(0x1000);
    let other = local(0x2000);
    let both = [(0, &obj), (4, &obj)];
    // adding 2 is not an increment: the load and the store are reported
    let c = decode(
        &[
            0x9000_0000,
            0x9100_0000,
            0xf940_0001,
            0x9100_0821,
            0xf900_0001,
            0xd65f_03c0,
        ],
        &both,
    )
    .unwrap();
    assert!(c.increments.is_empty(), "{c:?}");
    assert_eq!(
        c.other,
        [Target::Local(loc(0x1000)), Target::Local(loc(0x1000))]
    );
    // incrementing one object and returning another (x0 moved by 8)
    let c = decode(
        &[
            0x9000_0000,
            0x9100_0000,
            0xf940_0001,
            0x9100_0421,
            0xf900_0001,
            0x9100_2000,
            0xd65f_03c0,
        ],
        &both,
    )
    .unwrap();
    assert_eq!(c.returned, Some(loc(0x1008)));
    assert_eq!(c.increments, [loc(0x1000)]);
    // the adrp and the add name different places
    let e = decode(
        &[0x9000_0000, 0x9100_0000, 0xd65f_03c0],
        &[(0, &obj), (4, &other)],
    );
    assert!(e.is_err(), "{e:?}");
    // x0 overwritten by something untracked (ldr w0, [sp])
    let c = decode(&[0x9000_0000, 0x9100_0000, 0xb940_03e0, 0xd65f_03c0], &both).unwrap();
    assert_eq!(c.returned, None);
    // branches and calls are refused, and so is a missing ret
    for w in [
        0x1400_0001u32,
        0x9400_0000,
        0x5400_0002,
        0xb400_0040,
        0x3700_0040,
        0xd63f_0020,
    ] {
        let e = decode(&[0x9000_0000, 0x9100_0000, w, 0xd65f_03c0], &both);
        assert!(e.is_err(), "{w:#x}: {e:?}");
    }
    assert!(decode(&[0x9000_0000, 0x9100_0000], &both).is_err());
    // an unrecognized store through the object's address (str w1, [x0])
    let e = decode(&[0x9000_0000, 0x9100_0000, 0xb900_0001, 0xd65f_03c0], &both);
    assert!(e.is_err(), "{e:?}");
}
