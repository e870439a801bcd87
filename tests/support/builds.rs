//! The reference CPython builds: one matrix that every test file takes its
//! builds from ([`BUILDS`]), each row located once per test binary
//! ([`build`]), with what linking and running an interpreter from its
//! static archive needs (REFERENCE.md section 4):
//!
//! ```text
//! cp libpython3.X.a tmp.a; ar d tmp.a deepfreeze.o
//! cc [-no-pie] -o python $LIBPL/python.o OURS.o tmp.a $LIBS $SYSLIBS $LINKFORSHARED $LOCALMODLIBS
//! PYTHONHOME=<the build's prefix> ./python ...
//! ```
//!
//! Rows: pyenv's CPython 3.12.1 and 3.11.7 (PIE links), pyenv's 3.13.0
//! (no deep-freezing: no `deepfreeze.o`, no gcc oracle), Debian's 3.11.2
//! (`/usr/bin/python3.11`; its archive is not PIC: `-no-pie`), and Debian's
//! arm64 3.11.2 (packages unpacked by `tests/setup/arm64.sh`, linked by the
//! cross gcc, run under qemu). The oracle of every row is gcc's
//! `deepfreeze.o` inside its archive ([`Build::gcc_object`]); our object
//! for any target and scheme comes from [`Build::object`].

use super::{clean_python, require_tool, run_ok, run_text, work_dir};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// A row of the matrix ([`BUILDS`] says what each is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BuildId {
    Pyenv312,
    Pyenv311,
    Debian311,
    DebianArm64,
    Pyenv313,
}

/// What a row is, before anything is located.
#[derive(Debug)]
pub struct Spec {
    pub id: BuildId,
    /// For messages: `pyenv 3.12.1`, `Debian 3.11.2`.
    pub label: &'static str,
    /// For folder names: `pyenv-3.12.1`.
    pub slug: &'static str,
    /// `X.Y.Z`, checked against the interpreter's `sys.version_info`.
    pub version: &'static str,
    /// `X.Y`: `emit --python`, `libpythonX.Y.a`.
    pub xy: &'static str,
    /// `emit --target` of the build's machine.
    pub target: &'static str,
    /// `platform.machine()` of its interpreters.
    pub machine: &'static str,
    /// Executables are linked as PIE (`cc`'s default); if not, every link
    /// gets `-no-pie`.
    pub pie: bool,
    /// Its interpreters run under `qemu-aarch64` (through a wrapper script).
    pub qemu: bool,
}

/// A row: (id, who built it, version, X.Y, machine, PIE, qemu).
macro_rules! row {
    ($id:ident, $who:literal, $slug:literal, $v:literal, $xy:literal, $m:literal, $pie:expr, $qemu:expr) => {
        Spec {
            id: BuildId::$id,
            label: concat!($who, " ", $v),
            slug: concat!($slug, "-", $v),
            version: $v,
            xy: $xy,
            target: concat!($m, "-linux"),
            machine: $m,
            pie: $pie,
            qemu: $qemu,
        }
    };
}

/// The matrix, in [`BuildId`] order.
pub const BUILDS: [Spec; 5] = [
    row!(Pyenv312, "pyenv", "pyenv", "3.12.1", "3.12", "x86_64", true, false),
    row!(Pyenv311, "pyenv", "pyenv", "3.11.7", "3.11", "x86_64", true, false),
    row!(Debian311, "Debian", "debian", "3.11.2", "3.11", "x86_64", false, false),
    row!(
        DebianArm64,
        "Debian arm64",
        "debian-arm64",
        "3.11.2",
        "3.11",
        "aarch64",
        false,
        true
    ),
    row!(Pyenv313, "pyenv", "pyenv", "3.13.0", "3.13", "x86_64", true, false),
];

impl BuildId {
    pub fn spec(self) -> &'static Spec {
        &BUILDS[self as usize]
    }
}

/// How our object initializes its code objects (`emit --lazy` or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// `_Py_Deepfreeze_Init` initializes every code object at start-up.
    Eager,
    /// `emit --lazy`: a module's code objects are initialized on first use.
    Lazy,
}

impl Scheme {
    /// Suffix for folder and file names.
    pub fn tag(self) -> &'static str {
        match self {
            Scheme::Eager => "eager",
            Scheme::Lazy => "lazy",
        }
    }
}

const ARM64_SETUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/setup/arm64.sh");

/// A row, located: where its archive, `python.o` and interpreter are.
pub struct Build {
    pub spec: &'static Spec,
    /// The `PYTHONHOME` of every interpreter linked from this build (the
    /// interpreter's `sys.prefix`; arm64: the unpacked `usr`).
    pub home: PathBuf,
    /// An interpreter of the same source that runs on this machine (the
    /// build's own; arm64: the host's Debian 3.11.2): runs helper scripts,
    /// and is the `--compile-with` of 3.11 emits (3.11's `frozen.o` keeps
    /// no marshal bytes).
    pub python: PathBuf,
    /// `$LIBPL/libpythonX.Y.a`, unmodified.
    pub archive: PathBuf,
    /// An archive of position-independent objects holding the same members
    /// (itself for pyenv; Debian ships `libpythonX.Y-pic.a` besides its
    /// non-PIC archive): what a shared `libpythonX.Y.so` is linked from.
    pub pic_archive: PathBuf,
    /// `$LIBPL/python.o` (the interpreter's `main`).
    pub python_o: PathBuf,
    /// `INCLUDEPY`.
    pub include: PathBuf,
    /// The C compiler that links for this build's machine.
    pub cc: &'static str,
    /// `LIBS SYSLIBS LINKFORSHARED LOCALMODLIBS` from its sysconfig, split
    /// (arm64: static expat and zlib, the libraries and `-export-dynamic`).
    pub link_flags: Vec<String>,
}

impl std::ops::Deref for Build {
    type Target = Spec;
    fn deref(&self) -> &Spec {
        self.spec
    }
}

/// A row, located once per test binary (panics, never skips, saying what
/// to install when something is missing).
pub fn build(id: BuildId) -> &'static Build {
    static CELLS: [OnceLock<Build>; BUILDS.len()] = [const { OnceLock::new() }; BUILDS.len()];
    CELLS[id as usize].get_or_init(|| locate(id.spec()))
}

/// The installation prefix of pyenv's CPython `version` (e.g. "3.12.1").
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

/// The unpacked Debian arm64 packages (running the idempotent setup).
fn arm64_root() -> PathBuf {
    let out = Command::new("bash")
        .arg(ARM64_SETUP)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {ARM64_SETUP}: {e}"));
    assert!(
        out.status.success(),
        "{ARM64_SETUP} failed ({}); run it by hand (as root, or with sudo available) \
         to install the arm64 toolchain, qemu-user, llvm and Debian's arm64 CPython \
         3.11 packages:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let install = format!("run `{ARM64_SETUP}` (as root, or with sudo available; .ci/run does)");
    for tool in [
        "aarch64-linux-gnu-gcc",
        "qemu-aarch64",
        "llvm-objdump",
        "ar",
    ] {
        require_tool(tool, &install);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last();
    PathBuf::from(
        last.expect("the setup script prints the unpacked folder")
            .trim(),
    )
}

fn locate(spec: &'static Spec) -> Build {
    let (python, missing) = match spec.id {
        BuildId::Pyenv312 | BuildId::Pyenv311 | BuildId::Pyenv313 => (
            pyenv_prefix(spec.version).join(format!("bin/python{}", spec.xy)),
            format!("reinstall it with `pyenv install --force {}`", spec.version),
        ),
        BuildId::Debian311 | BuildId::DebianArm64 => (
            PathBuf::from("/usr/bin/python3.11"),
            "install Debian bookworm's `python3.11` (3.11.2) and `libpython3.11-dev` with \
             `apt-get install python3.11 libpython3.11-dev` (do not let apt upgrade \
             python3.11 past the 3.11.2 whose archive is relinked)"
                .to_string(),
        ),
    };
    let label = spec.label;
    assert!(
        python.is_file(),
        "reference interpreter missing: {label}: {} does not exist; {missing}",
        python.display()
    );
    let text = run_text(clean_python(&python).args([
        "-I",
        "-c",
        "import sys, sysconfig as s\n\
         print('%d.%d.%d' % sys.version_info[:3])\n\
         print(sys.prefix)\n\
         print(s.get_config_var('LIBPL'))\n\
         print(s.get_config_var('INCLUDEPY'))\n\
         print(' '.join(s.get_config_var(k) or '' for k in \
         ('LIBS', 'SYSLIBS', 'LINKFORSHARED', 'LOCALMODLIBS')))",
    ]));
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines[0],
        spec.version,
        "{label}: {} is CPython {}, not {}; {missing}",
        python.display(),
        lines[0],
        spec.version
    );
    let split = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let (home, libpl, cc, link_flags, static_libs) = if spec.qemu {
        let root = arm64_root();
        let lib = root.join("usr/lib/aarch64-linux-gnu");
        let (expat, z) = (lib.join("libexpat.a"), lib.join("libz.a"));
        let flags = format!(
            "{} {} -ldl -lm -lpthread -lutil -Xlinker -export-dynamic",
            expat.display(),
            z.display()
        );
        let libpl = root.join("usr/lib/python3.11/config-3.11-aarch64-linux-gnu");
        let usr = root.join("usr");
        let cc = "aarch64-linux-gnu-gcc";
        (usr, libpl, cc, split(&flags), vec![expat, z])
    } else {
        require_tool("cc", "install the Debian package `gcc`");
        require_tool("ar", "install the Debian package `binutils`");
        let flags = split(lines.get(4).copied().unwrap_or(""));
        (lines[1].into(), lines[2].into(), "cc", flags, vec![])
    };
    let missing = if spec.qemu {
        format!("run `{ARM64_SETUP}` (it unpacks Debian's arm64 packages)")
    } else {
        missing
    };
    let archive = libpl.join(format!("libpython{}.a", spec.xy));
    let pic = libpl.join(format!("libpython{}-pic.a", spec.xy));
    let pic_archive = Some(pic).filter(|p| !spec.pie && p.is_file());
    let pic_archive = pic_archive.unwrap_or_else(|| archive.clone());
    let python_o = libpl.join("python.o");
    for p in [&archive, &python_o].into_iter().chain(&static_libs) {
        assert!(
            p.is_file(),
            "{label}: {} is missing; {missing}",
            p.display()
        );
    }
    Build {
        spec,
        home,
        python,
        archive,
        pic_archive,
        python_o,
        include: lines[3].into(),
        cc,
        link_flags,
    }
}

/// Objects emitted once per test binary, by (build, target, scheme).
type ObjectCell = OnceLock<(PathBuf, &'static [u8])>;

impl Build {
    /// The host interpreter, with no `PYTHON*` variable inherited.
    pub fn host_python(&self) -> Command {
        clean_python(&self.python)
    }

    /// `pyfreeze-obj emit --python X.Y --target TARGET --modules-from
    /// ARCHIVE`, then `extra`; `--compile-with` the host interpreter for
    /// 3.11 (its `frozen.o` keeps no marshal bytes) and whenever `extra`
    /// has something to compile (`--trace`, `--freeze`, a `.py`); other
    /// platforms than Linux get `--assume-linux-runtime`.
    pub fn emit(&self, out: &Path, target: &str, extra: &[&str]) {
        run_ok(&mut self.emit_cmd(out, target, extra));
        assert!(out.is_file(), "emit did not write {}", out.display());
    }

    /// The command [`Build::emit`] runs.
    pub fn emit_cmd(&self, out: &Path, target: &str, extra: &[&str]) -> Command {
        let mut cmd = super::ours();
        cmd.args(["emit", "--python", self.xy, "--target", target, "-o"])
            .arg(out)
            .arg("--modules-from")
            .arg(&self.archive);
        let compiles =
            |a: &&str| a.starts_with("--trace") || a.starts_with("--freeze") || a.contains(".py:");
        if self.xy == "3.11" || extra.iter().any(compiles) {
            cmd.arg("--compile-with").arg(&self.python);
        }
        if !target.contains("linux") {
            cmd.arg("--assume-linux-runtime");
        }
        cmd.args(extra);
        cmd
    }

    /// Our object for the build's stock module set, for `target` (the
    /// build's own when `None`), in `scheme`: its file and bytes, emitted
    /// once per test binary.
    pub fn object_at(
        &self,
        target: Option<&str>,
        scheme: Scheme,
    ) -> (&'static Path, &'static [u8]) {
        static CACHE: OnceLock<Mutex<HashMap<String, &'static ObjectCell>>> = OnceLock::new();
        let target = target.unwrap_or(self.target);
        let key = format!("{}/{target}-{}", self.slug, scheme.tag());
        let cell: &'static ObjectCell = CACHE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_insert_with(|| Box::leak(Box::default()));
        let (path, bytes) = cell.get_or_init(|| {
            let dir = work_dir(&format!("objects/{key}"));
            let path = dir.join("deepfreeze.o");
            let lazy = (scheme == Scheme::Lazy).then_some("--lazy");
            self.emit(&path, target, &Vec::from_iter(lazy));
            let bytes = std::fs::read(&path).unwrap();
            (path, Vec::leak(bytes))
        });
        (path, bytes)
    }

    /// [`Build::object_at`]'s bytes.
    pub fn object(&self, target: Option<&str>, scheme: Scheme) -> &'static [u8] {
        self.object_at(target, scheme).1
    }

    /// gcc's `deepfreeze.o` from the archive: the oracle.
    pub fn gcc_object(&self) -> &'static [u8] {
        static CELLS: [OnceLock<&'static [u8]>; BUILDS.len()] =
            [const { OnceLock::new() }; BUILDS.len()];
        CELLS[self.id as usize].get_or_init(|| {
            let archive = std::fs::read(&self.archive)
                .unwrap_or_else(|e| panic!("read {}: {e}", self.archive.display()));
            let member = super::objgraph::archive_member(&archive, "deepfreeze.o")
                .unwrap_or_else(|e| panic!("{}: {e}", self.archive.display()));
            Vec::leak(member.to_vec())
        })
    }

    /// A fresh, empty folder for one test of this build.
    pub fn work_dir(&self, name: &str) -> PathBuf {
        work_dir(&format!("builds/{}/{name}", self.slug))
    }

    /// A copy of `archive` (this build's, or its PIC one) without `members`
    /// (`deepfreeze.o`, and `frozen.o` when our object replaces it too).
    pub fn stripped_archive(&self, dir: &Path, archive: &Path, members: &[&str]) -> PathBuf {
        let name = archive.file_stem().unwrap().to_string_lossy();
        let a = dir.join(format!("{name}-stripped.a"));
        std::fs::copy(archive, &a).unwrap();
        run_ok(Command::new("ar").arg("d").arg(&a).args(members));
        let names = run_text(Command::new("ar").arg("t").arg(&a));
        for gone in members {
            assert!(
                !names.lines().any(|l| l.trim() == *gone),
                "ar d left {gone} in {}",
                a.display()
            );
        }
        assert!(names.lines().count() > 100, "{names}");
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

    /// `CC -o OUT [-no-pie] [PRE...] python.o OBJS... ARCHIVE <link flags>`:
    /// an executable for the build's machine (see [`Build::runnable`]).
    pub fn link_interpreter(&self, out: &Path, pre: &[&str], objs: &[&Path], archive: &Path) {
        let mut cmd = Command::new(self.cc);
        cmd.arg("-o").arg(out).args(self.pie_flags()).args(pre);
        cmd.arg(&self.python_o).args(objs).arg(archive);
        run_ok(cmd.args(&self.link_flags));
    }

    /// What runs the executable `elf` linked from this build: itself, or
    /// (qemu) `DIR/bin/python3.11-<tag>`, a shell script that runs
    /// `qemu-aarch64 -L /usr/aarch64-linux-gnu -0 $0 $0.elf "$@"`, so that
    /// `sys.executable` names the script and the tests' subprocesses run
    /// under qemu too (there is no binfmt_misc here). `DIR/lib` links to the
    /// unpacked `usr/lib`, so an interpreter that ignores `PYTHONHOME`
    /// (`-I`, `-E`) still finds its stdlib next to itself; the guest's
    /// `LD_LIBRARY_PATH` names the unpacked arm64 libraries (libffi for
    /// ctypes).
    pub fn runnable(&self, elf: &Path) -> PathBuf {
        if !self.qemu {
            return elf.to_path_buf();
        }
        let dir = elf.parent().unwrap();
        let tag = elf.file_name().unwrap().to_string_lossy();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let lib = dir.join("lib");
        if !lib.exists() {
            std::os::unix::fs::symlink(self.home.join("lib"), &lib).unwrap();
        }
        let script = bin.join(format!("python{}-{tag}", self.xy));
        std::fs::copy(elf, format!("{}.elf", script.display())).unwrap();
        let text = format!(
            "#!/bin/sh\nexec qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH={} \
             -0 \"$0\" \"$0.elf\" \"$@\"\n",
            self.home.join("lib/aarch64-linux-gnu").display()
        );
        std::fs::write(&script, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    /// A command running an interpreter linked from this build:
    /// `PYTHONHOME` = its home, no other `PYTHON*` variable inherited, in
    /// `cwd`.
    pub fn python(&self, exe: &Path, cwd: &Path) -> Command {
        let mut cmd = clean_python(exe);
        cmd.env("PYTHONHOME", &self.home).current_dir(cwd);
        cmd
    }

    /// Run `-c CODE` under `exe`; stdout on success, panic otherwise.
    pub fn python_c(&self, exe: &Path, cwd: &Path, code: &str) -> String {
        run_text(self.python(exe, cwd).args(["-c", code]))
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

/// The stock link of a build: `python.o` + the unmodified archive, the
/// build's flags (shared by both schemes and every test file).
pub struct StockLink {
    /// The archive without `deepfreeze.o`.
    pub stripped: PathBuf,
    /// The executable, and what runs it ([`Build::runnable`]).
    pub stock_elf: PathBuf,
    pub stock: PathBuf,
}

/// Linked once per build.
pub fn stock_link(id: BuildId) -> &'static StockLink {
    static CELLS: [OnceLock<StockLink>; BUILDS.len()] = [const { OnceLock::new() }; BUILDS.len()];
    CELLS[id as usize].get_or_init(|| {
        let b = build(id);
        let dir = b.work_dir("stock");
        let stripped = b.stripped_archive(&dir, &b.archive, &["deepfreeze.o"]);
        let stock_elf = dir.join("stock");
        b.link_interpreter(&stock_elf, &[], &[], &b.archive);
        StockLink {
            stripped,
            stock: b.runnable(&stock_elf),
            stock_elf,
        }
    })
}

/// An interpreter relinked with our object for the stock set, next to the
/// stock link (built once per build and scheme).
pub struct Relinked {
    pub build: &'static Build,
    pub scheme: Scheme,
    /// Our object.
    pub ours_o: PathBuf,
    /// The archive without `deepfreeze.o`.
    pub stripped: PathBuf,
    /// `python.o + ours_o + stripped`, and what runs it.
    pub ours_elf: PathBuf,
    pub ours: PathBuf,
    /// `python.o + unmodified archive`, same flags, and what runs it.
    pub stock_elf: PathBuf,
    pub stock: PathBuf,
}

pub fn relinked(id: BuildId, scheme: Scheme) -> &'static Relinked {
    static CELLS: [OnceLock<Relinked>; 2 * BUILDS.len()] =
        [const { OnceLock::new() }; 2 * BUILDS.len()];
    let slot = id as usize * 2 + (scheme == Scheme::Lazy) as usize;
    CELLS[slot].get_or_init(|| {
        let b = build(id);
        let stock = stock_link(id);
        let dir = b.work_dir(&format!("shared-{}", scheme.tag()));
        let ours_o = b.object_at(None, scheme).0.to_path_buf();
        let ours_elf = dir.join("ours");
        b.link_interpreter(&ours_elf, &[], &[&ours_o], &stock.stripped);
        Relinked {
            build: b,
            scheme,
            ours_o,
            stripped: stock.stripped.clone(),
            ours: b.runnable(&ours_elf),
            ours_elf,
            stock_elf: stock.stock_elf.clone(),
            stock: stock.stock.clone(),
        }
    })
}

/// `readelf ARGS FILE` stdout.
pub fn readelf(args: &[&str], file: &Path) -> String {
    run_text(Command::new("readelf").args(args).arg(file))
}
