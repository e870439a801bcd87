//! The object writer: one format-neutral layer over the `object` crate.
//!
//! It takes the placed data ([`Image`]), the read-only tables
//! ([`RoTables`]) and the lowered stubs ([`Stubs`]) and writes a relocatable
//! object. Everything that depends on the output
//! format — section names and flags, symbol visibility, and the mapping
//! from neutral relocation kinds to the format's relocation types — is
//! decided here, in one place ([`reloc_flags`]).

use crate::arch::ir::Sym;
use crate::arch::{Arch, CodeRelocKind, Stubs};
use crate::error::{Error, Result};
use crate::place::{Image, Target as DataTarget};
use crate::rotables::RoTables;
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
        // ELF types stated outright: the object crate then skips its
        // per-relocation translation of generic kinds (23,000 of them for
        // the stock set).
        (Format::Elf, Kind::DataAbs64) => RelocationFlags::Elf {
            r_type: match arch {
                Arch::X86_64 => elf::R_X86_64_64,
                Arch::Aarch64 => elf::R_AARCH64_ABS64,
            },
        },
        (Format::Elf, Kind::Code(CodeRelocKind::X86PcRel32)) => RelocationFlags::Elf {
            r_type: elf::R_X86_64_PC32,
        },
        (Format::Elf, Kind::Code(CodeRelocKind::X86Branch32)) => RelocationFlags::Elf {
            r_type: elf::R_X86_64_PLT32,
        },
        (Format::Elf, Kind::Code(CodeRelocKind::A64AdrPage21)) => RelocationFlags::Elf {
            r_type: elf::R_AARCH64_ADR_PREL_PG_HI21,
        },
        (Format::Elf, Kind::Code(CodeRelocKind::A64AddLo12)) => RelocationFlags::Elf {
            r_type: elf::R_AARCH64_ADD_ABS_LO12_NC,
        },
        (Format::Elf, Kind::Code(CodeRelocKind::A64Call26)) => RelocationFlags::Elf {
            r_type: elf::R_AARCH64_CALL26,
        },
        (Format::Elf, Kind::Code(CodeRelocKind::A64Jump26)) => RelocationFlags::Elf {
            r_type: elf::R_AARCH64_JUMP26,
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
        (Format::MachO, Kind::Code(CodeRelocKind::A64Call26 | CodeRelocKind::A64Jump26)) => {
            RelocationFlags::MachO {
                r_type: macho::ARM64_RELOC_BRANCH26,
                r_pcrel: true,
                r_length: 2,
            }
        }
        (Format::Coff, Kind::Code(CodeRelocKind::A64AdrPage21)) => RelocationFlags::Coff {
            typ: pe::IMAGE_REL_ARM64_PAGEBASE_REL21,
        },
        (Format::Coff, Kind::Code(CodeRelocKind::A64AddLo12)) => RelocationFlags::Coff {
            typ: pe::IMAGE_REL_ARM64_PAGEOFFSET_12A,
        },
        (Format::Coff, Kind::Code(CodeRelocKind::A64Call26 | CodeRelocKind::A64Jump26)) => {
            RelocationFlags::Coff {
                typ: pe::IMAGE_REL_ARM64_BRANCH26,
            }
        }
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
        Kind::Code(CodeRelocKind::X86Branch32) => RelocationFlags::Generic {
            kind: RelocationKind::PltRelative,
            encoding: RelocationEncoding::X86Branch,
            size: 32,
        },
        Kind::Code(
            CodeRelocKind::A64AdrPage21
            | CodeRelocKind::A64AddLo12
            | CodeRelocKind::A64Call26
            | CodeRelocKind::A64Jump26,
        ) => {
            unreachable!("AArch64 relocations are format-specific")
        }
    }
}

/// The object file for `image` and `stubs`, ready to be written (to bytes
/// or streamed to a file); it borrows the data and code instead of copying
/// them.
pub fn build<'a>(
    target: &Target,
    image: &'a Image,
    rodata: &RoTables,
    stubs: &'a Stubs,
) -> Result<Object<'a>> {
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
        externs: Vec::new(),
    };

    let text = w.obj.section_id(StandardSection::Text);
    let rodata_bytes = rodata.bytes();
    let rodata = w.obj.section_id(StandardSection::ReadOnlyData);
    let data = w.obj.section_id(StandardSection::Data);
    if target.format == Format::Elf {
        // Mark the stack non-executable, as every compiler does.
        w.obj
            .add_section(Vec::new(), b".note.GNU-stack".to_vec(), SectionKind::Other);
    }

    w.obj.set_section_data(data, &image.data[..], 32);
    w.obj.set_section_data(text, &stubs.code[..], stubs.align);
    // The tables the stubs walk, and the pristine bytecode (no
    // relocations: see crate::rotables).
    w.obj.set_section_data(rodata, rodata_bytes, 4);

    // Code refers to local anchor symbols with addend 0 in every format
    // (AArch64 COFF and Mach-O cannot carry large addends on ADRP/ADD).
    let mut anchors: BTreeMap<Sym, SymbolId> = BTreeMap::new();
    for r in &stubs.relocs {
        let (section, value, name) = match r.target {
            Sym::Data(off) => (data, off, format!("pyfreeze_data_{off:x}")),
            Sym::Rodata(off) => (rodata, off, format!("pyfreeze_table_{off:x}")),
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
    // Each of the image's external symbols, added on its first use (in
    // relocation order, so that symbol order does not depend on the image).
    let mut extern_syms: Vec<Option<SymbolId>> = vec![None; image.externs.len()];
    for r in &image.relocs {
        let (symbol, addend) = match r.target {
            DataTarget::Data(off) => {
                let i = data_anchors.partition_point(|(a, _)| *a <= off) - 1;
                (data_anchors[i].1, (off - data_anchors[i].0) as i64)
            }
            DataTarget::Extern(id, off) => {
                let slot = &mut extern_syms[id.0 as usize];
                let symbol =
                    *slot.get_or_insert_with(|| w.extern_sym(image.externs[id.0 as usize], false));
                (symbol, off as i64)
            }
            DataTarget::Accessor(i) => {
                let name = image.accessors[i as usize].symbol.as_str();
                (funcs[name], 0)
            }
        };
        w.reloc(data, r.offset, symbol, addend, Kind::DataAbs64)?;
    }
    if target.format == Format::Coff {
        w.unwind_tables(stubs, &funcs)?;
    }
    for r in &stubs.relocs {
        let symbol = match r.target {
            Sym::Extern(name) => w.extern_sym(name, r.kind.is_branch()),
            local => anchors[&local],
        };
        w.reloc(text, r.offset, symbol, r.addend, Kind::Code(r.kind))?;
    }
    Ok(obj)
}

struct Writer<'o, 'a> {
    obj: &'o mut Object<'a>,
    format: Format,
    arch: Arch,
    externs: Vec<(&'static str, SymbolId)>,
}

impl Writer<'_, '_> {
    /// An undefined symbol: a function (`text`) or data.
    fn extern_sym(&mut self, name: &'static str, text: bool) -> SymbolId {
        // A dozen names, nearly always the same &'static str: compare the
        // pointers first, the text only if none matches.
        if let Some(&(_, id)) = (self.externs.iter())
            .find(|(n, _)| std::ptr::eq(*n, name))
            .or_else(|| self.externs.iter().find(|(n, _)| *n == name))
        {
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
        self.externs.push((name, id));
        id
    }

    /// Windows unwind data for every function with a frame: `.xdata` (as
    /// its instruction set wrote it) and a `.pdata` entry pointing at the
    /// function (and its end, where the entry has one) and its `.xdata`.
    fn unwind_tables(&mut self, stubs: &Stubs, funcs: &BTreeMap<&str, SymbolId>) -> Result<()> {
        use object::pe;
        let with: Vec<_> = (stubs.funcs.iter())
            .filter_map(|f| f.unwind.as_ref().map(|u| (f, u)))
            .collect();
        if with.is_empty() {
            return Ok(());
        }
        let xdata = self
            .obj
            .add_section(Vec::new(), b".xdata".to_vec(), SectionKind::ReadOnlyData);
        let pdata = self
            .obj
            .add_section(Vec::new(), b".pdata".to_vec(), SectionKind::ReadOnlyData);
        let xsym = self.obj.section_symbol(xdata);
        let addr32nb = match self.arch {
            Arch::X86_64 => pe::IMAGE_REL_AMD64_ADDR32NB,
            Arch::Aarch64 => pe::IMAGE_REL_ARM64_ADDR32NB,
        };
        for (f, u) in with {
            let xoff = self.obj.append_section_data(xdata, &u.xdata, 4);
            let sym = funcs[f.name.as_str()];
            let mut entry: Vec<(SymbolId, i64)> = vec![(sym, 0)];
            if u.pdata_end {
                entry.push((sym, f.size as i64));
            }
            entry.push((xsym, xoff as i64));
            let at = self
                .obj
                .append_section_data(pdata, &vec![0; 4 * entry.len()], 4);
            for (i, (symbol, addend)) in entry.into_iter().enumerate() {
                let flags = RelocationFlags::Coff { typ: addr32nb };
                self.obj
                    .add_relocation(
                        pdata,
                        Relocation {
                            offset: at + 4 * i as u64,
                            symbol,
                            addend,
                            flags,
                        },
                    )
                    .map_err(|e| Error::msg(format!("cannot add an unwind relocation: {e}")))?;
            }
        }
        Ok(())
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
