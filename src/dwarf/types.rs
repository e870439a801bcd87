//! A small in-memory model of the type DIEs of one object, with queries
//! by C type name and member path.

use std::collections::HashMap;

use gimli::{EndianSlice, LittleEndian};
use object::Object;

use super::{err, relocated_section, Result};

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

/// A type read through its typedefs and qualifiers ([`Types::type_chain`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeChain {
    /// The typedef names crossed, outermost first: `Py_hash_t`,
    /// `Py_ssize_t`, `ssize_t`, `__ssize_t` for a `Py_hash_t` member
    /// (empty when the type is spelled without a typedef).
    pub typedefs: Vec<String>,
    /// What the last typedef names.
    pub base: Base,
}

/// What a chain of typedefs and qualifiers ends in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// A C base type, as DWARF names it (`long int`, `long unsigned int`,
    /// `_Bool`).
    Scalar(String),
    Enum,
    Pointer,
    /// A struct, union or class: its members with [`Types::members_in`].
    Composite,
    /// An array: the length of its first dimension (`None` for a flexible
    /// array member); its element with [`Types::element`].
    Array(Option<u64>),
    /// A function type, or `void`.
    Other,
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
                gimli::DW_AT_data_member_location => die.member_loc = member_location(a.value()),
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
        let (tags, bare): (&[gimli::DwTag], &str) = if let Some(n) = name.strip_prefix("struct ") {
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
            gimli::DW_TAG_pointer_type => Ok(d.byte_size.unwrap_or(u64::from(self.address_size))),
            gimli::DW_TAG_array_type => {
                let a = self.array_die(off)?;
                let n = a
                    .count
                    .ok_or_else(|| format!("{}: sizeof a flexible array member", self.object))?;
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
        self.type_name_of(&self.member(ty, path)?)
    }

    fn type_name(&self, t: Option<usize>) -> Result<String> {
        let Some(mut t) = t else {
            return Ok("void".into());
        };
        // Keep typedef names (they are what C code spells), drop qualifiers.
        for _ in 0..64 {
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
        Err(format!("{}: qualifier loop", self.object))
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

    /// The global variables of type `ty` (spelled as [`Types::variable`]
    /// names types, e.g. `*struct _frozen`) defined in this object, in the
    /// order the DWARF describes them (source order).
    pub fn variables_of_type(&self, ty: &str) -> Result<Vec<String>> {
        let mut offs: Vec<usize> = self
            .dies
            .iter()
            .filter(|(_, d)| d.tag == gimli::DW_TAG_variable && d.name.is_some())
            .map(|(&o, _)| o)
            .collect();
        offs.sort_unstable();
        let mut out: Vec<String> = Vec::new();
        for o in offs {
            let name = self.dies[&o].name.clone().unwrap_or_default();
            if out.contains(&name) {
                continue;
            }
            let (t, defined) = self.variable(&name)?;
            if defined && t == ty {
                out.push(name);
            }
        }
        Ok(out)
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

    /// The type of member `m` (as returned by a query) through its
    /// typedefs and qualifiers: the typedef names crossed and what they
    /// end in.
    pub fn type_chain(&self, m: &Member) -> Result<TypeChain> {
        let mut typedefs = Vec::new();
        let Some(mut t) = m.ty else {
            return Ok(TypeChain {
                typedefs,
                base: Base::Other,
            });
        };
        for _ in 0..64 {
            let d = self.die(t)?;
            let base = match d.tag {
                gimli::DW_TAG_typedef
                | gimli::DW_TAG_const_type
                | gimli::DW_TAG_volatile_type
                | gimli::DW_TAG_restrict_type
                | gimli::DW_TAG_atomic_type => {
                    if d.tag == gimli::DW_TAG_typedef {
                        typedefs.push(d.name.clone().unwrap_or_default());
                    }
                    match d.ty {
                        Some(n) => {
                            t = n;
                            continue;
                        }
                        None => Base::Other,
                    }
                }
                gimli::DW_TAG_base_type => Base::Scalar(d.name.clone().unwrap_or_default()),
                gimli::DW_TAG_enumeration_type => Base::Enum,
                gimli::DW_TAG_pointer_type => Base::Pointer,
                gimli::DW_TAG_structure_type
                | gimli::DW_TAG_union_type
                | gimli::DW_TAG_class_type => Base::Composite,
                gimli::DW_TAG_array_type => Base::Array(self.array_die(t)?.count),
                _ => Base::Other,
            };
            return Ok(TypeChain { typedefs, base });
        }
        Err(format!("{}: typedef loop", self.object))
    }

    /// Element 0 of array member `m` (as returned by a query), as a member
    /// of the type `m` was found in: named `NAME[0]`, of the array's
    /// element type (after every dimension: `int` for `int x[2][3]`).
    pub fn element(&self, m: &Member) -> Result<Member> {
        let t = m.ty.ok_or_else(|| format!("{}: member of void", m.name))?;
        let a = self.strip(t)?;
        self.array_die(a)?;
        let elem = self.dies[&a]
            .ty
            .ok_or_else(|| format!("{}: array of nothing", self.object))?;
        Ok(Member {
            name: format!("{}[0]", m.name),
            offset: m.offset,
            size: self.sizeof_die(elem)?,
            bits: None,
            ty: Some(elem),
        })
    }

    /// The C spelling of member `m`'s type, as [`Types::member_type_name`]
    /// gives it.
    pub fn type_name_of(&self, m: &Member) -> Result<String> {
        self.type_name(m.ty)
    }

    /// The members of the struct or union pointer member `m` points to
    /// (offsets from the pointee's start); `None` when it points to
    /// anything else (`void`, a scalar).
    pub fn pointee_members(&self, m: &Member) -> Result<Option<Vec<Member>>> {
        let t = m.ty.ok_or_else(|| format!("{}: member of void", m.name))?;
        let p = self.die(self.strip(t)?)?;
        if p.tag != gimli::DW_TAG_pointer_type {
            return Err(format!("{}: {} is not a pointer", self.object, m.name));
        }
        let Some(to) = p.ty else { return Ok(None) };
        let s = self.strip(to)?;
        match self.die(s)?.tag {
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => self.members_of(s).map(Some),
            _ => Ok(None),
        }
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
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type | gimli::DW_TAG_class_type => {
                for m in self.members_of(s)? {
                    let (Some(mt), None) = (m.ty, m.bits) else {
                        continue;
                    };
                    let seg = if m.name.is_empty() { "<anon>" } else { &m.name };
                    self.embedded_in(mt, name, &format!("{path}.{seg}"), offset + m.offset, out)?;
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
