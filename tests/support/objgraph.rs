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
//! * [`accessor_code`]: the one architecture-specific rule, how to find
//!   the object an accessor function returns (and what else it touches,
//!   e.g. the reference count it increments) from its instructions and
//!   the relocations inside them.
//! * [`Model`]: how big a Python object is, what its fields are called and
//!   which of its pointer fields point to raw data rather than objects, per
//!   CPython version ([`model`]), from the library's layout tables.
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
                if let Some(embedded) = aarch64_insn_addend(file.architecture(), r.flags()) {
                    // The field is an instruction, not an integer.
                    addend = addend.wrapping_add(embedded(sec.data, offset)?);
                } else if r.has_implicit_addend() {
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

    /// What the accessor function `name` does with its relocated
    /// operands (see [`accessor_code`]).
    pub fn accessor_code(&self, name: &str) -> Result<AccessorCode, String> {
        let sym = self
            .accessors()
            .get(name)
            .copied()
            .ok_or_else(|| format!("no accessor {name}"))?;
        let (at, len) = self.function_extent(sym)?;
        let code = self.bytes(at, len)?;
        let relocs = self.relocs_in(at, len);
        accessor_code(self.arch, code, &relocs).map_err(|e| format!("{name}: {e}"))
    }

    /// The object the accessor function `name` returns.
    pub fn accessor_object(&self, name: &str) -> Result<Loc, String> {
        self.accessor_code(name)?.returned.ok_or_else(|| {
            format!("{name}: no instruction loads an object's address into the return register")
        })
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

/// File offset of `loc` in the object file `bytes`.
pub fn file_offset(bytes: &[u8], loc: Loc) -> usize {
    let file = object::File::parse(bytes).unwrap();
    let s = file
        .section_by_index(object::SectionIndex(loc.section))
        .unwrap();
    s.file_range().unwrap().0 as usize + loc.offset as usize
}

impl ObjFile<'_> {
    /// The object a pointer field of the object at `at` points to.
    pub fn follow(&self, at: Loc, field: u64) -> Loc {
        match &self.reloc_at(at.add(field as i64)).unwrap().target {
            Target::Local(l) => *l,
            t => panic!("field {field} points to {t:?}"),
        }
    }
}

fn read_signed(data: &[u8], offset: u64, size: u8) -> Result<i64, String> {
    if ![1, 2, 4, 8].contains(&size) {
        return Err(format!("implicit addend of {size} bytes"));
    }
    let v = le(data, offset as usize, size as usize)
        .map_err(|_| format!("implicit addend at {offset:#x} outside its section"))?;
    Ok((v << (64 - 8 * size as u32)) as i64 >> (64 - 8 * size as u32))
}

/// How to read the addend of an AArch64 instruction relocation in a
/// format with implicit addends, where the relocated field is an
/// instruction rather than an integer; `None` for every other relocation.
///
/// * Mach-O (`ARM64_RELOC_PAGE21`, `PAGEOFF12`, `BRANCH26`, and the GOT
///   and TLV forms): nothing is embedded in the instruction; an addend
///   comes only from a preceding `ARM64_RELOC_ADDEND`, which the `object`
///   crate already reports as the (explicit) addend.
/// * COFF (`IMAGE_REL_ARM64_PAGEBASE_REL21`, `PAGEOFFSET_12A`,
///   `PAGEOFFSET_12L`, `BRANCH26`, `BRANCH19`, `BRANCH14`): the
///   instruction's immediate is the addend, as lld-link applies it:
///   ADRP's 21-bit immediate in bytes (unsigned), ADD's 12 bits, LDR/STR's
///   12 bits scaled by the access size, branches' immediates in
///   instructions.
type InsnAddend = fn(&[u8], u64) -> Result<i64, String>;

fn aarch64_insn_addend(arch: Architecture, flags: object::RelocationFlags) -> Option<InsnAddend> {
    use object::{macho, pe, RelocationFlags};
    if arch != Architecture::Aarch64 {
        return None;
    }
    fn insn(data: &[u8], offset: u64) -> Result<u32, String> {
        let at = offset as usize;
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| format!("instruction at {offset:#x} outside its section"))
    }
    fn sext(v: u32, bits: u32) -> i64 {
        ((v << (32 - bits)) as i32 >> (32 - bits)) as i64
    }
    match flags {
        RelocationFlags::MachO {
            r_type:
                macho::ARM64_RELOC_BRANCH26
                | macho::ARM64_RELOC_PAGE21
                | macho::ARM64_RELOC_PAGEOFF12
                | macho::ARM64_RELOC_GOT_LOAD_PAGE21
                | macho::ARM64_RELOC_GOT_LOAD_PAGEOFF12
                | macho::ARM64_RELOC_TLVP_LOAD_PAGE21
                | macho::ARM64_RELOC_TLVP_LOAD_PAGEOFF12,
            ..
        } => Some(|_, _| Ok(0)),
        RelocationFlags::Coff { typ } => match typ {
            pe::IMAGE_REL_ARM64_PAGEBASE_REL21 => Some(|d, o| {
                let w = insn(d, o)?;
                // Unsigned, as lld-link reads it.
                Ok((((w >> 5) & 0x7_ffff) << 2 | (w >> 29) & 3) as i64)
            }),
            pe::IMAGE_REL_ARM64_PAGEOFFSET_12A => {
                Some(|d, o| Ok(((insn(d, o)? >> 10) & 0xfff) as i64))
            }
            pe::IMAGE_REL_ARM64_PAGEOFFSET_12L => Some(|d, o| {
                let w = insn(d, o)?;
                // Vector (bit 26) 128-bit accesses scale by 16.
                let scale = if w & 0x0480_0000 == 0x0480_0000 {
                    4
                } else {
                    w >> 30
                };
                Ok((((w >> 10) & 0xfff) << scale) as i64)
            }),
            pe::IMAGE_REL_ARM64_BRANCH26 => Some(|d, o| Ok(4 * sext(insn(d, o)? & 0x3ff_ffff, 26))),
            pe::IMAGE_REL_ARM64_BRANCH19 => {
                Some(|d, o| Ok(4 * sext((insn(d, o)? >> 5) & 0x7_ffff, 19)))
            }
            pe::IMAGE_REL_ARM64_BRANCH14 => {
                Some(|d, o| Ok(4 * sext((insn(d, o)? >> 5) & 0x3fff, 14)))
            }
            _ => None,
        },
        _ => None,
    }
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

/// What an accessor function does with the places its relocations name,
/// as effective addresses (the PC bias of each instruction applied).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AccessorCode {
    /// The address the function leaves in its return register (the last
    /// instruction that loads an address there).
    pub returned: Option<Loc>,
    /// Places incremented by one as 64-bit integers (`addq $1` / `incq`):
    /// reference counts.
    pub increments: Vec<Loc>,
    /// Every other relocated operand (loads, stores, immediates), in order.
    pub other: Vec<Target>,
}

/// Decode an accessor's relocated instructions: `code` is the function's
/// bytes, `relocs` the relocations inside them (offsets relative to the
/// function's start, in order). One arm per architecture; the rest of this
/// module is generic.
pub fn accessor_code(
    arch: Architecture,
    code: &[u8],
    relocs: &[(u64, &Reloc)],
) -> Result<AccessorCode, String> {
    match arch {
        Architecture::X86_64 => x86_64_accessor(code, relocs),
        Architecture::Aarch64 => aarch64_accessor(code, relocs),
        other => Err(format!("no rule yet for decoding an accessor on {other:?}")),
    }
}

/// x86-64, the instruction forms gcc and we use in accessors:
///
/// * address into `%rax`: `lea disp(%rip), %rax` (PIC), `mov $imm32, %eax`
///   or `mov $imm32, %rax` (non-PIC, absolute 32-bit), `movabs $imm64, %rax`;
/// * increment: `addq $1, mem` or `incq mem`, with `mem` RIP-relative or
///   absolute (`disp32` through a SIB byte with no base and no index);
/// * anything else relocated is reported as [`AccessorCode::other`].
///
/// A RIP-relative field holds target - (end of instruction), and the
/// instruction ends after the 4-byte field plus any immediate: the
/// effective address is S + A + 4 + immediate size.
fn x86_64_accessor(code: &[u8], relocs: &[(u64, &Reloc)]) -> Result<AccessorCode, String> {
    let byte = |i: u64, back: u64| -> Option<u8> {
        i.checked_sub(back)
            .and_then(|j| code.get(j as usize).copied())
    };
    let mut out = AccessorCode::default();
    for &(o, r) in relocs {
        let local = |bias: i64| match &r.target {
            Target::Local(l) => Ok(l.add(bias)),
            t => Err(t.clone()),
        };
        // (opcode, ModRM, REX.W present, offset of the byte after the field)
        let (op, modrm, rex_w) = if r.pcrel {
            match (byte(o, 1), byte(o, 2)) {
                (Some(m), Some(op)) if m & 0xc7 == 0x05 => {
                    (op, m, byte(o, 3).is_some_and(|b| b & 0xf8 == 0x48))
                }
                _ => {
                    out.other.push(r.target.clone());
                    continue;
                }
            }
        } else {
            // Absolute through SIB: op, ModRM (mod 00, rm 100), SIB 0x25.
            match (byte(o, 1), byte(o, 2), byte(o, 3)) {
                (Some(0x25), Some(m), Some(op)) if m & 0xc7 == 0x04 && r.size == 4 => {
                    (op, m, byte(o, 4).is_some_and(|b| b & 0xf8 == 0x48))
                }
                _ => {
                    // Immediate address loads into the return register.
                    let into_rax = match r.size {
                        4 => {
                            byte(o, 1) == Some(0xb8)
                                || (byte(o, 3), byte(o, 2), byte(o, 1))
                                    == (Some(0x48), Some(0xc7), Some(0xc0))
                        }
                        8 => (byte(o, 2), byte(o, 1)) == (Some(0x48), Some(0xb8)),
                        _ => false,
                    };
                    match (into_rax, local(0)) {
                        (true, Ok(l)) => out.returned = Some(l),
                        (true, Err(t)) => {
                            return Err(format!("accessor returns an external object: {t:?}"))
                        }
                        (false, _) => out.other.push(r.target.clone()),
                    }
                    continue;
                }
            }
        };
        if r.size != 4 {
            return Err(format!("{}-byte memory operand field: {r:?}", r.size));
        }
        let imm: u64 = match op {
            0x80 | 0x83 | 0xc6 => 1,
            0x81 | 0xc7 => 4,
            _ => 0,
        };
        let bias = if r.pcrel { 4 + imm as i64 } else { 0 };
        let reg = (modrm >> 3) & 7;
        let imm_byte = code.get((o + 4) as usize).copied();
        let increment = rex_w && reg == 0 && (op == 0xff || (op == 0x83 && imm_byte == Some(1)));
        let lea_rax = r.pcrel && rex_w && op == 0x8d && reg == 0;
        match (increment || lea_rax, local(bias)) {
            (true, Ok(l)) if increment => out.increments.push(l),
            (true, Ok(l)) => out.returned = Some(l),
            (true, Err(t)) => {
                return Err(format!(
                    "accessor returns or increments an external object: {t:?}"
                ))
            }
            (false, Ok(l)) => out.other.push(Target::Local(l)),
            (false, Err(Target::Extern { name, addend })) => out.other.push(Target::Extern {
                name,
                addend: addend + bias,
            }),
            (false, Err(t)) => out.other.push(t),
        }
    }
    Ok(out)
}

/// A register's value while [`aarch64_accessor`] follows an accessor.
#[derive(Clone, Debug, PartialEq)]
enum A64Value {
    /// `adrp xd, S`: the 4 KiB page of `S + A` (completed by an `add` with
    /// the matching `:lo12:` relocation).
    Page(Target),
    /// An address.
    Addr(Target),
    Const(i64),
    /// The 64-bit value loaded from an address, plus a constant.
    Loaded(Target, i64),
}

/// `t` moved by `delta` bytes.
fn shifted(t: &Target, delta: i64) -> Target {
    match t {
        Target::Local(l) => Target::Local(l.add(delta)),
        Target::Extern { name, addend } => Target::Extern {
            name: name.clone(),
            addend: addend + delta,
        },
    }
}

/// AArch64 (AAPCS64: the result in `x0`). Unlike x86-64, an address is
/// built over several instructions, so the function is followed
/// instruction by instruction, with each register's value kept
/// symbolically, up to its first `ret`:
///
/// * `adrp xd, S` (`R_AARCH64_ADR_PREL_PG_HI21`) and then `add xd, xn,
///   :lo12:S` (`R_AARCH64_ADD_ABS_LO12_NC`) with the same target: `S + A`;
///   a `ldr`/`str` with the `:lo12:` relocation addresses `S + A` itself;
/// * `add`/`sub xd, xn, #imm{, lsl #12}` of an address: gcc addresses
///   objects from a section anchor (`adrp`/`add` to `.data+K`, then `add
///   x0, x1, #552` or `sub x0, x1, #112`);
/// * `mov xd, xm`, `mov xd, #imm` (`movz`);
/// * `ldr`/`ldur xt, [xn, #imm]` (64-bit) from an address loads a value;
///   `add xd, xn, #imm` or `add xd, xn, xm` adds a constant to it; a
///   `str`/`stur` of that value plus one back to the same place is an
///   increment ([`AccessorCode::increments`]);
/// * every other store to an address (the place, and the value stored
///   when it is an address) and every load that is not part of an
///   increment goes to [`AccessorCode::other`], as does the target of a
///   relocation on any other instruction;
/// * `ret`: `x0` is the returned address.
///
/// Any other instruction makes the register it writes unknown. Branches
/// and calls are refused (accessors are straight-line code), and so is an
/// unrecognized load or store through a known address (it could touch an
/// object unnoticed).
fn aarch64_accessor(code: &[u8], relocs: &[(u64, &Reloc)]) -> Result<AccessorCode, String> {
    use A64Value::*;
    let reloc_at = |o: u64| relocs.iter().find(|r| r.0 == o).map(|r| &r.1.target);
    let mut reg: Vec<Option<A64Value>> = vec![None; 32];
    let mut out = AccessorCode::default();
    let mut loads: Vec<Target> = Vec::new();
    let sext = |v: u32, bits: u32| ((v << (32 - bits)) as i32 >> (32 - bits)) as i64;
    for (i, word) in code.chunks_exact(4).enumerate() {
        let o = 4 * i as u64;
        let w = u32::from_le_bytes(word.try_into().unwrap());
        let (rd, rn, rm) = (
            (w & 31) as usize,
            ((w >> 5) & 31) as usize,
            ((w >> 16) & 31) as usize,
        );
        let rel = reloc_at(o);
        let at = |what: &str| format!("{what} at +{o:#x} ({w:#010x})");
        // The place a load/store addresses: base register + offset, or
        // the `:lo12:` relocation completing the base's `adrp`.
        let place = |reg: &[Option<A64Value>], off: i64| -> Result<Option<Target>, String> {
            match (&reg[rn], rel) {
                (Some(Page(p)), Some(t)) if p == t && off == 0 => Ok(Some(t.clone())),
                (_, Some(t)) => Err(at(&format!("{t:?} :lo12: relocation without its adrp"))),
                (Some(Addr(a)), None) if rn != 31 => Ok(Some(shifted(a, off))),
                _ => Ok(None),
            }
        };
        if w & 0x9f00_0000 == 0x9000_0000 {
            // adrp
            reg[rd] = rel.map(|t| Page(t.clone()));
        } else if w & 0x3f80_0000 == 0x1100_0000 && w >> 31 == 1 {
            // add/sub (immediate), 64-bit, flags untouched
            let imm = (((w >> 10) & 0xfff) as i64) << (12 * ((w >> 22) & 1));
            let imm = if w & 0x4000_0000 != 0 { -imm } else { imm };
            reg[rd] = match (&reg[rn], rel) {
                (Some(Page(p)), Some(t)) if p == t && imm == 0 => Some(Addr(t.clone())),
                (_, Some(t)) => {
                    return Err(at(&format!("{t:?} :lo12: relocation without its adrp")))
                }
                (Some(Addr(a)), None) if rn != 31 => Some(Addr(shifted(a, imm))),
                (Some(Const(c)), None) if rn != 31 => Some(Const(c + imm)),
                (Some(Loaded(a, k)), None) if rn != 31 => Some(Loaded(a.clone(), k + imm)),
                _ => None,
            };
        } else if w & 0xffe0_fc00 == 0x8b00_0000 && rel.is_none() {
            // add xd, xn, xm (no shift)
            let val = |r: usize| {
                if r == 31 {
                    Some(Const(0))
                } else {
                    reg[r].clone()
                }
            };
            reg[rd] = match (val(rn), val(rm)) {
                (Some(Loaded(a, k)), Some(Const(c))) | (Some(Const(c)), Some(Loaded(a, k))) => {
                    Some(Loaded(a, k + c))
                }
                (Some(Addr(a)), Some(Const(c))) | (Some(Const(c)), Some(Addr(a))) => {
                    Some(Addr(shifted(&a, c)))
                }
                (Some(Const(a)), Some(Const(b))) => Some(Const(a + b)),
                _ => None,
            };
        } else if w & 0xffe0_ffe0 == 0xaa00_03e0 && rel.is_none() {
            // mov xd, xm
            reg[rd] = if rm == 31 {
                Some(Const(0))
            } else {
                reg[rm].clone()
            };
        } else if w & 0xff80_0000 == 0xd280_0000 && rel.is_none() {
            // movz xd, #imm16, lsl #(16 * hw)
            reg[rd] = Some(Const(
                (((w >> 5) & 0xffff) as i64) << (16 * ((w >> 21) & 3)),
            ));
        } else if w & 0xff80_0000 == 0xf900_0000 || w & 0xffa0_0c00 == 0xf800_0000 {
            // ldr/str xt, [xn, #uimm12 * 8]; ldur/stur xt, [xn, #simm9]
            let load = w & 0x0040_0000 != 0;
            let off = if w & 0x0100_0000 != 0 {
                8 * ((w >> 10) & 0xfff) as i64
            } else {
                sext((w >> 12) & 0x1ff, 9)
            };
            let place = place(&reg, off)?;
            if load {
                reg[rd] = place.map(|p| {
                    loads.push(p.clone());
                    Loaded(p, 0)
                });
            } else if let Some(p) = place {
                let value = if rd == 31 {
                    Some(Const(0))
                } else {
                    reg[rd].clone()
                };
                match (&p, value) {
                    (Target::Local(l), Some(Loaded(a, 1))) if a == p => out.increments.push(*l),
                    (_, Some(Addr(v))) => {
                        out.other.push(p.clone());
                        out.other.push(v);
                    }
                    _ => out.other.push(p.clone()),
                }
            }
        } else if (w & 0xffff_fc1f) == 0xd65f_0000 {
            // ret
            out.returned = match &reg[0] {
                Some(Addr(Target::Local(l))) => Some(*l),
                Some(Addr(t)) => return Err(format!("accessor returns an external object: {t:?}")),
                _ => None,
            };
            let increments = &out.increments;
            out.other.extend(
                loads
                    .into_iter()
                    .filter(|t| !matches!(t, Target::Local(l) if increments.contains(l))),
            );
            return Ok(out);
        } else if w == 0xd503_201f {
            // nop
        } else if w & 0x7c00_0000 == 0x1400_0000
            || w & 0xff00_0010 == 0x5400_0000
            || w & 0x7e00_0000 == 0x3400_0000
            || w & 0x7e00_0000 == 0x3600_0000
            || w & 0xff9f_fc1f == 0xd61f_0000
        {
            return Err(at("branch or call in an accessor"));
        } else if w & 0x0a00_0000 == 0x0800_0000 {
            // any other load/store
            if matches!(reg[rn], Some(Addr(_))) && rn != 31 || rel.is_some() {
                return Err(at("unrecognized load/store through a known address"));
            }
            reg[rd] = None;
            reg[((w >> 10) & 31) as usize] = None; // a pair's second register
            if rn != 31 {
                reg[rn] = None; // writeback
            }
        } else {
            if let Some(t) = rel {
                out.other.push(t.clone());
            }
            reg[rd] = None;
        }
    }
    Err("no ret in the accessor".to_string())
}

// ---------------------------------------------------------------------------
// Python object model, from the library's layout tables (the one place the
// tests read them; `tests/layout_dwarf.rs` checks them against DWARF)
// ---------------------------------------------------------------------------

pub use pyfreeze_obj::layout::Layout;
use pyfreeze_obj::layout::{Field, IntSize};
use pyfreeze_obj::version::{Contract, Version};

/// A pointer field that points to raw data rather than to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawPtr {
    /// A NUL-terminated byte string (`utf8`): compared by content.
    CString,
    /// A place inside the same object (3.11 `wstr`, the string's own
    /// data): compared by its distance from the object's start.
    Interior,
}

/// Struct fields as (offset, size, name).
pub type Fields = Vec<(u64, u8, &'static str)>;

/// How the Python objects of one CPython version look on a 64-bit
/// little-endian target: sizes, field names (for messages and paths) and
/// which pointer fields point to raw data.
pub struct Model {
    pub l: &'static Layout,
    /// How the version's runtime and our object cooperate.
    pub c: &'static Contract,
    /// `PyVarObject`.
    pub head: Fields,
    /// `PyCodeObject` up to `co_code_adaptive`.
    pub code: Fields,
    /// `PyASCIIObject`, and what `PyCompactUnicodeObject` adds.
    pub ascii: Fields,
    pub compact: Fields,
    /// `PyLongObject` up to its digits.
    pub long: Fields,
}

/// The model of CPython `X.Y`.
pub fn model(xy: &str) -> &'static Model {
    static CELLS: [std::sync::OnceLock<Model>; 3] = [const { std::sync::OnceLock::new() }; 3];
    let (cell, minor) = match xy {
        "3.12" => (&CELLS[0], 12),
        "3.11" => (&CELLS[1], 11),
        "3.13" => (&CELLS[2], 13),
        _ => panic!("no layout table for CPython {xy}"),
    };
    cell.get_or_init(|| Model::new(Version::get(3, minor).unwrap()))
}

fn fields(v: &[(Field, &'static str)]) -> Fields {
    let mut out: Fields = v.iter().map(|(f, n)| (f.off as u64, f.size, *n)).collect();
    out.sort();
    out
}

impl Model {
    fn new(v: &'static Version) -> Model {
        let l = v.layout;
        let (c, s) = (&l.code, &l.str_);
        let head = [(l.head.refcnt, "ob_refcnt"), (l.head.type_, "ob_type")];
        let mut code = vec![
            (c.consts, "co_consts"),
            (c.names, "co_names"),
            (c.exceptiontable, "co_exceptiontable"),
            (c.flags, "co_flags"),
            (c.argcount, "co_argcount"),
            (c.posonlyargcount, "co_posonlyargcount"),
            (c.kwonlyargcount, "co_kwonlyargcount"),
            (c.stacksize, "co_stacksize"),
            (c.firstlineno, "co_firstlineno"),
            (c.nlocalsplus, "co_nlocalsplus"),
            (c.nlocals, "co_nlocals"),
            (c.ncellvars, "co_ncellvars"),
            (c.nfreevars, "co_nfreevars"),
            (c.localsplusnames, "co_localsplusnames"),
            (c.localspluskinds, "co_localspluskinds"),
            (c.filename, "co_filename"),
            (c.name, "co_name"),
            (c.qualname, "co_qualname"),
            (c.linetable, "co_linetable"),
        ];
        for (x, n) in [
            (c.framesize, "co_framesize"),
            (c.version, "co_version"),
            (c.firsttraceable, "_co_firsttraceable"),
            (c.nplaincellvars, "co_nplaincellvars"),
        ] {
            code.extend(x.map(|x| (x, n)));
        }
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        for (i, (f, _)) in c.fixed.iter().enumerate() {
            code.push((*f, leak(format!("fixed[{i}]"))));
        }
        for (i, f) in c.runtime_state.iter().enumerate() {
            code.push((*f, leak(format!("runtime_state[{i}]"))));
        }
        let mut ascii = vec![(s.length, "length"), (s.hash, "hash"), (s.state, "state")];
        let mut compact = vec![(s.utf8_length, "utf8_length"), (s.utf8, "utf8")];
        if let Some((w, wl)) = s.wstr {
            ascii.push((w, "wstr"));
            compact.push((wl, "wstr_length"));
        }
        let size = match l.int.size {
            IntSize::LvTag(f) => (f, "lv_tag"),
            IntSize::SignedObSize => (l.head.size, "ob_size"),
        };
        let with_head = |v: &[(Field, &'static str)]| fields(&[&head[..], v].concat());
        Model {
            l,
            c: v.contract,
            head: with_head(&[(l.head.size, "ob_size")]),
            code: with_head(&[&[(l.head.size, "ob_size")][..], &code].concat()),
            ascii: with_head(&ascii),
            compact: fields(&compact),
            long: with_head(&[size]),
        }
    }

    /// `3.12`.
    pub fn xy(&self) -> String {
        format!("{}.{}", self.l.version.0, self.l.version.1)
    }

    pub fn ptr_size(&self) -> u64 {
        self.l.ptr_size as u64
    }

    /// Static objects are immortal: accessors leave the refcount alone.
    pub fn immortal(&self) -> bool {
        self.l.head.immortal
    }

    /// The runtime's functions `_Py_Deepfreeze_Init` calls (code objects,
    /// result checked) and `_Py_Deepfreeze_Fini` calls (code objects, then
    /// 3.11's every string).
    pub fn init_callee(&self) -> &'static str {
        self.c
            .code_init_hook()
            .expect("a per-code-object init hook")
    }
    pub fn fini_callees(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.c.code_fini_hook().into_iter().collect();
        v.extend(self.c.str_fini_hook());
        v
    }
    /// The runtime function 3.11's Fini calls on every string we emit.
    pub fn str_fini(&self) -> Option<&'static str> {
        self.c.str_fini_hook()
    }
    /// The 32-bit counter the object defines (3.12 `_Py_next_func_version`).
    pub fn next_func_version(&self) -> Option<&'static str> {
        self.c.precompute.version_counter
    }
    /// Every function the runtime provides to Init and Fini.
    pub fn callees(&self) -> Vec<&'static str> {
        let mut v = vec![self.init_callee()];
        v.extend(self.fini_callees());
        v
    }

    /// The runtime's objects our object may import: type objects,
    /// singletons, `_PyRuntime`.
    pub fn runtime_objects(&self) -> Vec<&'static str> {
        let s = &self.l.sym;
        let mut v = self.types().to_vec();
        v.extend([s.none, s.true_, s.false_, s.ellipsis, self.l.runtime.symbol]);
        v
    }

    /// What the lazy scheme calls besides: frozensets, and releasing them.
    pub fn lazy_callees(&self) -> [&'static str; 2] {
        [self.c.hooks.frozenset_new, self.c.hooks.decref]
    }

    fn types(&self) -> [&'static str; 7] {
        let s = &self.l.sym;
        [
            s.code_type,
            s.bytes_type,
            s.str_type,
            s.tuple_type,
            s.int_type,
            s.float_type,
            s.complex_type,
        ]
    }

    /// The object structs the writer fills: the archive member whose DWARF
    /// describes each, its C name, where the bytes the writer fills end,
    /// and the table's fields in it.
    pub fn structs(&self) -> Vec<(&'static str, &'static str, u64, Fields)> {
        let l = self.l;
        let (c, s, code) = ("codeobject.o", &l.str_, self.code.clone());
        let shash = fields(&[(l.bytes.shash, "ob_shash")]);
        vec![
            (
                c,
                "PyVarObject",
                l.head.size.off as u64 + 8,
                self.head.clone(),
            ),
            (c, "PyCodeObject", l.code.code_adaptive as u64, code),
            (c, "PyASCIIObject", s.ascii_size as u64, self.ascii.clone()),
            (
                c,
                "PyCompactUnicodeObject",
                s.compact_size as u64,
                self.compact.clone(),
            ),
            (c, "PyBytesObject", l.bytes.sval as u64, shash),
            (
                "longobject.o",
                "PyLongObject",
                l.int.digits as u64,
                self.long.clone(),
            ),
            (
                "floatobject.o",
                "PyFloatObject",
                l.float.fval as u64 + 8,
                vec![],
            ),
            (
                "complexobject.o",
                "PyComplexObject",
                l.float.cval as u64 + 16,
                vec![],
            ),
            (c, "PyTupleObject", l.tuple.items as u64, vec![]),
        ]
    }

    /// Where the runtime's shared objects the writer addresses lie inside
    /// `_PyRuntime`: from the first to past the last.
    pub fn runtime_objects_range(&self) -> std::ops::Range<u64> {
        let r = &self.l.runtime;
        let singles = [r.small_ints, r.bytes_empty, r.tuple_empty];
        let arrays = [
            r.bytes_characters.map(|(o, s)| (o, s, 256)),
            r.ascii_chars.map(|(o, s)| (o, s, 128)),
            r.latin1_chars.map(|(o, s)| (o, s, 128)),
        ];
        let ends = (singles
            .iter()
            .chain(r.global_strings.iter().map(|(_, o)| o)))
        .map(|&o| o as u64)
        .chain(
            arrays
                .into_iter()
                .flatten()
                .map(|(o, s, n)| (o + s * n) as u64),
        );
        *singles.iter().min().unwrap() as u64..ends.max().unwrap()
    }

    /// Whether an external symbol name is one of the type objects.
    pub fn is_type(&self, name: &str) -> bool {
        self.types().contains(&name)
    }

    /// (kind, ascii) of a str.
    fn str_kind(&self, obj: &[u8]) -> Result<(u64, bool), String> {
        let s = &self.l.str_;
        let state = le(obj, s.state.off as usize, s.state.size as usize)?;
        Ok(((state >> s.kind_shift) & 7, (state >> s.ascii_bit) & 1 == 1))
    }

    fn int(&self, obj: &[u8], f: Field) -> Result<u64, String> {
        le(obj, f.off as usize, f.size as usize)
    }

    /// Size of the object's struct (no trailing padding), from its type
    /// and the bytes from its start to the end of its section.
    pub fn object_size(&self, ty: &str, obj: &[u8]) -> Result<u64, String> {
        let (l, s) = (self.l, &self.l.sym);
        let n = || self.int(obj, l.head.size);
        Ok(match ty {
            t if t == s.code_type => l.code.code_adaptive as u64 + 2 * n()?,
            t if t == s.tuple_type => l.tuple.items as u64 + self.ptr_size() * n()?,
            t if t == s.bytes_type => l.bytes.sval as u64 + n()? + 1,
            t if t == s.str_type => {
                let (kind, ascii) = self.str_kind(obj)?;
                if !matches!(kind, 1 | 2 | 4) {
                    return Err(format!("str kind {kind}"));
                }
                let len = self.int(obj, l.str_.length)?;
                let header = if ascii {
                    l.str_.ascii_size
                } else {
                    l.str_.compact_size
                };
                header as u64 + (len + 1) * kind
            }
            t if t == s.int_type => {
                let digits = match l.int.size {
                    IntSize::LvTag(f) => self.int(obj, f)? >> 3,
                    IntSize::SignedObSize => (n()? as i64).unsigned_abs(),
                };
                l.int.digits as u64 + l.int.digit_size as u64 * digits.max(1)
            }
            t if t == s.float_type => l.float.float_size as u64,
            t if t == s.complex_type => l.float.complex_size as u64,
            _ => return Err(format!("unknown type {ty}")),
        })
    }

    /// Offsets of pointer fields that point to raw data rather than to
    /// objects, and what kind of data.
    pub fn raw_pointer_fields(&self, ty: &str, obj: &[u8]) -> Vec<(u64, RawPtr)> {
        let s = &self.l.str_;
        match (ty == self.l.sym.str_type, self.str_kind(obj)) {
            (true, Ok((_, false))) => {
                let mut v = vec![(s.utf8.off as u64, RawPtr::CString)];
                v.extend(s.wstr.map(|(w, _)| (w.off as u64, RawPtr::Interior)));
                v
            }
            _ => vec![],
        }
    }

    /// A name for the field holding byte `off` of the object `obj` (for
    /// messages and paths).
    pub fn field_name(&self, ty: &str, obj: &[u8], off: u64) -> String {
        let (l, s) = (self.l, &self.l.sym);
        let past = |base: u32| off.saturating_sub(base as u64);
        match ty {
            t if t == s.code_type => named(&self.code, off)
                .unwrap_or_else(|| format!("co_code_adaptive[{}]", past(l.code.code_adaptive))),
            t if t == s.tuple_type => named(&self.head, off).unwrap_or_else(|| {
                let i = past(l.tuple.items);
                match i % 8 {
                    0 => format!("[{}]", i / 8),
                    r => format!("[{}]+{r}", i / 8),
                }
            }),
            t if t == s.bytes_type => named(&self.head, off)
                .or_else(|| named(&fields(&[(l.bytes.shash, "ob_shash")]), off))
                .unwrap_or_else(|| format!("ob_sval[{}]", past(l.bytes.sval))),
            t if t == s.str_type => {
                let ascii = self.str_kind(obj).map_or(true, |k| k.1);
                let header = if ascii {
                    l.str_.ascii_size
                } else {
                    l.str_.compact_size
                };
                named(&self.ascii, off)
                    .or_else(|| named(&self.compact, off).filter(|_| !ascii))
                    .unwrap_or_else(|| format!("data+{}", past(header)))
            }
            t if t == s.int_type => named(&self.long, off)
                .unwrap_or_else(|| format!("ob_digit[{}]", past(l.int.digits) / 4)),
            t if t == s.float_type || t == s.complex_type => {
                let (f, c) = (l.float.fval as u64, l.float.cval as u64);
                let v = [
                    (f, 8, "ob_fval"),
                    (c, 8, "cval.real"),
                    (c + 8, 8, "cval.imag"),
                ];
                let v = if t == s.float_type { &v[..1] } else { &v[1..] };
                named(&self.head[..2], off)
                    .or_else(|| named(v, off))
                    .unwrap_or_else(|| format!("+{off}"))
            }
            _ => format!("+{off}"),
        }
    }
}

fn le(b: &[u8], off: usize, n: usize) -> Result<u64, String> {
    let s = b
        .get(off..off + n)
        .ok_or_else(|| format!("object header cut short at byte {off}"))?;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(s);
    Ok(u64::from_le_bytes(v))
}

fn named(fields: &[(u64, u8, &str)], off: u64) -> Option<String> {
    fields.iter().find_map(|&(o, n, name)| {
        (o..o + n as u64).contains(&off).then(|| {
            if off == o {
                name.to_string()
            } else {
                format!("{name}+{}", off - o)
            }
        })
    })
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
    /// The whole byte range, bytes and relocations together, judged at
    /// once by `f(ours, theirs)` when anything in it differs (bytes, or
    /// where the relocations are). An accepted range is skipped.
    Range(fn(&View, &View) -> bool),
}

/// One side's object, for [`Accept::Range`] rules.
pub struct View<'v> {
    /// Where the object starts.
    pub at: Loc,
    /// The object's bytes (its struct size).
    pub bytes: &'v [u8],
    /// Relocations inside the object, by offset from its start.
    pub relocs: &'v [(u64, &'v Reloc)],
}

impl View<'_> {
    /// The little-endian integer of `n` bytes at `off` (0 past the end).
    pub fn int(&self, off: u64, n: usize) -> u64 {
        le(self.bytes, off as usize, n).unwrap_or(0)
    }
    /// The relocation at `off`, if any.
    pub fn reloc(&self, off: u64) -> Option<&Reloc> {
        self.relocs.iter().find(|r| r.0 == off).map(|r| r.1)
    }
    /// Relocation offsets inside `range`.
    pub fn reloc_offsets(&self, range: std::ops::Range<u64>) -> Vec<u64> {
        self.relocs
            .iter()
            .map(|r| r.0)
            .filter(|o| range.contains(o))
            .collect()
    }
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
    /// Interior pointers (to a place inside the same object) compared.
    pub raw_pointers: usize,
    pub raw_bytes: usize,
    /// How often each known difference was needed, by table index.
    pub known_used: BTreeMap<usize, usize>,
}

/// Walks two object graphs in lock step. Pairs already compared (from any
/// root) are not compared again, so sharing differences do not matter.
pub struct Comparer<'a, 'd> {
    a: &'a ObjFile<'d>,
    b: &'a ObjFile<'d>,
    model: &'a Model,
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
        model: &'a Model,
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

    /// [`Comparer::compare`], which must find a difference (`what` says
    /// otherwise); the mismatch, also printed.
    pub fn expect_mismatch(&mut self, root: &str, ra: Loc, rb: Loc, what: &str) -> Mismatch {
        let err = self.compare(root, ra, rb).expect_err(what);
        eprintln!("expected mismatch: {err}");
        err
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
        let raw_fields = self.model.raw_pointer_fields(&ty, head_a);
        let skip = self.known_ranges(&ty, via, size, (la, da, &ra), (lb, db, &rb));

        let mut children = Vec::new();
        let (mut i, mut ia, mut ib) = (0u64, 0usize, 0usize);
        while i < size {
            if let Some(r) = skip.iter().find(|r| r.contains(&i)) {
                while ra.get(ia).is_some_and(|x| x.0 < r.end) {
                    ia += 1;
                }
                while rb.get(ib).is_some_and(|x| x.0 < r.end) {
                    ib += 1;
                }
                i = r.end;
                continue;
            }
            let pa = ra.get(ia).map(|r| r.0);
            let pb = rb.get(ib).map(|r| r.0);
            if pa == Some(i) || pb == Some(i) {
                let field = self.model.field_name(&ty, head_a, i);
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
                    if let Some(k) = self.known_at(
                        &ty,
                        via,
                        i,
                        |k| matches!(k, Accept::Pointer(f) if f(&a.target, &b.target)),
                    ) {
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
                    (Target::Local(x), Target::Local(y))
                        if raw_fields.contains(&(i, RawPtr::Interior)) =>
                    {
                        let inside = |t: &Loc, o: &Loc| {
                            (t.section == o.section).then(|| t.offset.wrapping_sub(o.offset))
                        };
                        let (da_, db_) = (inside(x, &la), inside(y, &lb));
                        if da_.is_none() || da_ != db_ {
                            return Err(fail(format!(
                                "interior pointer differs: {na} object+{da_:?}, {nb} object+{db_:?}"
                            )));
                        }
                        self.stats.raw_pointers += 1;
                    }
                    (Target::Local(x), Target::Local(y))
                        if raw_fields.contains(&(i, RawPtr::CString)) =>
                    {
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
            let next_skip = skip.iter().map(|r| r.start).filter(|&s| s > i).min();
            let next = pa
                .unwrap_or(size)
                .min(pb.unwrap_or(size))
                .min(next_skip.unwrap_or(size))
                .min(size);
            for j in i..next {
                let (x, y) = (da[j as usize], db[j as usize]);
                if x != y {
                    match self.known_at(&ty, via, j, |k| matches!(k, Accept::Byte(f) if f(x, y))) {
                        Some(k) => *self.stats.known_used.entry(k).or_default() += 1,
                        None => {
                            return Err(format!(
                                "byte {j} ({}.{}) differs: {na} {x:02x} {nb} {y:02x}",
                                ty,
                                self.model.field_name(&ty, head_a, j)
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

    /// Byte ranges of this object that a [`Accept::Range`] rule accepts
    /// (each only when something in it differs).
    fn known_ranges(
        &mut self,
        ty: &str,
        via: Option<&str>,
        size: u64,
        (la, da, ra): (Loc, &[u8], &[(u64, &Reloc)]),
        (lb, db, rb): (Loc, &[u8], &[(u64, &Reloc)]),
    ) -> Vec<std::ops::Range<u64>> {
        let mut out = Vec::new();
        for (k, known) in self.known.iter().enumerate() {
            let Accept::Range(f) = known.accept else {
                continue;
            };
            let r = known.bytes.clone();
            if known.ty != ty || known.via.is_some_and(|v| Some(v) != via) || r.end > size {
                continue;
            }
            let (va, vb) = (
                View {
                    at: la,
                    bytes: da,
                    relocs: ra,
                },
                View {
                    at: lb,
                    bytes: db,
                    relocs: rb,
                },
            );
            let (s, e) = (r.start as usize, r.end as usize);
            let differs =
                da[s..e] != db[s..e] || va.reloc_offsets(r.clone()) != vb.reloc_offsets(r.clone());
            if differs && f(&va, &vb) {
                *self.stats.known_used.entry(k).or_default() += 1;
                out.push(r);
            }
        }
        out
    }

    /// The first known difference for byte `off` of a `ty` reached through
    /// `via` whose rule `accepts`.
    fn known_at(
        &self,
        ty: &str,
        via: Option<&str>,
        off: u64,
        accepts: impl Fn(&Accept) -> bool,
    ) -> Option<usize> {
        self.known.iter().position(|k| {
            k.ty == ty
                && k.via.is_none_or(|v| Some(v) == via)
                && k.bytes.contains(&off)
                && accepts(&k.accept)
        })
    }
}

/// Every object in `f`: the places whose pointer-sized field after the
/// refcount is a type pointer the model knows (the `ob_type` field).
pub fn all_objects(f: &ObjFile, model: &Model) -> HashSet<Loc> {
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
    model: &Model,
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
        let raw = model.raw_pointer_fields(&ty, head);
        for (off, r) in f.relocs_in(at, size) {
            if let Target::Local(l) = r.target {
                if !raw.iter().any(|&(o, _)| o == off) {
                    stack.push(l);
                }
            }
        }
    }
    Ok(seen)
}
