//! `relink`: turn an installed CPython (3.11+) that ships its static
//! archive into a faster interpreter: re-freeze its stock modules plus the
//! requested ones with lazy initialization, replace `deepfreeze.o` (where
//! the build has one) and `frozen.o` in a copy of its `libpython3.X.a`, and
//! link `python.o` against it with the flags of that interpreter's own
//! build and those the version's object needs (3.13: `--wrap`).

use crate::emit::{self, Options};
use crate::error::{Error, Result};
use crate::target::Target;
use crate::version::Version;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct RelinkOptions {
    pub python: PathBuf,
    pub freeze: Vec<String>,
    pub trace: Vec<String>,
    /// Folders `--freeze`/`--trace` search first.
    pub paths: Vec<std::path::PathBuf>,
    /// CPython's eager initialization instead of the lazy one.
    pub eager: bool,
    pub output: PathBuf,
    pub verbose: bool,
}

/// What the interpreter's sysconfig says about its own build.
#[derive(Debug)]
struct Build {
    version: String,
    libpl: PathBuf,
    library: String,
    linkcc: String,
    host: String,
    flags: Vec<String>,
}

const QUERY: &str = r#"
import sys, sysconfig as s
v = lambda k: s.get_config_var(k) or ""
print("%d.%d" % sys.version_info[:2])
for k in ("LIBPL", "LIBRARY", "LINKCC", "HOST_GNU_TYPE"):
    print(v(k))
print(" ".join(v(k) for k in ("LDFLAGS", "LINKFORSHARED", "LIBS", "SYSLIBS", "LOCALMODLIBS")))
"#;

fn query(python: &Path) -> Result<Build> {
    let out = Command::new(python)
        .args(["-S", "-c", QUERY])
        .output()
        .map_err(|e| Error::file(python, format!("cannot run: {e}")))?;
    if !out.status.success() {
        return Err(Error::file(
            python,
            "cannot read the interpreter's build configuration (sysconfig)",
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let l: Vec<&str> = text.lines().collect();
    if l.len() < 6 {
        return Err(Error::file(python, "unexpected sysconfig output"));
    }
    Ok(Build {
        version: l[0].into(),
        libpl: PathBuf::from(l[1]),
        library: l[2].into(),
        linkcc: if l[3].is_empty() {
            "cc".into()
        } else {
            l[3].into()
        },
        host: l[4].into(),
        flags: l[5].split_whitespace().map(String::from).collect(),
    })
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| Error::msg(format!("{what}: cannot run {:?}: {e}", cmd.get_program())))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::msg(format!(
        "{what} failed ({}): {}",
        out.status,
        crate::input::compile::stderr_summary(&out.stderr)
    )))
}

fn log(o: &RelinkOptions, t0: Instant, what: std::fmt::Arguments) {
    if o.verbose {
        eprintln!("[{:8.3} ms] {what}", t0.elapsed().as_secs_f64() * 1e3);
    }
}

pub fn relink(o: &RelinkOptions) -> Result<()> {
    let t0 = Instant::now();
    let b = query(&o.python)?;
    let version = Version::parse(&b.version)?;
    if o.eager && !version.contract.entry.has_eager() {
        return Err(Error::msg(format!(
            "--eager: CPython {} has no eager scheme to follow (it does not deep-freeze: the \
             object initializes each module on its first load); drop --eager",
            b.version
        )));
    }
    let archive = b.libpl.join(&b.library);
    if !b.library.ends_with(".a") || !archive.is_file() {
        return Err(Error::file(
            &archive,
            "this interpreter ships no static libpython archive (LIBRARY); relink needs one",
        ));
    }
    let python_o = b.libpl.join("python.o");
    if !python_o.is_file() {
        return Err(Error::file(
            &python_o,
            "missing: the interpreter's build left no python.o in LIBPL",
        ));
    }
    log(
        o,
        t0,
        format_args!(
            "CPython {} ({}), archive {}",
            b.version,
            b.host,
            archive.display()
        ),
    );

    let work = tempdir(&o.output)?;
    let result = (|| {
        let obj = work.join("pyfreeze.o");
        let opts = Options {
            target: Target::parse(&b.host)?,
            version,
            inputs: Vec::new(),
            modules_from: Some(archive.clone()),
            compile_with: Some(o.python.clone()),
            lazy: !o.eager,
            freeze: o.freeze.clone(),
            trace: o.trace.clone(),
            frozen_tables: true,
            assume_linux_runtime: false,
            stdlib: None,
            paths: o.paths.clone(),
            include: None,
            verbose: o.verbose,
        };
        let stats = emit::run(&opts, &obj, None)?;
        log(
            o,
            t0,
            format_args!(
                "froze {} modules ({} code objects)",
                stats.modules, stats.code_objects
            ),
        );

        let lib = work.join(&b.library);
        std::fs::copy(&archive, &lib)
            .map_err(|e| Error::file(&lib, format!("cannot copy the archive: {e}")))?;
        let replaced = members_present(&archive, &["deepfreeze.o", "frozen.o"])?;
        run(
            Command::new("ar").arg("d").arg(&lib).args(&replaced),
            &format!("ar d {}", replaced.join(" ")),
        )?;
        let wrap = version.contract.entry.link_flags();
        if !wrap.is_empty() {
            log(o, t0, format_args!("linking with {}", wrap.join(" ")));
        }

        let tmp_out = work.join("python");
        let link = |extra: &[&str]| {
            let mut cmd = Command::new(&b.linkcc);
            cmd.args(extra)
                .arg("-o")
                .arg(&tmp_out)
                .arg(&python_o)
                .arg(&obj)
                .arg(&lib)
                .args(&b.flags)
                .args(&wrap);
            run(&mut cmd, "link")
        };
        // A non-PIC archive (Debian's) cannot go into a PIE: retry without.
        if let Err(e) = link(&[]) {
            log(
                o,
                t0,
                format_args!("PIE link failed ({e}); retrying with -no-pie"),
            );
            link(&["-no-pie"])?;
        }
        log(o, t0, format_args!("linked"));
        // The work folder is beside the output: one atomic rename.
        std::fs::rename(&tmp_out, &o.output)
            .map_err(|e| Error::file(&o.output, format!("cannot write output: {e}")))
    })();
    let _ = std::fs::remove_dir_all(&work);
    result.map_err(|e| without_work_folder(e, &work, &o.output))?;
    log(o, t0, format_args!("wrote {}", o.output.display()));
    Ok(())
}

/// Which of `names` the archive holds (the object replaces them). Only the
/// member headers are read, not the tens of MB of the archive.
fn members_present(archive: &Path, names: &[&'static str]) -> Result<Vec<&'static str>> {
    let file = std::fs::File::open(archive)
        .map_err(|e| Error::file(archive, format!("cannot read: {e}")))?;
    let cache = object::ReadCache::new(file);
    let ar = object::read::archive::ArchiveFile::parse(&cache)
        .map_err(|e| Error::at(archive, 0, format!("not an ar archive: {e}")))?;
    let mut found = Vec::new();
    for m in ar.members() {
        let m = m.map_err(|e| Error::file(archive, format!("corrupt archive: {e}")))?;
        if let Some(n) = names.iter().find(|n| n.as_bytes() == m.name()) {
            found.push(*n);
        }
    }
    if !found.contains(&"frozen.o") {
        return Err(Error::file(
            archive,
            "no frozen.o member: not a CPython static library",
        ));
    }
    Ok(found)
}

/// An error about the (removed) work folder's files, told about the
/// output instead: the work folder's name means nothing to the user.
fn without_work_folder(mut e: Error, work: &Path, output: &Path) -> Error {
    if e.file.as_deref().is_some_and(|f| f.starts_with(work)) {
        e.file = Some(output.to_path_buf());
    }
    let w = work.display().to_string();
    e.message = e.message.replace(&format!("{w}/"), "").replace(&w, "");
    e
}

/// A fresh work folder beside the output (same file system for the rename).
fn tempdir(output: &Path) -> Result<PathBuf> {
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let work = dir.join(format!(".{name}.pyfreeze-relink.{}", std::process::id()));
    std::fs::create_dir(&work).map_err(|e| {
        Error::file(
            output,
            format!("cannot create a work folder in {}: {e}", dir.display()),
        )
    })?;
    Ok(work)
}
