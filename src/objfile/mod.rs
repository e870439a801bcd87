//! The object writer: one format-neutral layer over the `object` crate.
//!
//! It takes the placed data ([`Image`]) and the assembled stubs ([`Stubs`])
//! and writes a relocatable object. Everything that depends on the output
//! format — section names and flags, symbol visibility, and the mapping
//! from neutral relocation kinds to the format's relocation types — is
//! decided here, in one place ([`reloc_flags`]).

use crate::arch::{CodeRelocKind, Stubs, Sym};
use crate::error::{Error, Result};
use crate::layout::Layout;
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
fn reloc_flags(format: Format, kind: Kind) -> RelocationFlags {
    use object::elf;
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
pub fn write(target: &Target, layout: &Layout, image: &Image, stubs: &Stubs) -> Result<Vec<u8>> {
    let (format, arch) = match (target.format, target.arch) {
        (Format::Elf, crate::arch::Arch::X86_64) => (BinaryFormat::Elf, Architecture::X86_64),
        (Format::MachO, crate::arch::Arch::X86_64) => (BinaryFormat::MachO, Architecture::X86_64),
        (Format::Coff, crate::arch::Arch::X86_64) => (BinaryFormat::Coff, Architecture::X86_64),
        (Format::Elf, crate::arch::Arch::Aarch64) => (BinaryFormat::Elf, Architecture::Aarch64),
        (Format::MachO, crate::arch::Arch::Aarch64) => (BinaryFormat::MachO, Architecture::Aarch64),
        (Format::Coff, crate::arch::Arch::Aarch64) => (BinaryFormat::Coff, Architecture::Aarch64),
    };
    let mut obj = Object::new(format, arch, Endianness::Little);
    let mut w = Writer {
        obj: &mut obj,
        format: target.format,
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

    let data_off = w.obj.append_section_data(data, &image.data, 32);
    let text_off = w.obj.append_section_data(text, &stubs.code, stubs.align);
    // The code table: 32-bit offsets of each code object from the start of
    // the data section. No relocations needed: the stubs add the base.
    let mut table = Vec::new();
    for &c in image.tables().iter().flat_map(|t| t.iter()) {
        let c = u32::try_from(c + data_off)
            .map_err(|_| Error::msg("frozen data exceeds 4 GiB; split the module set"))?;
        table.extend_from_slice(&c.to_le_bytes());
    }
    let table_off = w.obj.append_section_data(rodata, &table, 4);

    let data_sym = w.obj.section_symbol(data);
    let rodata_sym = w.obj.section_symbol(rodata);

    for r in &image.relocs {
        let (symbol, addend) = match r.target {
            DataTarget::Data(off) => (data_sym, (data_off + off) as i64),
            DataTarget::Extern(name, off) => (w.extern_sym(name), off as i64),
        };
        w.reloc(data, data_off + r.offset, symbol, addend, Kind::DataAbs64)?;
    }
    for r in &stubs.relocs {
        let (symbol, base) = match r.target {
            Sym::Data(off) => (data_sym, (data_off + off) as i64),
            Sym::Table(off) => (rodata_sym, (table_off + off) as i64),
            Sym::Extern(name) => (w.extern_sym(name), 0),
        };
        w.reloc(
            text,
            text_off + r.offset,
            symbol,
            base + r.addend,
            Kind::Code(r.kind),
        )?;
    }
    for f in &stubs.funcs {
        w.obj.add_symbol(Symbol {
            name: f.name.as_bytes().to_vec(),
            value: text_off + f.offset,
            size: f.size,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
    }
    if let Some(name) = layout.sym.next_func_version {
        let off = w
            .obj
            .append_section_data(data, &image.next_func_version.to_le_bytes(), 4);
        w.obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value: off,
            size: 4,
            kind: SymbolKind::Data,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(data),
            flags: SymbolFlags::None,
        });
    }
    obj.write()
        .map_err(|e| Error::msg(format!("cannot write the object file: {e}")))
}

struct Writer<'a> {
    obj: &'a mut Object<'static>,
    format: Format,
    externs: BTreeMap<&'static str, SymbolId>,
}

impl Writer<'_> {
    fn extern_sym(&mut self, name: &'static str) -> SymbolId {
        if let Some(&id) = self.externs.get(name) {
            return id;
        }
        let id = self.obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value: 0,
            size: 0,
            kind: SymbolKind::Unknown,
            scope: SymbolScope::Unknown,
            weak: false,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        });
        self.externs.insert(name, id);
        id
    }

    fn reloc(
        &mut self,
        section: object::write::SectionId,
        offset: u64,
        symbol: SymbolId,
        addend: i64,
        kind: Kind,
    ) -> Result<()> {
        let flags = reloc_flags(self.format, kind);
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
