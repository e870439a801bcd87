//! Checks the CPython 3.12 layout table (`pyfreeze_obj::layout`, for 3.12)
//! against the real thing: the DWARF and the data of the object files inside
//! pyenv's `libpython3.12.a`, the installed headers, and the 3.12 interpreter.
//!
//! Every value of the table is checked (the table structs are destructured
//! without `..`, so a new table field does not compile until it gets a check
//! here). The oracle archive must exist: when it is missing the tests fail,
//! they never skip.
//!
//! Sources, per fact:
//! - struct offsets and sizes: DWARF of `codeobject.o` (object types,
//!   `_PyInterpreterFrame`), `complexobject.o` (`PyComplexObject`),
//!   `frozen.o` (`struct _frozen`) and `pylifecycle.o` (`_PyRuntimeState`);
//! - the shared objects inside `_PyRuntime`: the `.PyRuntime` section of
//!   `pylifecycle.o` (the static initializer) and its relocations;
//! - the global string table: DWARF member offsets plus initializer bytes;
//! - symbol names: the archive's symbol index and the members' symbol tables;
//! - macros that leave no DWARF (`_Py_IMMORTAL_REFCNT`, `CO_FAST_*`,
//!   `_PY_NSMALL*INTS`): the installed headers, cross-checked with data where
//!   the data shows them;
//! - opcode `RESUME` and the `.pyc` magic: the 3.12 interpreter itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use pyfreeze_obj::layout::{
    BytesLayout, CodeLayout, Field, FloatLayout, FrozenLayout, HeadLayout, IntLayout, IntSize,
    Layout, RuntimeLayout, StrLayout, Symbols, TupleLayout,
};

/// Reading struct layouts and symbols out of relocatable ELF objects with
/// DWARF (as found in a static libpython): archive access, relocation of the
/// debug sections, and a small in-memory model of the type DIEs with
/// queries by C type name and member path.
mod dwarf {
    use std::borrow::Cow;
    use std::collections::HashMap;

    use gimli::{EndianSlice, LittleEndian};
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
            let data = std::fs::read(path).map_err(err(&path.display().to_string()))?;
            object::read::archive::ArchiveFile::parse(&*data)
                .map_err(err(&path.display().to_string()))?;
            Ok(Archive {
                path: path.to_owned(),
                data,
            })
        }

        fn file(&self) -> object::read::archive::ArchiveFile<'_> {
            object::read::archive::ArchiveFile::parse(&*self.data).expect("parsed in open")
        }

        /// A copy of member `name` (e.g. `codeobject.o`), 8-byte aligned:
        /// members inside an archive are only 2-byte aligned, too little
        /// for the ELF parser.
        pub fn member(&self, name: &str) -> Result<Aligned> {
            for m in self.file().members() {
                let m = m.map_err(err("archive member"))?;
                if m.name() == name.as_bytes() {
                    return Ok(Aligned::new(m.data(&*self.data).map_err(err(name))?));
                }
            }
            Err(format!("{}: no member {name}", self.path.display()))
        }

        /// The archive symbol index: defined global symbol -> member name.
        pub fn symbol_index(&self) -> Result<HashMap<String, String>> {
            let file = self.file();
            let syms = file
                .symbols()
                .map_err(err("archive symbol index"))?
                .ok_or_else(|| format!("{}: no symbol index", self.path.display()))?;
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

    /// Bytes stored in 8-byte words.
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
    /// Only the absolute x86_64 relocation kinds that debug sections use are
    /// accepted; anything else is an error rather than a silent zero.
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
                    r_type: object::elf::R_X86_64_32,
                } => 4,
                RelocationFlags::Elf {
                    r_type: object::elf::R_X86_64_64,
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
                    if let Some(sec) = s.section_index().and_then(|i| obj.section_by_index(i).ok())
                    {
                        name = sec.name().unwrap_or("").to_owned();
                    }
                }
                out.insert(off, (name, rel.addend()));
            }
        }
        Ok(out)
    }

    /// A type-related DIE, reduced to what layout queries need.
    #[derive(Debug)]
    struct Die {
        tag: gimli::DwTag,
        name: Option<String>,
        byte_size: Option<u64>,
        /// `DW_AT_data_member_location` (bytes).
        member_loc: Option<u64>,
        bit_size: Option<u64>,
        /// `DW_AT_data_bit_offset` (DWARF 4+), from the containing struct.
        data_bit_offset: Option<u64>,
        /// `DW_AT_bit_offset` (DWARF 2/3), from the MSB of the storage unit.
        old_bit_offset: Option<u64>,
        ty: Option<usize>,
        /// Element count of a subrange.
        count: Option<u64>,
        declaration: bool,
        specification: Option<usize>,
        children: Vec<usize>,
    }

    /// A bit field's position: bits from the start (LSB on little endian) of
    /// the struct that holds it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Bits {
        pub offset: u64,
        pub size: u64,
    }

    /// A struct member as found by a query.
    #[derive(Clone, Debug)]
    pub struct Member {
        /// Empty for anonymous members.
        pub name: String,
        /// Byte offset from the start of the queried type. For a bit field,
        /// the offset of the struct holding it (see `bits`).
        pub offset: u64,
        /// `sizeof` the member's type (for a bit field: of its base type).
        pub size: u64,
        pub bits: Option<Bits>,
        ty: Option<usize>,
    }

    /// An array member: where element 0 is, the stride and the length.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Array {
        pub offset: u64,
        pub stride: u64,
        /// `None` for a flexible array member (`x[]`).
        pub count: Option<u64>,
    }

    /// The types (and global variables) described by one object's DWARF.
    pub struct Types {
        pub object: String,
        pub address_size: u8,
        pub dwarf_version: u16,
        dies: HashMap<usize, Die>,
        by_name: HashMap<String, Vec<usize>>,
    }

    type R<'a> = EndianSlice<'a, LittleEndian>;

    fn ref_offset(unit: &gimli::Unit<R>, v: gimli::AttributeValue<R>) -> Option<usize> {
        match v {
            gimli::AttributeValue::UnitRef(o) => o.to_debug_info_offset(&unit.header).map(|o| o.0),
            gimli::AttributeValue::DebugInfoRef(o) => Some(o.0),
            _ => None,
        }
    }

    fn member_location(v: gimli::AttributeValue<R>) -> Option<u64> {
        match v {
            gimli::AttributeValue::Exprloc(gimli::Expression(mut r)) => {
                use gimli::Reader;
                // DWARF 2 style: DW_OP_plus_uconst N.
                let op = r.read_u8().ok()?;
                if op == gimli::DW_OP_plus_uconst.0 {
                    r.read_uleb128().ok()
                } else {
                    None
                }
            }
            v => v.udata_value(),
        }
    }

    fn keep(tag: gimli::DwTag) -> bool {
        matches!(
            tag,
            gimli::DW_TAG_structure_type
                | gimli::DW_TAG_union_type
                | gimli::DW_TAG_class_type
                | gimli::DW_TAG_enumeration_type
                | gimli::DW_TAG_typedef
                | gimli::DW_TAG_base_type
                | gimli::DW_TAG_pointer_type
                | gimli::DW_TAG_const_type
                | gimli::DW_TAG_volatile_type
                | gimli::DW_TAG_restrict_type
                | gimli::DW_TAG_atomic_type
                | gimli::DW_TAG_array_type
                | gimli::DW_TAG_subrange_type
                | gimli::DW_TAG_member
                | gimli::DW_TAG_subroutine_type
                | gimli::DW_TAG_variable
        )
    }

    fn descend(tag: gimli::DwTag) -> bool {
        matches!(
            tag,
            gimli::DW_TAG_compile_unit
                | gimli::DW_TAG_partial_unit
                | gimli::DW_TAG_structure_type
                | gimli::DW_TAG_union_type
                | gimli::DW_TAG_class_type
                | gimli::DW_TAG_array_type
        )
    }

    fn walk(
        dwarf: &gimli::Dwarf<R>,
        unit: &gimli::Unit<R>,
        node: gimli::EntriesTreeNode<'_, '_, '_, R>,
        parent: Option<usize>,
        t: &mut Types,
    ) -> gimli::Result<()> {
        let entry = node.entry();
        let tag = entry.tag();
        let off = entry
            .offset()
            .to_debug_info_offset(&unit.header)
            .expect("offset in unit")
            .0;
        let kept = keep(tag);
        if kept {
            let mut die = Die {
                tag,
                name: None,
                byte_size: None,
                member_loc: None,
                bit_size: None,
                data_bit_offset: None,
                old_bit_offset: None,
                ty: None,
                count: None,
                declaration: false,
                specification: None,
                children: Vec::new(),
            };
            let mut upper: Option<u64> = None;
            let mut attrs = entry.attrs();
            while let Some(a) = attrs.next()? {
                match a.name() {
                    gimli::DW_AT_name => {
                        let s = dwarf.attr_string(unit, a.value())?;
                        die.name = Some(s.to_string_lossy().into_owned());
                    }
                    gimli::DW_AT_byte_size => die.byte_size = a.udata_value(),
                    gimli::DW_AT_data_member_location => {
                        die.member_loc = member_location(a.value())
                    }
                    gimli::DW_AT_bit_size => die.bit_size = a.udata_value(),
                    gimli::DW_AT_data_bit_offset => die.data_bit_offset = a.udata_value(),
                    gimli::DW_AT_bit_offset => die.old_bit_offset = a.udata_value(),
                    gimli::DW_AT_type => die.ty = ref_offset(unit, a.value()),
                    gimli::DW_AT_count => die.count = a.udata_value(),
                    gimli::DW_AT_upper_bound => {
                        // An sdata -1 bound (flexible array) is no count.
                        upper = match a.value() {
                            gimli::AttributeValue::Sdata(v) if v < 0 => None,
                            v => v.udata_value(),
                        }
                    }
                    gimli::DW_AT_declaration => {
                        die.declaration = matches!(a.value(), gimli::AttributeValue::Flag(true))
                    }
                    gimli::DW_AT_specification => die.specification = ref_offset(unit, a.value()),
                    _ => {}
                }
            }
            if die.count.is_none() {
                die.count = upper.map(|u| u + 1);
            }
            if let Some(n) = &die.name {
                if !matches!(tag, gimli::DW_TAG_member | gimli::DW_TAG_subrange_type) {
                    t.by_name.entry(n.clone()).or_default().push(off);
                }
            }
            if let Some(p) = parent {
                if let Some(pd) = t.dies.get_mut(&p) {
                    pd.children.push(off);
                }
            }
            t.dies.insert(off, die);
        }
        if descend(tag) {
            let parent = if kept { Some(off) } else { None };
            let mut children = node.children();
            while let Some(child) = children.next()? {
                walk(dwarf, unit, child, parent, t)?;
            }
        }
        Ok(())
    }

    impl Types {
        /// Parse the DWARF of one relocatable object (after relocating its
        /// debug sections). Function bodies are skipped: only types and
        /// variables are kept.
        pub fn parse(object_name: &str, bytes: &[u8]) -> Result<Types> {
            let obj = object::File::parse(bytes).map_err(err(object_name))?;
            let mut sections: HashMap<&'static str, Vec<u8>> = HashMap::new();
            for id in [
                gimli::SectionId::DebugInfo,
                gimli::SectionId::DebugAbbrev,
                gimli::SectionId::DebugStr,
                gimli::SectionId::DebugLineStr,
                gimli::SectionId::DebugStrOffsets,
                gimli::SectionId::DebugAddr,
                gimli::SectionId::DebugRngLists,
                gimli::SectionId::DebugLocLists,
                gimli::SectionId::DebugRanges,
                gimli::SectionId::DebugLoc,
                gimli::SectionId::DebugLine,
            ] {
                if obj.section_by_name(id.name()).is_some() {
                    let data = relocated_section(&obj, id.name())
                        .map_err(|e| format!("{object_name}: {e}"))?;
                    sections.insert(id.name(), data);
                }
            }
            if !sections.contains_key(".debug_info") {
                return Err(format!("{object_name}: no .debug_info (built without -g?)"));
            }
            let dwarf = gimli::Dwarf::load(|id| -> gimli::Result<R> {
                Ok(EndianSlice::new(
                    sections.get(id.name()).map(|v| v.as_slice()).unwrap_or(&[]),
                    LittleEndian,
                ))
            })
            .map_err(err(object_name))?;
            let mut t = Types {
                object: object_name.to_owned(),
                address_size: 0,
                dwarf_version: 0,
                dies: HashMap::new(),
                by_name: HashMap::new(),
            };
            let mut units = dwarf.units();
            while let Some(header) = units.next().map_err(err(object_name))? {
                let unit = dwarf.unit(header).map_err(err(object_name))?;
                t.address_size = unit.encoding().address_size;
                t.dwarf_version = unit.encoding().version;
                let mut tree = unit.entries_tree(None).map_err(err(object_name))?;
                let root = tree.root().map_err(err(object_name))?;
                walk(&dwarf, &unit, root, None, &mut t).map_err(err(object_name))?;
            }
            if t.dies.is_empty() {
                return Err(format!("{object_name}: DWARF has no types"));
            }
            Ok(t)
        }

        fn die(&self, off: usize) -> Result<&Die> {
            self.dies
                .get(&off)
                .ok_or_else(|| format!("{}: dangling DIE reference {off:#x}", self.object))
        }

        /// Follow typedefs and qualifiers; replace a declaration-only struct
        /// by its definition (found by tag name).
        fn strip(&self, mut off: usize) -> Result<usize> {
            for _ in 0..64 {
                let d = self.die(off)?;
                match d.tag {
                    gimli::DW_TAG_typedef
                    | gimli::DW_TAG_const_type
                    | gimli::DW_TAG_volatile_type
                    | gimli::DW_TAG_restrict_type
                    | gimli::DW_TAG_atomic_type => {
                        off =
                            d.ty.ok_or_else(|| format!("{}: qualifier of void", self.object))?;
                    }
                    gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type if d.declaration => {
                        let name = d.name.as_deref().unwrap_or("");
                        return self.definition(d.tag, name);
                    }
                    _ => return Ok(off),
                }
            }
            Err(format!("{}: typedef loop", self.object))
        }

        fn definition(&self, tag: gimli::DwTag, name: &str) -> Result<usize> {
            self.by_name
                .get(name)
                .into_iter()
                .flatten()
                .copied()
                .find(|&o| self.dies[&o].tag == tag && !self.dies[&o].declaration)
                .ok_or_else(|| format!("{}: no definition of {tag} {name}", self.object))
        }

        /// A type by C name: `struct X` / `union X` for tags, otherwise a
        /// typedef or base type (falling back to a struct or union tag).
        fn named_type(&self, name: &str) -> Result<usize> {
            let (tags, bare): (&[gimli::DwTag], &str) =
                if let Some(n) = name.strip_prefix("struct ") {
                    (&[gimli::DW_TAG_structure_type], n)
                } else if let Some(n) = name.strip_prefix("union ") {
                    (&[gimli::DW_TAG_union_type], n)
                } else {
                    (
                        &[
                            gimli::DW_TAG_typedef,
                            gimli::DW_TAG_base_type,
                            gimli::DW_TAG_structure_type,
                            gimli::DW_TAG_union_type,
                        ],
                        name,
                    )
                };
            let cands = self.by_name.get(bare).map(Vec::as_slice).unwrap_or(&[]);
            for tag in tags {
                let mut found: Option<(usize, u64)> = None;
                for &o in cands {
                    let d = &self.dies[&o];
                    if d.tag != *tag || d.declaration {
                        continue;
                    }
                    // Skip what cannot be sized (a typedef of an opaque
                    // struct); a usable candidate may follow.
                    let Ok(size) = self.sizeof_die(o) else {
                        continue;
                    };
                    match found {
                        None => found = Some((o, size)),
                        Some((_, s)) if s != size => {
                            return Err(format!(
                                "{}: {name} is ambiguous (sizes {s} and {size})",
                                self.object
                            ))
                        }
                        _ => {}
                    }
                }
                if let Some((o, _)) = found {
                    return Ok(o);
                }
            }
            Err(format!("{}: no type named {name}", self.object))
        }

        fn sizeof_die(&self, off: usize) -> Result<u64> {
            let off = self.strip(off)?;
            let d = self.die(off)?;
            match d.tag {
                gimli::DW_TAG_pointer_type => {
                    Ok(d.byte_size.unwrap_or(u64::from(self.address_size)))
                }
                gimli::DW_TAG_array_type => {
                    let a = self.array_die(off)?;
                    let n = a.count.ok_or_else(|| {
                        format!("{}: sizeof a flexible array member", self.object)
                    })?;
                    Ok(d.byte_size.unwrap_or(a.stride * n))
                }
                _ => d.byte_size.ok_or_else(|| {
                    format!(
                        "{}: type {} ({}) has no size",
                        self.object,
                        d.name.as_deref().unwrap_or("<anonymous>"),
                        d.tag
                    )
                }),
            }
        }

        /// Stride and length of an array type (offset 0).
        fn array_die(&self, off: usize) -> Result<Array> {
            let d = self.die(off)?;
            if d.tag != gimli::DW_TAG_array_type {
                return Err(format!("{}: not an array ({})", self.object, d.tag));
            }
            let elem =
                d.ty.ok_or_else(|| format!("{}: array of nothing", self.object))?;
            let counts: Vec<Option<u64>> = d
                .children
                .iter()
                .filter(|c| self.dies[*c].tag == gimli::DW_TAG_subrange_type)
                .map(|c| self.dies[c].count)
                .collect();
            let mut stride = self.sizeof_die(elem)?;
            for c in counts.iter().skip(1) {
                stride *= c.ok_or_else(|| format!("{}: inner flexible array", self.object))?;
            }
            Ok(Array {
                offset: 0,
                stride,
                count: counts.first().copied().flatten(),
            })
        }

        fn members_of(&self, ty: usize) -> Result<Vec<Member>> {
            let s = self.strip(ty)?;
            let d = self.die(s)?;
            if !matches!(
                d.tag,
                gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type | gimli::DW_TAG_class_type
            ) {
                return Err(format!(
                    "{}: {} is not a struct or union ({})",
                    self.object,
                    d.name.as_deref().unwrap_or("<anonymous>"),
                    d.tag
                ));
            }
            let mut out = Vec::new();
            for &c in &d.children {
                let m = &self.dies[&c];
                if m.tag != gimli::DW_TAG_member {
                    continue;
                }
                let size = match m.ty {
                    Some(t) => self.sizeof_die(t).unwrap_or(0),
                    None => 0,
                };
                let loc = m.member_loc.unwrap_or(0);
                let bits = match (m.bit_size, m.data_bit_offset, m.old_bit_offset) {
                    (Some(bs), Some(dbo), _) => Some(Bits {
                        offset: dbo,
                        size: bs,
                    }),
                    (Some(bs), None, Some(bo)) => {
                        // DWARF 2/3, little endian: count from the LSB.
                        let unit = m.byte_size.unwrap_or(size) * 8;
                        Some(Bits {
                            offset: loc * 8 + unit - bo - bs,
                            size: bs,
                        })
                    }
                    (Some(bs), None, None) => Some(Bits {
                        offset: loc * 8,
                        size: bs,
                    }),
                    _ => None,
                };
                out.push(Member {
                    name: m.name.clone().unwrap_or_default(),
                    offset: if bits.is_some() { 0 } else { loc },
                    size,
                    bits,
                    ty: m.ty,
                });
            }
            Ok(out)
        }

        /// Find a member by name in `ty`, looking through anonymous struct
        /// and union members.
        fn find_member(&self, ty: usize, name: &str) -> Result<Option<Member>> {
            for m in self.members_of(ty)? {
                if m.name == name {
                    return Ok(Some(m));
                }
                if m.name.is_empty() && m.bits.is_none() {
                    if let Some(t) = m.ty {
                        let st = self.strip(t)?;
                        if matches!(
                            self.dies[&st].tag,
                            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
                        ) {
                            if let Some(mut inner) = self.find_member(t, name)? {
                                inner.offset += m.offset;
                                return Ok(Some(inner));
                            }
                        }
                    }
                }
            }
            Ok(None)
        }

        /// Resolve `a.b[3].c` inside `ty`.
        fn resolve(&self, ty_name: &str, path: &str) -> Result<Member> {
            let root = self.named_type(ty_name)?;
            let mut cur = Member {
                name: String::new(),
                offset: 0,
                size: self.sizeof_die(root)?,
                bits: None,
                ty: Some(root),
            };
            if path.is_empty() {
                return Ok(cur);
            }
            for seg in path.split('.') {
                let (name, index) = match seg.split_once('[') {
                    Some((n, rest)) => {
                        let i = rest
                            .strip_suffix(']')
                            .and_then(|i| i.parse::<u64>().ok())
                            .ok_or_else(|| format!("bad path segment {seg}"))?;
                        (n, Some(i))
                    }
                    None => (seg, None),
                };
                if cur.bits.is_some() {
                    return Err(format!("{ty_name}.{path}: {seg} inside a bit field"));
                }
                let t = cur
                    .ty
                    .ok_or_else(|| format!("{ty_name}.{path}: member of void"))?;
                let m = self
                    .find_member(t, name)?
                    .ok_or_else(|| format!("{}: {ty_name} has no member {path}", self.object))?;
                let base = cur.offset;
                cur = m;
                cur.offset += base;
                if let Some(i) = index {
                    let t = cur.ty.ok_or_else(|| format!("{seg}: not an array"))?;
                    let at = self.strip(t)?;
                    let a = self.array_die(at)?;
                    if let Some(n) = a.count {
                        if i >= n {
                            return Err(format!("{ty_name}.{path}: index {i} >= length {n}"));
                        }
                    }
                    cur.offset += i * a.stride;
                    cur.ty = self.dies[&at].ty;
                    cur.size = a.stride;
                    cur.name = seg.to_owned();
                }
            }
            Ok(cur)
        }

        // ---- public queries ----

        /// `sizeof(type)`.
        pub fn sizeof(&self, ty: &str) -> Result<u64> {
            let o = self.named_type(ty)?;
            self.sizeof_die(o)
        }

        /// The direct members of struct/union `ty` (anonymous ones have an
        /// empty name).
        pub fn struct_layout(&self, ty: &str) -> Result<Vec<Member>> {
            self.members_at(ty, "")
        }

        /// The direct members of the struct/union at `path` inside `ty`,
        /// with offsets from the start of `ty`.
        pub fn members_at(&self, ty: &str, path: &str) -> Result<Vec<Member>> {
            let m = self.resolve(ty, path)?;
            let t = m.ty.ok_or_else(|| format!("{ty}.{path}: member of void"))?;
            let mut v = self.members_of(t)?;
            for x in &mut v {
                x.offset += m.offset;
            }
            Ok(v)
        }

        /// Member at `path` (`a.b[2].c`) in `ty`: offset from the start of
        /// `ty`, size, bit field position.
        pub fn member(&self, ty: &str, path: &str) -> Result<Member> {
            if path.is_empty() {
                return Err("empty member path".into());
            }
            self.resolve(ty, path)
        }

        /// Offset of the member at `path` in `ty`.
        pub fn member_path_offset(&self, ty: &str, path: &str) -> Result<u64> {
            Ok(self.member(ty, path)?.offset)
        }

        /// Bit position of a bit field member, from the start of the struct
        /// holding it.
        pub fn bitfield(&self, ty: &str, path: &str) -> Result<Bits> {
            self.member(ty, path)?
                .bits
                .ok_or_else(|| format!("{ty}.{path} is not a bit field"))
        }

        /// The array member at `path`: offset of element 0, stride, length.
        pub fn array(&self, ty: &str, path: &str) -> Result<Array> {
            let m = self.member(ty, path)?;
            let t = m.ty.ok_or_else(|| format!("{ty}.{path}: void"))?;
            let a = self.array_die(self.strip(t)?)?;
            Ok(Array {
                offset: m.offset,
                ..a
            })
        }

        /// The C spelling of the (stripped) type of the member at `path`,
        /// as far as needed to tell types apart: the struct/typedef name,
        /// or `*NAME` for pointers.
        pub fn member_type_name(&self, ty: &str, path: &str) -> Result<String> {
            let m = self.member(ty, path)?;
            self.type_name(m.ty)
        }

        fn type_name(&self, t: Option<usize>) -> Result<String> {
            let Some(mut t) = t else {
                return Ok("void".into());
            };
            // Keep typedef names (they are what C code spells), drop qualifiers.
            loop {
                let d = self.die(t)?;
                match d.tag {
                    gimli::DW_TAG_const_type
                    | gimli::DW_TAG_volatile_type
                    | gimli::DW_TAG_restrict_type
                    | gimli::DW_TAG_atomic_type => match d.ty {
                        Some(n) => t = n,
                        None => return Ok("void".into()),
                    },
                    gimli::DW_TAG_pointer_type => return Ok(format!("*{}", self.type_name(d.ty)?)),
                    gimli::DW_TAG_array_type => {
                        let a = self.array_die(t)?;
                        let n = a.count.map(|n| n.to_string()).unwrap_or_default();
                        return Ok(format!("{}[{n}]", self.type_name(d.ty)?));
                    }
                    gimli::DW_TAG_structure_type => {
                        return Ok(format!("struct {}", d.name.as_deref().unwrap_or("<anon>")))
                    }
                    gimli::DW_TAG_union_type => {
                        return Ok(format!("union {}", d.name.as_deref().unwrap_or("<anon>")))
                    }
                    _ => return Ok(d.name.clone().unwrap_or_else(|| format!("<{}>", d.tag))),
                }
            }
        }

        /// Type name and whether a definition (not only a declaration) of
        /// global variable `name` is described.
        pub fn variable(&self, name: &str) -> Result<(String, bool)> {
            let decls: Vec<usize> = self
                .by_name
                .get(name)
                .into_iter()
                .flatten()
                .copied()
                .filter(|o| self.dies[o].tag == gimli::DW_TAG_variable)
                .collect();
            let first = *decls
                .first()
                .ok_or_else(|| format!("{}: no variable {name}", self.object))?;
            let defined = decls.iter().any(|o| !self.dies[o].declaration)
                || self.dies.values().any(|d| {
                    d.tag == gimli::DW_TAG_variable
                        && !d.declaration
                        && d.specification.is_some_and(|s| decls.contains(&s))
                });
            Ok((self.type_name(self.dies[&first].ty)?, defined))
        }

        /// `sizeof` the type of global variable `name`.
        pub fn variable_size(&self, name: &str) -> Result<u64> {
            let o = self
                .by_name
                .get(name)
                .into_iter()
                .flatten()
                .copied()
                .find(|o| self.dies[o].tag == gimli::DW_TAG_variable)
                .ok_or_else(|| format!("{}: no variable {name}", self.object))?;
            let t = self.dies[&o]
                .ty
                .ok_or_else(|| format!("{name}: void variable"))?;
            self.sizeof_die(t)
        }
    }
}

use dwarf::{Archive, Sym, Types};

// ---------------------------------------------------------------------------
// The oracle: pyenv's CPython 3.12.1

const PY_VERSION: &str = "3.12.1";

struct Python {
    prefix: PathBuf,
    include: PathBuf,
    archive: PathBuf,
    resume: u8,
    magic: Vec<u8>,
    version: String,
}

fn find_python() -> Python {
    let mut tried = Vec::new();
    let mut pyenvs: Vec<PathBuf> = vec![PathBuf::from("pyenv")];
    if let Some(root) = std::env::var_os("PYENV_ROOT") {
        pyenvs.push(Path::new(&root).join("bin/pyenv"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        pyenvs.push(Path::new(&home).join(".pyenv/bin/pyenv"));
    }
    pyenvs.push(PathBuf::from("/root/.pyenv/bin/pyenv"));
    let mut prefix = None;
    for p in &pyenvs {
        match Command::new(p).args(["prefix", PY_VERSION]).output() {
            Ok(o) if o.status.success() => {
                prefix = Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
                break;
            }
            Ok(o) => tried.push(format!(
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => tried.push(format!("{}: {e}", p.display())),
        }
    }
    let prefix = prefix.unwrap_or_else(|| {
        panic!(
            "ORACLE MISSING: cannot find CPython {PY_VERSION} via `pyenv prefix {PY_VERSION}`; \
             tried: {tried:?}"
        )
    });
    let exe = prefix.join("bin/python3.12");
    let script = "import sys, sysconfig, opcode, importlib.util\n\
                  print(sysconfig.get_config_var('LIBPL'))\n\
                  print(sysconfig.get_config_var('INCLUDEPY'))\n\
                  print(opcode.opmap['RESUME'])\n\
                  print(importlib.util.MAGIC_NUMBER.hex())\n\
                  print('%d.%d.%d' % sys.version_info[:3])\n";
    let out = Command::new(&exe)
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("ORACLE MISSING: cannot run {}: {e}", exe.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 output");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "unexpected interpreter output: {text:?}");
    let archive = Path::new(lines[0]).join("libpython3.12.a");
    assert!(
        archive.is_file(),
        "ORACLE MISSING: {} does not exist (LIBPL of {})",
        archive.display(),
        exe.display()
    );
    let magic = (0..lines[3].len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&lines[3][i..i + 2], 16).expect("hex"))
        .collect();
    Python {
        prefix,
        include: PathBuf::from(lines[1]),
        archive,
        resume: lines[2].parse().expect("RESUME opcode"),
        magic,
        version: lines[4].to_owned(),
    }
}

/// Everything read once and shared by the tests.
struct Oracle {
    py: Python,
    /// codeobject.o: object layouts, `_PyInterpreterFrame`.
    code: Types,
    /// complexobject.o: `PyComplexObject`.
    complex: Types,
    /// frozen.o: `struct _frozen`, the module tables.
    frozen: Types,
    /// pylifecycle.o: `_PyRuntimeState`, defines `_PyRuntime`.
    life: Types,
    /// The bytes of `_PyRuntime`'s static initializer.
    runtime: Vec<u8>,
    /// Relocations inside `_PyRuntime`: offset -> (symbol, addend).
    runtime_relocs: HashMap<u64, (String, i64)>,
    /// Defined global symbol -> archive member (the archive index).
    index: HashMap<String, String>,
    /// Symbol tables of a few members.
    syms: HashMap<&'static str, Vec<Sym>>,
}

fn oracle() -> &'static Oracle {
    static O: OnceLock<Oracle> = OnceLock::new();
    O.get_or_init(load_oracle)
}

fn load_oracle() -> Oracle {
    let py = find_python();
    assert_eq!(
        py.version,
        PY_VERSION,
        "{} is not CPython {PY_VERSION}",
        py.prefix.display()
    );
    let ar = Archive::open(&py.archive).unwrap_or_else(|e| panic!("ORACLE MISSING: {e}"));
    let member = |n: &str| ar.member(n).unwrap_or_else(|e| panic!("{e}"));
    let parse = |n: &'static str| {
        let bytes = member(n);
        move || Types::parse(n, bytes.bytes()).unwrap_or_else(|e| panic!("{e}"))
    };
    // The four DWARF parses are independent: run them in parallel.
    let (code, complex, frozen, life) = std::thread::scope(|s| {
        let a = s.spawn(parse("codeobject.o"));
        let b = s.spawn(parse("complexobject.o"));
        let c = s.spawn(parse("frozen.o"));
        let d = s.spawn(parse("pylifecycle.o"));
        (
            a.join().unwrap(),
            b.join().unwrap(),
            c.join().unwrap(),
            d.join().unwrap(),
        )
    });

    let life_bytes = member("pylifecycle.o");
    let life_obj = object::File::parse(life_bytes.bytes()).expect("pylifecycle.o");
    let life_syms = dwarf::symbols(&life_obj);
    let rt = life_syms
        .iter()
        .find(|s| s.name == "_PyRuntime" && !s.undefined)
        .expect("pylifecycle.o defines _PyRuntime");
    let sec_name = rt.section.clone().expect("_PyRuntime has a section");
    let sec_data = {
        use object::{Object, ObjectSection};
        life_obj
            .section_by_name(&sec_name)
            .expect("section")
            .data()
            .expect("data")
            .to_vec()
    };
    let start = rt.address as usize;
    let runtime = sec_data[start..start + rt.size as usize].to_vec();
    let runtime_relocs = dwarf::relocation_targets(&life_obj, &sec_name)
        .expect("relocations of _PyRuntime's section")
        .into_iter()
        .filter(|(o, _)| (rt.address..rt.address + rt.size).contains(o))
        .map(|(o, t)| (o - rt.address, t))
        .collect();

    let mut syms = HashMap::new();
    for n in [
        "deepfreeze.o",
        "pylifecycle.o",
        "codeobject.o",
        "frozen.o",
        "import.o",
    ] {
        let bytes = member(n);
        let obj = object::File::parse(bytes.bytes()).unwrap_or_else(|e| panic!("{n}: {e}"));
        syms.insert(n, dwarf::symbols(&obj));
    }
    let index = ar.symbol_index().unwrap_or_else(|e| panic!("{e}"));
    Oracle {
        py,
        code,
        complex,
        frozen,
        life,
        runtime,
        runtime_relocs,
        index,
        syms,
    }
}

fn layout() -> &'static Layout {
    Layout::for_version(3, 12).expect("3.12 table")
}

// ---------------------------------------------------------------------------
// Comparison helper: collects every mismatch, so one run reports them all.

#[derive(Default)]
struct Checker {
    errors: Vec<String>,
    checked: usize,
}

impl Checker {
    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, table: T, truth: T) {
        self.checked += 1;
        if table != truth {
            self.errors.push(format!(
                "{what}: table has {table:?}, libpython has {truth:?}"
            ));
        }
    }

    /// Unwrap a lookup, recording its failure.
    fn get<T>(&mut self, what: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.checked += 1;
                self.errors.push(format!("{what}: lookup failed: {e}"));
                None
            }
        }
    }

    fn is(&mut self, what: &str, ok: bool, detail: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.errors.push(format!("{what}: {}", detail()));
        }
    }

    /// A table `Field` against member `path` of `ty` in DWARF.
    fn field(&mut self, what: &str, table: Field, t: &Types, ty: &str, path: &str) {
        if let Some(m) = self.get(what, t.member(ty, path)) {
            self.eq(
                &format!("{what} ({ty}.{path}) offset"),
                u64::from(table.off),
                m.offset,
            );
            self.eq(
                &format!("{what} ({ty}.{path}) size"),
                u64::from(table.size),
                m.size,
            );
        }
    }

    fn offset(&mut self, what: &str, table: u32, t: &Types, ty: &str, path: &str) {
        if let Some(o) = self.get(what, t.member_path_offset(ty, path)) {
            self.eq(&format!("{what} ({ty}.{path}) offset"), u64::from(table), o);
        }
    }

    fn sizeof(&mut self, what: &str, table: u32, t: &Types, ty: &str) {
        if let Some(s) = self.get(what, t.sizeof(ty)) {
            self.eq(&format!("{what} (sizeof {ty})"), u64::from(table), s);
        }
    }

    fn finish(self, min_checks: usize) {
        eprintln!(
            "{}: {} checks",
            std::thread::current().name().unwrap_or("?"),
            self.checked
        );
        assert!(
            self.errors.is_empty(),
            "{} of {} checks failed:\n  {}",
            self.errors.len(),
            self.checked,
            self.errors.join("\n  ")
        );
        assert!(
            self.checked >= min_checks,
            "only {} checks ran (expected at least {min_checks}): the test is not checking what \
             it should",
            self.checked
        );
    }
}

/// The first few of many problems, and how many there are.
fn summarize(bad: &[String]) -> String {
    const SHOW: usize = 5;
    let mut s = bad
        .iter()
        .take(SHOW)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if bad.len() > SHOW {
        s += &format!("; ... ({} in all)", bad.len());
    }
    s
}

// ---------------------------------------------------------------------------
// Reading the initializer bytes of _PyRuntime

fn rd(buf: &[u8], off: u64, size: usize) -> u64 {
    let o = off as usize;
    let mut b = [0u8; 8];
    b[..size].copy_from_slice(&buf[o..o + size]);
    u64::from_le_bytes(b)
}

fn rd_field(buf: &[u8], base: u64, f: Field) -> u64 {
    rd(buf, base + u64::from(f.off), f.size as usize)
}

/// The relocation target symbol at `off` inside `_PyRuntime`, if any.
fn reloc_at(o: &Oracle, off: u64) -> Option<&str> {
    o.runtime_relocs.get(&off).map(|(s, _)| s.as_str())
}

/// `state` word of a static ASCII string per the table.
fn ascii_state(s: &StrLayout) -> u64 {
    (1u64 << s.kind_shift) | (1 << s.compact_bit) | (1 << s.ascii_bit) | u64::from(s.static_bits)
}

/// `state` word of a static 1-byte-kind, non-ASCII string per the table.
fn latin1_state(s: &StrLayout) -> u64 {
    (1u64 << s.kind_shift) | (1 << s.compact_bit) | u64::from(s.static_bits)
}

// ---------------------------------------------------------------------------
// The tests

/// Object layouts: header, code, str, bytes, int, float, complex, tuple.
#[test]
fn object_layouts_match_dwarf() {
    let o = oracle();
    let c = &o.code;
    let mut k = Checker::default();
    let Layout {
        version,
        pyc_magic: _, // interpreter_facts
        ptr_size,
        head,
        code,
        str_,
        bytes,
        int,
        float,
        tuple,
        runtime: _, // runtime_singletons_match_dwarf_and_data, global_strings_*
        sym: _,     // symbols_match_archive
        frozen: _,  // frozen_table_layout_matches_dwarf
    } = layout();
    k.eq("version", *version, (3, 12));

    // Pointer size: DWARF address size and sizeof(PyObject *).
    for t in [&o.code, &o.complex, &o.frozen, &o.life] {
        k.eq(
            &format!("ptr_size ({} address size)", t.object),
            u64::from(*ptr_size),
            u64::from(t.address_size),
        );
    }
    if let Some(m) = k.get("ptr_size", c.member("PyObject", "ob_type")) {
        k.eq("ptr_size (sizeof ob_type)", u64::from(*ptr_size), m.size);
    }

    // ---- PyObject / PyVarObject
    let HeadLayout {
        refcnt,
        type_,
        size,
        static_refcnt: _, // interpreter_facts (header + initializer bytes)
        immortal: _,      // interpreter_facts
    } = head;
    k.field("head.refcnt", *refcnt, c, "PyObject", "ob_refcnt");
    k.field("head.type_", *type_, c, "PyObject", "ob_type");
    k.field("head.size", *size, c, "PyVarObject", "ob_size");
    k.eq(
        "PyVarObject.ob_base is a PyObject at 0",
        c.member_type_name("PyVarObject", "ob_base")
            .map(|n| (n, c.member_path_offset("PyVarObject", "ob_base").ok())),
        Ok(("PyObject".to_string(), Some(0))),
    );

    // ---- PyCodeObject
    let CodeLayout {
        code_adaptive,
        consts,
        names,
        exceptiontable,
        flags,
        argcount,
        posonlyargcount,
        kwonlyargcount,
        stacksize,
        firstlineno,
        nlocalsplus,
        nlocals,
        ncellvars,
        nfreevars,
        localsplusnames,
        localspluskinds,
        filename,
        name,
        qualname,
        linetable,
        framesize,
        frame_specials_size,
        version: co_version,
        firsttraceable,
        nplaincellvars,
        fixed,
        opcode_resume: _, // interpreter_facts
        co_fast_local: _, // interpreter_facts (header)
        co_fast_cell: _,
        co_fast_free: _,
    } = code;
    const CO: &str = "PyCodeObject";
    k.offset(
        "code.code_adaptive",
        *code_adaptive,
        c,
        CO,
        "co_code_adaptive",
    );
    if let Some(a) = k.get("code.code_adaptive", c.array(CO, "co_code_adaptive")) {
        k.eq("co_code_adaptive element size", a.stride, 1);
    }
    k.eq(
        "PyCodeObject.ob_base type",
        c.member_type_name(CO, "ob_base"),
        Ok("PyVarObject".into()),
    );
    for (what, f, member) in [
        ("code.consts", consts, "co_consts"),
        ("code.names", names, "co_names"),
        ("code.exceptiontable", exceptiontable, "co_exceptiontable"),
        ("code.flags", flags, "co_flags"),
        ("code.argcount", argcount, "co_argcount"),
        (
            "code.posonlyargcount",
            posonlyargcount,
            "co_posonlyargcount",
        ),
        ("code.kwonlyargcount", kwonlyargcount, "co_kwonlyargcount"),
        ("code.stacksize", stacksize, "co_stacksize"),
        ("code.firstlineno", firstlineno, "co_firstlineno"),
        ("code.nlocalsplus", nlocalsplus, "co_nlocalsplus"),
        ("code.nlocals", nlocals, "co_nlocals"),
        ("code.ncellvars", ncellvars, "co_ncellvars"),
        ("code.nfreevars", nfreevars, "co_nfreevars"),
        (
            "code.localsplusnames",
            localsplusnames,
            "co_localsplusnames",
        ),
        (
            "code.localspluskinds",
            localspluskinds,
            "co_localspluskinds",
        ),
        ("code.filename", filename, "co_filename"),
        ("code.name", name, "co_name"),
        ("code.qualname", qualname, "co_qualname"),
        ("code.linetable", linetable, "co_linetable"),
    ] {
        k.field(what, *f, c, CO, member);
    }
    for (what, f, member) in [
        ("code.framesize", framesize, "co_framesize"),
        ("code.version", co_version, "co_version"),
        ("code.firsttraceable", firsttraceable, "_co_firsttraceable"),
        ("code.nplaincellvars", nplaincellvars, "co_nplaincellvars"),
    ] {
        match f {
            Some(f) => k.field(what, *f, c, CO, member),
            None => k.is(what, c.member(CO, member).is_err(), || {
                format!("table has None, but {CO}.{member} exists in 3.12")
            }),
        }
    }
    // Fields with a fixed value (3.11 co_warmup): none in 3.12; any listed
    // must lie inside PyCodeObject before the bytecode.
    k.eq("code.fixed (3.12 has none)", fixed.len(), 0);
    k.is(
        "code.fixed: no co_warmup in 3.12",
        c.member(CO, "co_warmup").is_err(),
        || "PyCodeObject.co_warmup exists".into(),
    );
    for (f, _) in fixed.iter() {
        let m = c
            .struct_layout(CO)
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.offset == u64::from(f.off));
        k.is(
            "code.fixed field",
            m.is_some_and(|m| m.size == u64::from(f.size)),
            || format!("{f:?} is not a PyCodeObject member"),
        );
    }
    // FRAME_SPECIALS_SIZE = (sizeof(_PyInterpreterFrame) - 1) / sizeof(PyObject *)
    for t in [&o.code, &o.life] {
        if let Some(s) = k.get(
            "code.frame_specials_size",
            t.sizeof("struct _PyInterpreterFrame"),
        ) {
            k.eq(
                &format!(
                    "code.frame_specials_size ((sizeof _PyInterpreterFrame={s} - 1) / 8, {})",
                    t.object
                ),
                u64::from(*frame_specials_size),
                (s - 1) / u64::from(*ptr_size),
            );
        }
    }

    // ---- str
    let StrLayout {
        length,
        hash,
        state,
        ascii_size,
        compact_size,
        utf8_length,
        utf8,
        kind_shift,
        compact_bit,
        ascii_bit,
        static_bits,
        fill_utf8,
        wstr,
    } = str_;
    const AS: &str = "PyASCIIObject";
    const CU: &str = "PyCompactUnicodeObject";
    k.field("str.length", *length, c, AS, "length");
    k.field("str.hash", *hash, c, AS, "hash");
    k.field("str.state", *state, c, AS, "state");
    k.sizeof("str.ascii_size", *ascii_size, c, AS);
    k.sizeof("str.compact_size", *compact_size, c, CU);
    k.offset("PyCompactUnicodeObject._base", 0, c, CU, "_base");
    k.field("str.utf8_length", *utf8_length, c, CU, "utf8_length");
    k.field("str.utf8", *utf8, c, CU, "utf8");
    // The bit fields of `state` (positions from the LSB of the state word).
    for (what, table_bit, member, min_width) in [
        ("str.kind_shift", *kind_shift, "kind", 3),
        ("str.compact_bit", *compact_bit, "compact", 1),
        ("str.ascii_bit", *ascii_bit, "ascii", 1),
    ] {
        if let Some(b) = k.get(what, c.bitfield(AS, &format!("state.{member}"))) {
            k.eq(
                &format!("{what} (state.{member} bit offset)"),
                u64::from(table_bit),
                b.offset,
            );
            k.is(&format!("{what} width"), b.size >= min_width, || {
                format!("state.{member} is only {} bits", b.size)
            });
        }
    }
    if let Some(b) = k.get(
        "str.static_bits",
        c.bitfield(AS, "state.statically_allocated"),
    ) {
        k.eq(
            "str.static_bits (state.statically_allocated, 1 bit)",
            b.size,
            1,
        );
        k.eq(
            "str.static_bits (1 << state.statically_allocated bit offset)",
            u64::from(*static_bits),
            1u64 << b.offset,
        );
    }
    // fill_utf8: a 3.12 compact non-ASCII string carries utf8 + utf8_length
    // (checked above as fields; the initializer data check in
    // runtime_singletons_match_dwarf_and_data shows them filled).
    k.eq("str.fill_utf8", *fill_utf8, true);
    // 3.12 removed wstr / wstr_length.
    match wstr {
        None => {
            for m in ["wstr", "wstr_length"] {
                k.is(
                    &format!("str.wstr None: no {m}"),
                    c.member(AS, m).is_err() && c.member(CU, m).is_err(),
                    || format!("table has None, but {m} exists in 3.12"),
                );
            }
        }
        Some((p, len)) => {
            k.field("str.wstr pointer", *p, c, AS, "wstr");
            k.field("str.wstr length", *len, c, CU, "wstr_length");
        }
    }

    // ---- bytes
    let BytesLayout { shash, sval } = bytes;
    k.field("bytes.shash", *shash, c, "PyBytesObject", "ob_shash");
    k.offset("bytes.sval", *sval, c, "PyBytesObject", "ob_sval");

    // ---- int
    let IntLayout {
        size: isize_,
        digits,
        digit_size,
        min_size,
    } = int;
    match isize_ {
        IntSize::LvTag(f) => k.field(
            "int.size (lv_tag)",
            *f,
            c,
            "PyLongObject",
            "long_value.lv_tag",
        ),
        IntSize::SignedObSize => k.is("int.size", false, || {
            "table says SignedObSize (3.11), 3.12 uses long_value.lv_tag".into()
        }),
    }
    k.offset(
        "int.digits",
        *digits,
        c,
        "PyLongObject",
        "long_value.ob_digit",
    );
    if let Some(a) = k.get(
        "int.digit_size",
        c.array("PyLongObject", "long_value.ob_digit"),
    ) {
        k.eq(
            "int.digit_size (ob_digit stride)",
            u64::from(*digit_size),
            a.stride,
        );
    }
    k.sizeof(
        "int.digit_size (sizeof digit)",
        u32::from(*digit_size),
        c,
        "digit",
    );
    k.sizeof("int.min_size", *min_size, c, "PyLongObject");
    k.sizeof("int.min_size", *min_size, c, "struct _longobject");

    // ---- float / complex
    let FloatLayout {
        fval,
        float_size,
        cval,
        complex_size,
    } = float;
    k.offset("float.fval", *fval, c, "PyFloatObject", "ob_fval");
    k.sizeof("float.float_size", *float_size, c, "PyFloatObject");
    let cx = &o.complex;
    k.offset("float.cval", *cval, cx, "PyComplexObject", "cval");
    k.sizeof("float.complex_size", *complex_size, cx, "PyComplexObject");
    k.offset("float.cval.real", *cval, cx, "PyComplexObject", "cval.real");
    k.offset(
        "float.cval.imag",
        *cval + 8,
        cx,
        "PyComplexObject",
        "cval.imag",
    );

    // ---- tuple
    let TupleLayout {
        gc_head_size,
        items,
    } = tuple;
    k.sizeof("tuple.gc_head_size", *gc_head_size, c, "PyGC_Head");
    k.offset("tuple.items", *items, c, "PyTupleObject", "ob_item");
    if let Some(a) = k.get("tuple.items", c.array("PyTupleObject", "ob_item")) {
        k.eq("tuple.items stride", a.stride, u64::from(*ptr_size));
    }

    k.finish(80);
}

/// The runtime's shared objects inside `_PyRuntime`: DWARF offsets plus the
/// static initializer's bytes (which also exercise the object layouts on
/// real data).
#[test]
fn runtime_singletons_match_dwarf_and_data() {
    let o = oracle();
    let l = layout();
    let t = &o.life;
    let mut k = Checker::default();
    let RuntimeLayout {
        symbol,
        small_ints,
        small_int_stride,
        small_int_neg,
        small_int_pos,
        bytes_empty,
        bytes_characters,
        tuple_empty,
        ascii_chars,
        latin1_chars,
        global_strings: _, // global_strings_* tests
    } = &l.runtime;
    const RT: &str = "_PyRuntimeState";
    const S: &str = "static_objects.singletons";

    // The runtime variable: defined in pylifecycle.o with this type and size.
    k.eq(
        "runtime.symbol (DWARF variable)",
        t.variable(symbol),
        Ok((RT.to_string(), true)),
    );
    if let Some(sz) = k.get("sizeof _PyRuntimeState", t.sizeof(RT)) {
        k.eq(
            "runtime.symbol size (ELF symbol vs DWARF)",
            o.runtime.len() as u64,
            sz,
        );
        k.eq(
            "sizeof _PyRuntimeState (codeobject.o vs pylifecycle.o)",
            o.code.sizeof(RT),
            Ok(sz),
        );
    }
    k.eq(
        "runtime.symbol: struct tag pyruntimestate",
        Ok(o.runtime.len() as u64),
        t.sizeof("struct pyruntimestate"),
    );

    // ---- small ints
    let neg = *small_int_neg;
    let pos = *small_int_pos;
    if let Some(a) = k.get(
        "runtime.small_ints",
        t.array(RT, &format!("{S}.small_ints")),
    ) {
        k.eq(
            "runtime.small_ints offset",
            u64::from(*small_ints),
            a.offset,
        );
        k.eq(
            "runtime.small_int_stride",
            u64::from(*small_int_stride),
            a.stride,
        );
        k.eq(
            "runtime.small_int_neg + small_int_pos + 1 (array length)",
            Some((neg + pos + 1) as u64),
            a.count,
        );
    }
    k.eq(
        "runtime.small_ints element type",
        t.member_type_name(RT, &format!("{S}.small_ints[0]")),
        Ok("PyLongObject".into()),
    );
    // Data: element i holds the int i - neg.
    let IntSize::LvTag(lv) = l.int.size else {
        panic!("3.12 uses lv_tag")
    };
    let mut bad = Vec::new();
    for i in 0..(neg + pos + 1) {
        let v = i - neg;
        let base = u64::from(*small_ints) + i as u64 * u64::from(*small_int_stride);
        let tag = rd_field(&o.runtime, base, lv);
        let digit = rd(
            &o.runtime,
            base + u64::from(l.int.digits),
            l.int.digit_size as usize,
        );
        let sign: u64 = match v.signum() {
            1 => 0,
            0 => 1,
            _ => 2,
        };
        let want_tag = (u64::from(v != 0) << 3) | sign;
        let refcnt = rd_field(&o.runtime, base, l.head.refcnt);
        let ty = reloc_at(o, base + u64::from(l.head.type_.off));
        if tag != want_tag
            || digit != v.unsigned_abs()
            || refcnt != l.head.static_refcnt
            || ty != Some(l.sym.int_type)
        {
            bad.push(format!(
                "small_ints[{i}]: lv_tag {tag} digit {digit} refcnt {refcnt:#x} type {ty:?} \
                 (want int {v})"
            ));
        }
    }
    k.is(
        "runtime.small_ints data (value i - small_int_neg, lv_tag, digits, refcnt, type)",
        bad.is_empty(),
        || summarize(&bad),
    );

    // ---- bytes
    k.offset(
        "runtime.bytes_empty",
        *bytes_empty,
        t,
        RT,
        &format!("{S}.bytes_empty"),
    );
    k.eq(
        "runtime.bytes_empty type",
        t.member_type_name(RT, &format!("{S}.bytes_empty")),
        Ok("PyBytesObject".into()),
    );
    let be = u64::from(*bytes_empty);
    k.eq(
        "bytes_empty data: ob_size, ob_shash, ob_sval[0], type",
        (
            rd_field(&o.runtime, be, l.head.size),
            rd_field(&o.runtime, be, l.bytes.shash) as i64,
            rd(&o.runtime, be + u64::from(l.bytes.sval), 1),
            reloc_at(o, be + u64::from(l.head.type_.off)),
        ),
        (0, -1, 0, Some(l.sym.bytes_type)),
    );
    match bytes_characters {
        Some((off, stride)) => {
            if let Some(a) = k.get(
                "runtime.bytes_characters",
                t.array(RT, &format!("{S}.bytes_characters")),
            ) {
                k.eq("runtime.bytes_characters offset", u64::from(*off), a.offset);
                k.eq(
                    "runtime.bytes_characters stride",
                    u64::from(*stride),
                    a.stride,
                );
                k.eq("runtime.bytes_characters length", Some(256), a.count);
            }
            // Element = { PyBytesObject ob; char eos; }: the object is at 0.
            let elem = format!("{S}.bytes_characters[0]");
            if let Some(m) = k.get("bytes_characters[0] members", t.members_at(RT, &elem)) {
                let first = m.first().map(|m| {
                    let ty = t.member_type_name(RT, &format!("{elem}.{}", m.name));
                    (m.offset, ty)
                });
                k.eq(
                    "runtime.bytes_characters: element starts with its PyBytesObject",
                    Some((u64::from(*off), Ok("PyBytesObject".to_string()))),
                    first,
                );
            }
            let mut bad = Vec::new();
            for ch in 0..256u64 {
                let base = u64::from(*off) + ch * u64::from(*stride);
                let got = (
                    rd_field(&o.runtime, base, l.head.size),
                    rd_field(&o.runtime, base, l.bytes.shash) as i64,
                    rd(&o.runtime, base + u64::from(l.bytes.sval), 1),
                    rd(&o.runtime, base + u64::from(l.bytes.sval) + 1, 1),
                    reloc_at(o, base + u64::from(l.head.type_.off)),
                );
                if got != (1, -1, ch, 0, Some(l.sym.bytes_type)) {
                    bad.push(format!("bytes_characters[{ch}]: {got:?}"));
                }
            }
            k.is("bytes_characters data", bad.is_empty(), || summarize(&bad));
        }
        None => k.is("runtime.bytes_characters", false, || {
            "table has None; 3.12 has singletons.bytes_characters".into()
        }),
    }

    // ---- tuple
    k.offset(
        "runtime.tuple_empty",
        *tuple_empty,
        t,
        RT,
        &format!("{S}.tuple_empty"),
    );
    k.eq(
        "runtime.tuple_empty type",
        t.member_type_name(RT, &format!("{S}.tuple_empty")),
        Ok("PyTupleObject".into()),
    );
    let te = u64::from(*tuple_empty);
    k.eq(
        "tuple_empty data: ob_size, type",
        (
            rd_field(&o.runtime, te, l.head.size),
            reloc_at(o, te + u64::from(l.head.type_.off)),
        ),
        (0, Some(l.sym.tuple_type)),
    );

    // ---- one-character strings
    for (what, table, member, first_cp, obj_type, obj_size) in [
        (
            "runtime.ascii_chars",
            ascii_chars,
            "ascii",
            0u64,
            "PyASCIIObject",
            l.str_.ascii_size,
        ),
        (
            "runtime.latin1_chars",
            latin1_chars,
            "latin1",
            128,
            "PyCompactUnicodeObject",
            l.str_.compact_size,
        ),
    ] {
        let Some((off, stride)) = table else {
            k.is(what, false, || {
                format!("table has None; 3.12 has strings.{member}[128]")
            });
            continue;
        };
        let path = format!("{S}.strings.{member}");
        if let Some(a) = k.get(what, t.array(RT, &path)) {
            k.eq(&format!("{what} offset"), u64::from(*off), a.offset);
            k.eq(&format!("{what} stride"), u64::from(*stride), a.stride);
            k.eq(&format!("{what} length"), Some(128), a.count);
        }
        if let Some(m) = k.get(what, t.members_at(RT, &format!("{path}[0]"))) {
            let first = m.first().and_then(|m| {
                t.member_type_name(RT, &format!("{path}[0].{}", m.name))
                    .ok()
                    .map(|n| (m.offset, n, m.size))
            });
            k.eq(
                &format!("{what} element: the string object is its first member"),
                first,
                Some((u64::from(*off), obj_type.to_string(), u64::from(obj_size))),
            );
        }
        let s = &l.str_;
        let mut bad = Vec::new();
        for i in 0..128u64 {
            let base = u64::from(*off) + i * u64::from(*stride);
            let cp = first_cp + i;
            let data = base + u64::from(obj_size);
            let got_common = (
                rd_field(&o.runtime, base, s.length),
                rd_field(&o.runtime, base, s.hash) as i64,
                rd(&o.runtime, data, 1),
                rd(&o.runtime, data + 1, 1),
                reloc_at(o, base + u64::from(l.head.type_.off)),
                rd_field(&o.runtime, base, l.head.refcnt),
            );
            let want_common = (1, -1, cp, 0, Some(l.sym.str_type), l.head.static_refcnt);
            let state = rd_field(&o.runtime, base, s.state);
            let (want_state, utf8_ok) = if cp < 128 {
                (ascii_state(s), true)
            } else {
                // Non-ASCII: utf8 filled (2 bytes), pointer relocated.
                let ulen = rd_field(&o.runtime, base, s.utf8_length);
                let uptr = reloc_at(o, base + u64::from(s.utf8.off));
                (latin1_state(s), ulen == 2 && uptr.is_some())
            };
            if got_common != want_common || state != want_state || !utf8_ok {
                bad.push(format!(
                    "{member}[{i}]: {got_common:?} state {state:#x} (want {want_common:?} state \
                     {want_state:#x}) utf8 ok {utf8_ok}"
                ));
            }
        }
        k.is(&format!("{what} data"), bad.is_empty(), || summarize(&bad));
    }

    k.finish(28);
}

/// Members `_py_*` of `_Py_global_strings.literals` and `.identifiers`:
/// (member name, offset in `_PyRuntime`, DWARF size of its `_data`).
fn global_string_members(o: &Oracle) -> Vec<(String, u64, u64)> {
    const STR: &str = "_PyRuntimeState";
    let mut out = Vec::new();
    for group in ["literals", "identifiers"] {
        let path = format!("static_objects.singletons.strings.{group}");
        let members = o
            .life
            .members_at(STR, &path)
            .unwrap_or_else(|e| panic!("{e}"));
        for m in members {
            let data = o
                .life
                .member(STR, &format!("{path}.{}._data", m.name))
                .unwrap_or_else(|e| panic!("{e}"));
            out.push((format!("{group}.{}", m.name), m.offset, data.size));
        }
    }
    out
}

/// Check a global string table against the DWARF members and the
/// initializer; returns the problems found.
fn check_global_strings(o: &Oracle, l: &Layout, table: &[(&str, u32)]) -> Vec<String> {
    let mut errs = Vec::new();
    let members = global_string_members(o);
    let by_off: BTreeMap<u64, &(String, u64, u64)> = members.iter().map(|m| (m.1, m)).collect();
    if by_off.len() != members.len() {
        errs.push("two _py_* members share an offset".into());
    }
    let s = &l.str_;
    let mut seen = BTreeSet::new();
    for &(value, off) in table {
        let off = u64::from(off);
        let Some((name, _, data_size)) = by_off.get(&off).copied() else {
            errs.push(format!(
                "{value:?} at {off}: no _Py_global_strings member starts there"
            ));
            continue;
        };
        if !seen.insert(off) {
            errs.push(format!("{value:?} at {off}: offset listed twice"));
        }
        // The string as initialized: length, data, NUL, ASCII state, hash -1.
        let len = rd_field(&o.runtime, off, s.length) as usize;
        let start = (off + u64::from(s.ascii_size)) as usize;
        let bytes = &o.runtime[start..start + len];
        if bytes != value.as_bytes() {
            errs.push(format!(
                "{name} at {off}: table says {value:?}, _PyRuntime holds {:?}",
                String::from_utf8_lossy(bytes)
            ));
        }
        if o.runtime[start + len] != 0 {
            errs.push(format!("{name} at {off}: no NUL after the data"));
        }
        if *data_size != len as u64 + 1 {
            errs.push(format!(
                "{name}: DWARF sizeof _data {data_size}, but length {len} + NUL"
            ));
        }
        let state = rd_field(&o.runtime, off, s.state);
        if state != ascii_state(s) {
            errs.push(format!(
                "{name}: state {state:#x}, expected {:#x}",
                ascii_state(s)
            ));
        }
        if rd_field(&o.runtime, off, s.hash) as i64 != -1 {
            errs.push(format!("{name}: hash is not -1"));
        }
        if reloc_at(o, off + u64::from(l.head.type_.off)) != Some(l.sym.str_type) {
            errs.push(format!("{name}: ob_type is not {}", l.sym.str_type));
        }
    }
    // Complete: every member is in the table.
    for (off, (name, _, _)) in &by_off {
        if !seen.contains(off) {
            errs.push(format!("{name} (offset {off}) is missing from the table"));
        }
    }
    // Strictly sorted by bytes: Layout::global_string binary-searches it.
    for w in table.windows(2) {
        if w[0].0.as_bytes() >= w[1].0.as_bytes() {
            errs.push(format!(
                "not strictly sorted: {:?} before {:?}",
                w[0].0, w[1].0
            ));
        }
    }
    errs
}

#[test]
fn global_strings_match_runtime() {
    let o = oracle();
    let l = layout();
    let table = l.runtime.global_strings;
    let members = global_string_members(o);
    assert!(
        members.len() > 600,
        "only {} _py_* members found: DWARF walk broken?",
        members.len()
    );
    let errs = check_global_strings(o, l, table);
    assert!(
        errs.is_empty(),
        "{} problems in the global string table:\n  {}{}",
        errs.len(),
        errs.iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  "),
        if errs.len() > 40 { "\n  ..." } else { "" }
    );
    assert_eq!(table.len(), members.len());
    // The lookup the writer uses finds every entry.
    let to_str = |v: &str| pyfreeze_obj::graph::Str(v.chars().map(u32::from).collect());
    for &(v, off) in table {
        // The lookup compares code points with bytes: ASCII only.
        assert!(v.is_ascii(), "{v:?} is not ASCII");
        assert_eq!(l.global_string(&to_str(v)), Some(off), "lookup of {v:?}");
    }
    assert_eq!(l.global_string(&to_str("surely not a global string")), None);
}

/// `struct _frozen` and the module tables in frozen.o.
#[test]
fn frozen_table_layout_matches_dwarf() {
    let o = oracle();
    let t = &o.frozen;
    let mut k = Checker::default();
    let FrozenLayout {
        entry_size,
        name,
        code,
        size,
        is_package,
        get_code,
        tables,
        aliases,
    } = &layout().frozen;
    const FR: &str = "struct _frozen";
    k.sizeof("frozen.entry_size", *entry_size, t, FR);
    k.field("frozen.name", *name, t, FR, "name");
    k.field("frozen.code", *code, t, FR, "code");
    k.field("frozen.size", *size, t, FR, "size");
    k.field("frozen.is_package", *is_package, t, FR, "is_package");
    k.field("frozen.get_code", *get_code, t, FR, "get_code");
    let frozen_syms = &o.syms["frozen.o"];
    let import_syms = &o.syms["import.o"];
    for table in tables.iter().copied() {
        k.eq(
            &format!("frozen.tables: {table} (DWARF variable in frozen.o)"),
            t.variable(table),
            Ok(("*struct _frozen".to_string(), true)),
        );
        k.is(
            &format!("frozen.tables: {table} defined"),
            defines(frozen_syms, table),
            || "not defined by frozen.o".into(),
        );
        k.is(
            &format!("frozen.tables: {table} used"),
            references(import_syms, table),
            || "not referenced by import.o".into(),
        );
    }
    k.eq("frozen.tables: three of them", tables.len(), 3);
    // bootstrap, stdlib, test: by name, in that order.
    let order: Vec<bool> = ["Bootstrap", "Stdlib", "Test"]
        .iter()
        .zip(tables.iter())
        .map(|(w, t)| t.ends_with(w))
        .collect();
    k.eq("frozen.tables order", order, vec![true; 3]);
    k.eq(
        "frozen.aliases (DWARF variable in frozen.o)",
        t.variable(aliases),
        Ok(("*struct _module_alias".to_string(), true)),
    );
    k.is(
        "frozen.aliases defined",
        defines(frozen_syms, aliases),
        || "not defined by frozen.o".into(),
    );
    k.is(
        "frozen.aliases used",
        references(import_syms, aliases),
        || "not referenced by import.o".into(),
    );
    if let Some(m) = k.get(
        "struct _module_alias",
        t.struct_layout("struct _module_alias"),
    ) {
        k.eq(
            "struct _module_alias: {name, orig} pointers",
            m.iter()
                .map(|m| (m.name.as_str(), m.offset, m.size))
                .collect::<Vec<_>>(),
            vec![("name", 0, 8), ("orig", 8, 8)],
        );
    }
    k.finish(20);
}

fn defines(syms: &[Sym], name: &str) -> bool {
    syms.iter()
        .any(|s| s.name == name && !s.undefined && s.global)
}

fn references(syms: &[Sym], name: &str) -> bool {
    syms.iter().any(|s| s.name == name && s.undefined)
}

/// Symbol names: what the frozen object references must be defined in the
/// archive (and gcc's deepfreeze.o references the same), what it defines
/// must be what deepfreeze.o defines and the rest of libpython uses.
#[test]
fn symbols_match_archive() {
    let o = oracle();
    let l = layout();
    let mut k = Checker::default();
    let Symbols {
        code_type,
        bytes_type,
        str_type,
        tuple_type,
        int_type,
        float_type,
        complex_type,
        none,
        true_,
        false_,
        ellipsis,
        code_init,
        code_fini,
        str_fini,
        next_func_version,
        deepfreeze_init,
        deepfreeze_fini,
    } = &l.sym;
    let df = &o.syms["deepfreeze.o"];
    // Referenced by every deep-frozen object (gcc's included).
    for (what, s) in [
        ("sym.code_type", code_type),
        ("sym.bytes_type", bytes_type),
        ("sym.str_type", str_type),
        ("sym.tuple_type", tuple_type),
        ("sym.int_type", int_type),
        ("sym.none", none),
        ("sym.true_", true_),
        ("sym.false_", false_),
        ("sym.ellipsis", ellipsis),
        ("sym.code_init", code_init),
        ("sym.code_fini", code_fini),
        ("runtime.symbol", &l.runtime.symbol),
    ] {
        k.is(
            &format!("{what} {s}: referenced by deepfreeze.o"),
            references(df, s),
            || "gcc's deepfreeze.o does not reference it".into(),
        );
        let owner = o.index.get(*s);
        k.is(
            &format!("{what} {s}: defined in libpython"),
            owner.is_some_and(|m| m != "deepfreeze.o"),
            || format!("archive index says {owner:?}"),
        );
    }
    // Only referenced when such constants occur (not in the stock set).
    for (what, s, member) in [
        ("sym.float_type", float_type, "floatobject.o"),
        ("sym.complex_type", complex_type, "complexobject.o"),
    ] {
        k.eq(
            &format!("{what} {s}: defining member"),
            o.index.get(*s).map(String::as_str),
            Some(member),
        );
    }
    k.eq(
        "sym.code_init / code_fini defined by codeobject.o",
        (
            defines(&o.syms["codeobject.o"], code_init),
            defines(&o.syms["codeobject.o"], code_fini),
        ),
        (true, true),
    );
    // A per-string fini function: 3.11's _PyStaticUnicode_Dealloc; 3.12
    // has none (gcc's deepfreeze.o calls only the code fini).
    match str_fini {
        None => {
            let callees: Vec<&str> = df
                .iter()
                .filter(|s| s.undefined && !s.name.starts_with("Py") && !s.name.starts_with("_Py_"))
                .map(|s| s.name.as_str())
                .filter(|n| *n != l.runtime.symbol)
                .collect();
            k.eq(
                "sym.str_fini None: deepfreeze.o calls only the code init/fini",
                callees.iter().copied().collect::<BTreeSet<_>>(),
                [*code_init, *code_fini].into_iter().collect(),
            );
            k.eq(
                "sym.str_fini None: no _PyStaticUnicode_Dealloc in 3.12",
                o.index.get("_PyStaticUnicode_Dealloc"),
                None,
            );
        }
        Some(s) => {
            k.is(&format!("sym.str_fini {s}"), references(df, s), || {
                "gcc's deepfreeze.o does not reference it".into()
            });
        }
    }
    // Defined by the frozen object, used by the rest of libpython.
    for (what, s, user) in [
        ("sym.deepfreeze_init", deepfreeze_init, "pylifecycle.o"),
        ("sym.deepfreeze_fini", deepfreeze_fini, "pylifecycle.o"),
    ] {
        k.is(
            &format!("{what} {s}: defined by deepfreeze.o"),
            defines(df, s),
            || "gcc's deepfreeze.o does not define it".into(),
        );
        k.is(
            &format!("{what} {s}: used by {user}"),
            references(&o.syms[user], s),
            || "not referenced".into(),
        );
    }
    match next_func_version {
        Some(s) => {
            let d = df.iter().find(|x| x.name == *s && !x.undefined);
            k.eq(
                &format!("sym.next_func_version {s}: defined by deepfreeze.o, 4 bytes"),
                d.map(|d| (d.global, d.size)),
                Some((true, 4)),
            );
            k.is(
                &format!("sym.next_func_version {s}: used by codeobject.o"),
                references(&o.syms["codeobject.o"], s),
                || "not referenced".into(),
            );
            k.eq(
                &format!("sym.next_func_version {s}: DWARF type size"),
                o.code.variable_size(s),
                Ok(4),
            );
        }
        None => k.is("sym.next_func_version", false, || {
            "table has None; 3.12 has _Py_next_func_version".into()
        }),
    }
    k.finish(35);
}

fn header(o: &Oracle, rel: &str) -> String {
    let p = o.py.include.join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("ORACLE MISSING: {}: {e}", p.display()))
}

/// The value text of `#define NAME value` lines in a header, in order.
fn defines_of(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix('#')?.trim_start();
            let rest = rest.strip_prefix("define")?.trim_start();
            let rest = rest.strip_prefix(name)?;
            if !rest.starts_with([' ', '\t']) {
                return None;
            }
            Some(rest.trim().to_owned())
        })
        .collect()
}

fn parse_c_int(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| panic!("not a C integer literal: {s:?}"))
}

/// Facts with no DWARF: the interpreter's opcode and magic number, and
/// macros from the installed headers (checked against data where the data
/// shows them).
#[test]
fn interpreter_facts() {
    let o = oracle();
    let l = layout();
    let mut k = Checker::default();

    // .pyc magic: first two bytes, little endian; then b"\r\n".
    k.eq(
        "pyc_magic",
        l.pyc_magic.to_le_bytes().to_vec(),
        o.py.magic[..2].to_vec(),
    );
    k.eq(
        "pyc_magic suffix",
        o.py.magic[2..].to_vec(),
        b"\r\n".to_vec(),
    );
    k.eq(
        "code.opcode_resume",
        u32::from(l.code.opcode_resume),
        u32::from(o.py.resume),
    );

    // _Py_IMMORTAL_REFCNT (Include/object.h): UINT_MAX when
    // SIZEOF_VOID_P > 4, UINT_MAX >> 2 otherwise.
    let obj_h = header(o, "object.h");
    let defs = defines_of(&obj_h, "_Py_IMMORTAL_REFCNT");
    k.eq(
        "head.static_refcnt: _Py_IMMORTAL_REFCNT definitions in object.h",
        defs.clone(),
        vec!["UINT_MAX".to_string(), "(UINT_MAX >> 2)".to_string()],
    );
    let before_first = obj_h
        .split("#define _Py_IMMORTAL_REFCNT")
        .next()
        .unwrap_or("");
    let guard = before_first
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("#if"))
        .unwrap_or("");
    k.eq(
        "head.static_refcnt: 64-bit branch guard",
        guard.split_whitespace().collect::<Vec<_>>(),
        vec!["#if", "SIZEOF_VOID_P", ">", "4"],
    );
    k.eq(
        "head.static_refcnt (UINT_MAX)",
        l.head.static_refcnt,
        u64::from(u32::MAX),
    );
    // ... and on data: the refcount of the runtime's static objects.
    let first_int = u64::from(l.runtime.small_ints);
    k.eq(
        "head.static_refcnt (ob_refcnt of _PyRuntime small_ints[0])",
        l.head.static_refcnt,
        rd_field(&o.runtime, first_int, l.head.refcnt),
    );
    // Immortal objects exist in 3.12 (_Py_IsImmortal).
    k.eq(
        "head.immortal",
        l.head.immortal,
        obj_h.contains("_Py_IsImmortal("),
    );

    // CO_FAST_* (Include/internal/pycore_code.h).
    let code_h = header(o, "internal/pycore_code.h");
    for (what, table, macro_) in [
        ("code.co_fast_local", l.code.co_fast_local, "CO_FAST_LOCAL"),
        ("code.co_fast_cell", l.code.co_fast_cell, "CO_FAST_CELL"),
        ("code.co_fast_free", l.code.co_fast_free, "CO_FAST_FREE"),
    ] {
        let d = defines_of(&code_h, macro_);
        k.eq(&format!("{what} ({macro_} definitions)"), d.len(), 1);
        if let Some(v) = d.first() {
            k.eq(
                &format!("{what} ({macro_})"),
                u64::from(table),
                parse_c_int(v),
            );
        }
    }

    // _PY_NSMALLNEGINTS / _PY_NSMALLPOSINTS (internal/pycore_global_objects.h);
    // the array length and values are checked on DWARF and data elsewhere.
    let glob_h = header(o, "internal/pycore_global_objects.h");
    let one = |m: &str| -> u64 {
        let d = defines_of(&glob_h, m);
        assert_eq!(d.len(), 1, "{m}: {d:?}");
        parse_c_int(&d[0])
    };
    k.eq(
        "runtime.small_int_neg (_PY_NSMALLNEGINTS)",
        l.runtime.small_int_neg as u64,
        one("_PY_NSMALLNEGINTS"),
    );
    k.eq(
        "runtime.small_int_pos (_PY_NSMALLPOSINTS - 1)",
        l.runtime.small_int_pos as u64,
        one("_PY_NSMALLPOSINTS") - 1,
    );
    k.finish(14);
}

// ---------------------------------------------------------------------------
// Negative checks: the machinery must be able to fail.

#[test]
fn lookups_of_missing_things_fail() {
    let o = oracle();
    let c = &o.code;
    assert!(c.member("PyCodeObject", "co_no_such_member").is_err());
    assert!(c
        .member_path_offset("PyCodeObject", "co_consts.nope")
        .is_err());
    assert!(c.sizeof("NoSuchType_pyfreeze").is_err());
    assert!(c.struct_layout("NoSuchType_pyfreeze").is_err());
    assert!(c.bitfield("PyASCIIObject", "length").is_err());
    assert!(c.array("PyASCIIObject", "length").is_err());
    assert!(o
        .life
        .member(
            "_PyRuntimeState",
            "static_objects.singletons.small_ints[262]"
        )
        .is_err());
    assert!(o.frozen.variable("_PyImport_NoSuchTable").is_err());
    // And a few positive sanity values that a broken reader would not give.
    assert_eq!(c.member_path_offset("PyObject", "ob_type"), Ok(8));
    assert_eq!(
        o.life.member_path_offset(
            "_PyRuntimeState",
            "static_objects.singletons.small_ints[1].long_value"
        ),
        Ok(u64::from(layout().runtime.small_ints) + 32 + 16)
    );
    let layout_ = c.struct_layout("PyObject").unwrap();
    assert_eq!(
        layout_
            .iter()
            .map(|m| (m.name.as_str(), m.offset, m.size))
            .collect::<Vec<_>>(),
        vec![("", 0, 8), ("ob_type", 8, 8)],
        "PyObject = {{ anonymous union {{ ob_refcnt, ob_refcnt_split }}, ob_type }}"
    );
}

#[test]
fn wrong_values_are_detected() {
    let o = oracle();
    let c = &o.code;
    let mut k = Checker::default();
    k.field(
        "wrong offset",
        Field { off: 25, size: 8 },
        c,
        "PyCodeObject",
        "co_consts",
    );
    k.field(
        "wrong size",
        Field { off: 24, size: 4 },
        c,
        "PyCodeObject",
        "co_consts",
    );
    k.field(
        "missing",
        Field { off: 0, size: 8 },
        c,
        "PyCodeObject",
        "co_nope",
    );
    k.sizeof("wrong sizeof", 199, c, "PyCodeObject");
    k.offset("right", 24, c, "PyCodeObject", "co_consts");
    assert_eq!(k.errors.len(), 4, "{:?}", k.errors);

    // The global string check rejects a corrupted table in each way.
    let l = layout();
    let good: Vec<(&str, u32)> = l.runtime.global_strings.to_vec();
    assert!(check_global_strings(o, l, &good).is_empty());
    let mut dropped = good.clone();
    dropped.remove(10);
    assert!(check_global_strings(o, l, &dropped)
        .iter()
        .any(|e| e.contains("missing from the table")));
    let mut moved = good.clone();
    moved[3].1 += 8;
    assert!(check_global_strings(o, l, &moved)
        .iter()
        .any(|e| e.contains("no _Py_global_strings member starts there")));
    let alt = format!("{}X", good[100].0);
    let mut renamed: Vec<(&str, u32)> = good.clone();
    renamed[100].0 = &alt;
    assert!(check_global_strings(o, l, &renamed)
        .iter()
        .any(|e| e.contains("_PyRuntime holds")));
    let mut swapped = good;
    swapped.swap(5, 6);
    assert!(check_global_strings(o, l, &swapped)
        .iter()
        .any(|e| e.contains("not strictly sorted")));
}
