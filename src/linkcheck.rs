//! What `relink` reads from an interpreter's build before linking it, so
//! that the link line is decided, not guessed:
//!
//! * whether the archive's code can go into a position-independent
//!   executable ([`absolute_relocation`]): objects compiled without
//!   `-fPIC`/`-fPIE` (Debian's `libpythonX.Y.a`) hold absolute 32-bit
//!   relocations in their code and data, which a PIE cannot have;
//! * every member's symbols that no member defines, and the built-in
//!   modules (the `_PyImport_Inittab` member, `config.o`, refers to their
//!   init functions) ([`scan`]); which of those symbols the link's own
//!   libraries define is asked of the linker ([`defined_by_libraries`]).
//!   `relink` links every member, as CPython links its own interpreter
//!   (extension modules such as `_testinternalcapi` and `_interpreters`
//!   call functions nothing in the core refers to); a built-in module
//!   whose object needs a symbol nothing defines cannot be linked (Debian's
//!   sid archives lack the HACL* objects that `_md5`, `_sha1`, `_sha2`,
//!   `_sha3` and `_blake2` call: its build linked them from its build
//!   tree), so `relink` leaves such modules out of a rebuilt inittab
//!   ([`config_without`]) and says so.
//!
//! ELF only (the archives `relink` links on Linux); other formats get no
//! facts and the link line of before.

use crate::error::{Error, Result};
use object::read::archive::{ArchiveFile, ArchiveMember};
use object::{Object, ObjectSection, ObjectSymbol, ReadCache, ReadCacheRange};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::path::Path;
use std::process::Command;

/// The symbol every CPython's `config.o` defines: the table of built-in
/// modules.
const INITTAB: &str = "_PyImport_Inittab";

fn open(path: &Path) -> Result<ReadCache<File>> {
    let file = File::open(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    Ok(ReadCache::new(file))
}

fn member_name(m: &ArchiveMember) -> String {
    String::from_utf8_lossy(m.name()).into_owned()
}

/// Parse one archive member (only the parts asked for are read).
fn parse_member<'a>(
    cache: &'a ReadCache<File>,
    m: &ArchiveMember,
) -> Option<object::File<'a, ReadCacheRange<'a, File>>> {
    let (start, size) = m.file_range();
    object::File::parse(cache.range(start, size)).ok()
}

/// The first relocation in `obj`'s allocated sections that only a
/// position-dependent executable can hold (x86_64 `R_X86_64_32`/`32S`,
/// aarch64 `R_AARCH64_ABS32`/`ABS16`/`MOVW_UABS_*`), as `TYPE in SECTION`.
fn absolute_in<'d, R: object::ReadRef<'d>>(obj: &object::File<'d, R>) -> Option<String> {
    use object::elf;
    let arch = obj.architecture();
    for s in obj.sections() {
        let alloc = match s.flags() {
            object::SectionFlags::Elf { sh_flags } => sh_flags & u64::from(elf::SHF_ALLOC) != 0,
            _ => return None,
        };
        if !alloc {
            continue;
        }
        for (_, r) in s.relocations() {
            let object::RelocationFlags::Elf { r_type } = r.flags() else {
                return None;
            };
            let name = match (arch, r_type) {
                (object::Architecture::X86_64, elf::R_X86_64_32) => "R_X86_64_32",
                (object::Architecture::X86_64, elf::R_X86_64_32S) => "R_X86_64_32S",
                (object::Architecture::Aarch64, elf::R_AARCH64_ABS32) => "R_AARCH64_ABS32",
                (object::Architecture::Aarch64, elf::R_AARCH64_ABS16) => "R_AARCH64_ABS16",
                (
                    object::Architecture::Aarch64,
                    elf::R_AARCH64_MOVW_UABS_G0
                    | elf::R_AARCH64_MOVW_UABS_G0_NC
                    | elf::R_AARCH64_MOVW_UABS_G1
                    | elf::R_AARCH64_MOVW_UABS_G1_NC
                    | elf::R_AARCH64_MOVW_UABS_G2
                    | elf::R_AARCH64_MOVW_UABS_G2_NC
                    | elf::R_AARCH64_MOVW_UABS_G3,
                ) => "R_AARCH64_MOVW_UABS_*",
                _ => continue,
            };
            return Some(format!("{name} in {}", s.name().unwrap_or("?")));
        }
    }
    None
}

/// Why the interpreter cannot be a PIE: the first absolute relocation
/// found in `python_o` or a member of `archive` (`libpython3.14.a(abstract.o):
/// R_X86_64_32S in .text`); `None` when every allocated section is
/// position-independent (or the files are not ELF).
pub fn absolute_relocation(archive: &Path, python_o: &Path) -> Result<Option<String>> {
    let cache = open(python_o)?;
    let len = std::fs::metadata(python_o).map(|m| m.len()).unwrap_or(0);
    if let Ok(obj) = object::File::parse(cache.range(0, len)) {
        if let Some(r) = absolute_in(&obj) {
            return Ok(Some(format!("{}: {r}", python_o.display())));
        }
    }
    let cache = open(archive)?;
    let ar = ArchiveFile::parse(&cache)
        .map_err(|e| Error::at(archive, 0, format!("not an ar archive: {e}")))?;
    let lib = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for m in ar.members() {
        let m = m.map_err(|e| Error::file(archive, format!("corrupt archive: {e}")))?;
        if let Some(obj) = parse_member(&cache, &m) {
            if let Some(r) = absolute_in(&obj) {
                return Ok(Some(format!("{lib}({}): {r}", member_name(&m))));
            }
        }
    }
    Ok(None)
}

/// One member of the archive.
#[derive(Debug, Clone)]
pub struct Member {
    /// `md5module.o`.
    pub name: String,
    /// Its non-weak undefined symbols that no archive member (and nothing
    /// in `also_defined`) defines.
    pub external: BTreeSet<String>,
    /// The built-in modules' init functions it defines (`PyInit__md5`):
    /// those the inittab member refers to.
    pub inits: Vec<String>,
}

/// What [`scan`] finds in an archive.
#[derive(Debug, Default)]
pub struct ArchiveScan {
    /// Every member is an ELF object whose symbols can be read (not GCC's
    /// slim LTO); otherwise nothing else is filled in.
    pub elf: bool,
    /// The member defining `_PyImport_Inittab` (`config.o`), if any.
    pub config_member: Option<String>,
    pub members: Vec<Member>,
    /// Member names that occur more than once.
    pub duplicate_names: BTreeSet<String>,
}

/// The global symbols `obj` defines and the non-weak ones it leaves
/// undefined.
fn symbols<'d, R: object::ReadRef<'d>>(obj: &object::File<'d, R>) -> (Vec<String>, Vec<String>) {
    let (mut def, mut undef) = (Vec::new(), Vec::new());
    for s in obj.symbols() {
        let Ok(name) = s.name() else { continue };
        if name.is_empty() {
            continue;
        }
        if s.is_undefined() {
            if !s.is_weak() {
                undef.push(name.to_string());
            }
        } else if s.is_global() {
            def.push(name.to_string());
        }
    }
    (def, undef)
}

/// Global symbols defined by the ELF object `path` (`python.o`, ours).
pub fn defined_in(path: &Path) -> Result<HashSet<String>> {
    let data = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let obj = object::File::parse(&*data)
        .map_err(|e| Error::at(path, 0, format!("not an object file: {e}")))?;
    Ok(symbols(&obj).0.into_iter().collect())
}

/// Every member of `archive` with what it needs from outside the archive
/// (minus `also_defined`: what `python.o` and our objects define), and the
/// built-in modules: the inittab member's undefined symbols that a member
/// defines are their init functions. Reads the members' headers and symbol
/// tables only.
pub fn scan(archive: &Path, also_defined: &HashSet<String>) -> Result<ArchiveScan> {
    let cache = open(archive)?;
    let ar = ArchiveFile::parse(&cache)
        .map_err(|e| Error::at(archive, 0, format!("not an ar archive: {e}")))?;
    let corrupt = |e: object::read::Error| Error::file(archive, format!("corrupt archive: {e}"));
    let mut defined: HashSet<String> = HashSet::new();
    let mut undefined: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out = ArchiveScan::default();
    for m in ar.members() {
        let m = m.map_err(corrupt)?;
        let name = member_name(&m);
        if !seen.insert(name.clone()) {
            out.duplicate_names.insert(name.clone());
        }
        let Some(obj) = parse_member(&cache, &m) else {
            return Ok(ArchiveScan::default());
        };
        if obj.format() != object::BinaryFormat::Elf {
            return Ok(ArchiveScan::default());
        }
        let (def, undef) = symbols(&obj);
        // GCC's slim LTO objects keep their real symbols in LTO sections,
        // out of reach here: no facts.
        if def.iter().chain(&undef).any(|s| s == "__gnu_lto_slim") {
            return Ok(ArchiveScan::default());
        }
        if def.iter().any(|d| d == INITTAB) {
            out.config_member = Some(name.clone());
        }
        defined.extend(def.iter().cloned());
        undefined.push((name, def, undef));
    }
    // What the archive's index says members define counts too.
    if let Some(syms) = ar.symbols().map_err(corrupt)? {
        for sym in syms {
            defined.insert(String::from_utf8_lossy(sym.map_err(corrupt)?.name()).into_owned());
        }
    }
    out.elf = true;
    let config_refs: HashSet<&String> = out
        .config_member
        .as_ref()
        .and_then(|c| undefined.iter().find(|(n, _, _)| n == c))
        .map(|(_, _, u)| u.iter().filter(|s| defined.contains(*s)).collect())
        .unwrap_or_default();
    for (name, def, undef) in &undefined {
        out.members.push(Member {
            name: name.clone(),
            external: undef
                .iter()
                .filter(|s| !defined.contains(*s) && !also_defined.contains(*s))
                .cloned()
                .collect(),
            inits: def
                .iter()
                .filter(|d| config_refs.contains(d))
                .cloned()
                .collect(),
        });
    }
    Ok(out)
}

/// Which of `symbols` the link's own inputs besides the archive (the
/// compiler driver's start files and default libraries, and the libraries
/// in `flags`) define, as the linker sees it: a link of nothing but
/// `-u SYM` for each, with undefined symbols allowed and each traced
/// (`-y`, GNU ld and lld print `FILE: definition of SYM`).
pub fn defined_by_libraries(
    linkcc: &str,
    pre: &[&str],
    flags: &[String],
    symbols: &BTreeSet<String>,
    work: &Path,
) -> Result<HashSet<String>> {
    let mut found = HashSet::new();
    if symbols.is_empty() {
        return Ok(found);
    }
    // The compiler driver's response file keeps the command line short.
    let rsp = work.join("probe.rsp");
    let mut text = String::new();
    for s in symbols {
        text.push_str(&format!("-Wl,-u,{s}\n-Wl,-y,{s}\n"));
    }
    std::fs::write(&rsp, text).map_err(|e| Error::file(&rsp, format!("cannot write: {e}")))?;
    let out_file = work.join("probe");
    let out = Command::new(linkcc)
        .args(pre)
        .arg("-o")
        .arg(&out_file)
        .arg("-Wl,--unresolved-symbols=ignore-all")
        .arg(format!("@{}", rsp.display()))
        .args(flags)
        .output()
        .map_err(|e| Error::msg(format!("cannot run {linkcc}: {e}")))?;
    let _ = std::fs::remove_file(&out_file);
    let _ = std::fs::remove_file(&rsp);
    if !out.status.success() {
        return Err(Error::msg(format!(
            "probing which symbols the link's libraries define failed ({}): {}",
            out.status,
            crate::input::compile::stderr_summary(&out.stderr)
        )));
    }
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for line in text.lines() {
        if let Some((_, sym)) = line.rsplit_once("definition of ") {
            let sym = sym.trim();
            if symbols.contains(sym) {
                found.insert(sym.to_string());
            }
        }
    }
    Ok(found)
}

/// `config_c` (the build's `config.c`, from `LIBPL`) without the inittab
/// entries `{"NAME", INIT},` of `drop` (init function names). Every one must
/// be found exactly once.
pub fn config_without(config_c: &Path, drop: &[&str]) -> Result<String> {
    let text = std::fs::read_to_string(config_c)
        .map_err(|e| Error::file(config_c, format!("cannot read: {e}")))?;
    let mut seen: BTreeMap<&str, usize> = drop.iter().map(|d| (*d, 0)).collect();
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        let entry = t
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix("},"))
            .and_then(|r| {
                let (name, init) = r.split_once(',')?;
                let name = name.trim();
                (name.starts_with('"') && name.ends_with('"')).then(|| init.trim())
            });
        if let Some(n) = entry.and_then(|init| seen.get_mut(init)) {
            *n += 1;
            continue;
        }
        out.push_str(line);
    }
    if let Some((init, n)) = seen.iter().find(|(_, n)| **n != 1) {
        return Err(Error::file(
            config_c,
            format!(
                "expected one inittab entry `{{\"...\", {init}}},`, found {n}: cannot rebuild the \
                 table of built-in modules without it"
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_entries_dropped_exactly() {
        let dir = std::env::temp_dir().join(format!("pyfreeze-linkcheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = dir.join("config.c");
        std::fs::write(
            &c,
            "extern PyObject* PyInit__md5(void);\nstruct _inittab _PyImport_Inittab[] = {\n    \
             {\"_md5\", PyInit__md5},\n    {\"_md5x\", PyInit__md5x},\n    {0, 0}\n};\n",
        )
        .unwrap();
        let out = config_without(&c, &["PyInit__md5"]).unwrap();
        assert!(!out.contains("{\"_md5\""), "{out}");
        assert!(out.contains("{\"_md5x\", PyInit__md5x},"), "{out}");
        assert!(out.contains("extern PyObject* PyInit__md5(void);"), "{out}");
        let e = config_without(&c, &["PyInit__nope"]).unwrap_err();
        assert!(e.message.contains("found 0"), "{}", e.message);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
