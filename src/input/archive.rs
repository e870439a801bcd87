//! `--modules-from LIBPYTHON.a`: the module set, in order, and each
//! module's marshal bytes (where the build kept them), read from the
//! `frozen.o` member of a libpython archive.

use super::{Marshalled, OffsetMap};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::place::accessor_symbol;
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

pub fn read(path: &Path, layout: &Layout) -> Result<Vec<FrozenModule>> {
    // Read on demand: the archive is tens of MB, frozen.o a small part.
    let file =
        std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let cache = object::ReadCache::new(file);
    let ar = ArchiveFile::parse(&cache)
        .map_err(|e| Error::at(path, 0, format!("not an ar archive: {e}")))?;
    let mut member = None;
    for m in ar.members() {
        let m = m.map_err(|e| Error::file(path, format!("corrupt archive member table: {e}")))?;
        if m.name() == b"frozen.o" {
            member = Some(m);
            break;
        }
    }
    let m = member.ok_or_else(|| {
        Error::file(
            path,
            "no frozen.o member: not a CPython 3.11/3.12 static library",
        )
    })?;
    let (start, size) = m.file_range();
    let member_bytes = object::ReadRef::read_bytes_at(&cache, start, size)
        .map_err(|_| Error::at(path, start, "frozen.o: truncated archive member"))?;
    let mpath = format!("{}(frozen.o)", path.display());
    let data = member_bytes;
    let obj = object::File::parse(data)
        .map_err(|e| Error::at(&mpath, 0, format!("not an object file: {e}")))?;
    let fr = Frozen::new(&obj);
    let fl = &layout.frozen;
    let aliases = fr.aliases(&obj, fl);
    let mut out: Vec<FrozenModule> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for table in fl.tables {
        let sym = obj.symbol_by_name(table).ok_or_else(|| {
            Error::file(
                &mpath,
                format!(
                    "no symbol {table}: not a CPython {}.{} frozen.o",
                    layout.version.0, layout.version.1
                ),
            )
        })?;
        let sec = sym
            .section_index()
            .ok_or_else(|| Error::file(&mpath, format!("{table} is undefined")))?;
        let Ptr::Local(tsec, mut at) = fr.pointer(sec, sym.address()) else {
            return Err(Error::file(
                &mpath,
                format!("{table} does not point into frozen.o"),
            ));
        };
        loop {
            let name = match fr.pointer(tsec, at + fl.name.off as u64) {
                Ptr::Null => break,
                Ptr::Local(s, o) => fr.c_string(s, o).ok_or_else(|| {
                    Error::at(&mpath, 0, format!("{table}: unreadable module name"))
                })?,
                Ptr::Extern(n) => {
                    return Err(Error::file(
                        &mpath,
                        format!("{table}: module name points to {n}"),
                    ))
                }
            };
            let get_code = match fr.pointer(tsec, at + fl.get_code.off as u64) {
                Ptr::Extern(n) => Some(n),
                _ => None,
            };
            let size = fr.read_u32(tsec, at + fl.size.off as u64).unwrap_or(0) as i32;
            let is_package = fr
                .read_u32(tsec, at + fl.is_package.off as u64)
                .unwrap_or(0)
                != 0;
            let code_ptr = fr.pointer(tsec, at + fl.code.off as u64);
            at += fl.entry_size as u64;
            // Deep-frozen modules have an accessor; several entries (aliases
            // such as `os.path`) may share one: the first one wins, under
            // the name (its own or its alias target's) that mangles to it.
            let Some(get_code) = get_code else { continue };
            if !seen.insert(get_code.clone()) {
                continue;
            }
            let frozen_name = name.clone();
            let name = match aliases.iter().find(|(a, _)| *a == name) {
                Some((_, orig)) if accessor_symbol(orig) == get_code => orig.clone(),
                _ => name,
            };
            let code = match code_ptr {
                Ptr::Local(s, o) if size > 0 => {
                    let (bytes, file_off) = fr.slice(s, o, size as u64).ok_or_else(|| {
                        Error::file(&mpath, format!("module {name}: marshal bytes out of range"))
                    })?;
                    Some(Marshalled {
                        name: name.clone(),
                        accessor: get_code.clone(),
                        data: bytes.to_vec(),
                        origin: path.to_path_buf(),
                        offsets: OffsetMap::Base(start + file_off),
                    })
                }
                _ => None,
            };
            out.push(FrozenModule {
                name,
                frozen_name,
                accessor: get_code,
                is_package,
                code,
            });
        }
    }
    if out.is_empty() {
        return Err(Error::file(
            &mpath,
            "the frozen module tables list no deep-frozen module",
        ));
    }
    Ok(out)
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

    /// `_PyImport_FrozenAliases`: (alias, original) pairs.
    fn aliases(
        &self,
        obj: &object::File,
        fl: &crate::layout::FrozenLayout,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Some(sym) = obj.symbol_by_name(fl.aliases) else {
            return out;
        };
        let Some(sec) = sym.section_index() else {
            return out;
        };
        let Ptr::Local(tsec, mut at) = self.pointer(sec, sym.address()) else {
            return out;
        };
        let ptr = fl.name.size as u64;
        while let Ptr::Local(s, o) = self.pointer(tsec, at) {
            let orig = match self.pointer(tsec, at + ptr) {
                Ptr::Local(s2, o2) => self.c_string(s2, o2),
                _ => None,
            };
            if let (Some(a), Some(b)) = (self.c_string(s, o), orig) {
                out.push((a, b));
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
