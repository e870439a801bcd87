//! `Makefile.frag` inside CPython's own build: Debian's CPython 3.11.2
//! source package, configured plainly, built with `make -j2` and the
//! fragment included, natively and cross for aarch64; and CPython 3.13.5
//! natively.
//!
//! * `slow_native_build_with_fragment`: no `deepfreeze.c` is written and no
//!   deep-freeze C is compiled (make's log and the file system), the object
//!   is ours (no compiler's `.comment`, no DWARF), the module list the
//!   fragment derives equals the FILE:MODNAME list of CPython's own recipe,
//!   make warns about no recipe, `__hello__` runs, and the tree is up to date.
//! * `slow_native_subset_matches_stock`: CPython's test modules `SUBSET`
//!   give the same per-module verdicts and counts (and the same outcome for
//!   every test case both runs name) on the tree built with the fragment as
//!   on the same tree built without it.
//! * `slow_rebuild_after_source_tool_or_flag_change`: `touch Lib/os.py`, a
//!   real edit of it (a marker attribute, read back from the deep-frozen
//!   `os`), a new tool binary and a new `PYFREEZE_FLAGS` each re-run the
//!   emit and the link; a second `make` has nothing to do.
//! * `slow_cross_aarch64_build_runs_under_qemu`: `--host=aarch64-linux-gnu`
//!   with the fragment; the interpreter runs under `qemu-aarch64` and passes
//!   `test_frozen test_code test_importlib`.
//!
//! * CPython 3.13.5 (upstream's tree, pristine: the orig tarball of Debian
//!   trixie's source package, `tests/setup/cpython313-src.sh` says why not
//!   the patched tree), configured plainly, with and without the fragment:
//!   - `slow_313_build_with_fragment`: only `python`'s link has our object
//!     and the `--wrap` flags (not `_bootstrap_python`, `_freeze_module`,
//!     `_testembed`, the probe interpreter or any `-shared` link; sysconfig
//!     records none of it); frozen modules come from FrozenImporter and
//!     every frozen module's code is one static, immortal object equal to
//!     `marshal.loads` of its bytes (`tests/py313_support/check_static.py`,
//!     with `co_version`'s offset from the layout read from the build's
//!     DWARF); the emit says with `-v` that it read the layout from the
//!     archive's debug info (the built-in table is 3.13.0's), and refuses
//!     on one line naming both releases without an interpreter for the
//!     probes or without debug info (a `strip --strip-debug` copy).
//!   - `slow_313_tests_match_stock`: `test_frozen test_code test_importlib`
//!     with `-X frozen_modules=on` pass and give the stock build's outcome
//!     for every test case.
//!   - `slow_313_rebuild_after_os_edit`: a marker appended to `Lib/os.py`
//!     is re-frozen by `make` (os.h, the emit, python's link) and read back
//!     from os's static code; restoring it removes it; a second `make` has
//!     nothing to do.
//!   - `slow_313_shared_build_is_refused`: configured `--enable-shared`,
//!     the fragment stops make before anything is built, saying why.
//!
//! Builds are cached between runs under
//! `${PYFREEZE_CACHE:-$HOME/.cache/pyfreeze-obj}/makefrag/<variant>`, each
//! with a private copy of the source tree: one configure + build per variant,
//! redone from scratch only when `Makefile.frag`, the configure settings or
//! this harness change (`STAMP`). A new pyfreeze-obj binary is copied into
//! the build's `bin/` and make itself re-runs the emit (the tool is a
//! prerequisite), as a developer's tree would. The stock subset's results are
//! cached with the stock build.
//!
//! Left out of the CI subset, for time: every other test module. The whole
//! suite (`./python -m test -j2`) takes 20 to 29 minutes per build on this
//! machine's 2 cores, the subset under half a minute; compared by hand, both
//! builds gave the same verdicts for all 434 modules and the same outcome
//! for each of ~37,000 test cases (test_socket's AF_VSOCK tests hang in this
//! VM on both builds and were run separately with `-i '*VSOCK*'`). The chosen
//! ones exercise what the deep-frozen modules are and feed: startup and
//! frozen imports (`_imp`, `-X frozen_modules`, `test_embed` starts
//! interpreters through the C API, init and fini included), importlib,
//! zipimport and runpy, os and the path modules, codecs, abc and the
//! collections ABCs, and code objects (compile, dis, inspect, marshal,
//! tracebacks).
//!
//! Everything here is slow (minutes): every test name starts with `slow_`, so
//! the fast tier `cargo test -- --skip slow_` leaves them out. Missing tools
//! are installed by `tests/setup/cpython-build.sh` (run from here; `.ci/run`
//! may run it first); anything still missing is a failure, never a skip.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;
use support::regrtest::{self, Suite, SuiteRun};
use support::{describe, output as run, run_ok, tail};

mod support;

/// Bumped when the harness changes what a cached build contains.
const STAMP: &str = "makefrag-harness-2";

/// The CPython test modules run in CI on both native builds.
const SUBSET: &[&str] = &[
    // startup and the frozen-module machinery
    "test_frozen",
    "test_sys",
    "test_site",
    "test_cmd_line",
    "test_cmd_line_script",
    "test_embed",
    // importlib, zipimport, runpy (deep-frozen themselves)
    "test_importlib",
    "test_import",
    "test_zipimport",
    "test_pkgutil",
    "test_runpy",
    // os, the path modules, stat, codecs, abc, _collections_abc
    "test_os",
    "test_posixpath",
    "test_ntpath",
    "test_genericpath",
    "test_stat",
    "test_codecs",
    "test_abc",
    "test_collections",
    // code objects
    "test_code",
    "test_compile",
    "test_dis",
    "test_inspect",
    "test_marshal",
    "test_traceback",
];

/// The modules the cross build's interpreter runs under qemu.
const CROSS_SUBSET: &[&str] = &["test_frozen", "test_code", "test_importlib"];

const HELLO: &str = "import __hello__; __hello__.main()";
/// The object Makefile.frag adds to a 3.13 build.
const FROZEN_313: &str = "Python/frozen-pyfreeze.o";
/// The modules the 3.13.5 builds run, with frozen modules on.
const SUBSET_313: &[&str] = &["test_frozen", "test_code", "test_importlib"];
const MARKER: &str = "PYFREEZE_TEST_MARKER";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cache() -> PathBuf {
    match std::env::var_os("PYFREEZE_CACHE") {
        Some(c) if !c.is_empty() => PathBuf::from(c),
        _ => Path::new(&std::env::var_os("HOME").expect("HOME is not set"))
            .join(".cache/pyfreeze-obj"),
    }
}

// -- running things ------------------------------------------------------------

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run with stdout and stderr into `log` (interleaved, as a terminal shows
/// them); panic with the log's tail unless it exits 0. Returns the log text.
fn run_logged(cmd: &mut Command, log: &Path) -> String {
    let f = fs::File::create(log).unwrap();
    let t0 = Instant::now();
    let status = cmd
        .stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f))
        .status()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)));
    let logged = fs::read_to_string(log).unwrap_or_default();
    eprintln!(
        "makefrag: `{}` in {:?}: {:.1} s",
        describe(cmd),
        cmd.get_current_dir().unwrap_or(Path::new(".")),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        status.success(),
        "`{}` failed ({status}); log {}:\n{}",
        describe(cmd),
        log.display(),
        tail(&logged, 80)
    );
    logged
}

/// Environment without the caller's Python settings, for builds and runs.
fn clean_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("PYTHON") || k == "CONFIG_SITE" || k.starts_with("MAKE") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("LC_ALL", "C.UTF-8")
}

fn make(dir: &Path) -> Command {
    let mut c = Command::new("make");
    clean_env(&mut c).current_dir(dir);
    c
}

/// `make -q TARGETS`: true when they are up to date.
fn up_to_date(dir: &Path, targets: &[&str]) -> bool {
    let out = run(make(dir).arg("-q").args(targets));
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("make -q failed in {}:\n{}", dir.display(), text(&out)),
    }
}

// -- the source tree and the builds ------------------------------------------------

/// Debian's CPython 3.11.2 source tree (pristine; never modified here),
/// after `tests/setup/cpython-build.sh` has installed what builds need.
fn source_tree() -> &'static Path {
    static SRC: OnceLock<PathBuf> = OnceLock::new();
    SRC.get_or_init(|| {
        let out = run_ok(&mut Command::new(
            repo().join("tests/setup/cpython-build.sh"),
        ));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let src = PathBuf::from(stdout.lines().last().expect("no source path").trim());
        assert!(
            src.join("Makefile.pre.in").is_file(),
            "tests/setup/cpython-build.sh printed '{}', no CPython tree there",
            src.display()
        );
        src
    })
}

/// CPython 3.13.5's pristine upstream tree (Debian trixie's source
/// package's orig tarball; never modified here), after
/// `tests/setup/cpython313-src.sh` has fetched and unpacked it.
fn source_tree_313() -> &'static Path {
    static SRC: OnceLock<PathBuf> = OnceLock::new();
    SRC.get_or_init(|| {
        let out = run_ok(&mut Command::new(
            repo().join("tests/setup/cpython313-src.sh"),
        ));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let src = PathBuf::from(stdout.lines().last().expect("no source path").trim());
        assert!(
            src.join("Makefile.pre.in").is_file() && src.join("Python/frozen.c").is_file(),
            "tests/setup/cpython313-src.sh printed '{}', no CPython 3.13 tree there",
            src.display()
        );
        src
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// Native, CPython's own deep-freeze step.
    Stock,
    /// Native, with Makefile.frag.
    Frag,
    /// aarch64 cross build with Makefile.frag.
    Cross,
    /// CPython 3.13.5, native, as CPython builds it.
    Stock313,
    /// CPython 3.13.5, native, with Makefile.frag.
    Frag313,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Stock => "stock",
            Variant::Frag => "frag",
            Variant::Cross => "cross-aarch64",
            Variant::Stock313 => "stock-3.13.5",
            Variant::Frag313 => "frag-3.13.5",
        }
    }
    fn uses_fragment(self) -> bool {
        !matches!(self, Variant::Stock | Variant::Stock313)
    }
    fn is_313(self) -> bool {
        matches!(self, Variant::Stock313 | Variant::Frag313)
    }
    fn source(self) -> &'static Path {
        match self.is_313() {
            true => source_tree_313(),
            false => source_tree(),
        }
    }
    /// The object the fragment makes, and the interpreter.
    fn targets(self) -> [&'static str; 2] {
        match self.is_313() {
            true => [FROZEN_313, "python"],
            false => ["Python/deepfreeze/deepfreeze.o", "python"],
        }
    }
    /// configure's arguments and environment.
    fn configure(self, root: &Path) -> (Vec<String>, Vec<(String, String)>) {
        match self {
            Variant::Stock | Variant::Frag | Variant::Stock313 | Variant::Frag313 => {
                (vec![], vec![])
            }
            Variant::Cross => (
                vec![
                    "--host=aarch64-linux-gnu".into(),
                    "--build=x86_64-linux-gnu".into(),
                    // Debian's own 3.11.2: the same version and bytecode as
                    // the tree (a bare `python3.11` may be pyenv's 3.11.7)
                    "--with-build-python=/usr/bin/python3.11".into(),
                ],
                vec![
                    (
                        "CONFIG_SITE".into(),
                        root.join("config.site").display().to_string(),
                    ),
                    // the host's pkg-config would report x86_64 libraries
                    // (zlib, libffi, ...) that the cross linker cannot use:
                    // without it those modules are reported missing and skipped
                    ("PKG_CONFIG".into(), "false".into()),
                ],
            ),
        }
    }
}

/// Cross configure answers that cannot be probed without running target code.
const CONFIG_SITE: &str = "ac_cv_file__dev_ptmx=yes\n\
                           ac_cv_file__dev_ptc=no\n\
                           ac_cv_buggy_getaddrinfo=no\n";

struct Build {
    variant: Variant,
    /// `<cache>/makefrag/<variant>`
    root: PathBuf,
    /// a private copy of the source tree
    src: PathBuf,
    /// the configured build directory (out of tree)
    dir: PathBuf,
    /// `bin/pyfreeze-obj`, the copy the fragment uses (PYFREEZE_OBJ)
    tool: PathBuf,
    /// the log of every make run on this build, first the full build
    logs: Vec<PathBuf>,
    /// whether this run built it from scratch
    fresh: bool,
}

impl Build {
    fn python(&self) -> PathBuf {
        self.dir.join("python")
    }
    /// The command that runs this build's interpreter (through qemu for the
    /// cross build).
    fn python_cmd(&self) -> Command {
        let exe = match self.variant {
            Variant::Cross => self.dir.join("python-qemu"),
            _ => self.python(),
        };
        let mut c = Command::new(exe);
        clean_env(&mut c);
        if self.variant.is_313() {
            // 3.13 in its build tree defaults to frozen modules off
            c.args(["-X", "frozen_modules=on"]);
        }
        c
    }
    fn next_log(&mut self, what: &str) -> PathBuf {
        let p = self
            .root
            .join(format!("log-{:02}-{what}.txt", self.logs.len()));
        self.logs.push(p.clone());
        p
    }
    /// `make -j2 ARGS`, logged; returns the log.
    fn make(&mut self, what: &str, args: &[&str]) -> String {
        let log = self.next_log(what);
        let dir = self.dir.clone();
        run_logged(make(&dir).arg("-j2").args(args), &log)
    }
    fn all_logs(&self) -> String {
        self.logs
            .iter()
            .map(|l| fs::read_to_string(l).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn fingerprint(parts: &[&[u8]]) -> String {
    // FNV-1a, 64 bit: enough to tell configurations apart
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(b"\0") {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The cached build of `v`, made (or brought up to date) once per test run.
fn build(v: Variant) -> MutexGuard<'static, Build> {
    static CELLS: [OnceLock<Mutex<Build>>; 5] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let i = v as usize;
    CELLS[i]
        .get_or_init(|| Mutex::new(prepare(v)))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn prepare(v: Variant) -> Build {
    let src0 = v.source();
    let top = cache().join("makefrag");
    fs::create_dir_all(&top).unwrap();
    // one process at a time per variant (two `cargo test` runs at once)
    let lock = fs::File::create(top.join(format!("{}.lock", v.name()))).unwrap();
    lock.lock().unwrap();

    let root = top.join(v.name());
    let fragment = fs::read(repo().join("Makefile.frag")).unwrap();
    let (args, env) = v.configure(&root);
    let key = fingerprint(&[
        STAMP.as_bytes(),
        v.name().as_bytes(),
        src0.display().to_string().as_bytes(),
        args.join(" ").as_bytes(),
        format!("{env:?}").as_bytes(),
        if v.uses_fragment() { &fragment } else { b"" },
    ]);
    let mut b = Build {
        variant: v,
        src: root.join("src"),
        dir: root.join("build"),
        tool: root.join("bin/pyfreeze-obj"),
        root: root.clone(),
        logs: vec![],
        fresh: false,
    };
    let stamp = root.join("stamp");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str()) {
        let mut logs: Vec<PathBuf> = fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("log-"))
            })
            .collect();
        logs.sort();
        b.logs = logs;
        eprintln!(
            "makefrag: reusing the {} build in {}",
            v.name(),
            root.display()
        );
        if v.uses_fragment() {
            refresh(&mut b, src0);
        }
        return b;
    }

    eprintln!(
        "makefrag: building {} from scratch in {}",
        v.name(),
        root.display()
    );
    b.fresh = true;
    if root.exists() {
        fs::remove_dir_all(&root).unwrap();
    }
    fs::create_dir_all(&b.dir).unwrap();
    fs::create_dir_all(b.tool.parent().unwrap()).unwrap();
    run_ok(Command::new("cp").arg("-a").arg(src0).arg(&b.src));
    if v == Variant::Cross {
        fs::write(root.join("config.site"), CONFIG_SITE).unwrap();
    }
    let mut cfg = Command::new(b.src.join("configure"));
    clean_env(&mut cfg).current_dir(&b.dir).args(&args);
    for (k, val) in &env {
        cfg.env(k, val);
    }
    let log = b.next_log("configure");
    run_logged(&mut cfg, &log);
    if v.uses_fragment() {
        install_tool(&b);
        // the fragment as this key has it: a copy in the build's root, so
        // that a cached build does not depend on where the checkout that
        // built it was (CI clones afresh)
        let frag = root.join("Makefile.frag");
        fs::write(&frag, &fragment).unwrap();
        // the documented step: one include line, here with the tool's path
        // set before it
        let mut mk = fs::OpenOptions::new()
            .append(true)
            .open(b.dir.join("Makefile"))
            .unwrap();
        writeln!(
            mk,
            "\nPYFREEZE_OBJ = {}\ninclude {}",
            b.tool.display(),
            frag.display()
        )
        .unwrap();
    }
    b.make("build", &[]);
    if v == Variant::Cross {
        cross_fixups(&b);
    }
    fs::write(&stamp, &key).unwrap();
    b
}

/// Copy the tool under test to `bin/` (a new file, so a new mtime).
fn install_tool(b: &Build) {
    let tmp = b.tool.with_extension("tmp");
    fs::copy(env!("CARGO_BIN_EXE_pyfreeze-obj"), &tmp).unwrap();
    fs::rename(&tmp, &b.tool).unwrap();
}

/// A reused fragment build: put back a pristine Lib/os.py (an interrupted
/// run may have left an edit), install a changed tool, and let make bring
/// the tree up to date -- with a new tool, make itself must re-run the emit.
fn refresh(b: &mut Build, src0: &Path) {
    let os_py = b.src.join("Lib/os.py");
    let pristine = fs::read(src0.join("Lib/os.py")).unwrap();
    if fs::read(&os_py).unwrap() != pristine {
        eprintln!("makefrag: restoring {}", os_py.display());
        fs::write(&os_py, &pristine).unwrap();
    }
    let new_tool = fs::read(env!("CARGO_BIN_EXE_pyfreeze-obj")).unwrap();
    let tool_changed = fs::read(&b.tool).ok() != Some(new_tool);
    if tool_changed {
        install_tool(b);
    }
    if !up_to_date(&b.dir, &b.variant.targets()) {
        let log = b.make("refresh", &[]);
        if tool_changed {
            assert!(
                log.contains("pyfreeze-obj emit"),
                "a new pyfreeze-obj binary did not re-run the emit:\n{}",
                tail(&log, 40)
            );
        }
        if b.variant == Variant::Cross {
            cross_fixups(b);
        }
    }
    assert!(
        up_to_date(&b.dir, &b.variant.targets()),
        "{} is not up to date after make",
        b.dir.display()
    );
}

/// What running the cross build's interpreter in its build directory needs.
fn cross_fixups(b: &Build) {
    // Debian's sysconfig looks for _sysconfigdata__<multiarch>, the build
    // writes _sysconfigdata__<machdep>_<multiarch> (Debian links the two at
    // install time)
    let pybuilddir = fs::read_to_string(b.dir.join("pybuilddir.txt")).unwrap();
    let lib = b.dir.join(pybuilddir.trim());
    let link = lib.join("_sysconfigdata__aarch64-linux-gnu.py");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink("_sysconfigdata__linux_aarch64-linux-gnu.py", &link).unwrap();
    // no binfmt_misc here: a wrapper that runs the interpreter under qemu
    // and is its sys.executable (qemu's -0 sets argv[0]), so that the
    // subprocesses CPython's tests start run under qemu too
    let wrapper = b.dir.join("python-qemu");
    fs::write(
        &wrapper,
        "#!/bin/sh\n\
         d=$(cd \"$(dirname \"$0\")\" && pwd)\n\
         exec qemu-aarch64 -L /usr/aarch64-linux-gnu -0 \"$d/python-qemu\" \"$d/python\" \"$@\"\n",
    )
    .unwrap();
    run_ok(Command::new("chmod").arg("+x").arg(&wrapper));
}

// -- checks on a build ---------------------------------------------------------------

/// `python -c CODE` from a scratch directory outside the tree.
fn python_c(b: &Build, args: &[&str], code: &str) -> String {
    let cwd = b.root.join("cwd");
    fs::create_dir_all(&cwd).unwrap();
    let out = run_ok(
        b.python_cmd()
            .current_dir(&cwd)
            .args(args)
            .arg("-c")
            .arg(code),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The FILE:MODNAME arguments of CPython's own deepfreeze.c recipe, from
/// the generated Makefile.
fn recipe_modules(dir: &Path) -> Vec<String> {
    let mk = fs::read_to_string(dir.join("Makefile")).unwrap();
    let start = mk
        .find("# BEGIN: deepfreeze modules")
        .expect("no BEGIN: deepfreeze modules");
    let end = mk[start..]
        .find("# END: deepfreeze modules")
        .expect("no END: deepfreeze modules");
    mk[start..start + end]
        .split_whitespace()
        .filter(|w| w.starts_with("Python/frozen_modules/") && w.contains(".h:"))
        .map(String::from)
        .collect()
}

/// The effective settings the fragment reports (`make pyfreeze-obj-info`).
fn fragment_info(dir: &Path) -> BTreeMap<String, String> {
    let out = run_ok(make(dir).args(["-s", "pyfreeze-obj-info"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Checks every fragment build passes: the deep-freeze step was ours alone.
fn check_no_deepfreeze_c(b: &Build) {
    let logs = b.all_logs();
    assert!(
        logs.contains("pyfreeze-obj emit"),
        "{}: make never ran pyfreeze-obj emit",
        b.variant.name()
    );
    for bad in ["deepfreeze.py", "deepfreeze.c"] {
        let hit = logs.lines().find(|l| l.contains(bad));
        assert!(
            hit.is_none(),
            "{}: make's log mentions {bad}: {}",
            b.variant.name(),
            hit.unwrap_or("")
        );
    }
    for warn in ["overriding recipe", "ignoring old recipe", "Makefile.frag:"] {
        let hit = logs.lines().find(|l| l.contains(warn));
        assert!(hit.is_none(), "make warned: {}", hit.unwrap_or(""));
    }
    for d in [&b.dir, &b.src] {
        let c = d.join("Python/deepfreeze/deepfreeze.c");
        assert!(!c.exists(), "{} was written", c.display());
    }
    // not compiler output: no .comment ("GCC: ..."), no DWARF
    let o = b.dir.join("Python/deepfreeze/deepfreeze.o");
    let data = fs::read(&o).unwrap();
    let file = object::File::parse(&*data).unwrap();
    use object::{Object, ObjectSection};
    for s in file.sections() {
        let name = s.name().unwrap_or("");
        assert!(
            name != ".comment" && !name.starts_with(".debug"),
            "{} has a {name} section: compiled, not emitted",
            o.display()
        );
    }
    let info = fragment_info(&b.dir);
    let derived: Vec<String> = info["PYFREEZE_MODULES"]
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        derived,
        recipe_modules(&b.dir),
        "the module list derived from FROZEN_FILES_OUT differs from CPython's deepfreeze.c recipe"
    );
    assert_eq!(derived.len(), 23, "CPython 3.11's stock set has 23 modules");
}

// -- CPython's test suite ------------------------------------------------------------

/// `python -m test [-jN] TESTS` on a build, from a scratch directory
/// (`tests/support/regrtest.rs`: verdicts, junit test cases, totals); the
/// log and junit file stay in the build's `suite` folder.
fn run_suite(b: &Build, tag: &str, tests: &[&str], jobs: u32) -> SuiteRun {
    let t0 = Instant::now();
    let dir = b.root.join("suite");
    fs::create_dir_all(&dir).unwrap();
    let run = regrtest::run(
        b.python_cmd(),
        host_python(),
        &dir,
        tag,
        tests,
        &suite(tests, jobs),
    );
    eprintln!(
        "makefrag: {} {tag}: {:?} in {:.0} s",
        b.variant.name(),
        tests,
        t0.elapsed().as_secs_f64()
    );
    for t in tests {
        assert!(
            run.modules.contains_key(*t),
            "{tag}: regrtest reported nothing for {t}:\n{}",
            tail(&run.log, 60)
        );
    }
    run
}

fn suite<'a>(tests: &'a [&'a str], jobs: u32) -> Suite<'a> {
    Suite {
        tests,
        jobs,
        verbose: true,
        ..Default::default()
    }
}

/// Debian's host interpreter (the tree's version): summarizes junit files.
fn host_python() -> Command {
    support::clean_python(Path::new("/usr/bin/python3.11"))
}

/// The stock build's subset results: cached next to the build.
fn stock_subset(b: &Build) -> SuiteRun {
    let tag = format!(
        "stock-subset-{}",
        fingerprint(&[SUBSET.join(" ").as_bytes()])
    );
    if !b.fresh {
        if let Some(run) = regrtest::load(host_python(), &b.root.join("suite"), &tag, true) {
            return run;
        }
    }
    run_suite(b, &tag, SUBSET, 2)
}

// -- the tests ---------------------------------------------------------------------------

#[test]
fn slow_native_build_with_fragment() {
    let stock = build(Variant::Stock);
    // the log check below would notice CPython's step: it is in the stock log
    let stock_logs = stock.all_logs();
    assert!(
        stock_logs.contains("Tools/scripts/deepfreeze.py")
            && stock_logs.contains("-o Python/deepfreeze/deepfreeze.c"),
        "the stock build's log does not show CPython's deep-freeze step"
    );
    drop(stock);

    let b = build(Variant::Frag);
    check_no_deepfreeze_c(&b);
    let info = fragment_info(&b.dir);
    assert_eq!(info["PYFREEZE_TARGET"], "x86_64-pc-linux-gnu");
    assert_eq!(info["PYFREEZE_PYTHON"], "3.11");
    assert_eq!(info["PYFREEZE_OBJ"], b.tool.display().to_string());
    assert_eq!(python_c(&b, &[], HELLO), "Hello world!\n");
    // the modules really come deep-frozen from our object
    assert_eq!(
        python_c(
            &b,
            &[],
            "import _imp, os, importlib._bootstrap as b\n\
             print(_imp.is_frozen('os'), os.__spec__.origin, b.__spec__.origin)"
        ),
        "True frozen frozen\n"
    );
    // the depfile names the headers and the tool
    let d = fs::read_to_string(b.dir.join("Python/deepfreeze/deepfreeze.d")).unwrap();
    assert!(d.starts_with("Python/deepfreeze/deepfreeze.o:"), "{d}");
    assert!(d.contains("Python/frozen_modules/os.h"), "{d}");
    assert!(d.contains("pyfreeze-obj"), "{d}");
    assert!(
        up_to_date(&b.dir, &["Python/deepfreeze/deepfreeze.o", "python"]),
        "a finished build is not up to date"
    );
}

#[test]
fn slow_native_subset_matches_stock() {
    let stock_run = {
        let stock = build(Variant::Stock);
        stock_subset(&stock)
    };
    // the frag build against the stock one (its results cached with it)
    let both = |tag: &str, tests: &[&str], s: &Suite| -> (SuiteRun, SuiteRun) {
        let ours = run_suite(&build(Variant::Frag), &format!("frag{tag}"), tests, s.jobs);
        match tag {
            "" => (ours, stock_run.clone()),
            _ => (
                ours,
                run_suite(&build(Variant::Stock), "stock-rerun", tests, s.jobs),
            ),
        }
    };
    let subset = Suite {
        min_cases: 1000,
        ..suite(SUBSET, 2)
    };
    regrtest::compare_with_stock("makefrag: Makefile.frag vs stock build", &both, &subset);
}

/// Puts the private tree's Lib/os.py back, whatever happens.
struct RestoreOsPy {
    path: PathBuf,
    original: Vec<u8>,
}

impl Drop for RestoreOsPy {
    fn drop(&mut self) {
        if fs::read(&self.path).ok().as_deref() != Some(&self.original[..]) {
            let _ = fs::write(&self.path, &self.original);
        }
    }
}

#[test]
fn slow_rebuild_after_source_tool_or_flag_change() {
    let mut b = build(Variant::Frag);
    let dir = b.dir.clone();
    let targets = ["Python/deepfreeze/deepfreeze.o", "python"];
    assert!(up_to_date(&dir, &targets), "not up to date to begin with");

    // a make that re-froze os, re-ran the emit and relinked the interpreter
    let assert_rebuilt = |log: &str, what: &str, refreeze: bool| {
        if refreeze {
            assert!(
                log.lines()
                    .any(|l| l.contains("_freeze_module")
                        && l.contains("Python/frozen_modules/os.h")),
                "{what}: os was not re-frozen:\n{}",
                tail(log, 40)
            );
        }
        assert!(
            log.contains("pyfreeze-obj emit"),
            "{what}: no emit:\n{}",
            tail(log, 40)
        );
        assert!(
            log.lines().any(|l| l.contains(" -o python ")),
            "{what}: python was not relinked:\n{}",
            tail(log, 40)
        );
        assert!(!log.contains("deepfreeze.py") && !log.contains("deepfreeze.c"));
    };
    // ... and a second make has nothing to do
    let assert_quiet = |what: &str| {
        assert!(
            up_to_date(&dir, &targets),
            "{what}: make -q says a second make would do something"
        );
        let out = run_ok(make(&dir).arg("-n"));
        let plan = text(&out);
        assert!(
            !plan.contains("pyfreeze-obj emit") && !plan.lines().any(|l| l.contains(" -o python ")),
            "{what}: make -n would re-emit or relink:\n{}",
            tail(&plan, 40)
        );
    };
    let frozen_os = "import os\n\
                     print(os.__spec__.origin, getattr(os, 'PYFREEZE_TEST_MARKER', None))";

    let os_py = b.src.join("Lib/os.py");
    let original = fs::read(&os_py).unwrap();
    let _restore = RestoreOsPy {
        path: os_py.clone(),
        original: original.clone(),
    };

    // 1. touch
    fs::File::options()
        .append(true)
        .open(&os_py)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let log = b.make("touch-os", &[]);
    assert_rebuilt(&log, "touch Lib/os.py", true);
    assert_quiet("after touch");

    // 2. a real edit: the new attribute comes from the deep-frozen os
    let mut edited = original.clone();
    edited.extend_from_slice(format!("\n{MARKER} = 1\n").as_bytes());
    fs::write(&os_py, &edited).unwrap();
    let log = b.make("edit-os", &[]);
    assert_rebuilt(&log, "edit Lib/os.py", true);
    assert_eq!(
        python_c(&b, &["-X", "frozen_modules=on"], frozen_os),
        "frozen 1\n"
    );
    assert_quiet("after the edit");

    // 3. a new tool binary (same bytes, new mtime) re-runs the emit
    install_tool(&b);
    assert!(
        !up_to_date(&dir, &targets),
        "a new tool binary left deepfreeze.o up to date"
    );
    let log = b.make("new-tool", &[]);
    assert_rebuilt(&log, "new tool", false);
    assert_quiet("after a new tool");

    // 4. other flags re-run it, and so does going back to the old ones
    let log = b.make(
        "flags",
        &["PYFREEZE_FLAGS=-v", "Python/deepfreeze/deepfreeze.o"],
    );
    assert!(
        log.contains("pyfreeze-obj emit") && log.contains(" -v"),
        "PYFREEZE_FLAGS=-v did not re-run the emit with -v:\n{}",
        tail(&log, 20)
    );
    let log = b.make("flags-back", &[]);
    assert_rebuilt(&log, "flags back", false);
    assert_quiet("after the flags");

    // 5. the original source again: the marker is gone
    fs::write(&os_py, &original).unwrap();
    let log = b.make("restore-os", &[]);
    assert_rebuilt(&log, "restore Lib/os.py", true);
    assert_eq!(
        python_c(&b, &["-X", "frozen_modules=on"], frozen_os),
        "frozen None\n"
    );
    assert_quiet("after restoring");
    check_no_deepfreeze_c(&b);
}

#[test]
fn slow_cross_aarch64_build_runs_under_qemu() {
    let b = build(Variant::Cross);
    check_no_deepfreeze_c(&b);
    let info = fragment_info(&b.dir);
    assert_eq!(info["PYFREEZE_TARGET"], "aarch64-unknown-linux-gnu");
    assert!(
        b.all_logs()
            .contains("pyfreeze-obj emit --python 3.11 --target aarch64-unknown-linux-gnu"),
        "the emit did not get the build's host triple"
    );
    use object::Object;
    for f in ["Python/deepfreeze/deepfreeze.o", "python"] {
        let data = fs::read(b.dir.join(f)).unwrap();
        let file = object::File::parse(&*data).unwrap();
        assert_eq!(
            file.architecture(),
            object::Architecture::Aarch64,
            "{f} is not an aarch64 file"
        );
    }
    assert_eq!(python_c(&b, &[], HELLO), "Hello world!\n");
    assert_eq!(
        python_c(
            &b,
            &[],
            "import os, platform, sys\nprint(platform.machine(), os.__spec__.origin, sys.executable.endswith('python-qemu'))"
        ),
        "aarch64 frozen True\n"
    );
    let run = run_suite(&b, "cross-subset", CROSS_SUBSET, 2);
    for t in CROSS_SUBSET {
        assert_eq!(
            run.modules[*t],
            "passed",
            "{t} under qemu:\n{}",
            tail(&run.log, 80)
        );
    }
    let totals = regrtest::totals(&run.log).unwrap_or_default();
    assert!(
        totals.contains("Tests result: SUCCESS"),
        "{}",
        tail(&run.log, 40)
    );
}

// -- CPython 3.13.5 ------------------------------------------------------------------

/// Every line of the builds' make logs that links with `--wrap` is the
/// interpreter's own link, and there is one: not `_bootstrap_python`,
/// `_freeze_module`, `_testembed`, the probe interpreter or an extension
/// module (`-shared`).
fn check_wrap_only_in_python_link(b: &Build) {
    let logs = b.all_logs();
    let links: Vec<&str> = logs.lines().filter(|l| l.contains(" -o python ")).collect();
    assert!(!links.is_empty(), "no link of python in the logs");
    for l in &links {
        assert!(
            l.contains("--wrap=PyMarshal_ReadObjectFromString")
                && l.contains("--wrap=_PyCode_Fini")
                && l.contains(FROZEN_313)
                && !l.split_whitespace().any(|w| w == "Python/frozen.o"),
            "python's link is not ours: {l}"
        );
    }
    for l in logs.lines().filter(|l| l.contains("--wrap")) {
        assert!(
            l.contains(" -o python "),
            "a link other than python's wraps: {l}"
        );
    }
    let others = ["-o Programs/_testembed", "-o _bootstrap_python", "-shared"];
    for o in others {
        assert!(
            logs.lines().any(|l| l.contains(o)),
            "the logs show no `{o}` link to check"
        );
    }
    // the linked files: python defines the wrappers, _testembed does not
    use object::{Object, ObjectSymbol};
    let defines_wrap = |f: &str| {
        let data = fs::read(b.dir.join(f)).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let found = file
            .symbols()
            .any(|s| s.is_definition() && s.name() == Ok("__wrap_PyMarshal_ReadObjectFromString"));
        found
    };
    assert!(defines_wrap("python"), "python has no __wrap_ symbol");
    assert!(
        !defines_wrap("Programs/_testembed"),
        "Programs/_testembed got our object"
    );
}

/// The layout the tool reads from the build's debug info (the offset
/// `check_static.py` reads `co_version` at comes from it).
fn layout_313(b: &Build) -> &'static pyfreeze_obj::layout::Layout {
    pyfreeze_obj::genlayout::generate(&pyfreeze_obj::genlayout::Options {
        archive: b.dir.join("libpython3.13.a"),
        python: Some(b.dir.join("pyfreeze-probe-python")),
        include: Some(b.src.join("Include")),
        types: None,
    })
    .unwrap_or_else(|e| panic!("gen-layout on the 3.13.5 build: {e}"))
    .layout
}

/// `tests/py313_support/check_static.py` in the build's interpreter.
fn check_static_313(b: &Build) -> String {
    let work = b.root.join("cwd");
    fs::create_dir_all(&work).unwrap();
    let version_off = layout_313(b).code.version.expect("3.13 has co_version").off;
    let out = run_ok(
        b.python_cmd()
            .current_dir(&work)
            .env("PY313_WORK", &work)
            .env("PY313_MIN_FROZEN", "20")
            .env("PY313_VERSION_OFF", version_off.to_string())
            .arg(repo().join("tests/py313_support/check_static.py")),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("ok "), "{text}");
    text
}

/// Run the tool as the fragment does (its recorded command line), with
/// `edit` applied to the arguments, in the build directory: its output.
fn emit_as_fragment(b: &Build, edit: &dyn Fn(Vec<String>) -> Vec<String>) -> Output {
    let info = fragment_info(&b.dir);
    let out = b.root.join("cwd/probe-emit.o");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut args: Vec<String> = info["command"]
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect();
    // into a scratch file, without the depfile and flags file
    let i = args.iter().position(|a| a == "-o").unwrap();
    args[i + 1] = out.display().to_string();
    for opt in ["--depfile", "--link-flags"] {
        let i = args.iter().position(|a| a == opt).unwrap();
        args.drain(i..i + 2);
    }
    let args = edit(args);
    run(Command::new(env!("CARGO_BIN_EXE_pyfreeze-obj"))
        .current_dir(&b.dir)
        .args(&args))
}

#[test]
fn slow_313_build_with_fragment() {
    let b = build(Variant::Frag313);
    let info = fragment_info(&b.dir);
    assert_eq!(info["PYFREEZE_PYTHON"], "3.13");
    assert_eq!(info["PYFREEZE_TARGET"], "x86_64-pc-linux-gnu");
    assert!(
        info["command"].contains("--modules-from libpython3.13.a")
            && info["command"].contains("--compile-with ./pyfreeze-probe-python"),
        "{}",
        info["command"]
    );
    check_wrap_only_in_python_link(&b);
    let flags = fs::read_to_string(b.dir.join("Python/frozen-pyfreeze.ldflags")).unwrap();
    let want = pyfreeze_obj::version::PY313
        .contract
        .entry
        .link_flags()
        .join(" ");
    assert_eq!(flags.trim(), want);

    // sysconfig (what extension modules and embedders are built with)
    // records none of it
    assert_eq!(
        python_c(
            &b,
            &[],
            "import sysconfig\n\
             print(sorted(k for k, v in sysconfig.get_config_vars().items()\n\
                          if '--wrap' in str(v) or 'frozen-pyfreeze' in str(v)))"
        ),
        "[]\n"
    );
    assert_eq!(python_c(&b, &[], HELLO), "Hello world!\n");
    assert_eq!(
        python_c(
            &b,
            &[],
            "import _imp, os, importlib.machinery as m\n\
             print(os.__spec__.loader is m.FrozenImporter, _imp.is_frozen('os'), os.__spec__.origin)"
        ),
        "True True frozen\n"
    );
    // every frozen module's code is one static, immortal object, equal to
    // marshal.loads of its bytes
    let out = check_static_313(&b);
    eprintln!("makefrag: 3.13.5 check_static: {out}");

    // The layout: 3.13.5's runtime is not laid out as the built-in table's
    // release (3.13.0) has it, so the emit read it from the archive's DWARF
    // and says so with -v; without an interpreter for the probes, or
    // without debug info, it refuses on one line naming both releases.
    let table = pyfreeze_obj::layout::PY313.release;
    assert_ne!(
        table, "3.13.5",
        "the built-in 3.13 table is 3.13.5's now: this check of the generated layout needs \
         another release's tree"
    );
    let out = emit_as_fragment(&b, &|mut a| {
        a.push("-v".into());
        a
    });
    let err = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "CPython 3.13.5: the built-in 3.13 table is CPython {table}'s"
        )) && err.contains("layout read from libpython3.13.a's debug info"),
        "{err}"
    );
    let one_line = |out: &Output| -> String {
        assert_eq!(out.status.code(), Some(1), "{}", text(out));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("CPython 3.13.5") && err.contains(&format!("CPython {table}")),
            "{err}"
        );
        err
    };
    let without_interp = emit_as_fragment(&b, &|mut a| {
        let i = a.iter().position(|x| x == "--compile-with").unwrap();
        a.drain(i..i + 2);
        a
    });
    let err = one_line(&without_interp);
    assert!(err.contains("give --compile-with"), "{err}");
    let stripped = b.root.join("cwd/libpython3.13-nodebug.a");
    run_ok(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(b.dir.join("libpython3.13.a")),
    );
    let without_dwarf = emit_as_fragment(&b, &|a| {
        a.into_iter()
            .map(|x| match x.as_str() {
                "libpython3.13.a" => stripped.display().to_string(),
                _ => x,
            })
            .collect()
    });
    let err = one_line(&without_dwarf);
    assert!(err.contains("no debug info") && err.contains("-g"), "{err}");

    assert!(
        up_to_date(&b.dir, &b.variant.targets()),
        "a finished build is not up to date"
    );
}

#[test]
fn slow_313_tests_match_stock() {
    // regrtest's workers get the interpreter's -X options: frozen modules on
    for v in [Variant::Frag313, Variant::Stock313] {
        let b = build(v);
        let flags = python_c(
            &b,
            &[],
            "import sys, test.support as s\n\
             print(sys.flags.frozen_modules if hasattr(sys.flags, 'frozen_modules') else '',\n\
                   s.args_from_interpreter_flags())",
        );
        assert!(
            flags.contains("'-X', 'frozen_modules=on'"),
            "{}: {flags}",
            v.name()
        );
    }
    let both = |tag: &str, tests: &[&str], s: &Suite| -> (SuiteRun, SuiteRun) {
        let ours = run_suite(
            &build(Variant::Frag313),
            &format!("frag{tag}"),
            tests,
            s.jobs,
        );
        let stock = run_suite(
            &build(Variant::Stock313),
            &format!("stock{tag}"),
            tests,
            s.jobs,
        );
        (ours, stock)
    };
    let s = Suite {
        min_cases: 500,
        ..suite(SUBSET_313, 2)
    };
    let ours =
        regrtest::compare_with_stock("makefrag: 3.13.5 Makefile.frag vs stock build", &both, &s);
    for t in SUBSET_313 {
        assert_eq!(ours.modules[*t], "passed", "{t}:\n{}", tail(&ours.log, 80));
    }
}

#[test]
fn slow_313_rebuild_after_os_edit() {
    let mut b = build(Variant::Frag313);
    let dir = b.dir.clone();
    let targets = b.variant.targets();
    assert!(up_to_date(&dir, &targets), "not up to date to begin with");
    let assert_rebuilt = |log: &str, what: &str| {
        assert!(
            log.lines()
                .any(|l| l.contains("_freeze_module") && l.contains("Python/frozen_modules/os.h")),
            "{what}: os was not re-frozen:\n{}",
            tail(log, 40)
        );
        assert!(
            log.contains("pyfreeze-obj emit"),
            "{what}: no emit:\n{}",
            tail(log, 40)
        );
        assert!(
            log.lines()
                .any(|l| l.contains(" -o python ") && l.contains("--wrap=")),
            "{what}: python was not relinked with our object:\n{}",
            tail(log, 40)
        );
    };
    let assert_quiet = |what: &str| {
        assert!(
            up_to_date(&dir, &targets),
            "{what}: make -q says a second make would do something"
        );
        let plan = text(&run_ok(make(&dir).arg("-n")));
        assert!(
            !plan.contains("pyfreeze-obj emit") && !plan.lines().any(|l| l.contains(" -o python ")),
            "{what}: make -n would re-emit or relink:\n{}",
            tail(&plan, 40)
        );
    };
    // the marker, from os's static code object (two loads give one object)
    let frozen_os = "import _imp, os\n\
                     d = _imp.find_frozen('os', withdata=True)[0]\n\
                     same = _imp.get_frozen_object('os', d) is _imp.get_frozen_object('os', d)\n\
                     print(os.__spec__.origin, same, getattr(os, 'PYFREEZE_TEST_MARKER', None))";
    let os_py = b.src.join("Lib/os.py");
    let original = fs::read(&os_py).unwrap();
    let _restore = RestoreOsPy {
        path: os_py.clone(),
        original: original.clone(),
    };
    let mut edited = original.clone();
    edited.extend_from_slice(format!("\n{MARKER} = 1\n").as_bytes());
    fs::write(&os_py, &edited).unwrap();
    let log = b.make("313-edit-os", &[]);
    assert_rebuilt(&log, "edit Lib/os.py");
    assert_eq!(python_c(&b, &[], frozen_os), "frozen True 1\n");
    assert_quiet("after the edit");

    fs::write(&os_py, &original).unwrap();
    let log = b.make("313-restore-os", &[]);
    assert_rebuilt(&log, "restore Lib/os.py");
    assert_eq!(python_c(&b, &[], frozen_os), "frozen True None\n");
    assert_quiet("after restoring");
    check_wrap_only_in_python_link(&b);
}

/// A shared-libpython 3.13 build (`--enable-shared`) is refused by the
/// fragment on one line saying why, before anything is built.
#[test]
fn slow_313_shared_build_is_refused() {
    let src = source_tree_313();
    let dir = cache().join("makefrag/shared-3.13.5");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let log = dir.join("configure.txt");
    let mut cfg = Command::new(src.join("configure"));
    clean_env(&mut cfg).current_dir(&dir).arg("--enable-shared");
    run_logged(&mut cfg, &log);
    let out = run(make(&dir)
        .arg("-f")
        .arg("Makefile")
        .arg("-f")
        .arg(repo().join("Makefile.frag"))
        .args(["-n", "python"]));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        err.contains("--enable-shared")
            && err.contains("static builds only")
            && err.contains("*** pyfreeze-obj:"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out));
    fs::remove_dir_all(&dir).unwrap();
}
