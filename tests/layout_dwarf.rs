//! Checks the per-version layout tables (`pyfreeze_obj::layout`, for 3.12
//! and 3.11) against the real thing: for each version, the DWARF and the
//! data of the object files inside pyenv's `libpython3.X.a` (3.12.1 and
//! 3.11.7), gcc's own `deepfreeze.o` in that archive, the installed headers
//! and the interpreter.
//!
//! Every value of a table is checked (the table structs are destructured
//! without `..`, so a new table field does not compile until it gets a
//! check here). The checks are written once and run per version (the
//! `py312::` and `py311::` tests): what differs between versions comes from
//! the table itself (`Option` fields present or absent, the `IntSize`
//! variant, ...); what a table cannot say (where the runtime's singletons
//! live, which `state` bit the static one is, where the headers define the
//! static refcount, which macro gives a fixed code field) is a small
//! [`Version`] record. The oracles must exist: when one is missing the
//! tests fail, they never skip.
//!
//! Sources, per fact:
//! - struct offsets and sizes: DWARF of `codeobject.o` (object types,
//!   `_PyInterpreterFrame`), `complexobject.o` (`PyComplexObject`),
//!   `frozen.o` (`struct _frozen`) and `pylifecycle.o` (`_PyRuntimeState`);
//! - the shared objects inside `_PyRuntime`: the static initializer in
//!   `pylifecycle.o` and its relocations;
//! - the global string table: DWARF member offsets plus initializer bytes;
//! - symbol names: the archive's symbol index and the members' symbol tables;
//! - what the generator puts where: the data, relocations and code of gcc's
//!   `deepfreeze.o` (reference counts, `state` bits, fixed and derived code
//!   fields, that every field it fills is in the table, which runtime
//!   objects it shares, what the accessors, Init and Fini do and call);
//! - macros that leave no DWARF (the static refcount, `CO_FAST_*`,
//!   `_PY_NSMALL*INTS`, `QUICKENING_INITIAL_WARMUP_VALUE`): the installed
//!   headers, cross-checked with data where the data shows them;
//! - opcode `RESUME` and the `.pyc` magic: the interpreter itself;
//! - the code objects' runtime state: the members the per-code fini of
//!   Objects/codeobject.c clears (listed per version, as C source leaves no
//!   DWARF), checked against DWARF (pointers, and the only ones besides the
//!   table's) and the fini's machine code in `codeobject.o`;
//! - the module tables' contents (deep-frozen entries with or without their
//!   marshal bytes, the NULL custom table): `frozen.o`'s data and
//!   relocations;
//! - the per-architecture runtime shift: which members before the
//!   singletons embed a `pthread_mutex_t` (DWARF); the aarch64 value itself
//!   is verified by `tests/aarch64.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use pyfreeze_obj::arch::Arch;
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

        /// The direct members of struct/union member `m` (as returned by a
        /// query), with offsets from the start of the type `m` was found in.
        pub fn members_in(&self, m: &Member) -> Result<Vec<Member>> {
            let t = m.ty.ok_or_else(|| format!("{}: member of void", m.name))?;
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

        /// Whether member `m` (as returned by a query) is a pointer, after
        /// typedefs and qualifiers.
        pub fn is_pointer(&self, m: &Member) -> Result<bool> {
            if m.bits.is_some() {
                return Ok(false);
            }
            let t = m.ty.ok_or_else(|| format!("{}: member of void", m.name))?;
            Ok(self.die(self.strip(t)?)?.tag == gimli::DW_TAG_pointer_type)
        }

        /// Every object of typedef `name` that member `m` holds in place
        /// (itself, or nested in struct and union members and array
        /// elements; never behind a pointer): path below `m` (`.a.b[1]`,
        /// anonymous members as `.<anon>`), offset from the type `m` was
        /// found in, size.
        pub fn embedded(&self, m: &Member, name: &str) -> Result<Vec<Member>> {
            let mut out = Vec::new();
            if let Some(t) = m.ty {
                self.embedded_in(t, name, "", m.offset, &mut out)?;
            }
            Ok(out)
        }

        fn embedded_in(
            &self,
            ty: usize,
            name: &str,
            path: &str,
            offset: u64,
            out: &mut Vec<Member>,
        ) -> Result<()> {
            // Through typedefs and qualifiers, stopping at `name`.
            let mut t = ty;
            loop {
                let d = self.die(t)?;
                if d.tag == gimli::DW_TAG_typedef && d.name.as_deref() == Some(name) {
                    out.push(Member {
                        name: path.to_owned(),
                        offset,
                        size: self.sizeof_die(t)?,
                        bits: None,
                        ty: Some(t),
                    });
                    return Ok(());
                }
                match d.tag {
                    gimli::DW_TAG_typedef
                    | gimli::DW_TAG_const_type
                    | gimli::DW_TAG_volatile_type
                    | gimli::DW_TAG_restrict_type
                    | gimli::DW_TAG_atomic_type => match d.ty {
                        Some(n) => t = n,
                        None => return Ok(()),
                    },
                    _ => break,
                }
            }
            let s = self.strip(t)?;
            let d = self.die(s)?;
            match d.tag {
                gimli::DW_TAG_structure_type
                | gimli::DW_TAG_union_type
                | gimli::DW_TAG_class_type => {
                    for m in self.members_of(s)? {
                        let (Some(mt), None) = (m.ty, m.bits) else {
                            continue;
                        };
                        let seg = if m.name.is_empty() { "<anon>" } else { &m.name };
                        self.embedded_in(
                            mt,
                            name,
                            &format!("{path}.{seg}"),
                            offset + m.offset,
                            out,
                        )?;
                    }
                }
                gimli::DW_TAG_array_type => {
                    let elem =
                        d.ty.ok_or_else(|| format!("{}: array of nothing", self.object))?;
                    // All dimensions flattened (a flexible array holds
                    // nothing in place); element 0 is walked once, every
                    // element holds the same.
                    let mut n = 1u64;
                    for c in d.children.iter().map(|c| &self.dies[c]) {
                        if c.tag == gimli::DW_TAG_subrange_type {
                            n *= c.count.unwrap_or(0);
                        }
                    }
                    let stride = self.sizeof_die(elem)?;
                    let mut first = Vec::new();
                    self.embedded_in(elem, name, "", 0, &mut first)?;
                    for i in 0..n {
                        for f in &first {
                            out.push(Member {
                                name: format!("{path}[{i}]{}", f.name),
                                offset: offset + i * stride + f.offset,
                                ..f.clone()
                            });
                        }
                    }
                }
                _ => {}
            }
            Ok(())
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
// The versions: what the checks need to know beyond the tables

/// Where to look for one CPython version's facts. Everything that can come
/// from the table does; this holds only what a table cannot say.
struct Version {
    /// The table's `major.minor`.
    table: (u8, u8),
    /// The pyenv build that is the oracle.
    pyenv: &'static str,
    /// Path of the runtime's singletons inside `_PyRuntimeState`.
    singletons: &'static str,
    /// The bit field of `PyASCIIObject.state` that `str_.static_bits` sets.
    static_bit: &'static str,
    /// Where the headers define the static objects' reference count.
    refcnt: RefcntSource,
    /// The `PyCodeObject` members the table's `code.fixed` sets, in its
    /// order, each with the macro of `internal/pycore_code.h` giving the
    /// value.
    fixed: &'static [(&'static str, &'static str)],
    /// The `PyCodeObject` members the table's `code.runtime_state` lists,
    /// in its order: the pointers the version's per-code fini
    /// (`sym.code_fini`, Objects/codeobject.c) clears besides restoring the
    /// bytecode. C source leaves no DWARF, so the list is data here; the
    /// function's machine code in codeobject.o corroborates it (it stores
    /// NULL at exactly these offsets).
    runtime_state: &'static [&'static str],
    /// Every `pthread_mutex_t` inside `_PyRuntimeState` before the member
    /// holding the singletons (paths from `_PyRuntimeState`): glibc's
    /// mutex is 40 bytes on x86_64 and 48 on aarch64, so each one moves
    /// the shared objects by 8 bytes on aarch64 (`runtime.arch_shift`).
    mutexes: &'static [&'static str],
    oracle: OnceLock<Oracle>,
}

/// Where the headers define the reference count of static objects.
enum RefcntSource {
    /// `#define NAME ...` in `header`: all its definitions in order; the
    /// first one is under `#if SIZEOF_VOID_P > 4` (64-bit targets).
    Macro {
        header: &'static str,
        name: &'static str,
        defs: &'static [&'static str],
    },
    /// `.ob_refcnt = N` inside the body of initializer macro `name`.
    InitMacro {
        header: &'static str,
        name: &'static str,
    },
}

static PY312: Version = Version {
    table: (3, 12),
    pyenv: "3.12.1",
    singletons: "static_objects.singletons",
    static_bit: "statically_allocated",
    refcnt: RefcntSource::Macro {
        header: "object.h",
        name: "_Py_IMMORTAL_REFCNT",
        defs: &["UINT_MAX", "(UINT_MAX >> 2)"],
    },
    fixed: &[],
    // Objects/codeobject.c of 3.12, _PyStaticCode_Fini(PyCodeObject *co):
    // deopt_code(co, _PyCode_CODE(co)); PyMem_Free(co->co_extra); frees
    // co->_co_cached's contents and sets co->_co_cached = NULL;
    // co->co_extra = NULL; clears weak references and sets
    // co->co_weakreflist = NULL; free_monitoring_data(co->_co_monitoring);
    // co->_co_monitoring = NULL.
    runtime_state: &["co_weakreflist", "_co_cached", "_co_monitoring", "co_extra"],
    // 3.12's locks before static_objects are PyThread_type_lock pointers.
    mutexes: &[],
    oracle: OnceLock::new(),
};

static PY311: Version = Version {
    table: (3, 11),
    pyenv: "3.11.7",
    singletons: "global_objects.singletons",
    static_bit: "ready",
    refcnt: RefcntSource::InitMacro {
        header: "internal/pycore_object.h",
        name: "_PyObject_IMMORTAL_INIT",
    },
    fixed: &[("co_warmup", "QUICKENING_INITIAL_WARMUP_VALUE")],
    // Objects/codeobject.c of 3.11, _PyStaticCode_Dealloc(PyCodeObject *co):
    // deopt_code(_PyCode_CODE(co), Py_SIZE(co)); co->co_warmup =
    // QUICKENING_INITIAL_WARMUP_VALUE; PyMem_Free(co->co_extra);
    // Py_CLEAR(co->_co_code); co->co_extra = NULL; clears weak references
    // and sets co->co_weakreflist = NULL; frees co->_co_linearray and sets
    // it to NULL.
    runtime_state: &["co_weakreflist", "_co_code", "_co_linearray", "co_extra"],
    // struct _gil_runtime_state (internal/pycore_gil.h) embeds two
    // PyMUTEX_T, which internal/pycore_condvar.h defines as pthread_mutex_t.
    mutexes: &["ceval.gil.mutex", "ceval.gil.switch_mutex"],
    oracle: OnceLock::new(),
};

/// The contract of the version `l` is the table of.
fn contract_of(l: &Layout) -> &'static pyfreeze_obj::version::Contract {
    pyfreeze_obj::version::Version::get(l.version.0, l.version.1)
        .unwrap()
        .contract
}

impl Version {
    fn layout(&self) -> &'static Layout {
        let (major, minor) = self.table;
        pyfreeze_obj::version::Version::get(major, minor)
            .unwrap_or_else(|e| panic!("no {major}.{minor} table: {}", e.message))
            .layout
    }

    fn oracle(&'static self) -> &'static Oracle {
        self.oracle.get_or_init(|| load_oracle(self))
    }

    /// `3.12`
    fn short(&self) -> String {
        format!("{}.{}", self.table.0, self.table.1)
    }
}

// ---------------------------------------------------------------------------
// The oracle: one pyenv CPython build

struct Python {
    prefix: PathBuf,
    include: PathBuf,
    archive: PathBuf,
    resume: u8,
    magic: Vec<u8>,
    version: String,
}

fn find_python(v: &Version) -> Python {
    let want = v.pyenv;
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
        match Command::new(p).args(["prefix", want]).output() {
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
            "ORACLE MISSING: cannot find CPython {want} via `pyenv prefix {want}`; tried: \
             {tried:?}"
        )
    });
    let exe = prefix.join(format!("bin/python{}", v.short()));
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
    let archive = Path::new(lines[0]).join(format!("libpython{}.a", v.short()));
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

/// The code and data of one member of the archive: gcc's `deepfreeze.o`
/// (what CPython's generator made of the layouts), and `frozen.o` and
/// `codeobject.o` for a few checks.
struct ObjData {
    /// Contents of the code and data sections (`.text*`, `.data*`,
    /// `.rodata*`), by name.
    sections: HashMap<String, Vec<u8>>,
    /// Relocations of those sections: offset -> (target, addend); a
    /// section symbol is named after its section.
    relocs: HashMap<String, HashMap<u64, (String, i64)>>,
    /// Sorted offsets of those relocations, per section.
    reloc_offsets: HashMap<String, Vec<u64>>,
    syms: Vec<Sym>,
}

fn load_obj(member: &str, bytes: &[u8]) -> ObjData {
    use object::{Object, ObjectSection};
    let obj = object::File::parse(bytes).unwrap_or_else(|e| panic!("{member}: {e}"));
    let mut sections = HashMap::new();
    let mut relocs = HashMap::new();
    for sec in obj.sections() {
        let name = sec.name().unwrap_or("").to_owned();
        if ![".text", ".data", ".rodata"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let data = sec
            .data()
            .unwrap_or_else(|e| panic!("{member} {name}: {e}"));
        let r = dwarf::relocation_targets(&obj, &name)
            .unwrap_or_else(|e| panic!("{member} {name}: {e}"));
        sections.insert(name.clone(), data.to_vec());
        relocs.insert(name, r);
    }
    let reloc_offsets = relocs
        .iter()
        .map(|(name, r)| {
            let mut v: Vec<u64> = r.keys().copied().collect();
            v.sort_unstable();
            (name.clone(), v)
        })
        .collect();
    ObjData {
        sections,
        relocs,
        reloc_offsets,
        syms: dwarf::symbols(&obj),
    }
}

/// Everything read once per version and shared by its tests.
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
    /// gcc's deepfreeze.o.
    gcc: ObjData,
    /// frozen.o: the module tables' data.
    frozen_data: ObjData,
    /// codeobject.o: the per-code fini's machine code.
    code_data: ObjData,
    /// The members of the global string table (`global_string_members`).
    global_strings: OnceLock<Vec<(String, u64, u64)>>,
}

fn load_oracle(v: &Version) -> Oracle {
    let py = find_python(v);
    assert_eq!(
        py.version,
        v.pyenv,
        "{} is not CPython {}",
        py.prefix.display(),
        v.pyenv
    );
    let ar = Archive::open(&py.archive).unwrap_or_else(|e| panic!("ORACLE MISSING: {e}"));
    let member = |n: &str| ar.member(n).unwrap_or_else(|e| panic!("{e}"));
    let parse = |n: &'static str| {
        let bytes = member(n);
        move || Types::parse(n, bytes.bytes()).unwrap_or_else(|e| panic!("{e}"))
    };
    let df_bytes = member("deepfreeze.o");
    // The DWARF parses are independent: run them in parallel.
    let (code, complex, frozen, life, gcc) = std::thread::scope(|s| {
        let a = s.spawn(parse("codeobject.o"));
        let b = s.spawn(parse("complexobject.o"));
        let c = s.spawn(parse("frozen.o"));
        let d = s.spawn(parse("pylifecycle.o"));
        let gcc = load_obj("deepfreeze.o", df_bytes.bytes());
        (
            a.join().unwrap(),
            b.join().unwrap(),
            c.join().unwrap(),
            d.join().unwrap(),
            gcc,
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
    syms.insert("deepfreeze.o", gcc.syms.clone());
    for n in ["pylifecycle.o", "codeobject.o", "frozen.o", "import.o"] {
        let bytes = member(n);
        let obj = object::File::parse(bytes.bytes()).unwrap_or_else(|e| panic!("{n}: {e}"));
        syms.insert(n, dwarf::symbols(&obj));
    }
    let index = ar.symbol_index().unwrap_or_else(|e| panic!("{e}"));
    let frozen_data = load_obj("frozen.o", member("frozen.o").bytes());
    let code_data = load_obj("codeobject.o", member("codeobject.o").bytes());
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
        gcc,
        frozen_data,
        code_data,
        global_strings: OnceLock::new(),
    }
}

/// A field-by-field copy of a table, for the negative tests to corrupt.
fn clone_layout(l: &Layout) -> Layout {
    Layout {
        version: l.version,
        pyc_magic: l.pyc_magic,
        ptr_size: l.ptr_size,
        head: HeadLayout { ..l.head },
        code: CodeLayout { ..l.code },
        str_: StrLayout { ..l.str_ },
        bytes: BytesLayout { ..l.bytes },
        int: IntLayout {
            size: match &l.int.size {
                IntSize::LvTag(f) => IntSize::LvTag(*f),
                IntSize::SignedObSize => IntSize::SignedObSize,
            },
            ..l.int
        },
        float: FloatLayout { ..l.float },
        tuple: TupleLayout { ..l.tuple },
        runtime: RuntimeLayout { ..l.runtime },
        sym: Symbols { ..l.sym },
        frozen: FrozenLayout { ..l.frozen },
    }
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

    /// A check over many items: passes when `bad` is empty.
    fn none_bad(&mut self, what: &str, bad: &[String]) {
        self.is(what, bad.is_empty(), || summarize(bad));
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
// Reading initialized data

fn rd(buf: &[u8], off: u64, size: usize) -> u64 {
    let o = off as usize;
    let mut b = [0u8; 8];
    b[..size].copy_from_slice(&buf[o..o + size]);
    u64::from_le_bytes(b)
}

fn rd_field(buf: &[u8], base: u64, f: Field) -> u64 {
    rd(buf, base + u64::from(f.off), f.size as usize)
}

/// A field read as a signed integer of its size.
fn rd_signed(buf: &[u8], base: u64, f: Field) -> i64 {
    let v = rd_field(buf, base, f);
    let bits = u32::from(f.size) * 8;
    if bits == 64 {
        v as i64
    } else {
        ((v << (64 - bits)) as i64) >> (64 - bits)
    }
}

/// The relocation target symbol at `off` inside `_PyRuntime`, if any.
fn reloc_at(o: &Oracle, off: u64) -> Option<&str> {
    o.runtime_relocs.get(&off).map(|(s, _)| s.as_str())
}

/// `state` word of a static string of `kind` per the table.
fn str_state(s: &StrLayout, kind: u64, ascii: bool) -> u64 {
    (kind << s.kind_shift)
        | (1 << s.compact_bit)
        | (u64::from(ascii) << s.ascii_bit)
        | u64::from(s.static_bits)
}

/// `state` word of a static ASCII string per the table.
fn ascii_state(s: &StrLayout) -> u64 {
    str_state(s, 1, true)
}

/// The size word of an int with sign `sign` (-1, 0, 1) and `ndigits`
/// digits, as the table encodes it: (field, value).
fn int_size_word(l: &Layout, sign: i64, ndigits: u64) -> (Field, u64) {
    match &l.int.size {
        IntSize::LvTag(f) => {
            let s = match sign {
                1 => 0,
                0 => 1,
                _ => 2,
            };
            (*f, (ndigits << 3) | s)
        }
        IntSize::SignedObSize => (l.head.size, (sign * ndigits as i64) as u64),
    }
}

/// Sign and digit count of the int at `base`, decoded per the table.
fn int_decode(l: &Layout, buf: &[u8], base: u64) -> Option<(i64, u64)> {
    match &l.int.size {
        IntSize::LvTag(f) => {
            let tag = rd_field(buf, base, *f);
            let sign = match tag & 3 {
                0 => 1,
                1 => 0,
                2 => -1,
                _ => return None,
            };
            Some((sign, tag >> 3))
        }
        IntSize::SignedObSize => {
            let n = rd_signed(buf, base, l.head.size);
            Some((n.signum(), n.unsigned_abs()))
        }
    }
}

/// Path of an int's digit array inside `PyLongObject`, per the table.
fn int_digits_path(l: &Layout) -> &'static str {
    match l.int.size {
        IntSize::LvTag(_) => "long_value.ob_digit",
        IntSize::SignedObSize => "ob_digit",
    }
}

/// Displacements of the 64-bit zero stores to memory (`movq $0,
/// disp32(%reg)`: REX.W [+B], C7, ModRM mod=10 reg=0 without SIB, disp32,
/// imm32 0) in function `func` of `obj`, sorted and deduplicated.
fn null_stores(obj: &ObjData, func: &str) -> Result<Vec<u64>, String> {
    let f = obj
        .syms
        .iter()
        .find(|s| s.name == func && !s.undefined && s.global && s.size > 0)
        .ok_or_else(|| format!("{func}: not defined"))?;
    let sec = f.section.as_deref().unwrap_or("");
    let text = obj
        .sections
        .get(sec)
        .ok_or_else(|| format!("{func}: in unknown section {sec:?}"))?;
    let body = text
        .get(f.address as usize..(f.address + f.size) as usize)
        .ok_or_else(|| format!("{func}: outside its section"))?;
    let mut out: Vec<u64> = body
        .windows(11)
        .filter(|w| {
            matches!(w[0], 0x48 | 0x49)
                && w[1] == 0xc7
                && w[2] & 0xf8 == 0x80
                && w[2] & 7 != 4
                && w[7..] == [0, 0, 0, 0]
        })
        .map(|w| u64::from(u32::from_le_bytes([w[3], w[4], w[5], w[6]])))
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn round8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

// ---------------------------------------------------------------------------
// The checks, each for one version. The tests at the end run them.

/// Object layouts: header, code, str, bytes, int, float, complex, tuple.
fn check_object_layouts(v: &Version, o: &Oracle, l: &Layout, k: &mut Checker) {
    let c = &o.code;
    let py = v.short();
    let Layout {
        version,
        pyc_magic: _, // check_interpreter_facts
        ptr_size,
        head,
        code,
        str_,
        bytes,
        int,
        float,
        tuple,
        runtime: _, // check_runtime_singletons, check_global_strings
        sym: _,     // check_symbols
        frozen: _,  // check_frozen_tables
    } = l;
    k.eq("version", *version, v.table);

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
        static_refcnt: _, // check_interpreter_facts, check_gcc_objects (data)
        immortal: _,      // check_interpreter_facts, check_gcc_code (accessors)
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
        runtime_state,
        opcode_resume: _, // check_interpreter_facts, check_gcc_objects
        co_fast_local: _, // check_interpreter_facts (header), check_gcc_objects
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
    // Code units are two bytes (the data checks count in them).
    k.eq("sizeof _Py_CODEUNIT", c.sizeof("_Py_CODEUNIT"), Ok(2));
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
    // Members some versions have: the table has a field exactly when the
    // struct has the member.
    for (what, f, member) in [
        ("code.framesize", framesize, "co_framesize"),
        ("code.version", co_version, "co_version"),
        ("code.firsttraceable", firsttraceable, "_co_firsttraceable"),
        ("code.nplaincellvars", nplaincellvars, "co_nplaincellvars"),
    ] {
        match f {
            Some(f) => k.field(what, *f, c, CO, member),
            None => k.is(what, c.member(CO, member).is_err(), || {
                format!("table has None, but {CO}.{member} exists in {py}")
            }),
        }
    }
    // Fields with a fixed value (3.11 co_warmup): the members this version
    // lists, in order; their values are checked on the headers
    // (check_interpreter_facts) and on gcc's data (check_gcc_objects).
    k.eq(
        "code.fixed: one entry per fixed member",
        fixed.len(),
        v.fixed.len(),
    );
    for ((f, _), (member, _)) in fixed.iter().zip(v.fixed) {
        k.field(&format!("code.fixed {member}"), *f, c, CO, member);
    }
    // Runtime state: the pointer members this version's code fini clears
    // besides restoring the bytecode (v.runtime_state, from
    // Objects/codeobject.c), in order; gcc leaves them NULL
    // (check_gcc_objects).
    k.eq(
        "code.runtime_state: one entry per member the code fini clears",
        runtime_state.len(),
        v.runtime_state.len(),
    );
    for (f, member) in runtime_state.iter().zip(v.runtime_state) {
        let what = format!("code.runtime_state {member}");
        k.field(&what, *f, c, CO, member);
        if let Some(m) = k.get(&what, c.member(CO, member)) {
            k.eq(&format!("{what}: a pointer"), c.is_pointer(&m), Ok(true));
        }
    }
    // No other pointer: every pointer member of PyCodeObject is a field
    // the table has, filled by the generator or runtime state.
    let mut want: Vec<u64> = [
        consts,
        names,
        exceptiontable,
        localsplusnames,
        localspluskinds,
        filename,
        name,
        qualname,
        linetable,
    ]
    .into_iter()
    .chain(runtime_state.iter())
    .map(|f| u64::from(f.off))
    .collect();
    want.sort_unstable();
    if let Some(members) = k.get("code: PyCodeObject members", c.struct_layout(CO)) {
        let mut pointers = Vec::new();
        for m in &members {
            if let Some(true) = k.get(
                &format!("code: is {CO}.{} a pointer", m.name),
                c.is_pointer(m),
            ) {
                pointers.push((m.offset, m.name.clone()));
            }
        }
        let got: Vec<u64> = pointers.iter().map(|p| p.0).collect();
        k.is(
            "code: the pointer members of PyCodeObject are exactly the table's pointer fields \
             and runtime_state",
            got == want,
            || format!("DWARF has pointers {pointers:?}, the table offsets {want:?}"),
        );
    }
    // The machine code of the code fini in codeobject.o corroborates the
    // member list: it stores a 64-bit NULL (`movq $0, disp32(%reg)`) at
    // exactly the runtime_state offsets.
    if let Some(stores) = k.get(
        "code.runtime_state: code fini's NULL stores",
        null_stores(&o.code_data, contract_of(l).code_fini_hook().unwrap()),
    ) {
        let mut want: Vec<u64> = runtime_state.iter().map(|f| u64::from(f.off)).collect();
        want.sort_unstable();
        k.eq(
            &format!(
                "code.runtime_state: offsets {} (codeobject.o) stores NULL at",
                contract_of(l).code_fini_hook().unwrap()
            ),
            want,
            stores,
        );
    }
    // FRAME_SPECIALS_SIZE = (sizeof(_PyInterpreterFrame) - 1) / sizeof(PyObject *),
    // used only for co_framesize.
    match framesize {
        Some(_) => {
            for t in [&o.code, &o.life] {
                if let Some(s) = k.get(
                    "code.frame_specials_size",
                    t.sizeof("struct _PyInterpreterFrame"),
                ) {
                    k.eq(
                        &format!(
                            "code.frame_specials_size ((sizeof _PyInterpreterFrame={s} - 1) / \
                             8, {})",
                            t.object
                        ),
                        u64::from(*frame_specials_size),
                        (s - 1) / u64::from(*ptr_size),
                    );
                }
            }
        }
        None => k.eq(
            "code.frame_specials_size (unused without co_framesize: 0)",
            *frame_specials_size,
            0,
        ),
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
    let sb = v.static_bit;
    if let Some(b) = k.get("str.static_bits", c.bitfield(AS, &format!("state.{sb}"))) {
        k.eq(&format!("str.static_bits (state.{sb}, 1 bit)"), b.size, 1);
        k.eq(
            &format!("str.static_bits (1 << state.{sb} bit offset)"),
            u64::from(*static_bits),
            1u64 << b.offset,
        );
    }
    // wstr / wstr_length: 3.11 has them, 3.12 removed them.
    match wstr {
        None => {
            for m in ["wstr", "wstr_length"] {
                k.is(
                    &format!("str.wstr None: no {m}"),
                    c.member(AS, m).is_err() && c.member(CU, m).is_err(),
                    || format!("table has None, but {m} exists in {py}"),
                );
            }
        }
        Some((p, len)) => {
            k.field("str.wstr pointer", *p, c, AS, "wstr");
            k.field("str.wstr length", *len, c, CU, "wstr_length");
            k.eq(
                "str.wstr pointer type",
                c.member_type_name(AS, "wstr"),
                Ok("*wchar_t".into()),
            );
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
    const LO: &str = "PyLongObject";
    match isize_ {
        IntSize::LvTag(f) => {
            k.field("int.size (lv_tag)", *f, c, LO, "long_value.lv_tag");
            k.eq(
                "int.size LvTag: PyLongObject.ob_base is a PyObject",
                c.member_type_name(LO, "ob_base"),
                Ok("PyObject".into()),
            );
        }
        IntSize::SignedObSize => {
            k.field("int.size (ob_size)", head.size, c, LO, "ob_base.ob_size");
            k.eq(
                "int.size SignedObSize: PyLongObject.ob_base is a PyVarObject",
                c.member_type_name(LO, "ob_base"),
                Ok("PyVarObject".into()),
            );
            k.is(
                "int.size SignedObSize: no long_value",
                c.member(LO, "long_value").is_err(),
                || format!("{LO}.long_value exists in {py}"),
            );
        }
    }
    let dpath = int_digits_path(l);
    k.offset("int.digits", *digits, c, LO, dpath);
    if let Some(a) = k.get("int.digit_size", c.array(LO, dpath)) {
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
    k.sizeof("int.min_size", *min_size, c, LO);
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
}

/// The runtime's shared objects inside `_PyRuntime`: DWARF offsets plus the
/// static initializer's bytes (which also exercise the object layouts on
/// real data). Whether the generator uses each kind of shared object at
/// all is decided by gcc's deepfreeze.o.
fn check_runtime_singletons(v: &Version, o: &Oracle, l: &Layout, k: &mut Checker) {
    let t = &o.life;
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
        global_strings: _, // check_global_strings
        arch_shift,
        known_on: _, // the refusal elsewhere is tested by tests/formats.rs and tests/cli.rs
    } = &l.runtime;
    const RT: &str = "_PyRuntimeState";
    let s_ = v.singletons;
    let py = v.short();
    let gcc_refs = gcc_runtime_refs(o, l);
    let refs_into = |off: u64, len: u64| gcc_refs.range(off..off + len).count();

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

    // ---- arch_shift
    // The offsets here are x86_64's (this DWARF's). On aarch64 Linux they
    // move by what the members before the singletons grow there: glibc's
    // pthread_mutex_t is 40 bytes on x86_64 and 48 on aarch64 (the other
    // locks are PyThread_type_lock pointers; pthread_cond_t is 48 bytes on
    // both; 3.12's threads._condattr_monotonic.val, a pthread_condattr_t,
    // grows from 4 to 8 bytes but into its struct's tail padding, and is
    // not looked at here). The x86_64 DWARF cannot show aarch64 offsets: the aarch64 value
    // itself is verified by tests/aarch64.rs (graph equality with gcc's
    // arm64 deepfreeze.o of Debian's 3.11.2, whose pointers into
    // _PyRuntime carry the shift). Checked here: which members embed a
    // mutex (v.mutexes: 3.11's ceval.gil, none before 3.12's
    // static_objects) and that the table's shift is what they add.
    /// glibc's `__SIZEOF_PTHREAD_MUTEX_T` on aarch64 (LP64):
    /// sysdeps/aarch64/nptl/bits/pthreadtypes-arch.h.
    const AARCH64_MUTEX: u64 = 48;
    let top = s_.split('.').next().unwrap_or(s_);
    if let (Some(members), Some(holder)) = (
        k.get("runtime.arch_shift: _PyRuntimeState", t.struct_layout(RT)),
        k.get("runtime.arch_shift: singletons' member", t.member(RT, top)),
    ) {
        let mut found = Vec::new();
        let mut all = 0;
        for m in &members {
            if let Some(e) = k.get(
                &format!("runtime.arch_shift: mutexes in {}", m.name),
                t.embedded(m, "pthread_mutex_t"),
            ) {
                all += e.len();
                if m.offset < holder.offset {
                    found.extend(
                        e.into_iter()
                            .map(|e| (format!("{}{}", m.name, e.name), e.size)),
                    );
                }
            }
        }
        // The walk finds mutexes at all (after the singletons, if not
        // before: the interpreter states embed their GIL's).
        k.is(
            "runtime.arch_shift: the DWARF walk finds pthread_mutex_t in _PyRuntimeState",
            all > 0,
            || "none found".into(),
        );
        k.eq(
            &format!("runtime.arch_shift: pthread_mutex_t members before {top}"),
            found.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            v.mutexes.to_vec(),
        );
        let x86 = k.get(
            "runtime.arch_shift: sizeof pthread_mutex_t",
            t.sizeof("pthread_mutex_t"),
        );
        k.eq(
            "runtime.arch_shift: sizeof pthread_mutex_t on x86_64",
            x86,
            Some(40),
        );
        k.eq(
            "runtime.arch_shift: each mutex found is a whole pthread_mutex_t",
            found.iter().filter(|(_, sz)| Some(*sz) != x86).count(),
            0,
        );
        let grow = found.len() as u64 * (AARCH64_MUTEX - x86.unwrap_or(AARCH64_MUTEX));
        let want: Vec<(Arch, u32)> = if grow == 0 {
            Vec::new()
        } else {
            vec![(Arch::Aarch64, grow as u32)]
        };
        k.eq(
            &format!(
                "runtime.arch_shift ({} mutexes before {top}, 8 bytes larger each on aarch64)",
                found.len()
            ),
            arch_shift.to_vec(),
            want,
        );
    }
    k.eq(
        "runtime.arch_shift: x86_64 (the DWARF's own offsets) does not move",
        l.runtime_shift(Arch::X86_64),
        0,
    );

    // ---- small ints
    let neg = *small_int_neg;
    let pos = *small_int_pos;
    if let Some(a) = k.get(
        "runtime.small_ints",
        t.array(RT, &format!("{s_}.small_ints")),
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
        t.member_type_name(RT, &format!("{s_}.small_ints[0]")),
        Ok("PyLongObject".into()),
    );
    // Data: element i holds the int i - neg.
    let mut bad = Vec::new();
    for i in 0..(neg + pos + 1) {
        let val = i - neg;
        let base = u64::from(*small_ints) + i as u64 * u64::from(*small_int_stride);
        let (size_field, want_size) = int_size_word(l, val.signum(), u64::from(val != 0));
        let size = rd_field(&o.runtime, base, size_field);
        let digit = rd(
            &o.runtime,
            base + u64::from(l.int.digits),
            l.int.digit_size as usize,
        );
        let refcnt = rd_field(&o.runtime, base, l.head.refcnt);
        let ty = reloc_at(o, base + u64::from(l.head.type_.off));
        if size != want_size
            || digit != val.unsigned_abs()
            || refcnt != l.head.static_refcnt
            || ty != Some(l.sym.int_type)
        {
            bad.push(format!(
                "small_ints[{i}]: size word {size:#x} digit {digit} refcnt {refcnt:#x} type \
                 {ty:?} (want int {val}: size word {want_size:#x})"
            ));
        }
    }
    k.none_bad(
        "runtime.small_ints data (value i - small_int_neg, size word, digits, refcnt, type)",
        &bad,
    );

    // ---- bytes
    k.offset(
        "runtime.bytes_empty",
        *bytes_empty,
        t,
        RT,
        &format!("{s_}.bytes_empty"),
    );
    k.eq(
        "runtime.bytes_empty type",
        t.member_type_name(RT, &format!("{s_}.bytes_empty")),
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
    let bc_path = format!("{s_}.bytes_characters");
    match bytes_characters {
        Some((off, stride)) => {
            if let Some(a) = k.get("runtime.bytes_characters", t.array(RT, &bc_path)) {
                k.eq("runtime.bytes_characters offset", u64::from(*off), a.offset);
                k.eq(
                    "runtime.bytes_characters stride",
                    u64::from(*stride),
                    a.stride,
                );
                k.eq("runtime.bytes_characters length", Some(256), a.count);
            }
            // Element = { PyBytesObject ob; char eos; }: the object is at 0.
            let elem = format!("{bc_path}[0]");
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
            k.none_bad("bytes_characters data", &bad);
            k.is(
                "runtime.bytes_characters: gcc's deepfreeze.o uses them",
                refs_into(u64::from(*off), 256 * u64::from(*stride)) > 0,
                || "table has Some, but gcc's deepfreeze.o never refers to one".into(),
            );
        }
        None => {
            let n = t
                .array(RT, &bc_path)
                .map(|a| refs_into(a.offset, a.stride * a.count.unwrap_or(0)))
                .unwrap_or(0);
            k.eq(
                "runtime.bytes_characters None: gcc's deepfreeze.o refers to none",
                n,
                0,
            );
        }
    }

    // ---- tuple
    k.offset(
        "runtime.tuple_empty",
        *tuple_empty,
        t,
        RT,
        &format!("{s_}.tuple_empty"),
    );
    k.eq(
        "runtime.tuple_empty type",
        t.member_type_name(RT, &format!("{s_}.tuple_empty")),
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
        let path = format!("{s_}.strings.{member}");
        let Some((off, stride)) = table else {
            // Not shared by this version's generator: gcc's object never
            // refers to them (3.11 has the arrays, but deepfreeze.py does
            // not use them).
            let n = t
                .array(RT, &path)
                .map(|a| refs_into(a.offset, a.stride * a.count.unwrap_or(0)))
                .unwrap_or(0);
            k.eq(
                &format!("{what} None: gcc's deepfreeze.o refers to no strings.{member}[i]"),
                n,
                0,
            );
            continue;
        };
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
        k.is(
            &format!("{what}: gcc's deepfreeze.o uses them"),
            refs_into(u64::from(*off), 128 * u64::from(*stride)) > 0,
            || format!("table has Some, but gcc's {py} deepfreeze.o never refers to one"),
        );
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
                // Non-ASCII: utf8 filled (2 bytes) and relocated when the
                // table says so, else empty.
                let ulen = rd_field(&o.runtime, base, s.utf8_length);
                let uptr = reloc_at(o, base + u64::from(s.utf8.off));
                let ok = if contract_of(l).precompute.utf8 {
                    ulen == 2 && uptr.is_some()
                } else {
                    ulen == 0 && uptr.is_none()
                };
                (str_state(s, 1, false), ok)
            };
            if got_common != want_common || state != want_state || !utf8_ok {
                bad.push(format!(
                    "{member}[{i}]: {got_common:?} state {state:#x} (want {want_common:?} state \
                     {want_state:#x}) utf8 ok {utf8_ok}"
                ));
            }
        }
        k.none_bad(&format!("{what} data"), &bad);
    }
}

/// Offsets inside `_PyRuntime` that gcc's deepfreeze.o points to, with how
/// often.
fn gcc_runtime_refs(o: &Oracle, l: &Layout) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for (sec, rs) in &o.gcc.relocs {
        if sec.starts_with(".text") {
            continue;
        }
        for (t, a) in rs.values() {
            if t == l.runtime.symbol {
                *out.entry(*a as u64).or_default() += 1;
            }
        }
    }
    out
}

/// Members of `_Py_global_strings.literals` and `.identifiers`:
/// (member name, offset in `_PyRuntime`, DWARF size of its `_data`).
fn global_string_members<'o>(v: &Version, o: &'o Oracle) -> &'o [(String, u64, u64)] {
    o.global_strings.get_or_init(|| {
        const STR: &str = "_PyRuntimeState";
        let mut out = Vec::new();
        for group in ["literals", "identifiers"] {
            let path = format!("{}.strings.{group}", v.singletons);
            let members = o
                .life
                .members_at(STR, &path)
                .unwrap_or_else(|e| panic!("{e}"));
            for m in members {
                let data = o
                    .life
                    .members_in(&m)
                    .unwrap_or_else(|e| panic!("{path}.{}: {e}", m.name))
                    .into_iter()
                    .find(|d| d.name == "_data")
                    .unwrap_or_else(|| panic!("{path}.{}: no _data", m.name));
                out.push((format!("{group}.{}", m.name), m.offset, data.size));
            }
        }
        out
    })
}

/// Check a global string table against the DWARF members and the
/// initializer; returns the problems found.
fn check_global_strings(v: &Version, o: &Oracle, l: &Layout, table: &[(&str, u32)]) -> Vec<String> {
    let mut errs = Vec::new();
    let members = global_string_members(v, o);
    let by_off: BTreeMap<u64, &(String, u64, u64)> = members.iter().map(|m| (m.1, m)).collect();
    if by_off.len() != members.len() {
        errs.push("two _Py_global_strings members share an offset".into());
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
        if rd_field(&o.runtime, off, l.head.refcnt) != l.head.static_refcnt {
            errs.push(format!("{name}: ob_refcnt is not the static refcount"));
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

fn global_strings_match_runtime(v: &'static Version) {
    let o = v.oracle();
    let l = v.layout();
    let table = l.runtime.global_strings;
    let members = global_string_members(v, o);
    assert!(
        members.len() > 250,
        "only {} _Py_global_strings members found: DWARF walk broken?",
        members.len()
    );
    let errs = check_global_strings(v, o, l, table);
    assert!(
        errs.is_empty(),
        "{} problems in the {} global string table:\n  {}{}",
        errs.len(),
        v.short(),
        errs.iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  "),
        if errs.len() > 40 { "\n  ..." } else { "" }
    );
    assert_eq!(table.len(), members.len());
    // The lookup the writer uses shares what gcc's object shares: it finds
    // every entry but those CPython's generator cannot match (spelled with
    // an escape in the C source), which gcc's object copies.
    let view = GccView::new(o, l);
    let refs = gcc_runtime_refs(o, l);
    let copied: BTreeSet<Vec<u32>> = view
        .objects
        .iter()
        .filter(|(_, k)| **k == Kind::Str)
        .filter_map(|(&(sec, off), _)| view.str_value(&Ptr::Local(sec, off)))
        .collect();
    let to_str = |s: &str| pyfreeze_obj::graph::Str(s.chars().map(u32::from).collect());
    let (mut shared, mut not_shared) = (0, Vec::new());
    for &(s, off) in table {
        // The lookup compares code points with bytes: ASCII only.
        assert!(s.is_ascii(), "{s:?} is not ASCII");
        let value = to_str(s);
        let in_gcc = (
            refs.contains_key(&u64::from(off)),
            copied.contains(&value.0),
        );
        match l.global_string(&value) {
            Some(x) => {
                assert_eq!(x, off, "lookup of {s:?}");
                assert!(!in_gcc.1, "gcc's object copies {s:?}, the lookup shares it");
                shared += usize::from(in_gcc.0);
            }
            None => {
                assert!(
                    !in_gcc.0 && s.contains(|c: char| c < ' ' || c == '"' || c == '\\'),
                    "the lookup does not find {s:?} (gcc's object shares it: {})",
                    in_gcc.0
                );
                not_shared.push((s, in_gcc.1));
            }
        }
    }
    eprintln!(
        "{}: gcc's object shares {shared} of {} global strings; not found by the lookup \
         (value, copied by gcc): {not_shared:?}",
        v.short(),
        table.len()
    );
    assert!(
        shared > 100,
        "gcc's object shares only {shared} global strings"
    );
    assert_eq!(l.global_string(&to_str("surely not a global string")), None);
}

/// `struct _frozen` and the module tables in frozen.o.
fn check_frozen_tables(_v: &Version, o: &Oracle, l: &Layout, k: &mut Checker) {
    let t = &o.frozen;
    let FrozenLayout {
        entry_size,
        name,
        code,
        size,
        is_package,
        get_code,
        tables,
        aliases,
        custom,
        keeps_marshal,
    } = &l.frozen;
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

    // ---- custom: the embedder's table, a pointer variable frozen.o
    // defines (NULL: in .bss) and import.o reads.
    let fd = &o.frozen_data;
    k.eq(
        "frozen.custom (DWARF variable in frozen.o)",
        t.variable(custom),
        Ok(("*struct _frozen".to_string(), true)),
    );
    let sym = frozen_syms
        .iter()
        .find(|s| s.name == *custom && !s.undefined);
    k.eq(
        &format!("frozen.custom {custom}: defined by frozen.o, global, pointer-sized"),
        sym.map(|s| (s.global, s.size)),
        Some((true, u64::from(l.ptr_size))),
    );
    let null = sym.is_some_and(|s| {
        let sec = s.section.as_deref().unwrap_or("");
        sec.starts_with(".bss")
            || fd.sections.get(sec).is_some_and(|d| {
                d.get(s.address as usize..(s.address + s.size) as usize)
                    .is_some_and(|b| b.iter().all(|&x| x == 0))
                    && !fd.relocs[sec].contains_key(&s.address)
            })
    });
    k.is(
        &format!("frozen.custom {custom}: NULL in CPython's own build"),
        null,
        || format!("{sym:?} is not NULL"),
    );
    k.is(
        &format!("frozen.custom {custom}: used"),
        references(import_syms, custom),
        || "not referenced by import.o".into(),
    );
    k.is(
        "frozen.custom: neither a module table nor the aliases",
        !tables.contains(custom) && custom != aliases,
        || custom.to_string(),
    );

    // ---- keeps_marshal: the deep-frozen entries (those with a get_code)
    // of the module tables, from frozen.o's data and relocations: with
    // the marshal bytes (code -> a `_Py_M__*` array of frozen.o, size = its
    // size) or without (code NULL, size 0).
    let reloc = |sec: &str, off: u64| fd.relocs.get(sec).and_then(|r| r.get(&off));
    // Where a relocation points: (section, offset).
    let place = |(target, addend): &(String, i64)| -> Option<(String, u64)> {
        if fd.sections.contains_key(target) {
            return Some((target.clone(), *addend as u64));
        }
        let s = fd.syms.iter().find(|s| s.name == *target && !s.undefined)?;
        Some((s.section.clone()?, (s.address as i64 + addend) as u64))
    };
    let c_string = |(sec, off): (String, u64)| -> String {
        let d = fd.sections.get(&sec).map(Vec::as_slice).unwrap_or(&[]);
        let rest = d.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end]).into_owned()
    };
    let (mut deep, mut bad) = (0, Vec::new());
    for table in tables.iter().copied() {
        let start = frozen_syms
            .iter()
            .find(|s| s.name == table && !s.undefined)
            .and_then(|s| reloc(s.section.as_deref()?, s.address))
            .and_then(place);
        let Some((sec, first)) = start else {
            bad.push(format!("{table}: does not point into frozen.o"));
            continue;
        };
        let data = &fd.sections[&sec];
        let mut e = first;
        // Up to the sentinel (NULL name).
        while let Some(n) = reloc(&sec, e + u64::from(name.off)) {
            let module = place(n).map(c_string).unwrap_or_default();
            if reloc(&sec, e + u64::from(get_code.off)).is_some() {
                deep += 1;
                let code_ptr = reloc(&sec, e + u64::from(code.off));
                let sz = rd_signed(data, e, *size);
                let ok = if *keeps_marshal {
                    code_ptr
                        .filter(|(_, a)| *a == 0)
                        .and_then(|(target, _)| {
                            fd.syms.iter().find(|s| s.name == *target && !s.undefined)
                        })
                        .is_some_and(|s| s.size > 0 && sz == s.size as i64)
                } else {
                    code_ptr.is_none() && rd_field(data, e, *code) == 0 && sz == 0
                };
                if !ok {
                    bad.push(format!(
                        "{table} {module:?}: code -> {code_ptr:?}, size {sz}"
                    ));
                }
            }
            e += u64::from(*entry_size);
            if e + u64::from(*entry_size) > data.len() as u64 {
                bad.push(format!("{table}: no sentinel"));
                break;
            }
        }
    }
    k.is(
        "frozen.keeps_marshal: the tables have deep-frozen entries",
        deep > 20,
        || format!("only {deep}"),
    );
    k.none_bad(
        &format!(
            "frozen.keeps_marshal ({keeps_marshal}): deep-frozen entries {} their marshal bytes",
            if *keeps_marshal { "keep" } else { "drop" }
        ),
        &bad,
    );
}

fn defines(syms: &[Sym], name: &str) -> bool {
    syms.iter()
        .any(|s| s.name == name && !s.undefined && s.global)
}

fn references(syms: &[Sym], name: &str) -> bool {
    syms.iter().any(|s| s.name == name && s.undefined)
}

/// An accessor's name: `_Py_get_<module>_toplevel`.
fn is_accessor(name: &str) -> bool {
    name.starts_with("_Py_get_") && name.ends_with("_toplevel")
}

/// Symbol names: what the frozen object references must be defined in the
/// archive, and gcc's deepfreeze.o references exactly these; what it
/// defines must be what deepfreeze.o defines and the rest of libpython
/// uses.
fn check_symbols(_v: &Version, o: &Oracle, l: &Layout, k: &mut Checker) {
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
    } = &l.sym;
    // The version contract's runtime hooks and entry points.
    let c = contract_of(l);
    let (code_init, code_fini) = (&c.code_init_hook().unwrap(), &c.code_fini_hook().unwrap());
    let (str_fini, frozenset_new, decref) =
        (&c.str_fini_hook(), &c.hooks.frozenset_new, &c.hooks.decref);
    let next_func_version = &c.precompute.version_counter;
    let (deepfreeze_init, deepfreeze_fini) = (&c.entry.init, &c.entry.fini);
    let df = &o.syms["deepfreeze.o"];
    // Referenced by every deep-frozen object (gcc's included).
    let mut always: Vec<(&str, &str)> = vec![
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
        ("runtime.symbol", l.runtime.symbol),
    ];
    if let Some(s) = str_fini {
        always.push(("sym.str_fini", s));
    }
    for (what, s) in &always {
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
    // Public API our object calls (gcc's does not): declared PyAPI_FUNC in
    // the installed headers, defined by the member that implements it.
    for (what, s, h, member) in [
        (
            "sym.frozenset_new",
            frozenset_new,
            "setobject.h",
            "setobject.o",
        ),
        ("sym.decref", decref, "object.h", "object.o"),
    ] {
        k.eq(
            &format!("{what} {s}: defining member"),
            o.index.get(*s).map(String::as_str),
            Some(member),
        );
        k.is(
            &format!("{what} {s}: PyAPI_FUNC in {h}"),
            header(o, h).lines().any(|line| {
                line.trim_start().starts_with("PyAPI_FUNC(") && line.contains(&format!(" {s}("))
            }),
            || "not declared".into(),
        );
    }
    // gcc's deepfreeze.o references nothing else (so a table with None for
    // str_fini, or a missing symbol, shows here).
    let undefined: BTreeSet<&str> = df
        .iter()
        .filter(|s| s.undefined)
        .map(|s| s.name.as_str())
        .collect();
    let mut allowed: BTreeSet<&str> = always.iter().map(|(_, s)| *s).collect();
    allowed.extend([*float_type, *complex_type]);
    k.eq(
        "symbols deepfreeze.o references, beyond the table's",
        undefined.difference(&allowed).copied().collect::<Vec<_>>(),
        vec![],
    );
    k.eq(
        "sym.code_init / code_fini defined by codeobject.o",
        (
            defines(&o.syms["codeobject.o"], code_init),
            defines(&o.syms["codeobject.o"], code_fini),
        ),
        (true, true),
    );
    if let Some(s) = str_fini {
        k.eq(
            &format!("sym.str_fini {s}: defining member"),
            o.index.get(*s).map(String::as_str),
            Some("unicodeobject.o"),
        );
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
    // deepfreeze.o defines nothing else globally but the accessors.
    let defined: Vec<&str> = df
        .iter()
        .filter(|s| !s.undefined && s.global && !is_accessor(&s.name))
        .map(|s| s.name.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut want: BTreeSet<&str> = [*deepfreeze_init, *deepfreeze_fini].into();
    want.extend(*next_func_version);
    k.eq(
        "global symbols deepfreeze.o defines besides the accessors",
        want.into_iter().collect::<Vec<_>>(),
        defined,
    );
    k.is(
        "deepfreeze.o defines accessors",
        df.iter()
            .filter(|s| !s.undefined && s.global && is_accessor(&s.name))
            .count()
            > 20,
        || "fewer than 21 _Py_get_*_toplevel".into(),
    );
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
        None => k.eq(
            "sym.next_func_version None: codeobject.o has no function version counter",
            o.code.variable_size("_Py_next_func_version").ok(),
            None,
        ),
    }
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

/// The body of a (possibly multi-line) `#define NAME(...)` macro.
fn macro_body(text: &str, name: &str) -> Option<String> {
    let mut lines = text.lines();
    let first = lines.by_ref().find(|l| {
        l.trim_start()
            .strip_prefix('#')
            .map(|r| r.trim_start())
            .and_then(|r| r.strip_prefix("define"))
            .map(|r| r.trim_start())
            .and_then(|r| r.strip_prefix(name))
            .is_some_and(|r| r.starts_with([' ', '\t', '(']))
    })?;
    let mut body = first.to_owned();
    let mut cont = first.trim_end().ends_with('\\');
    for l in lines {
        if !cont {
            break;
        }
        body.push('\n');
        body.push_str(l);
        cont = l.trim_end().ends_with('\\');
    }
    Some(body)
}

fn parse_c_int(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| panic!("not a C integer literal: {s:?}"))
}

/// Evaluate a macro value made of integer literals, macros defined in
/// `text` (or `UINT_MAX`), parentheses and unary minus.
fn eval_macro(text: &str, expr: &str) -> Result<i64, String> {
    let e = expr.trim();
    if let Some(inner) = e.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        return eval_macro(text, inner);
    }
    if let Some(rest) = e.strip_prefix('-') {
        return Ok(-eval_macro(text, rest)?);
    }
    if e == "UINT_MAX" {
        return Ok(i64::from(u32::MAX));
    }
    if e.starts_with(|c: char| c.is_ascii_digit()) {
        return Ok(parse_c_int(e) as i64);
    }
    if e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        let d = defines_of(text, e);
        return match d.as_slice() {
            [one] => eval_macro(text, one),
            _ => Err(format!("{e}: {} definitions", d.len())),
        };
    }
    Err(format!("cannot evaluate {e:?}"))
}

/// Facts with no DWARF: the interpreter's opcode and magic number, and
/// macros from the installed headers (checked against data where the data
/// shows them).
fn check_interpreter_facts(v: &Version, o: &Oracle, l: &Layout, k: &mut Checker) {
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

    // The static refcount, as the headers define it.
    match &v.refcnt {
        RefcntSource::Macro {
            header: h,
            name,
            defs,
        } => {
            // e.g. _Py_IMMORTAL_REFCNT (Include/object.h): UINT_MAX when
            // SIZEOF_VOID_P > 4, UINT_MAX >> 2 otherwise.
            let text = header(o, h);
            k.eq(
                &format!("head.static_refcnt: {name} definitions in {h}"),
                defines_of(&text, name),
                defs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            );
            let before_first = text.split(&format!("#define {name}")).next().unwrap_or("");
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
            if let Some(v64) = k.get(
                "head.static_refcnt",
                eval_macro(&text, defs.first().copied().unwrap_or("")),
            ) {
                k.eq(
                    &format!("head.static_refcnt ({name})"),
                    l.head.static_refcnt,
                    v64 as u64,
                );
            }
        }
        RefcntSource::InitMacro { header: h, name } => {
            // e.g. _PyObject_IMMORTAL_INIT(type) sets `.ob_refcnt = N`.
            let body = macro_body(&header(o, h), name);
            let n = body.as_deref().and_then(|b| {
                let rest = b
                    .split(".ob_refcnt")
                    .nth(1)?
                    .trim_start()
                    .strip_prefix('=')?;
                let lit: String = rest
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                Some(parse_c_int(&lit))
            });
            k.eq(
                &format!("head.static_refcnt (.ob_refcnt in {name}, {h})"),
                Some(l.head.static_refcnt),
                n,
            );
        }
    }
    // ... and on data: the refcount of the runtime's static objects (gcc's
    // deepfreeze.o objects: check_gcc_objects).
    let first_int = u64::from(l.runtime.small_ints);
    k.eq(
        "head.static_refcnt (ob_refcnt of _PyRuntime small_ints[0])",
        l.head.static_refcnt,
        rd_field(&o.runtime, first_int, l.head.refcnt),
    );
    // Immortal objects exist from 3.12 on (_Py_IsImmortal); the accessors
    // show it too (check_gcc_code).
    k.eq(
        "head.immortal (object.h has _Py_IsImmortal)",
        l.head.immortal,
        header(o, "object.h").contains("_Py_IsImmortal("),
    );

    // CO_FAST_* and the fixed code values (Include/internal/pycore_code.h).
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
    for ((f, value), (member, macro_)) in l.code.fixed.iter().zip(v.fixed) {
        if let Some(m) = k.get(&format!("code.fixed {member}"), eval_macro(&code_h, macro_)) {
            let bits = u32::from(f.size) * 8;
            let mask = if bits == 64 {
                u64::MAX
            } else {
                (1 << bits) - 1
            };
            k.eq(
                &format!("code.fixed {member} value ({macro_} = {m})"),
                *value,
                m as u64 & mask,
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
}

// ---------------------------------------------------------------------------
// gcc's deepfreeze.o, read through the table

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Code,
    Str,
    Bytes,
    Int,
    Tuple,
    Float,
    Complex,
}

/// Where a pointer in gcc's object points.
#[derive(Clone, Debug, PartialEq)]
enum Ptr<'a> {
    /// Into one of its own sections: (section, offset).
    Local(&'a str, u64),
    /// Into the runtime variable: offset.
    Runtime(u64),
    /// Another symbol, with addend.
    Extern(&'a str, i64),
}

/// gcc's objects, found by their `ob_type` relocations, and the runtime's
/// shared objects the table knows.
struct GccView<'a> {
    o: &'a Oracle,
    l: &'a Layout,
    /// (section, offset) -> kind.
    objects: BTreeMap<(&'a str, u64), Kind>,
    /// Offset in `_PyRuntime` -> kind and name, for every shared object the
    /// table lists.
    runtime: BTreeMap<u64, (Kind, String)>,
    /// Data symbols: (section, address) -> (size, name).
    syms: BTreeMap<(&'a str, u64), (u64, &'a str)>,
    /// Problems seen while building the view.
    errors: Vec<String>,
}

impl<'a> GccView<'a> {
    fn new(o: &'a Oracle, l: &'a Layout) -> GccView<'a> {
        let g = &o.gcc;
        let s = &l.sym;
        let types: HashMap<&str, Kind> = [
            (s.code_type, Kind::Code),
            (s.str_type, Kind::Str),
            (s.bytes_type, Kind::Bytes),
            (s.int_type, Kind::Int),
            (s.tuple_type, Kind::Tuple),
            (s.float_type, Kind::Float),
            (s.complex_type, Kind::Complex),
        ]
        .into();
        let type_off = u64::from(l.head.type_.off);
        let mut objects = BTreeMap::new();
        let mut errors = Vec::new();
        for (sec, rs) in &g.relocs {
            if sec.starts_with(".text") {
                continue;
            }
            for (off, (t, a)) in rs {
                if let Some(kind) = types.get(t.as_str()) {
                    if *a != 0 || *off < type_off {
                        errors.push(format!("{sec}+{off:#x}: {t}{a:+} is no ob_type"));
                        continue;
                    }
                    objects.insert((sec.as_str(), off - type_off), *kind);
                }
            }
        }
        let rt = &l.runtime;
        let mut runtime = BTreeMap::new();
        for i in 0..=(rt.small_int_neg + rt.small_int_pos) as u64 {
            runtime.insert(
                u64::from(rt.small_ints) + i * u64::from(rt.small_int_stride),
                (Kind::Int, format!("small_ints[{i}]")),
            );
        }
        runtime.insert(
            u64::from(rt.bytes_empty),
            (Kind::Bytes, "bytes_empty".into()),
        );
        runtime.insert(
            u64::from(rt.tuple_empty),
            (Kind::Tuple, "tuple_empty".into()),
        );
        for (arr, n, kind, name) in [
            (rt.bytes_characters, 256, Kind::Bytes, "bytes_characters"),
            (rt.ascii_chars, 128, Kind::Str, "strings.ascii"),
            (rt.latin1_chars, 128, Kind::Str, "strings.latin1"),
        ] {
            if let Some((off, stride)) = arr {
                for i in 0..n {
                    runtime.insert(
                        u64::from(off) + i * u64::from(stride),
                        (kind, format!("{name}[{i}]")),
                    );
                }
            }
        }
        for (val, off) in rt.global_strings {
            runtime.insert(u64::from(*off), (Kind::Str, format!("global {val:?}")));
        }
        let syms = g
            .syms
            .iter()
            .filter(|s| !s.undefined && s.size > 0)
            .filter_map(|s| {
                let sec = s.section.as_deref()?;
                let (name, _) = g.sections.get_key_value(sec)?;
                (!name.starts_with(".text"))
                    .then_some(((name.as_str(), s.address), (s.size, s.name.as_str())))
            })
            .collect();
        GccView {
            o,
            l,
            objects,
            runtime,
            syms,
            errors,
        }
    }

    fn data(&self, sec: &str) -> &'a [u8] {
        &self.o.gcc.sections[sec]
    }

    /// The pointer stored at `sec`+`off`, if a relocation is there.
    fn ptr(&self, sec: &str, off: u64) -> Option<Ptr<'a>> {
        let g: &'a ObjData = &self.o.gcc;
        let (t, a) = g.relocs.get(sec)?.get(&off)?;
        Some(
            if let Some((name, _)) = g.sections.get_key_value(t.as_str()) {
                Ptr::Local(name.as_str(), *a as u64)
            } else if t == self.l.runtime.symbol {
                Ptr::Runtime(*a as u64)
            } else {
                Ptr::Extern(t.as_str(), *a)
            },
        )
    }

    fn kind_of(&self, p: &Ptr) -> Option<Kind> {
        match p {
            Ptr::Local(s, o) => self.objects.get(&(*s, *o)).copied(),
            Ptr::Runtime(o) => self.runtime.get(o).map(|x| x.0),
            Ptr::Extern(..) => None,
        }
    }

    /// None, True, False or Ellipsis.
    fn is_constant(&self, p: &Ptr) -> bool {
        let s = &self.l.sym;
        matches!(p, Ptr::Extern(n, 0) if [s.none, s.true_, s.false_, s.ellipsis].contains(n))
    }

    /// The bytes and offset of the object `p` points to, if it is of `kind`.
    fn object(&self, p: &Ptr, kind: Kind) -> Option<(&'a [u8], u64)> {
        if self.kind_of(p) != Some(kind) {
            return None;
        }
        match p {
            Ptr::Local(s, o) => Some((self.data(s), *o)),
            Ptr::Runtime(o) => Some((&self.o.runtime, *o)),
            Ptr::Extern(..) => None,
        }
    }

    /// The value of the bytes object `p` points to.
    fn bytes_value(&self, p: &Ptr) -> Option<Vec<u8>> {
        let (buf, o) = self.object(p, Kind::Bytes)?;
        let n = rd_field(buf, o, self.l.head.size);
        let at = (o + u64::from(self.l.bytes.sval)) as usize;
        buf.get(at..at + n as usize).map(<[u8]>::to_vec)
    }

    /// The code points of the str `p` points to.
    fn str_value(&self, p: &Ptr) -> Option<Vec<u32>> {
        let (buf, o) = self.object(p, Kind::Str)?;
        let s = &self.l.str_;
        let state = rd_field(buf, o, s.state);
        let kind = (state >> s.kind_shift) & 7;
        let ascii = (state >> s.ascii_bit) & 1 == 1;
        let start = o + u64::from(if ascii { s.ascii_size } else { s.compact_size });
        let len = rd_field(buf, o, s.length);
        if ![1, 2, 4].contains(&kind) || (start + len * kind) as usize > buf.len() {
            return None;
        }
        Some(
            (0..len)
                .map(|i| rd(buf, start + i * kind, kind as usize) as u32)
                .collect(),
        )
    }

    /// The length of the tuple `p` points to.
    fn tuple_len(&self, p: &Ptr) -> Option<u64> {
        let (buf, o) = self.object(p, Kind::Tuple)?;
        Some(rd_field(buf, o, self.l.head.size))
    }

    /// The data symbol holding `sec`+`off`: (address, size, name).
    fn symbol_at(&self, sec: &'a str, off: u64) -> Option<(u64, u64, &'a str)> {
        let (&(s, a), &(size, name)) = self.syms.range(..=(sec, off)).next_back()?;
        (s == sec && off < a + size).then_some((a, size, name))
    }

    /// Where the fixed part of an object ends, and the table fields it has
    /// (what gcc may fill there).
    fn header_fields(&self, kind: Kind, ascii: bool) -> (u64, Vec<Field>) {
        let l = self.l;
        let h = &l.head;
        let mut f = vec![h.refcnt, h.type_];
        let end = match kind {
            Kind::Code => {
                let c = &l.code;
                f.extend([
                    h.size,
                    c.consts,
                    c.names,
                    c.exceptiontable,
                    c.flags,
                    c.argcount,
                    c.posonlyargcount,
                    c.kwonlyargcount,
                    c.stacksize,
                    c.firstlineno,
                    c.nlocalsplus,
                    c.nlocals,
                    c.ncellvars,
                    c.nfreevars,
                    c.localsplusnames,
                    c.localspluskinds,
                    c.filename,
                    c.name,
                    c.qualname,
                    c.linetable,
                ]);
                f.extend(c.framesize);
                f.extend(c.version);
                f.extend(c.firsttraceable);
                f.extend(c.nplaincellvars);
                f.extend(c.fixed.iter().map(|(f, _)| *f));
                c.code_adaptive
            }
            Kind::Str => {
                let s = &l.str_;
                f.extend([s.length, s.hash, s.state]);
                if let Some((p, n)) = s.wstr {
                    f.push(p);
                    if !ascii {
                        f.push(n);
                    }
                }
                if ascii {
                    s.ascii_size
                } else {
                    f.extend([s.utf8_length, s.utf8]);
                    s.compact_size
                }
            }
            Kind::Bytes => {
                f.extend([h.size, l.bytes.shash]);
                l.bytes.sval
            }
            Kind::Int => {
                f.push(int_size_word(l, 1, 1).0);
                l.int.digits
            }
            Kind::Tuple => {
                f.push(h.size);
                l.tuple.items
            }
            Kind::Float => l.float.fval,
            Kind::Complex => l.float.cval,
        };
        (u64::from(end), f)
    }
}

/// gcc's objects, read with the table: every object has the static
/// refcount; every byte gcc sets in an object's fixed part lies in a field
/// the table has; sizes, `state` bits, fixed and derived code fields agree
/// with the table; every pointer into `_PyRuntime` lands on a shared object
/// the table lists.
fn check_gcc_objects(_v: &Version, o: &Oracle, l: &Layout, k: &mut Checker) {
    let view = GccView::new(o, l);
    k.none_bad("gcc objects: ob_type relocations", &view.errors);
    let h = &l.head;
    let c = &l.code;
    let s = &l.str_;
    let fast = (
        u64::from(c.co_fast_local),
        u64::from(c.co_fast_cell),
        u64::from(c.co_fast_free),
    );

    let mut count: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut bad_refcnt = Vec::new();
    let mut uncovered: BTreeMap<(Kind, u64), usize> = BTreeMap::new();
    let mut bad_frame = Vec::new();
    let mut bad_code = Vec::new();
    let mut bad_fixed = Vec::new();
    let mut bad_kinds = Vec::new();
    let mut bad_str = Vec::new();
    let mut bad_utf8 = Vec::new();
    let mut bad_shared = Vec::new();
    let mut bad_other = Vec::new();
    let mut versions = Vec::new();
    let mut non_ascii = 0;
    let mut covered_bytes: HashMap<(Kind, bool), Vec<bool>> = HashMap::new();

    for (&(sec, obj), &kind) in &view.objects {
        *count.entry(kind).or_default() += 1;
        let data = view.data(sec);
        let at = || format!("{sec}+{obj:#x} ({kind:?})");
        if rd_field(data, obj, h.refcnt) != h.static_refcnt {
            bad_refcnt.push(format!(
                "{}: ob_refcnt {:#x}",
                at(),
                rd_field(data, obj, h.refcnt)
            ));
        }
        let state = rd_field(data, obj, s.state);
        let ascii = kind == Kind::Str && (state >> s.ascii_bit) & 1 == 1;

        // Every set byte and every pointer in the fixed part is in a field
        // of the table.
        let covered = covered_bytes.entry((kind, ascii)).or_insert_with(|| {
            let (end, fields) = view.header_fields(kind, ascii);
            let mut m = vec![false; end as usize];
            for f in fields {
                for b in m.iter_mut().skip(f.off as usize).take(f.size as usize) {
                    *b = true;
                }
            }
            m
        });
        let end = covered.len() as u64;
        let mut set: Vec<u64> = (0..end)
            .filter(|i| data.get((obj + i) as usize).is_some_and(|b| *b != 0))
            .collect();
        let offs = &o.gcc.reloc_offsets[sec];
        let first = offs.partition_point(|&r| r < obj);
        for &r in offs[first..].iter().take_while(|&&r| r < obj + end) {
            set.extend(r - obj..r - obj + 8);
        }
        for i in set {
            if !covered.get(i as usize).copied().unwrap_or(false) {
                *uncovered.entry((kind, i)).or_default() += 1;
            }
        }

        // The symbol holding the object: where it starts and how big it is.
        let sym = view.symbol_at(sec, obj);
        let mut frame = |start: u64, size: u64| {
            if sym.map(|(a, sz, _)| (a, sz)) != Some((start, size)) {
                bad_frame.push(format!(
                    "{}: symbol {sym:?}, expected start {start:#x} size {size}",
                    at()
                ));
            }
        };
        match kind {
            Kind::Code => {
                let units = rd_field(data, obj, h.size);
                let adaptive = obj + u64::from(c.code_adaptive);
                frame(obj, round8(u64::from(c.code_adaptive) + 2 * units));
                let bc = data
                    .get(adaptive as usize..(adaptive + 2 * units) as usize)
                    .unwrap_or(&[]);
                let int = |f: Field| rd_signed(data, obj, f);
                for (f, value) in c.fixed {
                    if rd_field(data, obj, *f) != *value {
                        bad_fixed.push(format!(
                            "{}: {f:?} holds {:#x}, table says {value:#x}",
                            at(),
                            rd_field(data, obj, *f)
                        ));
                    }
                }
                if let Some(f) = c.firsttraceable {
                    let first = bc
                        .chunks(2)
                        .position(|u| u[0] == c.opcode_resume)
                        .unwrap_or(0) as i64;
                    if int(f) != first {
                        bad_code.push(format!(
                            "{}: _co_firsttraceable {} but first RESUME at {first}",
                            at(),
                            int(f)
                        ));
                    }
                }
                if let Some(f) = c.framesize {
                    let want =
                        int(c.stacksize) + int(c.nlocalsplus) + i64::from(c.frame_specials_size);
                    if int(f) != want {
                        bad_code.push(format!("{}: co_framesize {} != {want}", at(), int(f)));
                    }
                }
                if let Some(f) = c.version {
                    versions.push(int(f));
                }
                // Runtime state starts out NULL.
                for f in c.runtime_state {
                    let at_ = obj + u64::from(f.off);
                    if rd_field(data, obj, *f) != 0 || view.ptr(sec, at_).is_some() {
                        bad_code.push(format!("{}: runtime_state {f:?} is not NULL", at()));
                    }
                }
                // Pointer fields point to objects of the right kind.
                for (name, f, want) in [
                    ("consts", c.consts, Kind::Tuple),
                    ("names", c.names, Kind::Tuple),
                    ("localsplusnames", c.localsplusnames, Kind::Tuple),
                    ("filename", c.filename, Kind::Str),
                    ("name", c.name, Kind::Str),
                    ("qualname", c.qualname, Kind::Str),
                    ("linetable", c.linetable, Kind::Bytes),
                    ("exceptiontable", c.exceptiontable, Kind::Bytes),
                    ("localspluskinds", c.localspluskinds, Kind::Bytes),
                ] {
                    let p = view.ptr(sec, obj + u64::from(f.off));
                    let got = p.as_ref().and_then(|p| view.kind_of(p));
                    if got != Some(want) {
                        bad_code.push(format!("{}: co_{name} -> {p:?} ({got:?})", at()));
                    }
                }
                // The counts agree with the kinds bytes (CO_FAST_* bits).
                let kinds = view
                    .ptr(sec, obj + u64::from(c.localspluskinds.off))
                    .and_then(|p| view.bytes_value(&p));
                let names = view
                    .ptr(sec, obj + u64::from(c.localsplusnames.off))
                    .and_then(|p| view.tuple_len(&p));
                if let (Some(kinds), Some(names)) = (kinds, names) {
                    let (mut nloc, mut ncell, mut nplain, mut nfree) = (0, 0, 0, 0);
                    for &b in &kinds {
                        let b = u64::from(b);
                        if b & fast.0 != 0 {
                            nloc += 1;
                            if b & fast.1 != 0 {
                                ncell += 1;
                            }
                        } else if b & fast.1 != 0 {
                            ncell += 1;
                            nplain += 1;
                        } else if b & fast.2 != 0 {
                            nfree += 1;
                        }
                    }
                    let mut got = vec![
                        int(c.nlocalsplus),
                        int(c.nlocals),
                        int(c.ncellvars),
                        int(c.nfreevars),
                    ];
                    let mut want = vec![kinds.len() as i64, nloc, ncell, nfree];
                    if let Some(f) = c.nplaincellvars {
                        got.push(int(f));
                        want.push(nplain);
                    }
                    if got != want || names != kinds.len() as u64 {
                        bad_kinds.push(format!(
                            "{}: nlocalsplus, nlocals, ncellvars, nfreevars[, nplaincellvars] \
                             {got:?}, from the kinds {want:?}; {names} names",
                            at()
                        ));
                    }
                } else {
                    bad_kinds.push(format!("{}: localspluskinds/names unreadable", at()));
                }
            }
            Kind::Str => {
                let len = rd_field(data, obj, s.length);
                let kind_ = (state >> s.kind_shift) & 7;
                let start = obj + u64::from(if ascii { s.ascii_size } else { s.compact_size });
                if ![1, 2, 4].contains(&kind_) || start + (len + 1) * kind_ > data.len() as u64 {
                    bad_str.push(format!("{}: kind {kind_}, length {len}", at()));
                    continue;
                }
                frame(obj, round8(start - obj + (len + 1) * kind_));
                let chars: Vec<u32> = (0..=len)
                    .map(|i| rd(data, start + i * kind_, kind_.clamp(1, 4) as usize) as u32)
                    .collect();
                let max = chars[..len as usize].iter().copied().max().unwrap_or(0);
                let want_kind = match max {
                    0..=0xff => 1,
                    0x100..=0xffff => 2,
                    _ => 4,
                };
                if state != str_state(s, want_kind, max < 128)
                    || kind_ != want_kind
                    || chars[len as usize] != 0
                    || rd_field(data, obj, s.hash) as i64 != -1
                {
                    bad_str.push(format!(
                        "{}: state {state:#x} (want {:#x}), length {len}, hash {:#x}",
                        at(),
                        str_state(s, want_kind, max < 128),
                        rd_field(data, obj, s.hash)
                    ));
                }
                if len == 1 && max < 256 {
                    let shared = if max < 128 {
                        l.runtime.ascii_chars
                    } else {
                        l.runtime.latin1_chars
                    };
                    if shared.is_some() {
                        bad_shared.push(format!("{}: a one-character string U+{max:04X}", at()));
                    }
                }
                if !ascii {
                    non_ascii += 1;
                    // The UTF-8 form: filled (and pointing to it) exactly
                    // when the table says so.
                    let ulen = rd_field(data, obj, s.utf8_length);
                    let uptr = view.ptr(sec, obj + u64::from(s.utf8.off));
                    let ok = if contract_of(l).precompute.utf8 {
                        let text: Option<String> = chars[..len as usize]
                            .iter()
                            .map(|&c| char::from_u32(c))
                            .collect();
                        let want = text.map(String::into_bytes).unwrap_or_default();
                        let got = match &uptr {
                            Some(Ptr::Local(us, uo)) => view
                                .data(us)
                                .get(*uo as usize..*uo as usize + want.len() + 1)
                                .map(<[u8]>::to_vec),
                            _ => None,
                        };
                        ulen == want.len() as u64
                            && got
                                .is_some_and(|g| g[..want.len()] == want[..] && g[want.len()] == 0)
                    } else {
                        ulen == 0 && uptr.is_none()
                    };
                    if !ok {
                        bad_utf8.push(format!(
                            "{}: utf8_length {ulen}, utf8 -> {uptr:?} (contract: utf8 {})",
                            at(),
                            contract_of(l).precompute.utf8
                        ));
                    }
                }
            }
            Kind::Bytes => {
                let n = rd_field(data, obj, h.size);
                frame(obj, round8(u64::from(l.bytes.sval) + n + 1));
                let nul = data
                    .get((obj + u64::from(l.bytes.sval) + n) as usize)
                    .copied();
                if rd_field(data, obj, l.bytes.shash) as i64 != -1 || nul != Some(0) {
                    bad_other.push(format!("{}: ob_shash or NUL", at()));
                }
                if n == 0 || (n == 1 && l.runtime.bytes_characters.is_some()) {
                    bad_shared.push(format!("{}: bytes of length {n}", at()));
                }
            }
            Kind::Int => match int_decode(l, data, obj) {
                Some((sign, n)) => {
                    let ds = u64::from(l.int.digit_size);
                    if obj + u64::from(l.int.digits) + ds * n > data.len() as u64 {
                        bad_other.push(format!("{}: {n} digits", at()));
                        continue;
                    }
                    frame(
                        obj,
                        u64::from(l.int.min_size).max(round8(u64::from(l.int.digits) + ds * n)),
                    );
                    let digits: Vec<u64> = (0..n)
                        .map(|i| rd(data, obj + u64::from(l.int.digits) + i * ds, ds as usize))
                        .collect();
                    let small = n == 1
                        && ((sign > 0 && digits[0] as i64 <= l.runtime.small_int_pos)
                            || (sign < 0 && digits[0] as i64 <= l.runtime.small_int_neg));
                    if n == 0
                        || sign == 0
                        || digits.iter().any(|d| *d >> 30 != 0)
                        || digits.last() == Some(&0)
                    {
                        bad_other.push(format!("{}: sign {sign}, digits {digits:?}", at()));
                    }
                    if small {
                        bad_shared.push(format!("{}: a small int", at()));
                    }
                }
                None => bad_other.push(format!("{}: undecodable int size word", at())),
            },
            Kind::Tuple => {
                let n = rd_field(data, obj, h.size);
                let gc = u64::from(l.tuple.gc_head_size);
                if obj < gc || obj + u64::from(l.tuple.items) + 8 * n > data.len() as u64 {
                    bad_other.push(format!("{}: {n} items", at()));
                    continue;
                }
                frame(obj - gc, gc + u64::from(l.tuple.items) + 8 * n);
                // The GC header: zero, no pointers.
                let gc_set = (obj - gc..obj)
                    .any(|i| data[i as usize] != 0 || o.gcc.relocs[sec].contains_key(&i));
                let items_ok = (0..n).all(|i| {
                    view.ptr(sec, obj + u64::from(l.tuple.items) + 8 * i)
                        .is_some_and(|p| view.kind_of(&p).is_some() || view.is_constant(&p))
                });
                if gc_set || !items_ok {
                    bad_other.push(format!(
                        "{}: GC header set {gc_set}, items all objects {items_ok}",
                        at()
                    ));
                }
                if n == 0 {
                    bad_shared.push(format!("{}: an empty tuple", at()));
                }
            }
            Kind::Float => frame(obj, u64::from(l.float.float_size)),
            Kind::Complex => frame(obj, u64::from(l.float.complex_size)),
        }
    }
    eprintln!("gcc's deepfreeze.o objects: {count:?}");
    for kind in [Kind::Code, Kind::Str, Kind::Bytes, Kind::Tuple] {
        k.is(
            &format!("gcc objects: some of kind {kind:?}"),
            count.get(&kind).copied().unwrap_or(0) > 50,
            || format!("{count:?}"),
        );
    }
    k.is("gcc objects: some non-ASCII strings", non_ascii > 0, || {
        "none".into()
    });
    k.none_bad(
        "head.static_refcnt (ob_refcnt of every object in gcc's deepfreeze.o)",
        &bad_refcnt,
    );
    let unc: Vec<String> = uncovered
        .iter()
        .map(|((kind, off), n)| format!("{kind:?} byte {off} set in {n} objects"))
        .collect();
    k.none_bad(
        "gcc sets only bytes that are in table fields (fixed part of each object)",
        &unc,
    );
    k.none_bad(
        "object sizes and starts (code_adaptive, ascii_size/compact_size, sval, digits, \
         gc_head_size + items, float sizes) match gcc's symbols",
        &bad_frame,
    );
    k.none_bad("code.fixed values in gcc's code objects", &bad_fixed);
    k.none_bad(
        "code fields: firsttraceable, framesize, pointer kinds, runtime_state NULL",
        &bad_code,
    );
    k.none_bad(
        "code counts vs CO_FAST_* kinds (co_fast_local/cell/free, nplaincellvars)",
        &bad_kinds,
    );
    k.none_bad(
        "str: state bits (kind_shift, compact_bit, ascii_bit, static_bits), hash -1, NUL",
        &bad_str,
    );
    k.none_bad("str.fill_utf8 (gcc's non-ASCII strings)", &bad_utf8);
    k.none_bad("bytes / int / tuple data", &bad_other);
    k.none_bad(
        "gcc emits no object the table says is shared (empty and one-byte bytes, one-character \
         strings, small ints, the empty tuple)",
        &bad_shared,
    );

    // co_version: 1, 2, ... N in some order; the counter is N + 1.
    if c.version.is_some() {
        let n = versions.len() as i64;
        versions.sort();
        k.eq(
            "code.version: gcc numbers its code objects 1..=N",
            versions.clone(),
            (1..=n).collect::<Vec<_>>(),
        );
        if let Some(s) = contract_of(l).precompute.version_counter {
            let d = o.gcc.syms.iter().find(|x| x.name == s && !x.undefined);
            let value = d.and_then(|d| {
                let sec = o.gcc.sections.get(d.section.as_deref()?)?;
                Some(rd(sec, d.address, 4) as i64)
            });
            k.eq(
                &format!("sym.next_func_version {s} = N + 1"),
                value,
                Some(n + 1),
            );
        }
    } else {
        k.eq(
            "code.version None: gcc's object has no function version counter",
            o.gcc
                .syms
                .iter()
                .filter(|x| !x.undefined && x.global && x.size == 4)
                .count(),
            0,
        );
    }

    // Pointers into the runtime land on the shared objects the table lists.
    let mut unknown = Vec::new();
    for (off, n) in gcc_runtime_refs(o, l) {
        if !view.runtime.contains_key(&off) {
            unknown.push(format!("{}+{off} ({n} times)", l.runtime.symbol));
        }
    }
    k.none_bad(
        "gcc's pointers into the runtime all land on objects the table lists",
        &unknown,
    );
}

/// gcc's functions: the accessors return their module's code object (and
/// increment its refcount unless objects are immortal); Init and Fini call
/// exactly the table's functions, with the objects the table says.
fn check_gcc_code(_v: &Version, o: &Oracle, l: &Layout, k: &mut Checker) {
    let view = GccView::new(o, l);
    let g = &o.gcc;
    let text = &g.sections[".text"];
    let mut relocs: Vec<(u64, &str, i64)> = g.relocs[".text"]
        .iter()
        .map(|(off, (t, a))| (*off, t.as_str(), *a))
        .collect();
    relocs.sort();
    let in_fn = |f: &Sym| -> Vec<(u64, &str, i64)> {
        relocs
            .iter()
            .copied()
            .filter(|r| (f.address..f.address + f.size).contains(&r.0))
            .collect()
    };
    let funcs: Vec<&Sym> = g
        .syms
        .iter()
        .filter(|s| !s.undefined && s.section.as_deref() == Some(".text") && s.size > 0)
        .collect();
    let local: HashMap<&str, (&str, u64)> = view
        .syms
        .iter()
        .map(|(&(sec, a), &(_, name))| (name, (sec, a)))
        .collect();
    // The instruction bytes before a relocated 32-bit displacement.
    let before = |at: u64, n: u64| {
        at.checked_sub(n)
            .and_then(|b| text.get(b as usize..at as usize))
            .unwrap_or(&[])
    };
    // A rip-relative operand's target: the relocation's addend plus the
    // distance from the displacement to the end of the instruction.
    let target = |sec: &str, a: i64, tail: i64| -> Option<Ptr> {
        g.sections
            .get_key_value(sec)
            .map(|(s, _)| Ptr::Local(s.as_str(), (a + tail) as u64))
    };

    // ---- accessors
    let accessors: Vec<&&Sym> = funcs.iter().filter(|s| is_accessor(&s.name)).collect();
    let mut bad = Vec::new();
    let mut increments = 0;
    for f in &accessors {
        let module_obj = &f.name["_Py_get_".len()..];
        let Some(&(sec, obj)) = local.get(module_obj) else {
            bad.push(format!("{}: no data symbol {module_obj}", f.name));
            continue;
        };
        if view.objects.get(&(sec, obj)) != Some(&Kind::Code) {
            bad.push(format!("{module_obj} is not a code object"));
        }
        let rs = in_fn(f);
        // lea obj(%rip), %rax
        let returns = rs.iter().any(|&(at, t, a)| {
            before(at, 3) == [0x48, 0x8d, 0x05] && target(t, a, 4) == Some(Ptr::Local(sec, obj))
        });
        // addq $1, obj.ob_refcnt(%rip): the 64-bit count, unconditionally.
        let refcnt = obj + u64::from(l.head.refcnt.off);
        let incref = rs.iter().any(|&(at, t, a)| {
            before(at, 3) == [0x48, 0x83, 0x05]
                && text.get(at as usize + 4) == Some(&1)
                && target(t, a, 5) == Some(Ptr::Local(sec, refcnt))
        });
        if !returns {
            bad.push(format!("{}: does not return {module_obj}", f.name));
        }
        increments += usize::from(incref);
    }
    k.is("gcc accessors", accessors.len() > 20, || {
        format!("only {}", accessors.len())
    });
    k.none_bad("gcc accessors return their module's code object", &bad);
    k.eq(
        "head.immortal: gcc accessors doing addq $1 on the returned object's ob_refcnt \
         (all when not immortal, none when immortal)",
        if l.head.immortal { 0 } else { accessors.len() },
        increments,
    );

    // ---- Init and Fini: who is called with what.
    let all_code: BTreeSet<(&str, u64)> = view
        .objects
        .iter()
        .filter(|(_, k)| **k == Kind::Code)
        .map(|(p, _)| *p)
        .collect();
    let all_str: BTreeSet<(&str, u64)> = view
        .objects
        .iter()
        .filter(|(_, k)| **k == Kind::Str)
        .map(|(p, _)| *p)
        .collect();
    let c = contract_of(l);
    for (fname, callees) in [
        (c.entry.init, vec![(c.code_init_hook().unwrap(), &all_code)]),
        (
            c.entry.fini,
            std::iter::once((c.code_fini_hook().unwrap(), &all_code))
                .chain(c.str_fini_hook().map(|f| (f, &all_str)))
                .collect(),
        ),
    ] {
        let Some(f) = funcs.iter().find(|f| f.name == fname && f.global) else {
            k.is(fname, false, || {
                "not defined in .text of deepfreeze.o".into()
            });
            continue;
        };
        let rs = in_fn(f);
        let mut args: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
        let mut bad = Vec::new();
        let mut unchecked_results = 0;
        for (i, &(at, t, _)) in rs.iter().enumerate() {
            if g.sections.contains_key(t) {
                continue;
            }
            // A call (or a tail call: the stack frame dropped, then jmp):
            // its argument is the lea into %rdi just before.
            let arg = i.checked_sub(1).map(|j| rs[j]).and_then(|(pat, pt, pa)| {
                let gap = text
                    .get(pat as usize + 4..at.saturating_sub(1) as usize)
                    .unwrap_or(&[0xcc]);
                let call = text.get(at.saturating_sub(1) as usize).copied();
                (before(pat, 3) == [0x48, 0x8d, 0x3d]
                    && (gap.is_empty() && call == Some(0xe8)
                        || gap == [0x48, 0x83, 0xc4, 0x08] && call == Some(0xe9)))
                .then(|| target(pt, pa, 4))
                .flatten()
            });
            match arg {
                Some(Ptr::Local(sec, off)) => args.entry(t).or_default().push((sec, off)),
                _ => bad.push(format!("call of {t} at {at:#x}: argument not found")),
            }
            // Init: a negative result is acted on (test %eax,%eax; js -> return
            // -1), the last one becomes the return value (sar $31,%eax: -1 or 0).
            if fname == c.entry.init {
                let after = text.get(at as usize + 4..at as usize + 8).unwrap_or(&[]);
                if !(after.starts_with(&[0x85, 0xc0, 0x78])
                    || after == [0x85, 0xc0, 0x0f, 0x88]
                    || after.starts_with(&[0xc1, 0xf8, 0x1f]))
                {
                    unchecked_results += 1;
                }
            }
        }
        k.none_bad(&format!("{fname}: calls"), &bad);
        k.eq(
            &format!("{fname} calls exactly"),
            callees.iter().map(|(c, _)| *c).collect::<BTreeSet<_>>(),
            args.keys().copied().collect(),
        );
        for (callee, want) in &callees {
            let got: Vec<(&str, u64)> = args.get(callee).cloned().unwrap_or_default();
            let set: BTreeSet<(&str, u64)> = got.iter().copied().collect();
            k.eq(
                &format!("{fname}: {callee} is called once with each object it is for"),
                (got.len(), set == **want),
                (want.len(), true),
            );
        }
        k.eq(
            &format!("{fname}: results not tested for < 0"),
            unchecked_results,
            0,
        );
    }
}

// ---------------------------------------------------------------------------
// Negative checks: the machinery must be able to fail.

fn lookups_of_missing_things_fail(v: &'static Version) {
    let o = v.oracle();
    let l = v.layout();
    let c = &o.code;
    const RT: &str = "_PyRuntimeState";
    let s_ = v.singletons;
    assert!(c.member("PyCodeObject", "co_no_such_member").is_err());
    assert!(c
        .member_path_offset("PyCodeObject", "co_consts.nope")
        .is_err());
    assert!(c.sizeof("NoSuchType_pyfreeze").is_err());
    assert!(c.struct_layout("NoSuchType_pyfreeze").is_err());
    assert!(c.bitfield("PyASCIIObject", "length").is_err());
    assert!(c.array("PyASCIIObject", "length").is_err());
    let n = l.runtime.small_int_neg + l.runtime.small_int_pos + 1;
    assert!(o.life.member(RT, &format!("{s_}.small_ints[{n}]")).is_err());
    assert!(o
        .life
        .member(RT, &format!("{s_}.small_ints[{}]", n - 1))
        .is_ok());
    assert!(o.frozen.variable("_PyImport_NoSuchTable").is_err());
    // And a few positive sanity values that a broken reader would not give.
    assert_eq!(c.member_path_offset("PyObject", "ob_type"), Ok(8));
    assert_eq!(c.member_path_offset("PyObject", "ob_refcnt"), Ok(0));
    assert_eq!(
        o.life
            .member_path_offset(RT, &format!("{s_}.small_ints[1].{}[0]", int_digits_path(l))),
        Ok(u64::from(
            l.runtime.small_ints + l.runtime.small_int_stride + l.int.digits
        ))
    );
    // PyObject = { ob_refcnt (3.12: inside an anonymous union), ob_type }.
    let layout_ = c.struct_layout("PyObject").unwrap();
    assert_eq!(
        layout_
            .iter()
            .map(|m| (m.offset, m.size))
            .collect::<Vec<_>>(),
        vec![(0, 8), (8, 8)],
    );
    assert!(["", "ob_refcnt"].contains(&layout_[0].name.as_str()));
    assert_eq!(layout_[1].name, "ob_type");
}

/// Run a check with a corrupted table; returns its failures.
fn failures(
    v: &Version,
    o: &Oracle,
    l: &Layout,
    check: fn(&Version, &Oracle, &Layout, &mut Checker),
) -> Vec<String> {
    let mut k = Checker::default();
    check(v, o, l, &mut k);
    k.errors
}

fn wrong_values_are_detected(v: &'static Version) {
    let o = v.oracle();
    let l = v.layout();
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
    let good: Vec<(&str, u32)> = l.runtime.global_strings.to_vec();
    assert!(check_global_strings(v, o, l, &good).is_empty());
    let mut dropped = good.clone();
    dropped.remove(10);
    assert!(check_global_strings(v, o, l, &dropped)
        .iter()
        .any(|e| e.contains("missing from the table")));
    let mut moved = good.clone();
    moved[3].1 += 8;
    assert!(check_global_strings(v, o, l, &moved)
        .iter()
        .any(|e| e.contains("no _Py_global_strings member starts there")));
    let alt = format!("{}X", good[100].0);
    let mut renamed: Vec<(&str, u32)> = good.clone();
    renamed[100].0 = &alt;
    assert!(check_global_strings(v, o, l, &renamed)
        .iter()
        .any(|e| e.contains("_PyRuntime holds")));
    let mut swapped = good;
    swapped.swap(5, 6);
    assert!(check_global_strings(v, o, l, &swapped)
        .iter()
        .any(|e| e.contains("not strictly sorted")));

    // Each corruption of the table fails the data checks with the expected
    // message (the table as it is passes them: the tests above).
    assert_eq!(format!("{:?}", clone_layout(l)), format!("{l:?}"));
    type Check = fn(&Version, &Oracle, &Layout, &mut Checker);
    type Corrupt = fn(&mut Layout, &Oracle);
    let objects: Check = check_gcc_objects;
    let code: Check = check_gcc_code;
    let runtime: Check = check_runtime_singletons;
    let layouts: Check = check_object_layouts;
    let frozen: Check = check_frozen_tables;
    let cases: &[(&str, Corrupt, Check, &str)] = &[
        (
            "static_refcnt",
            |b, _| b.head.static_refcnt += 1,
            objects,
            "ob_refcnt of every object",
        ),
        (
            "immortal",
            |b, _| b.head.immortal ^= true,
            code,
            "head.immortal",
        ),
        (
            "static_bits",
            |b, _| b.str_.static_bits = 0,
            objects,
            "str: state bits",
        ),
        (
            "firsttraceable",
            |b, _| {
                b.code.firsttraceable = b.code.firsttraceable.map(|f| Field {
                    off: f.off + 4,
                    ..f
                })
            },
            objects,
            "fixed part of each object",
        ),
        (
            "fixed",
            |b, _| b.code.fixed = &[(Field { off: 48, size: 4 }, 0x7777)],
            objects,
            "code.fixed",
        ),
        (
            "nlocals <-> ncellvars",
            |b, _| std::mem::swap(&mut b.code.nlocals, &mut b.code.ncellvars),
            objects,
            "code counts vs CO_FAST_* kinds",
        ),
        (
            "co_fast_cell",
            |b, _| b.code.co_fast_cell = 0x10,
            objects,
            "code counts vs CO_FAST_* kinds",
        ),
        (
            "compact_size",
            |b, _| b.str_.compact_size += 8,
            objects,
            "object sizes and starts",
        ),
        (
            "ascii_size",
            |b, _| b.str_.ascii_size += 8,
            objects,
            "object sizes and starts",
        ),
        (
            "int size encoding",
            |b, _| {
                b.int.size = match b.int.size {
                    IntSize::LvTag(_) => IntSize::SignedObSize,
                    IntSize::SignedObSize => IntSize::LvTag(b.head.size),
                }
            },
            runtime,
            "runtime.small_ints data",
        ),
        (
            "gc_head_size",
            |b, _| b.tuple.gc_head_size = 24,
            objects,
            "object sizes and starts",
        ),
        (
            "a global string dropped",
            |b, _| b.runtime.global_strings = &b.runtime.global_strings[1..],
            objects,
            "land on objects the table lists",
        ),
        (
            "bytes_characters",
            |b, o| {
                b.runtime.bytes_characters = match b.runtime.bytes_characters {
                    Some(_) => None,
                    None => Some((o.runtime.len() as u32, 48)),
                }
            },
            runtime,
            "bytes_characters",
        ),
        (
            "ascii_chars",
            |b, o| {
                b.runtime.ascii_chars = match b.runtime.ascii_chars {
                    Some(_) => None,
                    None => {
                        let v = if b.version == PY311.table {
                            &PY311
                        } else {
                            &PY312
                        };
                        let a = o
                            .life
                            .array(
                                "_PyRuntimeState",
                                &format!("{}.strings.ascii", v.singletons),
                            )
                            .expect("strings.ascii");
                        Some((a.offset as u32, a.stride as u32))
                    }
                }
            },
            runtime,
            "ascii_chars",
        ),
        (
            "runtime_state: one dropped",
            |b, _| b.code.runtime_state = &b.code.runtime_state[1..],
            layouts,
            "one entry per member the code fini clears",
        ),
        (
            "runtime_state: one dropped",
            |b, _| b.code.runtime_state = &b.code.runtime_state[1..],
            layouts,
            "pointer members of PyCodeObject are exactly",
        ),
        (
            "runtime_state: one dropped",
            |b, _| b.code.runtime_state = &b.code.runtime_state[1..],
            layouts,
            "stores NULL at",
        ),
        (
            "runtime_state: a field gcc fills",
            |b, _| b.code.runtime_state = &[Field { off: 24, size: 8 }],
            objects,
            "runtime_state NULL",
        ),
        (
            "arch_shift",
            |b, _| {
                b.runtime.arch_shift = match b.runtime.arch_shift {
                    [] => &[(Arch::Aarch64, 16)],
                    _ => &[],
                }
            },
            runtime,
            "runtime.arch_shift (",
        ),
        (
            "arch_shift on x86_64",
            |b, _| b.runtime.arch_shift = &[(Arch::X86_64, 8)],
            runtime,
            "x86_64 (the DWARF's own offsets) does not move",
        ),
        (
            "custom: a table",
            |b, _| b.frozen.custom = "_PyImport_FrozenTest",
            frozen,
            "NULL in CPython's own build",
        ),
        (
            "custom: missing",
            |b, _| b.frozen.custom = "PyImport_NoSuchTable",
            frozen,
            "frozen.custom",
        ),
        (
            "keeps_marshal",
            |b, _| b.frozen.keeps_marshal ^= true,
            frozen,
            "frozen.keeps_marshal (",
        ),
    ];
    for (what, corrupt, check, expect) in cases {
        let mut bad = clone_layout(l);
        corrupt(&mut bad, o);
        let errs = failures(v, o, &bad, *check);
        assert!(
            errs.iter().any(|e| e.contains(expect)),
            "{} table with {what} corrupted: no failure mentioning {expect:?}; got {errs:#?}",
            v.short()
        );
    }
}

// ---------------------------------------------------------------------------
// The tests: every check, once per version.

fn run(
    v: &'static Version,
    min_checks: usize,
    check: fn(&Version, &Oracle, &Layout, &mut Checker),
) {
    let o = v.oracle();
    let mut k = Checker::default();
    check(v, o, v.layout(), &mut k);
    k.finish(min_checks);
}

macro_rules! per_version {
    ($($m:ident: $v:ident;)*) => {$(
        mod $m {
            use super::*;

            /// Object layouts: header, code, str, bytes, int, float,
            /// complex, tuple.
            #[test]
            fn object_layouts_match_dwarf() {
                run(&$v, 115, check_object_layouts);
            }

            #[test]
            fn runtime_singletons_match_dwarf_and_data() {
                run(&$v, 27, check_runtime_singletons);
            }

            #[test]
            fn global_strings_match_runtime() {
                super::global_strings_match_runtime(&$v);
            }

            #[test]
            fn frozen_table_layout_matches_dwarf() {
                run(&$v, 32, check_frozen_tables);
            }

            #[test]
            fn symbols_match_archive() {
                run(&$v, 39, check_symbols);
            }

            #[test]
            fn interpreter_facts() {
                run(&$v, 14, check_interpreter_facts);
            }

            #[test]
            fn gcc_objects_match_table() {
                run(&$v, 18, check_gcc_objects);
            }

            #[test]
            fn gcc_functions_match_table() {
                run(&$v, 11, check_gcc_code);
            }

            #[test]
            fn lookups_of_missing_things_fail() {
                super::lookups_of_missing_things_fail(&$v);
            }

            #[test]
            fn wrong_values_are_detected() {
                super::wrong_values_are_detected(&$v);
            }
        }
    )*};
}

per_version! {
    py312: PY312;
    py311: PY311;
}
