//! Read a deep-frozen object file (ours or a C compiler's) and compare the
//! object graphs two of them hold, independent of placement and of symbol
//! and section names.
//!
//! Three layers, each replaceable on its own:
//!
//! * [`ObjFile`]: any relocatable object the `object` crate reads (ELF,
//!   Mach-O, COFF), reduced to sections, symbols and relocations resolved
//!   to a [`Target`] (a place in one of the file's own sections, or an
//!   external symbol plus addend). Format quirks (implicit addends, Mach-O's
//!   leading underscore) are handled here.
//! * [`returned_object`]: the one architecture-specific rule, how to find
//!   the object an accessor function returns from the relocations inside
//!   its bytes.
//! * [`PyModel`]: how big a Python object is and which of its pointer
//!   fields point to plain C strings rather than objects, per CPython
//!   version and pointer size ([`Py312x64`]).
//!
//! [`Comparer`] walks two graphs in lock step from a pair of roots and
//! reports the first difference with a path from the root.

use object::read::archive::ArchiveFile;
use object::{
    Architecture, BinaryFormat, Object, ObjectSection, ObjectSymbol, RelocationKind,
    RelocationTarget, SectionKind, SymbolKind, SymbolSection,
};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// A place inside one of a file's sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    /// Section index as the `object` crate numbers them.
    pub section: usize,
    /// Byte offset from the section's start.
    pub offset: u64,
}

impl Loc {
    pub fn add(self, delta: i64) -> Loc {
        Loc {
            section: self.section,
            offset: self.offset.wrapping_add(delta as u64),
        }
    }
}

/// What a relocated field refers to, before any PC bias is applied:
/// symbol value + addend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A place in this file.
    Local(Loc),
    /// An undefined symbol (name normalized, see [`ObjFile::parse`]) plus
    /// addend.
    Extern { name: String, addend: i64 },
}

/// One relocation, resolved.
#[derive(Clone, Debug)]
pub struct Reloc {
    pub target: Target,
    /// Width of the relocated field in bytes.
    pub size: u8,
    /// PC-relative (the field holds target minus some place in the code).
    pub pcrel: bool,
}

#[derive(Clone, Debug)]
pub struct Section<'d> {
    pub name: String,
    pub kind: SectionKind,
    pub address: u64,
    /// File bytes; empty for zero-fill sections.
    pub data: &'d [u8],
    pub size: u64,
}

#[derive(Clone, Debug)]
pub struct Sym {
    /// Normalized name (Mach-O's leading `_` removed).
    pub name: String,
    /// Where a defined symbol points; `None` when undefined.
    pub loc: Option<Loc>,
    pub size: u64,
    pub kind: SymbolKind,
    pub global: bool,
    pub undefined: bool,
}

/// A relocatable object reduced to what the graph comparison needs.
pub struct ObjFile<'d> {
    pub format: BinaryFormat,
    pub arch: Architecture,
    pub sections: BTreeMap<usize, Section<'d>>,
    /// Every relocation of every allocated section, by the place it patches.
    pub relocs: BTreeMap<Loc, Reloc>,
    pub symbols: Vec<Sym>,
}

/// Sections whose relocations matter (code and data, not debug info).
fn is_loaded(kind: SectionKind) -> bool {
    matches!(
        kind,
        SectionKind::Text
            | SectionKind::Data
            | SectionKind::ReadOnlyData
            | SectionKind::ReadOnlyDataWithRel
            | SectionKind::ReadOnlyString
            | SectionKind::UninitializedData
            | SectionKind::Common
    )
}

impl<'d> ObjFile<'d> {
    /// Read a relocatable object of any format the `object` crate knows.
    pub fn parse(bytes: &'d [u8]) -> Result<ObjFile<'d>, String> {
        let file = object::File::parse(bytes).map_err(|e| format!("not an object file: {e}"))?;
        let format = file.format();
        let normalize = |name: &str| -> String {
            match format {
                BinaryFormat::MachO => name.strip_prefix('_').unwrap_or(name).to_string(),
                _ => name.to_string(),
            }
        };
        let mut sections = BTreeMap::new();
        for s in file.sections() {
            let kind = s.kind();
            let data = if matches!(kind, SectionKind::UninitializedData | SectionKind::Common) {
                &[][..]
            } else {
                s.data().map_err(|e| format!("section data: {e}"))?
            };
            sections.insert(
                s.index().0,
                Section {
                    name: s.name().unwrap_or("?").to_string(),
                    kind,
                    address: s.address(),
                    data,
                    size: s.size(),
                },
            );
        }
        let sec_addr = |i: usize| sections.get(&i).map_or(0, |s: &Section| s.address);

        let mut symbols = Vec::new();
        let mut by_index = BTreeMap::new();
        for s in file.symbols() {
            let name = s.name().unwrap_or("");
            let loc = match s.section() {
                SymbolSection::Section(i) => Some(Loc {
                    section: i.0,
                    offset: s.address().wrapping_sub(sec_addr(i.0)),
                }),
                _ => None,
            };
            let sym = Sym {
                name: normalize(name),
                loc,
                size: s.size(),
                kind: s.kind(),
                global: s.is_global(),
                undefined: s.is_undefined(),
            };
            by_index.insert(s.index().0, sym.clone());
            if !name.is_empty() {
                symbols.push(sym);
            }
        }

        let mut relocs = BTreeMap::new();
        for s in file.sections() {
            if !is_loaded(s.kind()) {
                continue;
            }
            let sec = &sections[&s.index().0];
            for (offset, r) in s.relocations() {
                let size = r.size() / 8;
                let pcrel = matches!(
                    r.kind(),
                    RelocationKind::Relative | RelocationKind::PltRelative
                );
                let mut addend = r.addend();
                if r.has_implicit_addend() {
                    addend = addend.wrapping_add(read_signed(sec.data, offset, size)?);
                }
                let at = Loc {
                    section: s.index().0,
                    offset,
                };
                let target = match r.target() {
                    RelocationTarget::Symbol(i) => {
                        let sym = by_index
                            .get(&i.0)
                            .ok_or_else(|| format!("relocation at {at:?}: bad symbol {}", i.0))?;
                        match sym.loc {
                            Some(l) if !sym.undefined => Target::Local(l.add(addend)),
                            _ if sym.undefined => Target::Extern {
                                name: sym.name.clone(),
                                addend,
                            },
                            _ => {
                                return Err(format!(
                                    "relocation at {at:?} against absolute or common symbol {}",
                                    sym.name
                                ))
                            }
                        }
                    }
                    // The field (or addend) holds an address in the file's
                    // own address space (Mach-O non-external relocations).
                    // Unverified for PC-relative ones, where Mach-O stores a
                    // displacement instead: check this when a Mach-O test
                    // first needs an accessor's target through one.
                    RelocationTarget::Section(i) => Target::Local(Loc {
                        section: i.0,
                        offset: (addend as u64).wrapping_sub(sec_addr(i.0)),
                    }),
                    other => return Err(format!("relocation at {at:?}: target {other:?}")),
                };
                relocs.insert(
                    at,
                    Reloc {
                        target,
                        size,
                        pcrel,
                    },
                );
            }
        }
        Ok(ObjFile {
            format,
            arch: file.architecture(),
            sections,
            relocs,
            symbols,
        })
    }

    /// A target for messages.
    pub fn show(&self, t: &Target) -> String {
        match t {
            Target::Extern { name, addend: 0 } => name.clone(),
            Target::Extern { name, addend } => format!("{name}{addend:+}"),
            Target::Local(l) => {
                let sec = self
                    .sections
                    .get(&l.section)
                    .map_or("?", |s| s.name.as_str());
                format!("the object at {sec}+{:#x}", l.offset)
            }
        }
    }

    /// `len` bytes at `at`, or why not.
    pub fn bytes(&self, at: Loc, len: u64) -> Result<&'d [u8], String> {
        let s = self
            .sections
            .get(&at.section)
            .ok_or_else(|| format!("no section {}", at.section))?;
        let end = at
            .offset
            .checked_add(len)
            .filter(|&e| e <= s.data.len() as u64);
        match end {
            Some(end) => Ok(&s.data[at.offset as usize..end as usize]),
            None => Err(format!(
                "{} bytes at {}+{:#x} run past the section's {} bytes",
                len,
                s.name,
                at.offset,
                s.data.len()
            )),
        }
    }

    /// Everything from `at` to the end of its section.
    pub fn tail(&self, at: Loc) -> Result<&'d [u8], String> {
        let s = self
            .sections
            .get(&at.section)
            .ok_or_else(|| format!("no section {}", at.section))?;
        s.data
            .get(at.offset as usize..)
            .ok_or_else(|| format!("{}+{:#x} is outside the section", s.name, at.offset))
    }

    /// A NUL-terminated byte string at `at` (without the NUL).
    pub fn c_string(&self, at: Loc) -> Result<&'d [u8], String> {
        let t = self.tail(at)?;
        let n = t
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| format!("unterminated C string at {at:?}"))?;
        Ok(&t[..n])
    }

    /// Relocations patching `[at, at + len)`, with offsets relative to `at`.
    pub fn relocs_in(&self, at: Loc, len: u64) -> Vec<(u64, &Reloc)> {
        let end = Loc {
            section: at.section,
            offset: at.offset.saturating_add(len),
        };
        self.relocs
            .range(at..end)
            .map(|(l, r)| (l.offset - at.offset, r))
            .collect()
    }

    pub fn reloc_at(&self, at: Loc) -> Option<&Reloc> {
        self.relocs.get(&at)
    }

    pub fn symbol(&self, name: &str) -> Option<&Sym> {
        self.symbols
            .iter()
            .find(|s| s.name == name && s.loc.is_some())
    }

    /// Names of the undefined symbols the file references.
    pub fn undefined(&self) -> BTreeSet<String> {
        self.symbols
            .iter()
            .filter(|s| s.undefined)
            .map(|s| s.name.clone())
            .collect()
    }

    /// Defined global functions called `_Py_get_<mangled>_toplevel`.
    pub fn accessors(&self) -> BTreeMap<String, &Sym> {
        self.symbols
            .iter()
            .filter(|s| {
                s.loc.is_some()
                    && s.global
                    && s.kind == SymbolKind::Text
                    && s.name.starts_with("_Py_get_")
                    && s.name.ends_with("_toplevel")
            })
            .map(|s| (s.name.clone(), s))
            .collect()
    }

    /// Start and length of a defined function: its symbol size, or up to
    /// the next symbol in its section (formats without sizes).
    pub fn function_extent(&self, sym: &Sym) -> Result<(Loc, u64), String> {
        let at = sym
            .loc
            .ok_or_else(|| format!("{} is undefined", sym.name))?;
        if sym.size > 0 {
            return Ok((at, sym.size));
        }
        let sec_len = self.sections.get(&at.section).map_or(0, |s| s.size);
        let next = self
            .symbols
            .iter()
            .filter_map(|s| s.loc)
            .filter(|l| l.section == at.section && l.offset > at.offset)
            .map(|l| l.offset)
            .min()
            .unwrap_or(sec_len);
        Ok((at, next - at.offset))
    }

    /// The object the accessor function `name` returns.
    pub fn accessor_object(&self, name: &str) -> Result<Loc, String> {
        let sym = self
            .accessors()
            .get(name)
            .copied()
            .ok_or_else(|| format!("no accessor {name}"))?;
        let (at, len) = self.function_extent(sym)?;
        let relocs = self.relocs_in(at, len);
        returned_object(self.arch, &relocs).map_err(|e| format!("{name}: {e}"))
    }

    /// Value of a defined 32-bit little-endian data symbol (0 when it
    /// lives in a zero-fill section).
    pub fn read_u32_symbol(&self, name: &str) -> Result<u32, String> {
        let sym = self
            .symbol(name)
            .ok_or_else(|| format!("no symbol {name}"))?;
        let at = sym.loc.unwrap();
        let s = &self.sections[&at.section];
        if s.data.is_empty() {
            return Ok(0);
        }
        let b = self.bytes(at, 4)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap()))
    }
}

fn read_signed(data: &[u8], offset: u64, size: u8) -> Result<i64, String> {
    let at = offset as usize;
    let b = data
        .get(at..at + size as usize)
        .ok_or_else(|| format!("implicit addend at {offset:#x} outside its section"))?;
    Ok(match size {
        1 => b[0] as i8 as i64,
        2 => i16::from_le_bytes(b.try_into().unwrap()) as i64,
        4 => i32::from_le_bytes(b.try_into().unwrap()) as i64,
        8 => i64::from_le_bytes(b.try_into().unwrap()),
        _ => return Err(format!("implicit addend of {size} bytes")),
    })
}

/// Extract one member of a Unix `ar` archive.
pub fn archive_member<'d>(archive: &'d [u8], member: &str) -> Result<&'d [u8], String> {
    let ar = ArchiveFile::parse(archive).map_err(|e| format!("not an archive: {e}"))?;
    for m in ar.members() {
        let m = m.map_err(|e| format!("archive member: {e}"))?;
        if m.name() == member.as_bytes() {
            return m
                .data(archive)
                .map_err(|e| format!("archive member {member}: {e}"));
        }
    }
    Err(format!("the archive has no member {member}"))
}

// ---------------------------------------------------------------------------
// The architecture-specific rule
// ---------------------------------------------------------------------------

/// Where the object an accessor returns lives, given the relocations inside
/// the accessor's bytes (offsets relative to the function's start, in
/// order). One arm per architecture; the rest of this module is generic.
pub fn returned_object(arch: Architecture, relocs: &[(u64, &Reloc)]) -> Result<Loc, String> {
    match arch {
        Architecture::X86_64 => {
            // Both compilers end with `lea obj(%rip), %rax; ret` (gcc's
            // incref before it addresses the same object). The last
            // RIP-relative field ends its instruction, so the CPU adds the
            // displacement to the field's address + 4: S + A + 4.
            let (_, r) = relocs
                .last()
                .ok_or("no relocation inside the accessor".to_string())?;
            if !(r.pcrel && r.size == 4) {
                return Err(format!("last relocation is not RIP-relative 32-bit: {r:?}"));
            }
            match &r.target {
                Target::Local(l) => Ok(l.add(4)),
                t => Err(format!("accessor returns an external object: {t:?}")),
            }
        }
        other => Err(format!(
            "no rule yet for finding an accessor's object on {other:?}"
        )),
    }
}

// ---------------------------------------------------------------------------
// Python object model
// ---------------------------------------------------------------------------

/// How the Python objects of one CPython version and pointer size look.
pub trait PyModel {
    /// Pointer size in bytes.
    fn ptr_size(&self) -> u64;
    /// Size of the object's struct (no trailing padding), from its type
    /// and the bytes from its start to the end of its section.
    fn object_size(&self, ty: &str, obj: &[u8]) -> Result<u64, String>;
    /// Offsets of pointer fields that point to NUL-terminated C strings
    /// rather than to objects.
    fn c_string_fields(&self, ty: &str, obj: &[u8]) -> Vec<u64>;
    /// A name for the field holding byte `off` (for messages and paths).
    fn field_name(&self, ty: &str, off: u64) -> String;
    /// Whether an external symbol name is one of the type objects.
    fn is_type(&self, name: &str) -> bool;
}

fn le(b: &[u8], off: usize, n: usize) -> Result<u64, String> {
    let s = b
        .get(off..off + n)
        .ok_or_else(|| format!("object header cut short at byte {off}"))?;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(s);
    Ok(u64::from_le_bytes(v))
}

/// CPython 3.12 on a 64-bit little-endian target (pyenv 3.12.1's DWARF).
pub struct Py312x64;

impl Py312x64 {
    const CODE_FIELDS: &'static [(u64, u64, &'static str)] = &[
        (0, 8, "ob_refcnt"),
        (8, 8, "ob_type"),
        (16, 8, "ob_size"),
        (24, 8, "co_consts"),
        (32, 8, "co_names"),
        (40, 8, "co_exceptiontable"),
        (48, 4, "co_flags"),
        (52, 4, "co_argcount"),
        (56, 4, "co_posonlyargcount"),
        (60, 4, "co_kwonlyargcount"),
        (64, 4, "co_stacksize"),
        (68, 4, "co_firstlineno"),
        (72, 4, "co_nlocalsplus"),
        (76, 4, "co_framesize"),
        (80, 4, "co_nlocals"),
        (84, 4, "co_ncellvars"),
        (88, 4, "co_nfreevars"),
        (92, 4, "co_version"),
        (96, 8, "co_localsplusnames"),
        (104, 8, "co_localspluskinds"),
        (112, 8, "co_filename"),
        (120, 8, "co_name"),
        (128, 8, "co_qualname"),
        (136, 8, "co_linetable"),
        (144, 8, "co_weakreflist"),
        (152, 8, "_co_cached"),
        (160, 8, "_co_instrumentation_version"),
        (168, 8, "_co_monitoring"),
        (176, 4, "_co_firsttraceable"),
        (184, 8, "co_extra"),
    ];
    const HEAD: &'static [(u64, u64, &'static str)] =
        &[(0, 8, "ob_refcnt"), (8, 8, "ob_type"), (16, 8, "ob_size")];
    const STR_FIELDS: &'static [(u64, u64, &'static str)] = &[
        (0, 8, "ob_refcnt"),
        (8, 8, "ob_type"),
        (16, 8, "length"),
        (24, 8, "hash"),
        (32, 4, "state"),
    ];
    const COMPACT_FIELDS: &'static [(u64, u64, &'static str)] =
        &[(40, 8, "utf8_length"), (48, 8, "utf8")];

    /// (kind, ascii) of a str.
    fn str_kind(obj: &[u8]) -> Result<(u64, bool), String> {
        let state = le(obj, 32, 4)?;
        Ok(((state >> 2) & 7, (state >> 6) & 1 == 1))
    }
}

fn named(fields: &[(u64, u64, &str)], off: u64) -> Option<String> {
    fields.iter().find_map(|&(o, n, name)| {
        (o..o + n).contains(&off).then(|| {
            if off == o {
                name.to_string()
            } else {
                format!("{name}+{}", off - o)
            }
        })
    })
}

impl PyModel for Py312x64 {
    fn ptr_size(&self) -> u64 {
        8
    }

    fn object_size(&self, ty: &str, obj: &[u8]) -> Result<u64, String> {
        Ok(match ty {
            "PyCode_Type" => 192 + 2 * le(obj, 16, 8)?,
            "PyTuple_Type" => 24 + 8 * le(obj, 16, 8)?,
            "PyBytes_Type" => 32 + le(obj, 16, 8)? + 1,
            "PyUnicode_Type" => {
                let (kind, ascii) = Self::str_kind(obj)?;
                if !matches!(kind, 1 | 2 | 4) {
                    return Err(format!("str kind {kind}"));
                }
                let len = le(obj, 16, 8)?;
                (if ascii { 40 } else { 56 }) + (len + 1) * kind
            }
            "PyLong_Type" => 24 + 4 * (le(obj, 16, 8)? >> 3).max(1),
            "PyFloat_Type" => 24,
            "PyComplex_Type" => 32,
            _ => return Err(format!("unknown type {ty}")),
        })
    }

    fn c_string_fields(&self, ty: &str, obj: &[u8]) -> Vec<u64> {
        match (ty, Self::str_kind(obj)) {
            ("PyUnicode_Type", Ok((_, false))) => vec![48],
            _ => vec![],
        }
    }

    fn field_name(&self, ty: &str, off: u64) -> String {
        let name = match ty {
            "PyCode_Type" => named(Self::CODE_FIELDS, off)
                .or_else(|| Some(format!("co_code_adaptive[{}]", off.checked_sub(192)?))),
            "PyTuple_Type" => named(Self::HEAD, off).or_else(|| {
                let i = off.checked_sub(24)?;
                Some(if i % 8 == 0 {
                    format!("[{}]", i / 8)
                } else {
                    format!("[{}]+{}", i / 8, i % 8)
                })
            }),
            "PyBytes_Type" => named(Self::HEAD, off).or_else(|| match off {
                24..=31 => named(&[(24, 8, "ob_shash")], off),
                _ => Some(format!("ob_sval[{}]", off - 32)),
            }),
            "PyUnicode_Type" => named(Self::STR_FIELDS, off)
                .or_else(|| named(Self::COMPACT_FIELDS, off).filter(|_| off < 56))
                .or_else(|| Some(format!("data+{}", off.saturating_sub(40)))),
            "PyLong_Type" => named(
                &[(0, 8, "ob_refcnt"), (8, 8, "ob_type"), (16, 8, "lv_tag")],
                off,
            )
            .or_else(|| Some(format!("ob_digit[{}]", (off - 24) / 4))),
            "PyFloat_Type" => named(
                &[(0, 8, "ob_refcnt"), (8, 8, "ob_type"), (16, 8, "ob_fval")],
                off,
            ),
            "PyComplex_Type" => named(
                &[
                    (0, 8, "ob_refcnt"),
                    (8, 8, "ob_type"),
                    (16, 8, "cval.real"),
                    (24, 8, "cval.imag"),
                ],
                off,
            ),
            _ => None,
        };
        name.unwrap_or_else(|| format!("+{off}"))
    }

    fn is_type(&self, name: &str) -> bool {
        matches!(
            name,
            "PyCode_Type"
                | "PyTuple_Type"
                | "PyBytes_Type"
                | "PyUnicode_Type"
                | "PyLong_Type"
                | "PyFloat_Type"
                | "PyComplex_Type"
        )
    }
}

// ---------------------------------------------------------------------------
// Comparing
// ---------------------------------------------------------------------------

/// A difference between the two sides that is there by design: in objects
/// of type `ty` reached through field `via`, at byte offsets `bytes`, and
/// only of the kind `accept` allows.
pub struct KnownDifference {
    /// Type of the object holding the field.
    pub ty: &'static str,
    /// Name of the field through which the object was reached (the last
    /// pointer step, e.g. `co_localspluskinds`), or `None` for any.
    pub via: Option<&'static str>,
    /// Byte offsets inside the object, `start..end` (for a pointer: the
    /// offset of the field).
    pub bytes: std::ops::Range<u64>,
    pub accept: Accept,
    pub reason: &'static str,
}

/// Which differences a [`KnownDifference`] allows.
pub enum Accept {
    /// Raw (unrelocated) bytes: `f(ours, theirs)` for each differing byte.
    Byte(fn(u8, u8) -> bool),
    /// A pointer field whose targets differ: `f(ours, theirs)`. An accepted
    /// pair of targets is not followed further.
    Pointer(fn(&Target, &Target) -> bool),
}

/// The first difference found, with the path from the root to it.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub path: String,
    pub what: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.what)
    }
}

/// Why one pair of objects differs: the field (for pointer fields, as a
/// last path step) and what differs.
struct Fail {
    field: Option<String>,
    what: String,
}

impl From<String> for Fail {
    fn from(what: String) -> Fail {
        Fail { field: None, what }
    }
}

/// Counters for what a comparison covered.
#[derive(Default, Debug)]
pub struct Stats {
    /// Object pairs compared, by type.
    pub objects: BTreeMap<String, usize>,
    pub pointers: usize,
    pub externs: usize,
    pub c_strings: usize,
    pub raw_bytes: usize,
    /// How often each known difference was needed, by table index.
    pub known_used: BTreeMap<usize, usize>,
}

/// Walks two object graphs in lock step. Pairs already compared (from any
/// root) are not compared again, so sharing differences do not matter.
pub struct Comparer<'a, 'd> {
    a: &'a ObjFile<'d>,
    b: &'a ObjFile<'d>,
    model: &'a dyn PyModel,
    known: &'a [KnownDifference],
    labels: (&'a str, &'a str),
    visited: HashSet<(Loc, Loc)>,
    /// Objects reached on each side.
    pub reached_a: HashSet<Loc>,
    pub reached_b: HashSet<Loc>,
    pub stats: Stats,
}

/// A path as an arena of steps: (parent, step).
struct Paths(Vec<(Option<usize>, String)>);

impl Paths {
    fn push(&mut self, parent: Option<usize>, step: String) -> usize {
        self.0.push((parent, step));
        self.0.len() - 1
    }
    /// The path to node `at`, plus a last step if given.
    fn render_with(&self, mut at: usize, last: Option<&str>) -> String {
        let mut steps: Vec<&str> = last.into_iter().collect();
        loop {
            let (parent, step) = &self.0[at];
            steps.push(step.as_str());
            match parent {
                Some(p) => at = *p,
                None => break,
            }
        }
        let mut out = String::new();
        for s in steps.iter().rev() {
            if !out.is_empty() && !s.starts_with('[') {
                out.push_str(" -> ");
            }
            out.push_str(s);
        }
        out
    }
}

impl<'a, 'd> Comparer<'a, 'd> {
    /// Compare `a` (reported as "ours") with `b` ("theirs").
    pub fn new(
        a: &'a ObjFile<'d>,
        b: &'a ObjFile<'d>,
        model: &'a dyn PyModel,
        known: &'a [KnownDifference],
    ) -> Self {
        Comparer {
            a,
            b,
            model,
            known,
            labels: ("ours", "theirs"),
            visited: HashSet::new(),
            reached_a: HashSet::new(),
            reached_b: HashSet::new(),
            stats: Stats::default(),
        }
    }

    pub fn labels(mut self, a: &'a str, b: &'a str) -> Self {
        self.labels = (a, b);
        self
    }

    /// Compare the graphs reachable from `ra` in `a` and `rb` in `b`;
    /// `root` names the pair in paths (e.g. `os toplevel`).
    pub fn compare(&mut self, root: &str, ra: Loc, rb: Loc) -> Result<(), Mismatch> {
        let mut paths = Paths(Vec::new());
        let top = paths.push(None, root.to_string());
        // (ours, theirs, path node, field we came through)
        let mut stack: Vec<(Loc, Loc, usize, Option<String>)> = vec![(ra, rb, top, None)];
        while let Some((la, lb, node, via)) = stack.pop() {
            if !self.visited.insert((la, lb)) {
                continue;
            }
            let children = self
                .compare_one(la, lb, via.as_deref())
                .map_err(|f| Mismatch {
                    path: paths.render_with(node, f.field.as_deref()),
                    what: f.what,
                })?;
            // Push in reverse so the walk visits fields in order and the
            // first mismatch reported is the first in depth-first order.
            for (step, ca, cb) in children.into_iter().rev() {
                let via = (!step.starts_with('[')).then(|| step.clone());
                let n = paths.push(Some(node), step);
                stack.push((ca, cb, n, via));
            }
        }
        Ok(())
    }

    /// Compare one pair of objects; return the pointer pairs to follow.
    fn compare_one(
        &mut self,
        la: Loc,
        lb: Loc,
        via: Option<&str>,
    ) -> Result<Vec<(String, Loc, Loc)>, Fail> {
        let (na, nb) = self.labels;
        let ptr = self.model.ptr_size();
        let ty_of = |f: &ObjFile, l: Loc, label: &str| -> Result<String, String> {
            match f.reloc_at(l.add(ptr as i64)).map(|r| &r.target) {
                Some(Target::Extern { name, addend: 0 }) if self.model.is_type(name) => {
                    Ok(name.clone())
                }
                other => Err(format!(
                    "{label}: no type pointer at byte {ptr} of the object (found {other:?})"
                )),
            }
        };
        let ta = ty_of(self.a, la, na)?;
        let tb = ty_of(self.b, lb, nb)?;
        if ta != tb {
            return Err(format!("type differs: {na} {ta}, {nb} {tb}").into());
        }
        let ty = ta;
        self.reached_a.insert(la);
        self.reached_b.insert(lb);
        *self.stats.objects.entry(ty.clone()).or_default() += 1;

        let head_a = self.a.tail(la).map_err(|e| format!("{na}: {e}"))?;
        let head_b = self.b.tail(lb).map_err(|e| format!("{nb}: {e}"))?;
        let size_a = self
            .model
            .object_size(&ty, head_a)
            .map_err(|e| format!("{na}: {e}"))?;
        let size_b = self
            .model
            .object_size(&ty, head_b)
            .map_err(|e| format!("{nb}: {e}"))?;
        let size = size_a.min(size_b);
        let da = self.a.bytes(la, size_a).map_err(|e| format!("{na}: {e}"))?;
        let db = self.b.bytes(lb, size_b).map_err(|e| format!("{nb}: {e}"))?;
        let ra = self.a.relocs_in(la, size);
        let rb = self.b.relocs_in(lb, size);
        let c_strings = self.model.c_string_fields(&ty, head_a);

        let mut children = Vec::new();
        let (mut i, mut ia, mut ib) = (0u64, 0usize, 0usize);
        while i < size {
            let pa = ra.get(ia).map(|r| r.0);
            let pb = rb.get(ib).map(|r| r.0);
            if pa == Some(i) || pb == Some(i) {
                let field = self.model.field_name(&ty, i);
                let fail = |what: String| Fail {
                    field: Some(field.clone()),
                    what: format!("{what} (byte {i} of the {ty})"),
                };
                let (Some(a), Some(b)) = (
                    ra.get(ia).filter(|r| r.0 == i),
                    rb.get(ib).filter(|r| r.0 == i),
                ) else {
                    let who = if pa == Some(i) { na } else { nb };
                    return Err(fail(format!("only {who} has a pointer here")));
                };
                let (a, b) = (a.1, b.1);
                if a.size != b.size || a.pcrel != b.pcrel {
                    return Err(fail(format!("relocation differs: {na} {a:?}, {nb} {b:?}")));
                }
                if a.target != b.target {
                    if let Some(k) = self.known_pointer(&ty, via, i, &a.target, &b.target) {
                        *self.stats.known_used.entry(k).or_default() += 1;
                        i += a.size as u64;
                        ia += 1;
                        ib += 1;
                        continue;
                    }
                }
                let differ = || {
                    fail(format!(
                        "points to {} in {na}, {} in {nb}",
                        self.a.show(&a.target),
                        self.b.show(&b.target)
                    ))
                };
                match (&a.target, &b.target) {
                    (Target::Extern { .. }, Target::Extern { .. }) => {
                        if a.target != b.target {
                            return Err(differ());
                        }
                        self.stats.externs += 1;
                    }
                    (Target::Local(x), Target::Local(y)) if c_strings.contains(&i) => {
                        let sa = self
                            .a
                            .c_string(*x)
                            .map_err(|e| fail(format!("{na}: {e}")))?;
                        let sb = self
                            .b
                            .c_string(*y)
                            .map_err(|e| fail(format!("{nb}: {e}")))?;
                        if sa != sb {
                            return Err(fail(format!(
                                "C string differs: {na} {:?}, {nb} {:?}",
                                String::from_utf8_lossy(sa),
                                String::from_utf8_lossy(sb)
                            )));
                        }
                        self.stats.c_strings += 1;
                    }
                    (Target::Local(x), Target::Local(y)) => {
                        children.push((field, *x, *y));
                        self.stats.pointers += 1;
                    }
                    _ => return Err(differ()),
                }
                i += a.size as u64;
                ia += 1;
                ib += 1;
                continue;
            }
            let next = pa.unwrap_or(size).min(pb.unwrap_or(size)).min(size);
            for j in i..next {
                let (x, y) = (da[j as usize], db[j as usize]);
                if x != y {
                    match self.known_match(&ty, via, j, x, y) {
                        Some(k) => *self.stats.known_used.entry(k).or_default() += 1,
                        None => {
                            return Err(format!(
                                "byte {j} ({}.{}) differs: {na} {x:02x} {nb} {y:02x}",
                                ty,
                                self.model.field_name(&ty, j)
                            )
                            .into())
                        }
                    }
                }
            }
            self.stats.raw_bytes += (next - i) as usize;
            i = next;
        }
        if size_a != size_b {
            return Err(format!("object size differs: {na} {size_a}, {nb} {size_b}").into());
        }
        Ok(children)
    }

    fn known_match(&self, ty: &str, via: Option<&str>, off: u64, x: u8, y: u8) -> Option<usize> {
        self.known.iter().position(|k| {
            k.ty == ty
                && k.via.is_none_or(|v| Some(v) == via)
                && k.bytes.contains(&off)
                && matches!(k.accept, Accept::Byte(f) if f(x, y))
        })
    }

    fn known_pointer(
        &self,
        ty: &str,
        via: Option<&str>,
        off: u64,
        x: &Target,
        y: &Target,
    ) -> Option<usize> {
        self.known.iter().position(|k| {
            k.ty == ty
                && k.via.is_none_or(|v| Some(v) == via)
                && k.bytes.contains(&off)
                && matches!(k.accept, Accept::Pointer(f) if f(x, y))
        })
    }
}

/// Every object in `f`: the places whose pointer-sized field after the
/// refcount is a type pointer the model knows (the `ob_type` field).
pub fn all_objects(f: &ObjFile, model: &dyn PyModel) -> HashSet<Loc> {
    let ptr = model.ptr_size() as i64;
    f.relocs
        .iter()
        .filter(
            |(_, r)| matches!(&r.target, Target::Extern { name, addend: 0 } if model.is_type(name)),
        )
        .map(|(l, _)| l.add(-ptr))
        .collect()
}

/// Every object reachable from `roots` in `f` (following pointers to local
/// objects, not the C-string fields).
pub fn reachable_objects(
    f: &ObjFile,
    model: &dyn PyModel,
    roots: &[Loc],
) -> Result<HashSet<Loc>, String> {
    let mut seen = HashSet::new();
    let mut stack = roots.to_vec();
    while let Some(at) = stack.pop() {
        if !seen.insert(at) {
            continue;
        }
        let ty = match f
            .reloc_at(at.add(model.ptr_size() as i64))
            .map(|r| &r.target)
        {
            Some(Target::Extern { name, addend: 0 }) if model.is_type(name) => name.clone(),
            other => {
                return Err(format!(
                    "no type pointer at {}: {other:?}",
                    f.show(&Target::Local(at))
                ))
            }
        };
        let head = f.tail(at)?;
        let size = model.object_size(&ty, head)?;
        let c_strings = model.c_string_fields(&ty, head);
        for (off, r) in f.relocs_in(at, size) {
            if let Target::Local(l) = r.target {
                if !c_strings.contains(&off) {
                    stack.push(l);
                }
            }
        }
    }
    Ok(seen)
}
