//! `--modules-from LIBPYTHON.a`: the module set, in order, and each
//! module's marshal bytes (where the build kept them), read from the
//! `frozen.o` member of a libpython archive.

use super::{Marshalled, OffsetMap};
use crate::error::{Error, Result};
use crate::frozen::{accessor_symbol, Entry, Tables};
use crate::layout::Layout;
use object::read::archive::ArchiveFile;
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex};
use std::collections::HashMap;
use std::path::Path;

/// One deep-frozen module of the archive's tables.
#[derive(Debug)]
pub struct FrozenModule {
    /// The module's real name (`importlib._bootstrap`, not the table's
    /// `_frozen_importlib`): the one that mangles to its accessor.
    pub name: String,
    /// The name the frozen tables list it under (`_frozen_importlib`).
    pub frozen_name: String,
    /// `_Py_get_<mangled>_toplevel`, as the tables reference it.
    pub accessor: String,
    pub is_package: bool,
    /// The marshal bytes, if `frozen.o` keeps them (3.12 does, 3.11 not).
    pub code: Option<Marshalled>,
}

/// A resolved pointer: into a section of the object, or to a symbol it
/// does not define.
enum Ptr {
    Local(SectionIndex, u64),
    Extern(String),
    Null,
}

/// Which CPython build an archive is: `PY_VERSION` (from `getversion.o`)
/// and, where the archive records it, the build's date and time (from
/// `getbuildinfo.o`, as `platform.python_build()` gives them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub version: String,
    pub built: Option<String>,
}

impl Identity {
    /// `(major, minor)` of [`Identity::version`].
    pub fn major_minor(&self) -> Option<(u8, u8)> {
        let mut it = self.version.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some((major, minor))
    }
}

/// What [`check`] finds out about an archive.
#[derive(Debug)]
pub struct Checked {
    pub identity: Identity,
    /// Whether `pylifecycle.o` carries DWARF (`.debug_info`): the build was
    /// compiled with `-g`, and its layout can be read from the archive.
    pub debug_info: bool,
    /// The archive's module tables (`frozen.o`) when it passes the
    /// verification against the layout table ([`super::verify`]), else why
    /// it does not.
    pub fits: Result<Tables>,
}

/// Which CPython `path` is (an error unless it is `layout`'s X.Y), whether
/// it has debug info, and whether `layout` fits it (then its module
/// tables, read in the same pass).
pub fn check(path: &Path, layout: &Layout) -> Result<Checked> {
    // Read on demand: the archive is tens of MB, the members read a small part.
    let file =
        std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let cache = object::ReadCache::new(file);
    let ar = ArchiveFile::parse(&cache)
        .map_err(|e| Error::at(path, 0, format!("not an ar archive: {e}")))?;
    let (identity, life, opcodes) = identify(path, &cache, &ar, layout)?;
    let debug_info = life
        .and_then(|d| object::File::parse(d).ok())
        .and_then(|o| o.section_by_name(".debug_info").map(|s| s.size() > 0))
        .unwrap_or(false);
    let fits = match super::verify::check(path, &identity.version, layout, life, &opcodes) {
        Ok(()) => Ok(frozen_tables(path, &cache, &ar, layout)?),
        Err(misfit) => Err(misfit),
    };
    Ok(Checked {
        identity,
        debug_info,
        fits,
    })
}

type Members<'d> = (Identity, Option<&'d [u8]>, Vec<&'d [u8]>);

/// The archive's identity (refused unless `layout`'s X.Y) and its
/// `pylifecycle.o` member and the members that may define the opcode
/// tables (compile.o in 3.13, codegen.o from 3.14).
fn identify<'d>(
    path: &Path,
    cache: &'d object::ReadCache<std::fs::File>,
    ar: &ArchiveFile<'d, &'d object::ReadCache<std::fs::File>>,
    layout: &Layout,
) -> Result<Members<'d>> {
    let (mut version, mut buildinfo) = (None, None);
    let (mut life, mut compile, mut codegen) = (None, None, None);
    for m in ar.members() {
        let m = m.map_err(|e| Error::file(path, format!("corrupt archive member table: {e}")))?;
        match m.name() {
            b"getversion.o" => version = Some(m),
            b"getbuildinfo.o" => buildinfo = Some(m),
            b"pylifecycle.o" => life = Some(m),
            b"compile.o" => compile = Some(m),
            b"codegen.o" => codegen = Some(m),
            _ => {}
        }
    }
    let member_strings = |m: Option<object::read::archive::ArchiveMember>| -> Vec<String> {
        m.and_then(|m| m.data(cache).ok())
            .and_then(|d| object::File::parse(d).ok())
            .map(|o| object_strings(&o))
            .unwrap_or_default()
    };
    let identity = Identity {
        version: member_strings(version)
            .into_iter()
            .find(|s| is_py_version(s))
            .ok_or_else(|| {
                Error::file(
                    path,
                    "no CPython version in its getversion.o (PY_VERSION): cannot tell which \
                     CPython this archive is; give the static library of a CPython build",
                )
            })?,
        built: build_date(&member_strings(buildinfo)),
    };
    let (want_major, want_minor) = layout.version;
    if identity.major_minor() != Some(layout.version) {
        return Err(Error::file(
            path,
            format!(
                "archive is CPython {}, not {want_major}.{want_minor} (--python \
                 {want_major}.{want_minor}): give --python with the archive's version, or the \
                 archive of a {want_major}.{want_minor} build",
                identity.version
            ),
        ));
    }
    let range = |m: object::read::archive::ArchiveMember| {
        let (start, size) = m.file_range();
        object::ReadRef::read_bytes_at(cache, start, size).ok()
    };
    let opcodes = [compile, codegen]
        .into_iter()
        .flatten()
        .filter_map(range)
        .collect();
    Ok((identity, life.and_then(range), opcodes))
}

/// Read the module tables of the `frozen.o` inside `path`, after checking
/// that the archive is a build of `layout`'s CPython version.
pub fn read_tables(path: &Path, layout: &Layout) -> Result<(Tables, Identity)> {
    let c = check(path, layout)?;
    Ok((c.fits?, c.identity))
}

/// The module tables of the archive's `frozen.o`.
fn frozen_tables<'d>(
    path: &Path,
    cache: &'d object::ReadCache<std::fs::File>,
    ar: &ArchiveFile<'d, &'d object::ReadCache<std::fs::File>>,
    layout: &Layout,
) -> Result<Tables> {
    let member = ar
        .members()
        .filter_map(|m| m.ok())
        .find(|m| m.name() == b"frozen.o");
    let m = member
        .ok_or_else(|| Error::file(path, "no frozen.o member: not a CPython static library"))?;
    let (start, size) = m.file_range();
    let data = object::ReadRef::read_bytes_at(cache, start, size)
        .map_err(|_| Error::at(path, start, "frozen.o: truncated archive member"))?;
    let mpath = format!("{}(frozen.o)", path.display());
    let obj = object::File::parse(data)
        .map_err(|e| Error::at(&mpath, 0, format!("not an object file: {e}")))?;
    let fr = Frozen::new(&obj);
    let fl = &layout.frozen;
    let mut tables = Vec::new();
    for table in fl.tables {
        let (tsec, mut at) = fr.table_start(&obj, table).ok_or_else(|| {
            Error::file(
                &mpath,
                format!(
                    "no table {table}: not a CPython {}.{} frozen.o",
                    layout.version.0, layout.version.1
                ),
            )
        })?;
        let mut entries = Vec::new();
        loop {
            let name = match fr.pointer(tsec, at + fl.name.off as u64) {
                Ptr::Null => break,
                Ptr::Local(s, o) => fr.c_string(s, o).ok_or_else(|| {
                    Error::file(&mpath, format!("{table}: unreadable module name"))
                })?,
                Ptr::Extern(n) => {
                    return Err(Error::file(
                        &mpath,
                        format!("{table}: module name points to {n}"),
                    ))
                }
            };
            let get_code = match fl.get_code.map(|g| fr.pointer(tsec, at + g.off as u64)) {
                Some(Ptr::Extern(n)) => Some(n),
                _ => None,
            };
            let size = fr.read_u32(tsec, at + fl.size.off as u64).unwrap_or(0) as i32;
            let is_package = fr
                .read_u32(tsec, at + fl.is_package.off as u64)
                .unwrap_or(0)
                != 0;
            let code = match fr.pointer(tsec, at + fl.code.off as u64) {
                Ptr::Local(s, o) if size != 0 => {
                    let (bytes, file_off) =
                        fr.slice(s, o, size.unsigned_abs() as u64).ok_or_else(|| {
                            Error::file(
                                &mpath,
                                format!("module {name}: marshal bytes out of range"),
                            )
                        })?;
                    Some((bytes.to_vec(), start + file_off))
                }
                _ => None,
            };
            entries.push(Entry {
                name,
                code,
                is_package,
                get_code,
            });
            at += fl.entry_size as u64;
        }
        tables.push(entries);
    }
    let aliases = fr.aliases(&obj, fl);
    if fl.get_code.is_none() {
        name_blobs(&mut tables, &aliases);
    }
    Ok(Tables { tables, aliases })
}

/// Without `get_code` (3.13+), every entry's code is its marshal bytes, and
/// entries sharing them (aliases: `os.path` and `posixpath`) are one
/// module: each entry gets the accessor of its bytes' module, named by the
/// first entry holding them, or by the original that entry is an alias of
/// (`_frozen_importlib` is `importlib._bootstrap`).
fn name_blobs(tables: &mut [Vec<Entry>], aliases: &[(String, Option<String>)]) {
    let mut names: HashMap<u64, String> = HashMap::new();
    for e in tables.iter_mut().flatten() {
        let Some((_, off)) = &e.code else { continue };
        let name =
            names
                .entry(*off)
                .or_insert_with(|| match aliases.iter().find(|(a, _)| *a == e.name) {
                    Some((_, Some(orig))) if !orig.starts_with('<') => orig.clone(),
                    _ => e.name.clone(),
                });
        e.get_code = Some(accessor_symbol(name));
    }
}

/// The NUL-terminated strings in the data sections of `obj`.
fn object_strings(obj: &object::File) -> Vec<String> {
    use object::SectionKind;
    let mut out = Vec::new();
    for s in obj.sections() {
        if !matches!(
            s.kind(),
            SectionKind::ReadOnlyString | SectionKind::ReadOnlyData | SectionKind::Data
        ) {
            continue;
        }
        let Ok(data) = s.data() else { continue };
        out.extend(
            data.split(|&b| b == 0)
                .filter(|w| !w.is_empty())
                .filter_map(|w| std::str::from_utf8(w).ok())
                .map(str::to_string),
        );
    }
    out
}

/// `PY_VERSION` as CPython spells it: `3.11.2`, `3.13.0rc1`, `3.12.1+`
/// (also how `gen-layout` recognises it).
pub(crate) fn is_py_version(s: &str) -> bool {
    let core = s.trim_end_matches('+');
    let mut parts = core.splitn(3, '.');
    let (Some(a), Some(b), Some(c)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    let n = c.bytes().take_while(u8::is_ascii_digit).count();
    let tail = &c[n..];
    let tail_ok = tail.is_empty()
        || ["a", "b", "rc"]
            .iter()
            .any(|p| tail.strip_prefix(p).is_some_and(digits));
    a == "3" && digits(b) && n > 0 && tail_ok
}

/// "Mmm dd yyyy hh:mm:ss" from `getbuildinfo.o`'s `__DATE__` and
/// `__TIME__` strings, as `platform.python_build()[1]` shows them.
fn build_date(strings: &[String]) -> Option<String> {
    let is_time = |s: &str| {
        s.len() == 8
            && s.bytes().enumerate().all(|(i, b)| {
                if i == 2 || i == 5 {
                    b == b':'
                } else {
                    b.is_ascii_digit()
                }
            })
    };
    let is_date = |s: &str| {
        let b = s.as_bytes();
        s.len() == 11
            && b[..3].iter().all(u8::is_ascii_alphabetic)
            && b[3] == b' '
            && (b[4] == b' ' || b[4].is_ascii_digit())
            && b[5].is_ascii_digit()
            && b[6] == b' '
            && b[7..].iter().all(u8::is_ascii_digit)
    };
    let date = strings.iter().find(|s| is_date(s))?;
    let time = strings.iter().find(|s| is_time(s))?;
    Some(format!("{date} {time}"))
}

/// The deep-frozen modules of an archive, in table order: one per accessor
/// (aliases such as `os.path` share another module's), under the name that
/// mangles to the accessor (its own or its alias target's).
pub fn read(path: &Path, layout: &Layout) -> Result<Vec<FrozenModule>> {
    Ok(modules(&read_tables(path, layout)?.0, path))
}

pub fn modules(t: &Tables, path: &Path) -> Vec<FrozenModule> {
    let mut out: Vec<FrozenModule> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in t.tables.iter().flatten() {
        let Some(get_code) = &e.get_code else {
            continue;
        };
        if !seen.insert(get_code.clone()) {
            continue;
        }
        let name = match t.aliases.iter().find(|(a, _)| *a == e.name) {
            Some((_, Some(orig))) if accessor_symbol(orig) == *get_code => orig.clone(),
            _ => e.name.clone(),
        };
        let code = e.code.as_ref().map(|(bytes, off)| Marshalled {
            name: name.clone(),
            accessor: get_code.clone(),
            data: bytes.clone(),
            origin: path.to_path_buf(),
            offsets: OffsetMap::Base(*off),
        });
        out.push(FrozenModule {
            name,
            frozen_name: e.name.clone(),
            accessor: get_code.clone(),
            is_package: e.is_package,
            code,
        });
    }
    out
}

/// Relocation-aware reading of the data of one object file.
struct Frozen<'d, 'o> {
    obj: &'o object::File<'d>,
    /// (section, offset) -> (target, addend)
    relocs: HashMap<(SectionIndex, u64), (RelocationTarget, i64)>,
}

impl<'d, 'o> Frozen<'d, 'o> {
    fn new(obj: &'o object::File<'d>) -> Self {
        let mut relocs = HashMap::new();
        for sec in obj.sections() {
            for (off, r) in sec.relocations() {
                relocs.insert((sec.index(), off), (r.target(), r.addend()));
            }
        }
        Frozen { obj, relocs }
    }

    fn section_data(&self, s: SectionIndex) -> Option<&'d [u8]> {
        self.obj.section_by_index(s).ok()?.data().ok()
    }

    fn read_u32(&self, s: SectionIndex, at: u64) -> Option<u32> {
        let d = self.section_data(s)?;
        let b = d.get(at as usize..at as usize + 4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    fn pointer(&self, s: SectionIndex, at: u64) -> Ptr {
        let Some(&(target, addend)) = self.relocs.get(&(s, at)) else {
            return Ptr::Null;
        };
        match target {
            RelocationTarget::Symbol(i) => match self.obj.symbol_by_index(i) {
                Ok(sym) => match sym.section_index() {
                    Some(sec) => Ptr::Local(sec, (sym.address() as i64 + addend) as u64),
                    None => Ptr::Extern(sym.name().unwrap_or("").to_string()),
                },
                Err(_) => Ptr::Null,
            },
            RelocationTarget::Section(sec) => Ptr::Local(sec, addend as u64),
            _ => Ptr::Null,
        }
    }

    /// Where the array a global table pointer points to begins.
    fn table_start(&self, obj: &object::File, symbol: &str) -> Option<(SectionIndex, u64)> {
        let sym = obj.symbol_by_name(symbol)?;
        match self.pointer(sym.section_index()?, sym.address()) {
            Ptr::Local(s, o) => Some((s, o)),
            _ => None,
        }
    }

    /// `_PyImport_FrozenAliases`: (alias, original or NULL) pairs.
    fn aliases(
        &self,
        obj: &object::File,
        fl: &crate::layout::FrozenLayout,
    ) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        let Some((tsec, mut at)) = self.table_start(obj, fl.aliases) else {
            return out;
        };
        let ptr = fl.name.size as u64;
        while let Ptr::Local(s, o) = self.pointer(tsec, at) {
            let orig = match self.pointer(tsec, at + ptr) {
                Ptr::Local(s2, o2) => self.c_string(s2, o2),
                _ => None,
            };
            if let Some(a) = self.c_string(s, o) {
                out.push((a, orig));
            }
            at += 2 * ptr;
        }
        out
    }

    fn c_string(&self, s: SectionIndex, at: u64) -> Option<String> {
        let d = self.section_data(s)?.get(at as usize..)?;
        let end = d.iter().position(|&b| b == 0)?;
        String::from_utf8(d[..end].to_vec()).ok()
    }

    /// `len` bytes at `at`, and their offset within the object file.
    fn slice(&self, s: SectionIndex, at: u64, len: u64) -> Option<(&'d [u8], u64)> {
        let sec = self.obj.section_by_index(s).ok()?;
        let d = sec.data().ok()?;
        let b = d.get(at as usize..(at + len) as usize)?;
        let file_off = sec.file_range().map(|(o, _)| o).unwrap_or(0) + at;
        Some((b, file_off))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn py_version_strings() {
        for ok in [
            "3.11.2",
            "3.12.1",
            "3.13.0rc1",
            "3.14.0a7",
            "3.12.1+",
            "3.15.2",
        ] {
            assert!(is_py_version(ok), "{ok}");
        }
        for bad in [
            "3.11", "2.7.18", "3.x.1", "3.11.2x", "%.80s", "", "3.11.2.1", "3.11.rc1",
        ] {
            assert!(!is_py_version(bad), "{bad}");
        }
    }

    #[test]
    fn build_dates() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            build_date(&s(&[
                "main",
                "%s%s%s, %.20s, %.9s",
                "07:35:25",
                "May  9 2026"
            ])),
            Some("May  9 2026 07:35:25".into())
        );
        assert_eq!(
            build_date(&s(&["Oct 17 2026", "12:35:07"])).as_deref(),
            Some("Oct 17 2026 12:35:07")
        );
        assert_eq!(build_date(&s(&["main", "12:35:07"])), None);
    }
}
