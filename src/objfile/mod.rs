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
        (Format::Elf, Kind::Code(CodeRelocKind::X86Call32)) => RelocationFlags::Elf {
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

/// Where the read-only blob starts in the read-only section: after the
/// 32-bit tables (of these lengths) and their zero sentinel.
pub fn blob_offset(table_lens: &[usize]) -> u32 {
    4 * (table_lens.iter().sum::<usize>() as u32 + 1)
}

/// The object file for `image` and `stubs`, ready to be written (to bytes
/// or streamed to a file); it borrows the data and code instead of copying
/// them.
pub fn build<'a>(
    target: &Target,
    image: &'a Image,
    tables: &[Vec<u32>],
    blob: &[u8],
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
    let rodata = w.obj.section_id(StandardSection::ReadOnlyData);
    let data = w.obj.section_id(StandardSection::Data);
    if target.format == Format::Elf {
        // Mark the stack non-executable, as every compiler does.
        w.obj
            .add_section(Vec::new(), b".note.GNU-stack".to_vec(), SectionKind::Other);
    }

    w.obj.set_section_data(data, &image.data[..], 32);
    w.obj.set_section_data(text, &stubs.code[..], stubs.align);
    // The 32-bit tables the stubs walk (no relocations: object offsets are
    // relative to the data section, the stubs add its address), and a zero
    // sentinel so that "end of table" is an address inside the section.
    let words = tables.iter().map(Vec::len).sum::<usize>() + 1;
    let mut table = Vec::with_capacity(4 * words + blob.len());
    for &v in tables.iter().flatten().chain([&0]) {
        table.extend_from_slice(&v.to_le_bytes());
    }
    // Read-only bytes the tables point into (pristine bytecode).
    debug_assert_eq!(
        table.len(),
        blob_offset(&tables.iter().map(Vec::len).collect::<Vec<_>>()) as usize
    );
    table.extend_from_slice(blob);
    w.obj.set_section_data(rodata, table, 4);

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
            Sym::Extern(name) => w.extern_sym(
                name,
                matches!(r.kind, CodeRelocKind::X86Call32 | CodeRelocKind::A64Call26),
            ),
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

    /// Windows unwind data for every function with a prologue: `.xdata`
    /// (x64 UNWIND_INFO, or ARM64 unwind codes with one epilogue scope)
    /// and `.pdata` entries pointing at the function and its `.xdata`.
    fn unwind_tables(&mut self, stubs: &Stubs, funcs: &BTreeMap<&str, SymbolId>) -> Result<()> {
        use object::pe;
        let with: Vec<&crate::arch::Func> = stubs
            .funcs
            .iter()
            .filter(|f| !f.unwind.is_empty())
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
        for f in with {
            let info = match self.arch {
                Arch::X86_64 => x64_unwind_info(f),
                Arch::Aarch64 => arm64_unwind_info(f),
            };
            let xoff = self.obj.append_section_data(xdata, &info, 4);
            let sym = funcs[f.name.as_str()];
            let mut entry: Vec<(SymbolId, i64)> = vec![(sym, 0)];
            if self.arch == Arch::X86_64 {
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

/// x64 UNWIND_INFO: version 1, the prologue's size, and its steps undone
/// in reverse order (UWOP_PUSH_NONVOL, UWOP_ALLOC_SMALL).
fn x64_unwind_info(f: &crate::arch::Func) -> Vec<u8> {
    use crate::arch::UnwindOp;
    let mut codes = Vec::new();
    for &(end, op) in f.unwind.iter().rev() {
        let info = match op {
            UnwindOp::Push(reg) => reg << 4,
            UnwindOp::Alloc(n) => ((((n - 8) / 8) as u8) << 4) | 2,
            _ => unreachable!("not an x64 prologue step"),
        };
        codes.extend([end as u8, info]);
    }
    let count = codes.len() / 2;
    if count % 2 == 1 {
        codes.extend([0, 0]);
    }
    let prolog = f.unwind.last().map_or(0, |&(end, _)| end) as u8;
    let mut out = vec![1, prolog, count as u8, 0];
    out.extend(codes);
    out
}

/// ARM64 .xdata: header, one epilogue scope, then the unwind codes: the
/// prologue's steps in reverse (save_regp, set_fp, save_fplr_x, end), and
/// the epilogue's (the same without set_fp: it restores sp by its loads).
fn arm64_unwind_info(f: &crate::arch::Func) -> Vec<u8> {
    use crate::arch::UnwindOp;
    let code = |op: UnwindOp, out: &mut Vec<u8>| match op {
        UnwindOp::SavePair(r, off) => {
            let v: u16 = (0b110010 << 10) | ((r as u16 - 19) << 6) | (off / 8) as u16;
            out.extend(v.to_be_bytes());
        }
        UnwindOp::SaveFpLr(n) => out.push(0x80 | (n / 8 - 1) as u8),
        UnwindOp::SetFp => out.push(0xe1),
        _ => unreachable!("not an ARM64 prologue step"),
    };
    let mut codes: Vec<u8> = Vec::new();
    for &(_, op) in f.unwind.iter().rev() {
        code(op, &mut codes);
    }
    codes.push(0xe4); // end
    let epilog_index = codes.len() as u32;
    for &(_, op) in f
        .unwind
        .iter()
        .rev()
        .filter(|(_, op)| *op != UnwindOp::SetFp)
    {
        code(op, &mut codes);
    }
    codes.push(0xe4); // end
    while !codes.len().is_multiple_of(4) {
        codes.push(0xe3); // nop
    }
    let words = (codes.len() / 4) as u32;
    let header = (f.size / 4) as u32 | (1 << 22) | (words << 27);
    let scope = f.epilog.map_or(0, |e| e / 4) | (epilog_index << 22);
    let mut out = header.to_le_bytes().to_vec();
    out.extend(scope.to_le_bytes());
    out.extend(codes);
    out
}
