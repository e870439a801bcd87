//! The object writer: one format-neutral layer over the `object` crate.
//!
//! It takes the placed data ([`Image`]) and the assembled stubs ([`Stubs`])
//! and writes a relocatable object. Everything that depends on the output
//! format — section names and flags, symbol visibility, and the mapping
//! from neutral relocation kinds to the format's relocation types — is
//! decided here, in one place ([`reloc_flags`]).

use crate::arch::{Arch, CodeRelocKind, Stubs, Sym};
use crate::error::{Error, Result};
use crate::place::{Image, Target as DataTarget};
use crate::target::{Format, Target};
use object::write::{Object, Relocation, StandardSection, Symbol, SymbolId, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationEncoding, RelocationFlags, RelocationKind,
    SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};
use std::collections::BTreeMap;

/// Neutral relocation kinds, as the object writer sees them.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Pointer-sized absolute address in data.
    DataAbs64,
    Code(CodeRelocKind),
}

/// The one place that maps (format, architecture, neutral kind) to the
/// relocation the `object` crate writes.
fn reloc_flags(format: Format, arch: Arch, kind: Kind) -> RelocationFlags {
    use object::{elf, macho, pe};
    match (format, kind) {
        (Format::Elf, Kind::Code(CodeRelocKind::A64AdrPage21)) => RelocationFlags::Elf {
            r_type: elf::R_AARCH64_ADR_PREL_PG_HI21,
        },
        (Format::Elf, Kind::Code(CodeRelocKind::A64AddLo12)) => RelocationFlags::Elf {
            r_type: elf::R_AARCH64_ADD_ABS_LO12_NC,
        },
        (Format::Elf, Kind::Code(CodeRelocKind::A64Call26)) => RelocationFlags::Elf {
            r_type: elf::R_AARCH64_CALL26,
        },
        (Format::MachO, Kind::Code(CodeRelocKind::A64AdrPage21)) => RelocationFlags::MachO {
            r_type: macho::ARM64_RELOC_PAGE21,
            r_pcrel: true,
            r_length: 2,
        },
        (Format::MachO, Kind::Code(CodeRelocKind::A64AddLo12)) => RelocationFlags::MachO {
            r_type: macho::ARM64_RELOC_PAGEOFF12,
            r_pcrel: false,
            r_length: 2,
        },
        (Format::MachO, Kind::Code(CodeRelocKind::A64Call26)) => RelocationFlags::MachO {
            r_type: macho::ARM64_RELOC_BRANCH26,
            r_pcrel: true,
            r_length: 2,
        },
        (Format::Coff, Kind::Code(CodeRelocKind::A64AdrPage21)) => RelocationFlags::Coff {
            typ: pe::IMAGE_REL_ARM64_PAGEBASE_REL21,
        },
        (Format::Coff, Kind::Code(CodeRelocKind::A64AddLo12)) => RelocationFlags::Coff {
            typ: pe::IMAGE_REL_ARM64_PAGEOFFSET_12A,
        },
        (Format::Coff, Kind::Code(CodeRelocKind::A64Call26)) => RelocationFlags::Coff {
            typ: pe::IMAGE_REL_ARM64_BRANCH26,
        },
        (Format::Coff, Kind::DataAbs64) if arch == Arch::Aarch64 => RelocationFlags::Coff {
            typ: pe::IMAGE_REL_ARM64_ADDR64,
        },
        (_, kind) => generic_flags(kind),
    }
}

fn generic_flags(kind: Kind) -> RelocationFlags {
    match kind {
        Kind::DataAbs64 => RelocationFlags::Generic {
            kind: RelocationKind::Absolute,
            encoding: RelocationEncoding::Generic,
            size: 64,
        },
        Kind::Code(CodeRelocKind::X86PcRel32) => RelocationFlags::Generic {
            kind: RelocationKind::Relative,
            encoding: RelocationEncoding::Generic,
            size: 32,
        },
        Kind::Code(CodeRelocKind::X86Call32) => RelocationFlags::Generic {
            kind: RelocationKind::PltRelative,
            encoding: RelocationEncoding::X86Branch,
            size: 32,
        },
        Kind::Code(
            CodeRelocKind::A64AdrPage21 | CodeRelocKind::A64AddLo12 | CodeRelocKind::A64Call26,
        ) => {
            unreachable!("AArch64 relocations are format-specific")
        }
    }
}

/// Write the object file for `image` and `stubs`.
pub fn write(
    target: &Target,
    image: &Image,
    tables: &[Vec<u32>],
    blob: &[u8],
    stubs: &Stubs,
) -> Result<Vec<u8>> {
    let format = match target.format {
        Format::Elf => BinaryFormat::Elf,
        Format::MachO => BinaryFormat::MachO,
        Format::Coff => BinaryFormat::Coff,
    };
    let arch = match target.arch {
        Arch::X86_64 => Architecture::X86_64,
        Arch::Aarch64 => Architecture::Aarch64,
    };
    let mut obj = Object::new(format, arch, Endianness::Little);
    if target.format == Format::MachO {
        obj.set_subsections_via_symbols();
    }
    let mut w = Writer {
        obj: &mut obj,
        format: target.format,
        arch: target.arch,
        externs: BTreeMap::new(),
    };

    let text = w.obj.section_id(StandardSection::Text);
    let rodata = w.obj.section_id(StandardSection::ReadOnlyData);
    let data = w.obj.section_id(StandardSection::Data);
    if target.format == Format::Elf {
        // Mark the stack non-executable, as every compiler does.
        w.obj
            .add_section(Vec::new(), b".note.GNU-stack".to_vec(), SectionKind::Other);
    }

    w.obj.append_section_data(data, &image.data, 32);
    w.obj.append_section_data(text, &stubs.code, stubs.align);
    // The 32-bit tables the stubs walk (no relocations: object offsets are
    // relative to the data section, the stubs add its address), and a zero
    // sentinel so that "end of table" is an address inside the section.
    let mut table = Vec::new();
    for &v in tables.iter().flatten().chain([&0]) {
        table.extend_from_slice(&v.to_le_bytes());
    }
    // Read-only bytes the tables point into (pristine bytecode).
    table.extend_from_slice(blob);
    w.obj.append_section_data(rodata, &table, 4);

    // Code refers to local anchor symbols with addend 0 in every format
    // (AArch64 COFF and Mach-O cannot carry large addends on ADRP/ADD).
    let mut anchors: BTreeMap<Sym, SymbolId> = BTreeMap::new();
    for r in &stubs.relocs {
        let (section, value, name) = match r.target {
            Sym::Data(off) => (data, off, format!("pyfreeze_data_{off:x}")),
            Sym::Table(off) => (rodata, off, format!("pyfreeze_table_{off:x}")),
            Sym::Extern(_) => continue,
        };
        anchors
            .entry(r.target)
            .or_insert_with(|| w.local_sym(name, section, value));
    }
    // Functions and global data symbols first: relocations may name them.
    let mut funcs: BTreeMap<&str, SymbolId> = BTreeMap::new();
    for f in &stubs.funcs {
        let id = w.obj.add_symbol(Symbol {
            name: f.name.as_bytes().to_vec(),
            value: f.offset,
            size: f.size,
            kind: SymbolKind::Text,
            scope: if f.global {
                SymbolScope::Linkage
            } else {
                SymbolScope::Compilation
            },
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        funcs.insert(&f.name, id);
    }
    let mut data_syms = Vec::new();
    for &(name, value, size) in &image.symbols {
        let id = w.obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value,
            size,
            kind: SymbolKind::Data,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(data),
            flags: SymbolFlags::None,
        });
        data_syms.push((value, id));
    }
    // Data pointers: ELF and COFF use the section symbol plus addend. Mach-O
    // (subsections via symbols) needs the symbol of the atom the target
    // lies in: the nearest symbol at or before it.
    let data_anchors: Vec<(u64, SymbolId)> = match target.format {
        Format::MachO => {
            anchors
                .entry(Sym::Data(0))
                .or_insert_with(|| w.local_sym("pyfreeze_data_0".into(), data, 0));
            let mut v: Vec<(u64, SymbolId)> = anchors
                .iter()
                .filter_map(|(s, &id)| match s {
                    Sym::Data(off) => Some((*off, id)),
                    _ => None,
                })
                .chain(data_syms.iter().copied())
                .collect();
            v.sort_by_key(|&(off, _)| off);
            v
        }
        _ => vec![(0, w.obj.section_symbol(data))],
    };
    for r in &image.relocs {
        let (symbol, addend) = match r.target {
            DataTarget::Data(off) => {
                let i = data_anchors.partition_point(|(a, _)| *a <= off) - 1;
                (data_anchors[i].1, (off - data_anchors[i].0) as i64)
            }
            DataTarget::Extern(name, off) => (w.extern_sym(name, false), off as i64),
            DataTarget::Accessor(i) => {
                let name = image.accessors[i as usize].symbol.as_str();
                (funcs[name], 0)
            }
        };
        w.reloc(data, r.offset, symbol, addend, Kind::DataAbs64)?;
    }
    for r in &stubs.relocs {
        let symbol = match r.target {
            Sym::Extern(name) => w.extern_sym(
                name,
                matches!(r.kind, CodeRelocKind::X86Call32 | CodeRelocKind::A64Call26),
            ),
            local => anchors[&local],
        };
        w.reloc(text, r.offset, symbol, r.addend, Kind::Code(r.kind))?;
    }
    obj.write()
        .map_err(|e| Error::msg(format!("cannot write the object file: {e}")))
}

struct Writer<'a> {
    obj: &'a mut Object<'static>,
    format: Format,
    arch: Arch,
    externs: BTreeMap<&'static str, SymbolId>,
}

impl Writer<'_> {
    /// An undefined symbol: a function (`text`) or data.
    fn extern_sym(&mut self, name: &'static str, text: bool) -> SymbolId {
        if let Some(&id) = self.externs.get(name) {
            return id;
        }
        let id = self.obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value: 0,
            size: 0,
            kind: if text {
                SymbolKind::Text
            } else {
                SymbolKind::Data
            },
            scope: SymbolScope::Unknown,
            weak: false,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        });
        self.externs.insert(name, id);
        id
    }

    /// A symbol local to this object, marking `value` in `section`. On
    /// Mach-O it also starts an atom: marked never to be dead-stripped,
    /// since the object tables reach into atoms without relocations.
    fn local_sym(
        &mut self,
        name: String,
        section: object::write::SectionId,
        value: u64,
    ) -> SymbolId {
        let flags = match self.format {
            Format::MachO => SymbolFlags::MachO {
                n_desc: object::macho::N_NO_DEAD_STRIP,
            },
            _ => SymbolFlags::None,
        };
        self.obj.add_symbol(Symbol {
            name: name.into_bytes(),
            value,
            size: 0,
            kind: SymbolKind::Data,
            scope: SymbolScope::Compilation,
            weak: false,
            section: SymbolSection::Section(section),
            flags,
        })
    }

    fn reloc(
        &mut self,
        section: object::write::SectionId,
        offset: u64,
        symbol: SymbolId,
        addend: i64,
        kind: Kind,
    ) -> Result<()> {
        let flags = reloc_flags(self.format, self.arch, kind);
        self.obj
            .add_relocation(
                section,
                Relocation {
                    offset,
                    symbol,
                    addend,
                    flags,
                },
            )
            .map_err(|e| Error::msg(format!("cannot add a relocation: {e}")))
    }
}
