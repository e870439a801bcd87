//! The Debian sid chroot (CPython 3.14 and 3.15, REFERENCE-3.13-3.15.md
//! section 1), as test infrastructure: sid's static archives need glibc
//! >= 2.38, so their interpreters are linked and run inside it.
//!
//! * [`root`]: the chroot, built or reused by `tests/setup/sid.sh` once per
//!   test binary (a panic saying why when impossible, never a skip);
//! * [`command`] / [`run`] / [`run_ok`]: a command inside the chroot, in a
//!   mount namespace of its own (`unshare --mount --fork`) with a private
//!   `/proc`, a clean environment (`env -i`, `PATH`, `HOME=/root`, `LC_ALL`)
//!   plus the given variables. Nothing stays mounted afterwards; `/dev` is
//!   never bind-mounted (the chroot has its own device nodes);
//! * [`install_tool`]: the host-built `pyfreeze-obj` copied into the chroot
//!   under a name derived from its bytes (so test binaries of several
//!   worktrees, and parallel tests, never overwrite each other's), written
//!   to a temporary name and renamed into place;
//! * [`Scratch`]: a per-test folder inside the chroot (`/tmp/...`), seen
//!   from the host and from inside, removed when dropped.
//!
//! Running inside needs root (unshare, chroot); a test that needs the
//! chroot fails with a message saying so when that is impossible.

use super::{output, show};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const SETUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/setup/sid.sh");

/// `PATH` inside the chroot.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The CPython versions (`X.Y`) the chroot holds.
pub const VERSIONS: [&str; 2] = ["3.14", "3.15"];

/// The chroot's folder on the host, ensured once per test binary by
/// `tests/setup/sid.sh` (idempotent and locked against parallel callers;
/// about 3 minutes when it builds from nothing).
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(SETUP)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SETUP}: {e}"));
        assert!(
            out.status.success(),
            "the Debian sid chroot (CPython 3.14/3.15) cannot be set up: {SETUP} failed ({}); \
             run it by hand as root (it needs debootstrap, unshare, chroot and network access \
             to a Debian mirror); this test cannot run without it:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            super::tail(&String::from_utf8_lossy(&out.stderr), 40)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let root = PathBuf::from(
            text.lines()
                .last()
                .expect("tests/setup/sid.sh prints the chroot's path")
                .trim(),
        );
        assert!(
            root.join("usr/bin/python3.14").is_file(),
            "{SETUP} printed {} but it holds no usr/bin/python3.14",
            root.display()
        );
        // Probe once: can this process enter it (root, mount namespaces)?
        let probe = output(&mut raw_command(&root, &["true"], &[], None));
        assert!(
            probe.status.success(),
            "cannot run a command inside the sid chroot {} (unshare --mount + chroot need \
             root, and mount namespaces must be allowed); this test cannot run without it: {}",
            root.display(),
            show(&raw_command(&root, &["true"], &[], None), &probe)
        );
        root
    })
}

fn raw_command(root: &Path, args: &[&str], env: &[(&str, &str)], cwd: Option<&str>) -> Command {
    // sh -c SCRIPT sh ROOT CWD NAME=VALUE... -- ARGS...
    let script = r#"
        r="$1"; cwd="$2"; shift 2
        mount -t proc proc "$r/proc" || { echo "sid: cannot mount proc on $r/proc" >&2; exit 125; }
        exec chroot "$r" env -i -C "$cwd" "$@"
    "#;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--fork", "--", "sh", "-c", script, "sh"])
        .arg(root)
        .arg(cwd.unwrap_or("/"))
        .arg(format!("PATH={PATH}"))
        .arg("HOME=/root")
        .arg("LC_ALL=C.UTF-8");
    for (k, v) in env {
        assert!(
            !k.is_empty() && !k.contains('='),
            "sid::command: bad variable name {k:?}"
        );
        cmd.arg(format!("{k}={v}"));
    }
    // env stops taking NAME=VALUE at the first word without '='.
    assert!(!args.is_empty(), "sid::command: no program");
    assert!(
        !args[0].contains('='),
        "sid::command: program {:?} looks like a variable",
        args[0]
    );
    cmd.args(args);
    cmd
}

/// `args` run inside the chroot, from `/`, with only `env` (plus `PATH`,
/// `HOME=/root`, `LC_ALL=C.UTF-8`) in its environment.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    raw_command(root(), args, env, None)
}

/// [`command`], from the folder `cwd` (a path inside the chroot).
pub fn command_in(cwd: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    raw_command(root(), args, env, Some(cwd))
}

/// [`command`] run to completion, whatever its status.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    output(&mut command(args, env))
}

/// [`command`] run to completion; a panic with its output unless it exits 0.
pub fn run_ok(args: &[&str], env: &[(&str, &str)]) -> Output {
    super::run_ok(&mut command(args, env))
}

/// [`run_ok`]'s standard output as text.
pub fn run_text(args: &[&str], env: &[(&str, &str)]) -> String {
    String::from_utf8(run_ok(args, env).stdout).expect("UTF-8 output")
}

/// The host path of `inside` (an absolute path inside the chroot).
pub fn host_path(inside: &str) -> PathBuf {
    assert!(inside.starts_with('/'), "not absolute: {inside}");
    root().join(&inside[1..])
}

/// The Debian version of the installed package `pkg` (`3.14.10-1`).
pub fn dpkg_version(pkg: &str) -> String {
    let v = run_text(&["dpkg-query", "-W", "-f", "${Version}", pkg], &[]);
    assert!(
        !v.trim().is_empty(),
        "dpkg knows no version of {pkg} in the chroot"
    );
    v.trim().to_string()
}

/// The upstream version (`3.14.10`) of Debian version `v` (`3.14.10-1`,
/// `1:3.14.10-1+b1`): no epoch, no Debian revision.
pub fn upstream_version(v: &str) -> &str {
    let v = v.split_once(':').map_or(v, |(_, r)| r);
    v.rsplit_once('-').map_or(v, |(u, _)| u)
}

/// The host-built `pyfreeze-obj` of this test binary, copied into the
/// chroot: its path inside (`/opt/pyfreeze-obj/<hash>/pyfreeze-obj`).
/// Once per test binary; the file name comes from the binary's bytes, and
/// the copy is renamed into place, so parallel callers (other test
/// binaries, other worktrees) each see a complete file of their own build.
pub fn install_tool() -> &'static str {
    static TOOL: OnceLock<String> = OnceLock::new();
    TOOL.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let src = Path::new(env!("CARGO_BIN_EXE_pyfreeze-obj"));
        let bytes = std::fs::read(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
        // Fixed keys: the same bytes give the same name in every process.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        let dir_inside = format!("/opt/pyfreeze-obj/{:016x}", h.finish());
        let inside = format!("{dir_inside}/pyfreeze-obj");
        let dest = host_path(&inside);
        let same = std::fs::read(&dest).is_ok_and(|b| b == bytes);
        if !same {
            let dir = host_path(&dir_inside);
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), unique()));
            std::fs::write(&tmp, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&tmp, &dest)
                .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), dest.display()));
        }
        prune_tools(&host_path("/opt/pyfreeze-obj"), &dir_inside);
        inside
    })
}

/// Remove copies of other builds not used for two days (each is tens of
/// MB; a copy in use by a running test is younger).
fn prune_tools(parent: &Path, keep_inside: &str) {
    let keep = keep_inside.rsplit('/').next().unwrap_or("");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy() == keep {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 2 * 86400);
        if old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A fresh folder inside the chroot (`/tmp/pyfreeze-obj-TAG-...`), removed
/// when dropped (set `PYFREEZE_KEEP_SCRATCH=1` to keep it for inspection).
pub struct Scratch {
    host: PathBuf,
    inside: String,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let inside = format!(
            "/tmp/pyfreeze-obj-{tag}-{}-{}",
            std::process::id(),
            unique()
        );
        let host = host_path(&inside);
        std::fs::create_dir_all(&host).unwrap_or_else(|e| panic!("mkdir {}: {e}", host.display()));
        Scratch { host, inside }
    }
    /// The folder, as the host sees it.
    pub fn host(&self) -> &Path {
        &self.host
    }
    /// The folder, as commands inside the chroot see it.
    pub fn inside(&self) -> &str {
        &self.inside
    }
    /// `name` inside the folder, as commands inside the chroot see it.
    pub fn at(&self, name: &str) -> String {
        format!("{}/{name}", self.inside)
    }
    /// Write `bytes` to `name` inside; its path inside the chroot.
    pub fn write(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.host.join(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        self.at(name)
    }
    /// [`command_in`] this folder.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        command_in(&self.inside, args, env)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("PYFREEZE_KEEP_SCRATCH").is_none() {
            let _ = std::fs::remove_dir_all(&self.host);
        }
    }
}

/// Facts of one of the chroot's CPythons (`xy` = `3.14`), read from its
/// sysconfig inside the chroot.
pub struct SidPython {
    pub xy: &'static str,
    /// `/usr/bin/python3.14` (inside).
    pub python: String,
    /// `X.Y.Z` from `sys.version_info`.
    pub version: String,
    /// `LIBPL` (inside).
    pub libpl: String,
    /// `$LIBPL/libpythonX.Y.a` (inside).
    pub archive: String,
    /// `$LIBPL/python.o` (inside).
    pub python_o: String,
}

/// [`SidPython`] for `xy`, read once per test binary.
pub fn python(xy: &str) -> &'static SidPython {
    static CELLS: [OnceLock<SidPython>; VERSIONS.len()] =
        [const { OnceLock::new() }; VERSIONS.len()];
    let i = VERSIONS
        .iter()
        .position(|v| *v == xy)
        .unwrap_or_else(|| panic!("the sid chroot holds CPython {VERSIONS:?}, not {xy}"));
    CELLS[i].get_or_init(|| {
        let xy = VERSIONS[i];
        let python = format!("/usr/bin/python{xy}");
        let text = run_text(
            &[
                &python,
                "-I",
                "-c",
                "import sys, sysconfig as s\n\
                 print('%d.%d.%d' % sys.version_info[:3])\n\
                 print(s.get_config_var('LIBPL'))\n\
                 print(s.get_config_var('LIBRARY'))",
            ],
            &[],
        );
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(lines.len(), 3, "{python}: {text}");
        let libpl = lines[1].to_string();
        let sp = SidPython {
            xy,
            python,
            version: lines[0].to_string(),
            archive: format!("{libpl}/{}", lines[2]),
            python_o: format!("{libpl}/python.o"),
            libpl,
        };
        for p in [&sp.archive, &sp.python_o] {
            assert!(host_path(p).is_file(), "sid CPython {xy}: {p} is missing");
        }
        sp
    })
}

/// An interpreter linked inside the chroot by `pyfreeze-obj relink`.
pub struct Link {
    /// Its path inside the chroot.
    pub exe: String,
    /// What relink printed on stderr (without `-v`: its notes only).
    pub stderr: String,
}

/// `pyfreeze-obj relink --stock --python /usr/bin/pythonX.Y`, run inside
/// once per test binary: the stock link of sid's CPython `xy` with
/// relink's link line (what relinked interpreters are compared with).
/// Kept beside the installed tool (both pruned after two days unused).
pub fn stock_link(xy: &str) -> &'static Link {
    static CELLS: [OnceLock<Link>; VERSIONS.len()] = [const { OnceLock::new() }; VERSIONS.len()];
    let i = VERSIONS
        .iter()
        .position(|v| *v == xy)
        .unwrap_or_else(|| panic!("the sid chroot holds CPython {VERSIONS:?}, not {xy}"));
    CELLS[i].get_or_init(|| {
        let tool = install_tool();
        let dir = tool.rsplit_once('/').unwrap().0;
        let exe = format!("{dir}/python{xy}-stock");
        let python = &python(xy).python;
        let out = run_ok(
            &[tool, "relink", "--stock", "--python", python, "-o", &exe],
            &[],
        );
        assert!(host_path(&exe).is_file(), "relink --stock wrote no {exe}");
        Link {
            exe,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
}
