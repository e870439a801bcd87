//! DWARF facts of one relocatable ELF object of a reference archive: the
//! members of a struct, where they are and whether their size may depend
//! on the platform. The reader behind [`Dwarf`] is private: the facts are
//! the interface (`tests/layout_dwarf.rs` may later serve them from one
//! shared reader).

use gimli::{DwTag, EndianSlice, LittleEndian};
use object::{Object, ObjectSection, ObjectSymbol};
use std::collections::HashMap;
use std::path::Path;

/// One member of a struct, nested structs and unions flattened.
#[derive(Debug, Clone)]
pub struct Member {
    pub offset: u64,
    /// `ob_base.ob_refcnt`
    pub path: String,
    /// Why its size or layout may differ on Windows (LLP64) or another
    /// platform: C `long`, or a type from the platform's headers; one line
    /// each.
    pub platform: Vec<String>,
    /// A pointer, `Py_ssize_t`, `Py_hash_t` or another typedef that is 8
    /// bytes on LP64 and LLP64 alike.
    pub stable_8: bool,
    /// Its type's name, and element count for an array.
    pub type_name: Option<String>,
    pub count: Option<u64>,
}

#[derive(Debug)]
struct Die {
    tag: DwTag,
    name: Option<String>,
    ty: Option<usize>,
    member_offset: Option<u64>,
    count: Option<u64>,
    declaration: bool,
    children: Vec<usize>,
}

/// The type DIEs of one archive member.
pub struct Dwarf {
    dies: HashMap<usize, Die>,
    by_name: HashMap<String, Vec<usize>>,
}

/// Typedefs that are 8 bytes on LP64 and LLP64 alike.
const STABLE_8: &[&str] = &[
    "Py_ssize_t",
    "Py_hash_t",
    "Py_uhash_t",
    "size_t",
    "ssize_t",
    "intptr_t",
    "uintptr_t",
    "int64_t",
    "uint64_t",
    "PY_INT64_T",
    "PY_UINT64_T",
    // C11 <stdatomic.h> (pyenv's gcc build; MSVC builds use volatile
    // uintptr_t): pointer-sized everywhere.
    "atomic_uintptr_t",
    "atomic_intptr_t",
    "atomic_size_t",
];

/// Typedefs of the platform's C library (POSIX) besides `pthread_*`.
const POSIX_TYPES: &[&str] = &[
    "stack_t",
    "sem_t",
    "sigset_t",
    "pid_t",
    "time_t",
    "clockid_t",
    "dev_t",
    "ino_t",
    "off_t",
    "mode_t",
    "uid_t",
    "gid_t",
];

/// A debug section with its (absolute, 32/64-bit) relocations applied.
fn relocated(obj: &object::File, name: &str) -> Vec<u8> {
    let Some(sec) = obj.section_by_name(name) else {
        return Vec::new();
    };
    let mut data = sec.uncompressed_data().unwrap().into_owned();
    for (off, r) in sec.relocations() {
        let object::RelocationTarget::Symbol(i) = r.target() else {
            panic!("{name}: relocation target {:?}", r.target())
        };
        let v = obj.symbol_by_index(i).unwrap().address() as i64 + r.addend();
        let o = off as usize;
        match r.size() {
            32 => data[o..o + 4].copy_from_slice(&(v as u32).to_le_bytes()),
            64 => data[o..o + 8].copy_from_slice(&(v as u64).to_le_bytes()),
            s => panic!("{name}: {s}-bit relocation"),
        }
    }
    data
}

impl Dwarf {
    /// The DWARF of member `member` of the archive at `archive`.
    pub fn of(archive: &Path, member: &str) -> Dwarf {
        let bytes = std::fs::read(archive).unwrap();
        let m = super::objgraph::archive_member(&bytes, member).unwrap();
        // Members are only 2-byte aligned inside the archive, too little for
        // the ELF reader: a fresh heap copy (malloc: 16-byte aligned).
        let owned: Vec<u8> = Vec::from(m);
        assert!(
            owned.as_ptr().align_offset(8) == 0,
            "copy not 8-byte aligned"
        );
        Dwarf::parse(&owned)
    }

    fn parse(bytes: &[u8]) -> Dwarf {
        use gimli::SectionId::*;
        let obj = object::File::parse(bytes).unwrap();
        let ids = [
            DebugInfo,
            DebugAbbrev,
            DebugStr,
            DebugLineStr,
            DebugStrOffsets,
            DebugLine,
            DebugAddr,
            DebugRngLists,
            DebugRanges,
            DebugLocLists,
            DebugLoc,
        ];
        let secs: HashMap<&str, Vec<u8>> = ids
            .iter()
            .map(|id| (id.name(), relocated(&obj, id.name())))
            .collect();
        assert!(
            !secs[".debug_info"].is_empty(),
            "no DWARF (built without -g?)"
        );
        let dwarf = gimli::Dwarf::load(|id| -> gimli::Result<_> {
            let data = secs.get(id.name()).map_or(&[][..], |v| v.as_slice());
            Ok(EndianSlice::new(data, LittleEndian))
        })
        .unwrap();
        let mut t = Dwarf {
            dies: HashMap::new(),
            by_name: HashMap::new(),
        };
        let mut units = dwarf.units();
        while let Some(h) = units.next().unwrap() {
            let unit = dwarf.unit(h).unwrap();
            let mut stack: Vec<usize> = Vec::new();
            let mut entries = unit.entries();
            while let Some((delta, e)) = entries.next_dfs().unwrap() {
                for _ in 0..(1 - delta) {
                    stack.pop();
                }
                let off = e.offset().to_debug_info_offset(&unit.header).unwrap().0;
                let mut d = Die {
                    tag: e.tag(),
                    name: None,
                    ty: None,
                    member_offset: None,
                    count: None,
                    declaration: false,
                    children: Vec::new(),
                };
                let mut attrs = e.attrs();
                while let Some(a) = attrs.next().unwrap() {
                    match a.name() {
                        gimli::DW_AT_name => {
                            let s = dwarf.attr_string(&unit, a.value()).unwrap();
                            d.name = Some(s.to_string_lossy().into_owned());
                        }
                        gimli::DW_AT_data_member_location => d.member_offset = a.udata_value(),
                        gimli::DW_AT_count => d.count = a.udata_value(),
                        gimli::DW_AT_upper_bound => d.count = a.udata_value().map(|u| u + 1),
                        gimli::DW_AT_declaration => d.declaration = true,
                        gimli::DW_AT_type => {
                            d.ty = match a.value() {
                                gimli::AttributeValue::UnitRef(r) => {
                                    Some(r.to_debug_info_offset(&unit.header).unwrap().0)
                                }
                                gimli::AttributeValue::DebugInfoRef(r) => Some(r.0),
                                _ => None,
                            }
                        }
                        _ => {}
                    }
                }
                if let Some(&p) = stack.last() {
                    t.dies.get_mut(&p).unwrap().children.push(off);
                }
                if let Some(n) = &d.name {
                    t.by_name.entry(n.clone()).or_default().push(off);
                }
                t.dies.insert(off, d);
                stack.push(off);
            }
        }
        t
    }

    fn is_struct(&self, t: usize) -> bool {
        let tag = self.dies[&t].tag;
        tag == gimli::DW_TAG_structure_type || tag == gimli::DW_TAG_union_type
    }

    /// The definition of struct (or typedef of a struct) `name`.
    fn named(&self, name: &str) -> usize {
        let cands = self.by_name.get(name).map_or(&[][..], |v| v.as_slice());
        let defined = |c: &usize| self.is_struct(*c) && !self.dies[c].declaration;
        if let Some(&c) = cands.iter().find(|c| defined(c)) {
            return c;
        }
        let typedefs = cands
            .iter()
            .filter(|c| self.dies[c].tag == gimli::DW_TAG_typedef);
        typedefs
            .map(|c| self.strip(self.dies[c].ty.unwrap()))
            .find(|s| !self.dies[s].declaration)
            .unwrap_or_else(|| panic!("no struct {name} in the DWARF"))
    }

    /// Through qualifiers and typedefs.
    fn strip(&self, mut t: usize) -> usize {
        loop {
            let d = &self.dies[&t];
            match (d.tag, d.ty) {
                (
                    gimli::DW_TAG_const_type
                    | gimli::DW_TAG_volatile_type
                    | gimli::DW_TAG_atomic_type
                    | gimli::DW_TAG_restrict_type
                    | gimli::DW_TAG_typedef,
                    Some(n),
                ) => t = n,
                _ => return t,
            }
        }
    }

    /// A typedef from the platform's C library (POSIX), through qualifiers
    /// and further typedefs: its name.
    fn posix_typedef(&self, mut t: usize) -> Option<&str> {
        loop {
            let d = &self.dies[&t];
            match d.tag {
                gimli::DW_TAG_typedef => {
                    let name = d.name.as_deref().unwrap_or("");
                    if name.starts_with("pthread_") || POSIX_TYPES.contains(&name) {
                        return Some(name);
                    }
                }
                gimli::DW_TAG_const_type
                | gimli::DW_TAG_volatile_type
                | gimli::DW_TAG_atomic_type
                | gimli::DW_TAG_restrict_type => {}
                _ => return None,
            }
            t = d.ty?;
        }
    }

    /// Why the type `t` (reached as `path`) may have another size or
    /// layout on Windows (LLP64) or another platform: one line per
    /// finding.
    fn platform_dependence(&self, t: usize, path: &str, out: &mut Vec<String>) {
        let d = &self.dies[&t];
        let name = d.name.as_deref().unwrap_or("");
        match d.tag {
            gimli::DW_TAG_typedef if STABLE_8.contains(&name) => {}
            gimli::DW_TAG_typedef if self.posix_typedef(t).is_some() => {
                out.push(format!("{path}: {name} (a POSIX type)"))
            }
            gimli::DW_TAG_base_type if name.contains("long") && !name.contains("long long") => {
                out.push(format!("{path}: C {name} (4 bytes on LLP64)"))
            }
            gimli::DW_TAG_pointer_type
            | gimli::DW_TAG_base_type
            | gimli::DW_TAG_enumeration_type => {}
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
                for &m in &d.children {
                    let md = &self.dies[&m];
                    if let (gimli::DW_TAG_member, Some(mt)) = (md.tag, md.ty) {
                        let mname = md.name.as_deref().unwrap_or("<anon>");
                        self.platform_dependence(mt, &format!("{path}.{mname}"), out);
                    }
                }
            }
            _ => {
                if let Some(n) = d.ty {
                    self.platform_dependence(n, path, out);
                }
            }
        }
    }

    /// The members of struct `name` (flattened through nested structs and
    /// unions, not through POSIX types) whose bytes start before `end`.
    pub fn members_before(&self, name: &str, end: u64) -> Vec<Member> {
        let mut out = Vec::new();
        self.walk(self.named(name), 0, name, end, &mut out);
        out
    }

    fn walk(&self, s: usize, base: u64, path: &str, end: u64, out: &mut Vec<Member>) {
        for &m in &self.dies[&s].children {
            let d = &self.dies[&m];
            let off = base + d.member_offset.unwrap_or(0);
            let (gimli::DW_TAG_member, Some(t), true) = (d.tag, d.ty, off < end) else {
                continue;
            };
            let p = format!("{path}.{}", d.name.as_deref().unwrap_or("<anon>"));
            let st = self.strip(t);
            if self.posix_typedef(t).is_none() && self.is_struct(st) {
                self.walk(st, off, &p, end, out);
                continue;
            }
            let mut platform = Vec::new();
            self.platform_dependence(t, &p, &mut platform);
            let type_name = self.dies[&t].name.clone();
            let stable_8 = self.dies[&st].tag == gimli::DW_TAG_pointer_type
                || (self.dies[&t].tag == gimli::DW_TAG_typedef
                    && STABLE_8.contains(&type_name.as_deref().unwrap_or("")));
            let count = self.dies[&st]
                .children
                .iter()
                .find_map(|c| self.dies[c].count);
            out.push(Member {
                offset: off,
                path: p,
                platform,
                stable_8,
                type_name,
                count,
            });
        }
    }
}
