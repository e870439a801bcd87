//! Helpers for the relink tests (`tests/relink.rs`, `tests/fixtures_frozen.rs`):
//! describe the CPython builds whose static archive is relinked, emit our
//! object for each, and link real interpreters the way REFERENCE.md section 4
//! describes:
//!
//! ```text
//! cp libpython3.X.a tmp.a; ar d tmp.a deepfreeze.o
//! cc [-no-pie] -o python $LIBPL/python.o OURS.o tmp.a $LIBS $SYSLIBS $LINKFORSHARED $LOCALMODLIBS
//! PYTHONHOME=<the build's prefix> ./python ...
//! ```
//!
//! The builds ([`BuildId`]): pyenv's CPython 3.12.1 and 3.11.7 (PIE links)
//! and Debian's CPython 3.11.2 (`/usr/bin/python3.11`, whose archive is not
//! PIC: linked `-no-pie`, run with `PYTHONHOME=/usr`).
//!
//! Every missing tool or reference is a test *failure* that says what to
//! install (`.ci/run` installs all of it), never a silent skip.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The CPython 3.12 that `tests/fixtures_frozen.rs` relinks.
pub const VERSION: &str = "3.12.1";

/// The CPython builds the relink tests cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildId {
    /// pyenv's CPython 3.12.1 (PIE link).
    Pyenv312,
    /// pyenv's CPython 3.11.7 (PIE link).
    Pyenv311,
    /// Debian bookworm's CPython 3.11.2 (non-PIC archive: `-no-pie`).
    Debian311,
}

impl BuildId {
    pub const ALL: [BuildId; 3] = [BuildId::Pyenv312, BuildId::Pyenv311, BuildId::Debian311];

    fn index(self) -> usize {
        self as usize
    }
}

/// How our object initializes its code objects (`emit --lazy` or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `_Py_Deepfreeze_Init` initializes every code object at start-up.
    Eager,
    /// `emit --lazy`: a module's code objects are initialized on first use.
    Lazy,
}

impl Scheme {
    /// Extra `emit` arguments.
    pub fn emit_args(self) -> &'static [&'static str] {
        match self {
            Scheme::Eager => &[],
            Scheme::Lazy => &["--lazy"],
        }
    }

    /// Suffix for folder and file names.
    pub fn tag(self) -> &'static str {
        match self {
            Scheme::Eager => "eager",
            Scheme::Lazy => "lazy",
        }
    }
}

/// One CPython build and what linking an interpreter from its static
/// library needs.
pub struct Build {
    pub id: BuildId,
    /// For messages: `pyenv 3.12.1`, `Debian 3.11.2`.
    pub label: &'static str,
    /// For folder names: `pyenv-3.12.1`, `debian-3.11.2`.
    pub slug: &'static str,
    /// `X.Y.Z`, checked against the interpreter's `sys.version_info`.
    pub version: &'static str,
    /// `X.Y`: `emit --python`, `libpythonX.Y.a`.
    pub xy: &'static str,
    /// The interpreter's `sys.prefix`; the `PYTHONHOME` of every interpreter
    /// relinked from this build.
    pub prefix: PathBuf,
    /// The stock interpreter of this build: runs helper scripts, and is the
    /// `--compile-with` of 3.11 emits (3.11's `frozen.o` keeps no marshal
    /// bytes).
    pub python: PathBuf,
    /// `sysconfig.get_config_var('LIBPL')`.
    pub libpl: PathBuf,
    /// `$LIBPL/libpythonX.Y.a`, unmodified.
    pub archive: PathBuf,
    /// An archive of position-independent objects holding the same members
    /// (itself for pyenv; Debian ships `libpythonX.Y-pic.a` besides its
    /// non-PIC archive): what a shared `libpythonX.Y.so` is linked from.
    pub pic_archive: PathBuf,
    /// `$LIBPL/python.o` (the interpreter's `main`).
    pub python_o: PathBuf,
    /// `LIBS SYSLIBS LINKFORSHARED LOCALMODLIBS` from its sysconfig, split.
    pub link_flags: Vec<String>,
    /// Whether executables are linked as PIE (`cc`'s default here); if not,
    /// every link gets `-no-pie`.
    pub pie: bool,
}

/// pyenv's CPython 3.12.1 (the name `tests/fixtures_frozen.rs` knows).
pub type Py312 = Build;

/// Panics (a failure, not a skip) unless `tool` runs.
pub fn require_tool(tool: &str, version_arg: &str, package: &str) {
    let ok = Command::new(tool)
        .arg(version_arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "required tool `{tool}` is missing or broken: install the Debian package `{package}` \
         (.ci/run does)"
    );
}

/// Every external tool these tests call.
pub fn require_tools() {
    require_tool("cc", "--version", "gcc");
    require_tool("ar", "--version", "binutils");
    require_tool("readelf", "--version", "binutils");
    require_tool("nm", "--version", "binutils");
}

fn find_pyenv_prefix(version: &str, xy: &str) -> PathBuf {
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
    for r in &roots {
        let p = r.join("versions").join(version);
        if p.join("bin").is_dir() {
            return p;
        }
    }
    panic!(
        "pyenv CPython {version} is required (its libpython{xy}.a is relinked): \
         `pyenv prefix {version}` failed and it is not under {roots:?}; \
         install it with `pyenv install {version}`"
    );
}

/// A command running a stock interpreter with no `PYTHON*` variable
/// inherited.
fn clean_python(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PYTHON") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Ask `python` for its version, prefix, LIBPL and link flags and check
/// the archive and `python.o` are there.
fn describe_build(
    id: BuildId,
    label: &'static str,
    slug: &'static str,
    version: &'static str,
    python: PathBuf,
    pie: bool,
    missing: &str,
) -> Build {
    require_tools();
    let xy = &version[..version.rfind('.').unwrap()];
    let xy: &'static str = match xy {
        "3.11" => "3.11",
        "3.12" => "3.12",
        other => panic!("no relink support for CPython {other}"),
    };
    assert!(
        python.is_file(),
        "{label}: {} is missing; {missing}",
        python.display()
    );
    let out = run_ok(clean_python(&python).args([
        "-c",
        "import sys, sysconfig as s\n\
         print('%d.%d.%d' % sys.version_info[:3])\n\
         print(sys.prefix)\n\
         print(s.get_config_var('LIBPL'))\n\
         print(' '.join(s.get_config_var(k) or '' for k in \
         ('LIBS', 'SYSLIBS', 'LINKFORSHARED', 'LOCALMODLIBS')))",
    ]));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let got = lines.next().expect("version").trim();
    assert_eq!(
        got,
        version,
        "{label}: {} is CPython {got}, not {version}; {missing}",
        python.display()
    );
    let prefix = PathBuf::from(lines.next().expect("prefix").trim());
    let libpl = PathBuf::from(lines.next().expect("LIBPL").trim());
    let link_flags: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    let archive = libpl.join(format!("libpython{xy}.a"));
    let pic = libpl.join(format!("libpython{xy}-pic.a"));
    let pic_archive = if pie || !pic.is_file() {
        archive.clone()
    } else {
        pic
    };
    let python_o = libpl.join("python.o");
    for p in [&archive, &python_o] {
        assert!(
            p.is_file(),
            "{label}: {} is missing; {missing}",
            p.display()
        );
    }
    Build {
        id,
        label,
        slug,
        version,
        xy,
        prefix,
        python,
        libpl,
        archive,
        pic_archive,
        python_o,
        link_flags,
        pie,
    }
}

fn pyenv_build(
    id: BuildId,
    label: &'static str,
    slug: &'static str,
    version: &'static str,
) -> Build {
    let xy = &version[..version.rfind('.').unwrap()];
    let prefix = find_pyenv_prefix(version, xy);
    describe_build(
        id,
        label,
        slug,
        version,
        prefix.join(format!("bin/python{xy}")),
        true,
        &format!("reinstall it with `pyenv install --force {version}`"),
    )
}

/// A build, discovered once per test binary.
pub fn build(id: BuildId) -> &'static Build {
    static CELLS: [OnceLock<Build>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    CELLS[id.index()].get_or_init(|| match id {
        BuildId::Pyenv312 => pyenv_build(id, "pyenv 3.12.1", "pyenv-3.12.1", "3.12.1"),
        BuildId::Pyenv311 => pyenv_build(id, "pyenv 3.11.7", "pyenv-3.11.7", "3.11.7"),
        BuildId::Debian311 => describe_build(
            id,
            "Debian 3.11.2",
            "debian-3.11.2",
            "3.11.2",
            PathBuf::from("/usr/bin/python3.11"),
            false,
            "Debian bookworm's `python3.11` (3.11.2) and `libpython3.11-dev` are needed \
             (do not let apt upgrade python3.11 past the 3.11.2 whose archive is relinked)",
        ),
    })
}

/// pyenv's CPython 3.12.1.
pub fn py312() -> &'static Py312 {
    build(BuildId::Pyenv312)
}

impl Build {
    /// A fresh, empty folder for one test of this build.
    pub fn work_dir(&self, name: &str) -> PathBuf {
        work_dir(&format!("{}/{name}", self.slug))
    }

    /// `pyfreeze-obj emit --python X.Y --modules-from ARCHIVE` (3.11:
    /// `--compile-with` this build's interpreter), then `extra`.
    pub fn emit_stock(&self, out: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<OsString> = vec!["--modules-from".into(), self.archive.clone().into()];
        if self.xy == "3.11" {
            args.push("--compile-with".into());
            args.push(self.python.clone().into());
        }
        args.extend(extra.iter().map(OsString::from));
        emit_version(self.xy, out, &args)
    }

    /// A copy of `archive` (this build's, or its PIC one) without its
    /// `deepfreeze.o`.
    pub fn stripped_archive(&self, dir: &Path, archive: &Path) -> PathBuf {
        let name = archive.file_stem().unwrap().to_string_lossy();
        let a = dir.join(format!("{name}-nodeepfreeze.a"));
        std::fs::copy(archive, &a).unwrap();
        run_ok(Command::new("ar").arg("d").arg(&a).arg("deepfreeze.o"));
        let listing = run_ok(Command::new("ar").arg("t").arg(&a));
        let names = String::from_utf8_lossy(&listing.stdout);
        assert!(
            !names.lines().any(|l| l.trim() == "deepfreeze.o"),
            "ar d left deepfreeze.o in {}",
            a.display()
        );
        a
    }

    /// `-no-pie` for a non-PIE build, nothing otherwise.
    pub fn pie_flags(&self) -> &'static [&'static str] {
        if self.pie {
            &[]
        } else {
            &["-no-pie"]
        }
    }

    /// `cc -o OUT [-no-pie] [PRE...] python.o OBJS... ARCHIVE <sysconfig flags>`.
    pub fn link_interpreter(&self, out: &Path, pre: &[&str], objs: &[&Path], archive: &Path) {
        let mut cmd = Command::new("cc");
        cmd.arg("-o")
            .arg(out)
            .args(self.pie_flags())
            .args(pre)
            .arg(&self.python_o);
        for o in objs {
            cmd.arg(o);
        }
        cmd.arg(archive).args(&self.link_flags);
        run_ok(&mut cmd);
    }

    /// A command running an interpreter relinked from this build:
    /// `PYTHONHOME` = its prefix, no other `PYTHON*` variable inherited, in
    /// `cwd`.
    pub fn python(&self, exe: &Path, cwd: &Path) -> Command {
        let mut cmd = clean_python(exe);
        cmd.env("PYTHONHOME", &self.prefix).current_dir(cwd);
        cmd
    }

    /// Run `-c CODE` under `exe`; stdout on success, panic otherwise.
    pub fn python_c(&self, exe: &Path, cwd: &Path, code: &str) -> String {
        let out = run_ok(self.python(exe, cwd).args(["-c", code]));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The ELF file type an executable linked from this build must have.
    pub fn exe_type(&self) -> &'static str {
        if self.pie {
            "DYN (Position-Independent Executable file)"
        } else {
            "EXEC (Executable file)"
        }
    }
}

/// A fresh, empty folder for one test (under cargo's target tmp dir).
pub fn work_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("relink")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run to completion; panic with the command line and its output unless it
/// exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
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

/// `pyfreeze-obj emit --python XY -o OUT ARGS...`.
pub fn emit_version<I, S>(xy: &str, out: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pyfreeze-obj"));
    cmd.args(["emit", "--python", xy, "-o"]).arg(out).args(args);
    let o = run_ok(&mut cmd);
    assert!(out.is_file(), "emit did not write {}", out.display());
    o
}

/// `pyfreeze-obj emit --python 3.12 ARGS...`.
pub fn emit<I, S>(out: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    emit_version("3.12", out, args)
}

/// Our object for pyenv 3.12.1's stock module set, taken from the archive's
/// `frozen.o`.
pub fn emit_stock(out: &Path) {
    py312().emit_stock(out, &[]);
}

/// A copy of pyenv 3.12.1's archive without its `deepfreeze.o`.
pub fn stripped_archive(dir: &Path) -> PathBuf {
    let py = py312();
    py.stripped_archive(dir, &py.archive)
}

/// `cc -o OUT [PRE...] python.o OBJS... ARCHIVE <sysconfig flags>` for
/// pyenv 3.12.1.
pub fn link_interpreter(out: &Path, pre: &[&str], objs: &[&Path], archive: &Path) {
    py312().link_interpreter(out, pre, objs, archive);
}

/// A command running an interpreter relinked from pyenv 3.12.1.
pub fn python(exe: &Path, cwd: &Path) -> Command {
    py312().python(exe, cwd)
}

/// Run `-c CODE` under an interpreter relinked from pyenv 3.12.1.
pub fn python_c(exe: &Path, cwd: &Path, code: &str) -> String {
    py312().python_c(exe, cwd, code)
}

/// The stock link of a build (shared by both schemes).
pub struct StockLink {
    pub dir: PathBuf,
    /// The archive without `deepfreeze.o`.
    pub stripped: PathBuf,
    /// `python.o + unmodified archive`, the build's flags.
    pub stock: PathBuf,
}

/// Built once per build.
pub fn stock_link(b: &'static Build) -> &'static StockLink {
    static CELLS: [OnceLock<StockLink>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    CELLS[b.id.index()].get_or_init(|| {
        let dir = b.work_dir("stock");
        let stripped = b.stripped_archive(&dir, &b.archive);
        let stock = dir.join("python-stock");
        b.link_interpreter(&stock, &[], &[], &b.archive);
        StockLink {
            dir,
            stripped,
            stock,
        }
    })
}

/// What `tests/relink.rs` shares between its tests (built once per build
/// and scheme).
pub struct Relinked {
    pub build: &'static Build,
    pub scheme: Scheme,
    pub dir: PathBuf,
    /// Our object for the stock module set.
    pub ours_o: PathBuf,
    /// The archive without `deepfreeze.o`.
    pub stripped: PathBuf,
    /// `python.o + ours_o + stripped`.
    pub ours: PathBuf,
    /// `python.o + unmodified archive`, same flags.
    pub stock: PathBuf,
}

pub fn relinked_build(id: BuildId, scheme: Scheme) -> &'static Relinked {
    static CELLS: [OnceLock<Relinked>; 6] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let slot = id.index() * 2 + (scheme == Scheme::Lazy) as usize;
    CELLS[slot].get_or_init(|| {
        let b = build(id);
        let stock = stock_link(b);
        let dir = b.work_dir(&format!("shared-{}", scheme.tag()));
        let ours_o = dir.join("deepfreeze-ours.o");
        b.emit_stock(&ours_o, scheme.emit_args());
        let ours = dir.join("python-ours");
        b.link_interpreter(&ours, &[], &[&ours_o], &stock.stripped);
        Relinked {
            build: b,
            scheme,
            dir,
            ours_o,
            stripped: stock.stripped.clone(),
            ours,
            stock: stock.stock.clone(),
        }
    })
}

/// pyenv 3.12.1, eager scheme.
pub fn relinked() -> &'static Relinked {
    relinked_build(BuildId::Pyenv312, Scheme::Eager)
}

/// `readelf ARGS FILE` stdout.
pub fn readelf(args: &[&str], file: &Path) -> String {
    let out = run_ok(Command::new("readelf").args(args).arg(file));
    String::from_utf8(out.stdout).unwrap()
}
