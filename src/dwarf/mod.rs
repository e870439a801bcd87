//! Reading relocatable ELF objects with DWARF, as found in a static
//! libpython built with `-g`: archive members, symbol tables, the debug
//! sections with their relocations applied, a small model of the type DIEs
//! with queries by C type name and member path ([`Types`]), and the bytes
//! and relocations of initialized variables ([`ObjectData`]).
//!
//! Little-endian objects only (x86_64 and aarch64 relocation kinds). Errors
//! are one-line strings naming the member; callers add the archive's path.

mod types;

#[cfg(test)]
mod tests;

pub use types::{Array, Base, Bits, Member, TypeChain, Types};

use std::borrow::Cow;
use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget};

pub type Result<T> = std::result::Result<T, String>;

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// A static archive (`.a`) held in memory.
pub struct Archive {
    pub path: std::path::PathBuf,
    data: Vec<u8>,
}

impl Archive {
    pub fn open(path: &std::path::Path) -> Result<Archive> {
        let data = std::fs::read(path).map_err(err("cannot read"))?;
        Archive::from_bytes(path, data)
    }

    /// An archive already read (`path` is kept for the caller's messages,
    /// which name it; errors here do not).
    pub fn from_bytes(path: &std::path::Path, data: Vec<u8>) -> Result<Archive> {
        object::read::archive::ArchiveFile::parse(&*data).map_err(err("not an ar archive"))?;
        Ok(Archive {
            path: path.to_owned(),
            data,
        })
    }

    fn file(&self) -> Result<object::read::archive::ArchiveFile<'_>> {
        object::read::archive::ArchiveFile::parse(&*self.data).map_err(err("not an ar archive"))
    }

    /// The members' names, in archive order.
    pub fn member_names(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for m in self.file()?.members() {
            let m = m.map_err(err("archive member"))?;
            out.push(String::from_utf8_lossy(m.name()).into_owned());
        }
        Ok(out)
    }

    /// A copy of member `name` (e.g. `codeobject.o`), 8-byte aligned:
    /// members inside an archive are only 2-byte aligned, too little
    /// for the ELF parser.
    pub fn member(&self, name: &str) -> Result<Aligned> {
        for m in self.file()?.members() {
            let m = m.map_err(err("archive member"))?;
            if m.name() == name.as_bytes() {
                return Ok(Aligned::new(m.data(&*self.data).map_err(err(name))?));
            }
        }
        Err(format!("no member {name}"))
    }

    /// The archive symbol index: defined global symbol -> member name.
    pub fn symbol_index(&self) -> Result<HashMap<String, String>> {
        let file = self.file()?;
        let syms = file
            .symbols()
            .map_err(err("archive symbol index"))?
            .ok_or_else(|| "no symbol index (run ranlib)".to_string())?;
        let mut out = HashMap::new();
        for s in syms {
            let s = s.map_err(err("archive symbol"))?;
            let m = file
                .member(s.offset())
                .map_err(err("archive symbol member"))?;
            out.insert(
                String::from_utf8_lossy(s.name()).into_owned(),
                String::from_utf8_lossy(m.name()).into_owned(),
            );
        }
        Ok(out)
    }
}

pub struct Aligned {
    words: Vec<u64>,
    len: usize,
}

impl Aligned {
    pub fn new(b: &[u8]) -> Aligned {
        let mut words = vec![0u64; b.len().div_ceil(8)];
        for (w, chunk) in words.iter_mut().zip(b.chunks(8)) {
            let mut a = [0u8; 8];
            a[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_ne_bytes(a);
        }
        Aligned {
            words,
            len: b.len(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialized bytes, and
        // u8 has no alignment or validity requirements.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// One entry of an object's symbol table.
#[derive(Clone, Debug)]
pub struct Sym {
    pub name: String,
    pub undefined: bool,
    pub global: bool,
    pub size: u64,
    pub address: u64,
    pub section: Option<String>,
}

pub fn symbols(obj: &object::File) -> Vec<Sym> {
    obj.symbols()
        .filter_map(|s| {
            let name = s.name().ok()?.to_owned();
            if name.is_empty() {
                return None;
            }
            let section = s
                .section_index()
                .and_then(|i| obj.section_by_index(i).ok())
                .and_then(|sec| sec.name().ok().map(str::to_owned));
            Some(Sym {
                name,
                undefined: s.is_undefined(),
                global: s.is_global(),
                size: s.size(),
                address: s.address(),
                section,
            })
        })
        .collect()
}

/// Contents of section `name` with its relocations applied: every
/// relocation writes symbol value + addend (32 or 64 bits) at its offset.
/// Only the absolute relocation kinds that debug sections use (x86_64 and
/// aarch64) are accepted; anything else is an error rather than a silent
/// zero.
pub fn relocated_section(obj: &object::File, name: &str) -> Result<Vec<u8>> {
    let sec = obj
        .section_by_name(name)
        .ok_or_else(|| format!("no section {name}"))?;
    let mut data: Vec<u8> = match sec.uncompressed_data().map_err(err(name))? {
        Cow::Borrowed(b) => b.to_vec(),
        Cow::Owned(v) => v,
    };
    for (off, rel) in sec.relocations() {
        let sym_value = match rel.target() {
            RelocationTarget::Symbol(i) => obj
                .symbol_by_index(i)
                .map_err(err("relocation symbol"))?
                .address(),
            RelocationTarget::Absolute => 0,
            t => {
                return Err(format!(
                    "{name}+{off:#x}: unsupported relocation target {t:?}"
                ))
            }
        };
        let value = (sym_value as i64).wrapping_add(rel.addend()) as u64;
        let width = match rel.flags() {
            RelocationFlags::Elf {
                r_type: object::elf::R_X86_64_32 | object::elf::R_AARCH64_ABS32,
            } => 4,
            RelocationFlags::Elf {
                r_type: object::elf::R_X86_64_64 | object::elf::R_AARCH64_ABS64,
            } => 8,
            f => return Err(format!("{name}+{off:#x}: unsupported relocation {f:?}")),
        };
        let o = off as usize;
        let slot = data
            .get_mut(o..o + width)
            .ok_or_else(|| format!("{name}+{off:#x}: relocation out of bounds"))?;
        if width == 4 {
            let v = u32::try_from(value)
                .map_err(|_| format!("{name}+{off:#x}: value {value:#x} overflows 32 bits"))?;
            slot.copy_from_slice(&v.to_le_bytes());
        } else {
            slot.copy_from_slice(&value.to_le_bytes());
        }
    }
    Ok(data)
}

/// Relocations of a (data) section: offset -> (target symbol name, addend).
pub fn relocation_targets(
    obj: &object::File,
    section: &str,
) -> Result<HashMap<u64, (String, i64)>> {
    let sec = obj
        .section_by_name(section)
        .ok_or_else(|| format!("no section {section}"))?;
    let mut out = HashMap::new();
    for (off, rel) in sec.relocations() {
        if let RelocationTarget::Symbol(i) = rel.target() {
            let s = obj.symbol_by_index(i).map_err(err("relocation symbol"))?;
            let mut name = s.name().unwrap_or("").to_owned();
            if name.is_empty() {
                // A section symbol: name it after its section.
                if let Some(sec) = s.section_index().and_then(|i| obj.section_by_index(i).ok()) {
                    name = sec.name().unwrap_or("").to_owned();
                }
            }
            out.insert(off, (name, rel.addend()));
        }
    }
    Ok(out)
}

/// The code and data of one object: the contents and relocations of its
/// code and data sections, and its symbol table.
pub struct ObjectData {
    /// The member's name, for messages.
    pub name: String,
    pub architecture: object::Architecture,
    /// Contents of the code and data sections (`.text*`, `.data*`,
    /// `.rodata*`, ...; `.bss*` as zeros), by name.
    pub sections: HashMap<String, Vec<u8>>,
    /// Relocations of those sections: offset -> (target, addend); a
    /// section symbol is named after its section.
    pub relocs: HashMap<String, HashMap<u64, (String, i64)>>,
    /// Sorted offsets of those relocations, per section.
    pub reloc_offsets: HashMap<String, Vec<u64>>,
    pub syms: Vec<Sym>,
}

/// An initialized variable: its bytes and the relocations inside it.
pub struct Variable {
    pub bytes: Vec<u8>,
    /// Offset from the variable's start -> (target, addend).
    pub relocs: HashMap<u64, (String, i64)>,
}

impl Variable {
    /// The relocation target symbol at `off`, if any.
    pub fn reloc_at(&self, off: u64) -> Option<&str> {
        self.relocs.get(&off).map(|(s, _)| s.as_str())
    }
}

impl ObjectData {
    pub fn parse(name: &str, bytes: &[u8]) -> Result<ObjectData> {
        let obj = object::File::parse(bytes).map_err(err(name))?;
        let mut sections = HashMap::new();
        let mut relocs = HashMap::new();
        for sec in obj.sections() {
            let sname = sec.name().unwrap_or("").to_owned();
            use object::SectionKind as K;
            let zero = match sec.kind() {
                K::Text | K::Data | K::ReadOnlyData | K::ReadOnlyString => false,
                K::UninitializedData => true,
                _ => continue,
            };
            let data = if zero {
                vec![0; sec.size() as usize]
            } else {
                sec.data()
                    .map_err(err(&format!("{name} {sname}")))?
                    .to_vec()
            };
            let r = relocation_targets(&obj, &sname).map_err(|e| format!("{name}: {e}"))?;
            sections.insert(sname.clone(), data);
            relocs.insert(sname, r);
        }
        let reloc_offsets = relocs
            .iter()
            .map(|(name, r)| {
                let mut v: Vec<u64> = r.keys().copied().collect();
                v.sort_unstable();
                (name.clone(), v)
            })
            .collect();
        Ok(ObjectData {
            name: name.to_owned(),
            architecture: obj.architecture(),
            sections,
            relocs,
            reloc_offsets,
            syms: symbols(&obj),
        })
    }

    /// The symbol `name` as this object defines it.
    pub fn defined(&self, name: &str) -> Option<&Sym> {
        self.syms.iter().find(|s| s.name == name && !s.undefined)
    }

    /// Whether this object defines `name` globally.
    pub fn defines(&self, name: &str) -> bool {
        self.syms
            .iter()
            .any(|s| s.name == name && !s.undefined && s.global)
    }

    /// Whether this object refers to `name` without defining it.
    pub fn references(&self, name: &str) -> bool {
        self.syms.iter().any(|s| s.name == name && s.undefined)
    }

    /// The relocation at `sec`+`off`: (target, addend).
    pub fn reloc(&self, sec: &str, off: u64) -> Option<&(String, i64)> {
        self.relocs.get(sec)?.get(&off)
    }

    /// Where a relocation to `target`+`addend` points inside this object:
    /// (section, offset); `None` for a symbol defined elsewhere.
    pub fn place(&self, target: &str, addend: i64) -> Option<(String, u64)> {
        if self.sections.contains_key(target) {
            return Some((target.to_owned(), addend as u64));
        }
        let s = self.defined(target)?;
        Some((s.section.clone()?, (s.address as i64 + addend) as u64))
    }

    /// The NUL-terminated string at `sec`+`off`.
    pub fn c_string(&self, sec: &str, off: u64) -> Option<String> {
        let rest = self.sections.get(sec)?.get(off as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    /// The initializer of variable `name` defined here (zeros for `.bss`),
    /// with its relocations.
    pub fn variable(&self, name: &str) -> Result<Variable> {
        let s = self
            .defined(name)
            .ok_or_else(|| format!("{}: does not define {name}", self.name))?;
        let sec = s
            .section
            .as_deref()
            .ok_or_else(|| format!("{}: {name} is in no section", self.name))?;
        let data = self
            .sections
            .get(sec)
            .ok_or_else(|| format!("{}: {name} is in {sec}, not a data section", self.name))?;
        let bytes = data
            .get(s.address as usize..(s.address + s.size) as usize)
            .ok_or_else(|| format!("{}: {name} lies outside {sec}", self.name))?
            .to_vec();
        let relocs = self.relocs[sec]
            .iter()
            .filter(|(o, _)| (s.address..s.address + s.size).contains(o))
            .map(|(o, t)| (o - s.address, t.clone()))
            .collect();
        Ok(Variable { bytes, relocs })
    }
}
