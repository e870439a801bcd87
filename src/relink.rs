//! `relink`: turn an installed CPython (3.11+) that ships its static
//! archive into a faster interpreter: re-freeze its stock modules plus the
//! requested ones with lazy initialization, replace `deepfreeze.o` (where
//! the build has one) and `frozen.o` in a copy of its `libpython3.X.a`, and
//! link `python.o` against it with the flags of that interpreter's own
//! build and those the version's object needs (3.13: `--wrap`).
//!
//! The link line is decided from the build's files, not retried
//! ([`crate::linkcheck`]): `-no-pie` when the archive's code holds absolute
//! relocations (Debian's archives are not PIC); sysconfig's flags without
//! the line-continuation backslashes Debian's `LOCALMODLIBS` carries; and
//! built-in modules whose objects need symbols that neither the archive nor
//! the link's libraries define (Debian sid's `_md5 _sha1 _sha2 _sha3
//! _blake2`, which call HACL* objects no package ships) are left out of a
//! table of built-in modules rebuilt from `LIBPL/config.c`, with a note on
//! stderr naming them. Every member of the archive is linked
//! (`--whole-archive`), as CPython links its own interpreter: extension
//! modules in lib-dynload (`_testinternalcapi`, `_interpreters`) call
//! functions nothing in the core refers to. `--stock` links the build's
//! own frozen modules unchanged: the reference an interpreter from
//! `relink` is measured and tested against.

use crate::emit::{self, Options};
use crate::error::{Error, Result};
use crate::linkcheck;
use crate::target::Target;
use crate::version::Version;
use std::collections::BTreeSet;
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
    /// Link the build's own frozen modules (no object of ours): the stock
    /// link, with the same link-line decisions.
    pub stock: bool,
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
    /// `CC`, `CCSHARED`, `INCLUDEPY`: compiling a replacement `config.c`.
    cc: String,
    ccshared: String,
    include: PathBuf,
}

const QUERY: &str = r#"
import sys, sysconfig as s
v = lambda k: s.get_config_var(k) or ""
print("%d.%d" % sys.version_info[:2])
for k in ("LIBPL", "LIBRARY", "LINKCC", "HOST_GNU_TYPE"):
    print(v(k))
print(" ".join(v(k) for k in ("LDFLAGS", "LINKFORSHARED", "LIBS", "SYSLIBS", "LOCALMODLIBS")))
for k in ("CC", "CCSHARED", "INCLUDEPY"):
    print(v(k))
"#;

/// sysconfig's link flags as words, without the words that are only
/// backslashes: Debian's `LOCALMODLIBS` keeps the line continuations of
/// its `Setup.local` (`-lexpat \ \ \ -lz`), which the compiler driver
/// would take for file names.
fn flag_words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .filter(|w| !w.chars().all(|c| c == '\\'))
        .map(String::from)
        .collect()
}

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
    if l.len() < 9 {
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
        flags: flag_words(l[5]),
        cc: if l[6].is_empty() {
            "cc".into()
        } else {
            l[6].into()
        },
        ccshared: l[7].into(),
        include: PathBuf::from(l[8]),
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
    // The stock link needs no contract: nothing of ours goes in.
    let version = if o.stock {
        None
    } else {
        Some(Version::parse(&b.version)?)
    };
    if let Some(version) = version {
        if o.eager && !version.contract.entry.has_eager() {
            return Err(Error::msg(format!(
                "--eager: CPython {} has no eager scheme to follow (it does not deep-freeze: the \
                 object initializes each module on its first load); drop --eager",
                b.version
            )));
        }
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
    // PIE or not, decided from the code itself.
    let no_pie = linkcheck::absolute_relocation(&archive, &python_o)?;
    let pre: &[&str] = if no_pie.is_some() { &["-no-pie"] } else { &[] };
    match &no_pie {
        Some(why) => log(
            o,
            t0,
            format_args!("not position-independent ({why}): -no-pie"),
        ),
        None => log(
            o,
            t0,
            format_args!("position-independent code: the compiler's default link"),
        ),
    }

    let work = tempdir(&o.output)?;
    let result = (|| {
        let mut objs: Vec<PathBuf> = Vec::new();
        let mut remove: Vec<String> = Vec::new();
        if let Some(version) = version {
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
            objs.push(obj);
            remove.extend(
                members_present(&archive, &["deepfreeze.o", "frozen.o"])?
                    .into_iter()
                    .map(String::from),
            );
        }

        // Every member, less the built-in modules that cannot link.
        let whole = match linkable(o, t0, &b, &archive, &python_o, &objs, pre, &work)? {
            Linkable::NotElf => false,
            Linkable::All => true,
            Linkable::Without { config_o, members } => {
                objs.push(config_o);
                remove.extend(members);
                true
            }
        };

        let lib = if remove.is_empty() {
            archive.clone()
        } else {
            let lib = work.join(&b.library);
            std::fs::copy(&archive, &lib)
                .map_err(|e| Error::file(&lib, format!("cannot copy the archive: {e}")))?;
            run(
                Command::new("ar").arg("d").arg(&lib).args(&remove),
                &format!("ar d {}", remove.join(" ")),
            )?;
            lib
        };
        let wrap = version.map_or(Vec::new(), |v| v.contract.entry.link_flags());
        if !wrap.is_empty() {
            log(o, t0, format_args!("linking with {}", wrap.join(" ")));
        }

        let tmp_out = work.join("python");
        let mut cmd = Command::new(&b.linkcc);
        cmd.args(pre)
            .arg("-o")
            .arg(&tmp_out)
            .arg(&python_o)
            .args(&objs);
        // As CPython links its own interpreter: every object of the
        // library, not only the members something here refers to.
        if whole {
            cmd.arg("-Wl,--whole-archive")
                .arg(&lib)
                .arg("-Wl,--no-whole-archive");
        } else {
            cmd.arg(&lib);
        }
        cmd.args(&b.flags).args(&wrap);
        log(o, t0, format_args!("{}", describe(&cmd)));
        run(&mut cmd, "link")?;
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

/// `cmd` as one line (for -v).
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// What of the archive [`linkable`] found can be linked whole.
enum Linkable {
    /// Not ELF: no facts, the archive linked as an archive.
    NotElf,
    /// Every member.
    All,
    /// Every member but `members` (the inittab member and the left-out
    /// modules' objects), with `config_o` for the inittab.
    Without {
        config_o: PathBuf,
        members: Vec<String>,
    },
}

/// Whether every member of the archive can be linked: what each needs from
/// outside the archive (less what `python.o` and our objects define) must
/// come from the link's libraries. Built-in modules whose objects need
/// symbols that nothing defines are left out (a replacement inittab
/// compiled from `LIBPL/config.c` without them; a note on stderr, always);
/// any other member that cannot link is an error.
#[allow(clippy::too_many_arguments)]
fn linkable(
    o: &RelinkOptions,
    t0: Instant,
    b: &Build,
    archive: &Path,
    python_o: &Path,
    objs: &[PathBuf],
    pre: &[&str],
    work: &Path,
) -> Result<Linkable> {
    let mut defined = linkcheck::defined_in(python_o)?;
    for obj in objs {
        defined.extend(linkcheck::defined_in(obj)?);
    }
    let scan = linkcheck::scan(archive, &defined)?;
    if !scan.elf {
        log(
            o,
            t0,
            format_args!("not an ELF archive: linked as an archive"),
        );
        return Ok(Linkable::NotElf);
    }
    let wanted: BTreeSet<String> = scan
        .members
        .iter()
        .flat_map(|m| m.external.iter().cloned())
        .collect();
    let from_libs = linkcheck::defined_by_libraries(&b.linkcc, pre, &b.flags, &wanted, work)?;
    log(
        o,
        t0,
        format_args!(
            "{} members; {} symbols they need from outside the archive, {} defined by the link's libraries",
            scan.members.len(),
            wanted.len(),
            from_libs.len()
        ),
    );
    let mut missing: BTreeSet<&str> = BTreeSet::new();
    let mut dropped: Vec<&linkcheck::Member> = Vec::new();
    for m in &scan.members {
        let lacking: Vec<&str> = m
            .external
            .iter()
            .filter(|s| !from_libs.contains(*s))
            .map(String::as_str)
            .collect();
        if lacking.is_empty() {
            continue;
        }
        if m.inits.is_empty() {
            return Err(Error::file(
                archive,
                format!(
                    "member {} needs {} symbols that neither the archive nor the link's \
                     libraries ({}) define (e.g. {}), and it is no built-in module that could \
                     be left out: this archive cannot be linked as its build linked it",
                    m.name,
                    lacking.len(),
                    b.flags.join(" "),
                    lacking[..lacking.len().min(3)].join(", ")
                ),
            ));
        }
        missing.extend(&lacking);
        dropped.push(m);
    }
    if dropped.is_empty() {
        return Ok(Linkable::All);
    }
    let inits: Vec<&str> = dropped
        .iter()
        .flat_map(|m| m.inits.iter().map(String::as_str))
        .collect();
    let names: Vec<&str> = inits
        .iter()
        .map(|i| i.strip_prefix("PyInit_").unwrap_or(i))
        .collect();
    let mut members: Vec<String> = dropped.iter().map(|m| m.name.clone()).collect();
    let Some(config_member) = scan.config_member.clone() else {
        return Err(Error::file(archive, "no member defines _PyImport_Inittab"));
    };
    for m in members.iter().chain([&config_member]) {
        if scan.duplicate_names.contains(m) {
            return Err(Error::file(
                archive,
                format!("member name {m} occurs more than once: cannot remove it by name"),
            ));
        }
    }
    let config_c = b.libpl.join("config.c");
    if !config_c.is_file() {
        return Err(Error::file(
            &config_c,
            format!(
                "missing: built-in modules {} cannot be linked (their objects need {} symbols \
                 nothing defines, e.g. {}) and without the build's config.c the table of \
                 built-in modules cannot be rebuilt without them",
                names.join(" "),
                missing.len(),
                missing.iter().next().unwrap()
            ),
        ));
    }
    let source = linkcheck::config_without(&config_c, &inits)?;
    let src = work.join("config.c");
    std::fs::write(&src, source).map_err(|e| Error::file(&src, format!("cannot write: {e}")))?;
    let config_o = work.join("pyfreeze-config.o");
    let mut cc = Command::new(&b.cc);
    cc.args(b.ccshared.split_whitespace())
        .arg("-I")
        .arg(&b.include)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&config_o);
    run(
        &mut cc,
        &format!(
            "compiling {} without {}",
            config_c.display(),
            names.join(" ")
        ),
    )?;
    let first: Vec<&str> = missing.iter().take(2).copied().collect();
    eprintln!(
        "pyfreeze-obj relink: note: built-in modules {} left out (importing them fails): \
         their objects in {} ({}) need {} symbols that neither the archive nor the link's \
         libraries define (e.g. {}); the table of built-in modules was rebuilt from {} \
         without them",
        names.join(" "),
        archive.display(),
        members.join(" "),
        missing.len(),
        first.join(", "),
        config_c.display()
    );
    members.push(config_member);
    Ok(Linkable::Without { config_o, members })
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
