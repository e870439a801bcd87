//! The reader on a small relocatable ELF object built here: hand-assembled
//! DWARF 4 whose names reach `.debug_str` only through relocations (so a
//! reader that does not apply them sees every name as the first string),
//! an anonymous union, a bit field, arrays, typedefs (a chain of two
//! behind `const`), a pointer and a variable with an initializer holding
//! a relocation.

use super::*;
use gimli::constants::*;
use object::write;

/// DWARF under construction: abbreviations, DIE bytes, strings, and the
/// fixups to apply once every DIE's offset is known.
#[derive(Default)]
struct Dw {
    abbrev: Vec<u8>,
    info: Vec<u8>,
    strs: Vec<u8>,
    /// (offset in .debug_info, offset in .debug_str): a strp to relocate.
    strp: Vec<(u64, u64)>,
    /// (offset in .debug_info, DIE label): a ref4 to fill in.
    refs: Vec<(usize, &'static str)>,
    labels: HashMap<&'static str, usize>,
}

/// Attribute values of a DIE.
enum V {
    Str(&'static str),
    U8(u8),
    Ref(&'static str),
    Flag,
}

impl Dw {
    fn abbrev(
        &mut self,
        code: u8,
        tag: gimli::DwTag,
        children: bool,
        attrs: &[(gimli::DwAt, gimli::DwForm)],
    ) {
        self.abbrev.extend([code, tag.0 as u8, u8::from(children)]);
        for (a, f) in attrs {
            self.abbrev.extend([a.0 as u8, f.0 as u8]);
        }
        self.abbrev.extend([0, 0]);
    }

    fn die(&mut self, label: &'static str, code: u8, vals: &[V]) {
        self.labels.insert(label, self.info.len());
        self.info.push(code);
        for v in vals {
            match v {
                V::Str(s) => {
                    self.strp
                        .push((self.info.len() as u64, self.strs.len() as u64));
                    self.strs.extend_from_slice(s.as_bytes());
                    self.strs.push(0);
                    self.info.extend([0; 4]);
                }
                V::U8(b) => self.info.push(*b),
                V::Ref(l) => {
                    self.refs.push((self.info.len(), l));
                    self.info.extend([0; 4]);
                }
                V::Flag => {}
            }
        }
    }

    fn end_children(&mut self) {
        self.info.push(0);
    }
}

/// The object: `.debug_*` as described above, `.data` holding `the_s`
/// (a `struct S`) whose `ob_type` is relocated against `PyFoo_Type`.
fn object_bytes(with_debug: bool) -> Vec<u8> {
    let mut d = Dw::default();
    d.strs.extend_from_slice(b"first string\0");
    d.abbrev(1, DW_TAG_compile_unit, true, &[]);
    d.abbrev(
        2,
        DW_TAG_base_type,
        false,
        &[(DW_AT_name, DW_FORM_strp), (DW_AT_byte_size, DW_FORM_data1)],
    );
    d.abbrev(
        3,
        DW_TAG_structure_type,
        true,
        &[(DW_AT_name, DW_FORM_strp), (DW_AT_byte_size, DW_FORM_data1)],
    );
    let member = [
        (DW_AT_name, DW_FORM_strp),
        (DW_AT_type, DW_FORM_ref4),
        (DW_AT_data_member_location, DW_FORM_data1),
    ];
    d.abbrev(4, DW_TAG_member, false, &member);
    let bits = [
        (DW_AT_name, DW_FORM_strp),
        (DW_AT_type, DW_FORM_ref4),
        (DW_AT_bit_size, DW_FORM_data1),
        (DW_AT_data_bit_offset, DW_FORM_data1),
    ];
    d.abbrev(5, DW_TAG_member, false, &bits);
    d.abbrev(
        6,
        DW_TAG_typedef,
        false,
        &[(DW_AT_name, DW_FORM_strp), (DW_AT_type, DW_FORM_ref4)],
    );
    d.abbrev(
        7,
        DW_TAG_pointer_type,
        false,
        &[(DW_AT_byte_size, DW_FORM_data1), (DW_AT_type, DW_FORM_ref4)],
    );
    d.abbrev(8, DW_TAG_array_type, true, &[(DW_AT_type, DW_FORM_ref4)]);
    d.abbrev(
        9,
        DW_TAG_subrange_type,
        false,
        &[(DW_AT_upper_bound, DW_FORM_data1)],
    );
    let var = [
        (DW_AT_name, DW_FORM_strp),
        (DW_AT_type, DW_FORM_ref4),
        (DW_AT_external, DW_FORM_flag_present),
    ];
    d.abbrev(10, DW_TAG_variable, false, &var);
    d.abbrev(
        11,
        DW_TAG_union_type,
        true,
        &[(DW_AT_byte_size, DW_FORM_data1)],
    );
    // An anonymous member (no name).
    d.abbrev(
        12,
        DW_TAG_member,
        false,
        &[
            (DW_AT_type, DW_FORM_ref4),
            (DW_AT_data_member_location, DW_FORM_data1),
        ],
    );
    d.abbrev(13, DW_TAG_const_type, false, &[(DW_AT_type, DW_FORM_ref4)]);
    d.abbrev.push(0);

    // CU header (DWARF 4, 32-bit): length, version, abbrev offset, address size.
    d.info.extend([0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 8]);
    d.die("cu", 1, &[]);
    d.die("long", 2, &[V::Str("long"), V::U8(8)]);
    d.die("uint", 2, &[V::Str("unsigned int"), V::U8(4)]);
    // struct _object { union { long ob_refcnt; }; struct _object *ob_type; }
    d.die("object", 3, &[V::Str("_object"), V::U8(16)]);
    d.die("anon", 12, &[V::Ref("union"), V::U8(0)]);
    d.die("ob_type", 4, &[V::Str("ob_type"), V::Ref("ptr"), V::U8(8)]);
    d.end_children();
    d.die("union", 11, &[V::U8(8)]);
    d.die(
        "ob_refcnt",
        4,
        &[V::Str("ob_refcnt"), V::Ref("long"), V::U8(0)],
    );
    d.end_children();
    d.die("ptr", 7, &[V::U8(8), V::Ref("object")]);
    d.die("PyObject", 6, &[V::Str("PyObject"), V::Ref("object")]);
    // struct state { unsigned int kind:3 (bit 2); unsigned int ascii:1 (bit 6); }
    d.die("state", 3, &[V::Str("state"), V::U8(4)]);
    d.die(
        "kind",
        5,
        &[V::Str("kind"), V::Ref("uint"), V::U8(3), V::U8(2)],
    );
    d.die(
        "ascii",
        5,
        &[V::Str("ascii"), V::Ref("uint"), V::U8(1), V::U8(6)],
    );
    d.end_children();
    // struct S { PyObject ob_base; struct state st; long items[3]; }
    d.die("S", 3, &[V::Str("S"), V::U8(48)]);
    d.die(
        "ob_base",
        4,
        &[V::Str("ob_base"), V::Ref("PyObject"), V::U8(0)],
    );
    d.die("st", 4, &[V::Str("st"), V::Ref("state"), V::U8(16)]);
    d.die("items", 4, &[V::Str("items"), V::Ref("array"), V::U8(24)]);
    d.end_children();
    d.die("array", 8, &[V::Ref("long")]);
    d.die("range", 9, &[V::U8(2)]);
    d.end_children();
    // typedef long __ssize_t; typedef __ssize_t Py_ssize_t;
    // struct T { const Py_ssize_t n; PyObject objs[2]; }
    d.die("__ssize_t", 6, &[V::Str("__ssize_t"), V::Ref("long")]);
    d.die(
        "Py_ssize_t",
        6,
        &[V::Str("Py_ssize_t"), V::Ref("__ssize_t")],
    );
    d.die("const", 13, &[V::Ref("Py_ssize_t")]);
    d.die("T", 3, &[V::Str("T"), V::U8(40)]);
    d.die("n", 4, &[V::Str("n"), V::Ref("const"), V::U8(0)]);
    d.die("objs", 4, &[V::Str("objs"), V::Ref("objects"), V::U8(8)]);
    d.end_children();
    d.die("objects", 8, &[V::Ref("PyObject")]);
    d.die("range2", 9, &[V::U8(1)]);
    d.end_children();
    d.die("the_s", 10, &[V::Str("the_s"), V::Ref("S"), V::Flag]);
    d.end_children();
    let len = (d.info.len() - 4) as u32;
    d.info[..4].copy_from_slice(&len.to_le_bytes());
    for (at, l) in std::mem::take(&mut d.refs) {
        let off = d.labels[l] as u32;
        d.info[at..at + 4].copy_from_slice(&off.to_le_bytes());
    }

    let mut o = write::Object::new(
        object::BinaryFormat::Elf,
        object::Architecture::X86_64,
        object::Endianness::Little,
    );
    if with_debug {
        let sec = |o: &mut write::Object, name: &str, data: &[u8]| {
            let s = o.add_section(
                Vec::new(),
                name.as_bytes().to_vec(),
                object::SectionKind::Debug,
            );
            o.append_section_data(s, data, 1);
            s
        };
        sec(&mut o, ".debug_abbrev", &d.abbrev);
        let info = sec(&mut o, ".debug_info", &d.info);
        let strs = sec(&mut o, ".debug_str", &d.strs);
        let sym = o.section_symbol(strs);
        for (offset, addend) in d.strp {
            o.add_relocation(
                info,
                write::Relocation {
                    offset,
                    symbol: sym,
                    addend: addend as i64,
                    flags: object::RelocationFlags::Elf {
                        r_type: object::elf::R_X86_64_32,
                    },
                },
            )
            .unwrap();
        }
    }
    let data = o.section_id(write::StandardSection::Data);
    let off = o.append_section_data(data, &[7u8; 48], 8);
    o.add_symbol(write::Symbol {
        name: b"the_s".to_vec(),
        value: off,
        size: 48,
        kind: object::SymbolKind::Data,
        scope: object::SymbolScope::Dynamic,
        weak: false,
        section: write::SymbolSection::Section(data),
        flags: object::SymbolFlags::None,
    });
    let ty = o.add_symbol(write::Symbol {
        name: b"PyFoo_Type".to_vec(),
        value: 0,
        size: 0,
        kind: object::SymbolKind::Data,
        scope: object::SymbolScope::Dynamic,
        weak: false,
        section: write::SymbolSection::Undefined,
        flags: object::SymbolFlags::None,
    });
    o.add_relocation(
        data,
        write::Relocation {
            offset: off + 8,
            symbol: ty,
            addend: 0,
            flags: object::RelocationFlags::Elf {
                r_type: object::elf::R_X86_64_64,
            },
        },
    )
    .unwrap();
    o.write().unwrap()
}

fn types() -> Types {
    let bytes = object_bytes(true);
    Types::parse("t.o", Aligned::new(&bytes).bytes()).unwrap()
}

#[test]
fn struct_queries_follow_relocated_names() {
    let t = types();
    assert_eq!((t.address_size, t.dwarf_version), (8, 4));
    assert_eq!(t.sizeof("struct S"), Ok(48));
    assert_eq!(t.sizeof("PyObject"), Ok(16));
    assert_eq!(t.sizeof("long"), Ok(8));
    // Through the anonymous union, as 3.12's PyObject.ob_refcnt.
    let m = t.member("struct S", "ob_base.ob_refcnt").unwrap();
    assert_eq!((m.offset, m.size, m.bits), (0, 8, None));
    let m = t.member("struct S", "ob_base.ob_type").unwrap();
    assert_eq!((m.offset, m.size), (8, 8));
    assert_eq!(t.is_pointer(&m), Ok(true));
    assert_eq!(
        t.member_type_name("struct S", "ob_base"),
        Ok("PyObject".into())
    );
    assert_eq!(
        t.member_type_name("struct S", "ob_base.ob_type"),
        Ok("*struct _object".into())
    );
    // Bit fields: position from the start of the struct holding them.
    assert_eq!(t.member_path_offset("struct S", "st.kind"), Ok(16));
    assert_eq!(
        t.bitfield("struct S", "st.kind"),
        Ok(Bits { offset: 2, size: 3 })
    );
    assert_eq!(
        t.bitfield("struct S", "st.ascii"),
        Ok(Bits { offset: 6, size: 1 })
    );
    assert!(t.bitfield("struct S", "items").is_err());
    // Arrays: element 0, stride, length; indexing within bounds only.
    assert_eq!(
        t.array("struct S", "items"),
        Ok(Array {
            offset: 24,
            stride: 8,
            count: Some(3)
        })
    );
    assert_eq!(t.member_path_offset("struct S", "items[2]"), Ok(40));
    assert!(t.member("struct S", "items[3]").is_err());
    let names: Vec<String> = t
        .struct_layout("struct S")
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["ob_base", "st", "items"]);
    let obj = t.struct_layout("PyObject").unwrap();
    assert_eq!(
        obj.iter()
            .map(|m| (m.name.as_str(), m.offset))
            .collect::<Vec<_>>(),
        [("", 0), ("ob_type", 8)]
    );
    // Variables, and what a member embeds in place.
    assert_eq!(t.variable("the_s"), Ok(("struct S".into(), true)));
    assert_eq!(
        t.variables_of_type("struct S"),
        Ok(vec!["the_s".to_string()])
    );
    assert_eq!(t.variable_size("the_s"), Ok(48));
    let base = t.member("struct S", "ob_base").unwrap();
    let e = t.embedded(&base, "PyObject").unwrap();
    assert_eq!(
        e.iter().map(|m| (m.offset, m.size)).collect::<Vec<_>>(),
        [(0, 16)]
    );
    let whole = t.member("struct S", "items").unwrap();
    assert!(t.embedded(&whole, "PyObject").unwrap().is_empty());
}

#[test]
fn type_chains_and_array_elements() {
    let t = types();
    let chain = |ty: &str, path: &str| t.type_chain(&t.member(ty, path).unwrap()).unwrap();
    let names = |c: &TypeChain| c.typedefs.join(" ");
    // Through `const` and both typedefs, outermost first.
    let n = chain("struct T", "n");
    assert_eq!(names(&n), "Py_ssize_t __ssize_t");
    assert_eq!(n.base, Base::Scalar("long".into()));
    let n = t.member("struct T", "n").unwrap();
    assert_eq!(t.type_name_of(&n), Ok("Py_ssize_t".into()));
    assert!(t.element(&n).is_err());
    assert_eq!(chain("struct S", "ob_base.ob_type").base, Base::Pointer);
    assert_eq!(
        chain("struct S", "st.kind").base,
        Base::Scalar("unsigned int".into())
    );
    let base = chain("struct S", "ob_base");
    assert_eq!(
        (names(&base), base.base),
        ("PyObject".into(), Base::Composite)
    );
    // An array of structs: its length, then element 0 and its members.
    let objs = t.member("struct T", "objs").unwrap();
    let c = t.type_chain(&objs).unwrap();
    assert_eq!((names(&c), c.base), (String::new(), Base::Array(Some(2))));
    assert_eq!(chain("struct S", "items").base, Base::Array(Some(3)));
    let e = t.element(&objs).unwrap();
    assert_eq!((e.name.as_str(), e.offset, e.size), ("objs[0]", 8, 16));
    assert_eq!(names(&t.type_chain(&e).unwrap()), "PyObject");
    let inner = t.members_in(&e).unwrap();
    assert_eq!(
        inner
            .iter()
            .map(|m| (m.name.as_str(), m.offset))
            .collect::<Vec<_>>(),
        [("", 8), ("ob_type", 16)]
    );
    let anon = t.type_chain(&inner[0]).unwrap();
    assert_eq!((anon.typedefs.len(), anon.base), (0, Base::Composite));
}

#[test]
fn missing_things_are_errors() {
    let t = types();
    assert!(t.member("struct S", "nope").is_err());
    assert!(t.member("struct S", "ob_base.nope").is_err());
    assert!(t.member("struct S", "").is_err());
    assert!(t.sizeof("struct NoSuch").is_err());
    assert!(t.struct_layout("long").is_err());
    assert!(t.variable("nothing").is_err());
    assert!(t.variables_of_type("struct NoSuch").unwrap().is_empty());
    let e = Types::parse("nodebug.o", Aligned::new(&object_bytes(false)).bytes())
        .err()
        .unwrap();
    assert!(
        e.contains("nodebug.o") && e.contains("no .debug_info"),
        "{e}"
    );
    assert!(Types::parse("junk.o", b"not an object").is_err());
}

#[test]
fn object_data_reads_initializers_and_relocations() {
    let bytes = object_bytes(true);
    let d = ObjectData::parse("t.o", Aligned::new(&bytes).bytes()).unwrap();
    assert_eq!(d.architecture, object::Architecture::X86_64);
    assert!(d.defines("the_s") && d.references("PyFoo_Type"));
    let v = d.variable("the_s").unwrap();
    assert_eq!(v.bytes, [7u8; 48]);
    assert_eq!(v.reloc_at(8), Some("PyFoo_Type"));
    assert_eq!(v.reloc_at(0), None);
    assert!(d.variable("PyFoo_Type").is_err());
    assert_eq!(d.place("PyFoo_Type", 0), None);
    assert_eq!(d.place("the_s", 4), Some((".data".into(), 4)));
}

/// A System V archive of `members` (no symbol index).
fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut a = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let head = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            format!("{name}/"),
            0,
            0,
            0,
            644,
            data.len()
        );
        a.extend_from_slice(head.as_bytes());
        a.extend_from_slice(data);
        if data.len() % 2 == 1 {
            a.push(b'\n');
        }
    }
    a
}

#[test]
fn archive_members_are_found_and_aligned() {
    let obj = object_bytes(true);
    let bytes = archive(&[("odd.txt", b"abc"), ("t.o", &obj)]);
    let ar = Archive::from_bytes(std::path::Path::new("x.a"), bytes).unwrap();
    assert_eq!(
        ar.member_names(),
        Ok(vec!["odd.txt".to_string(), "t.o".to_string()])
    );
    let m = ar.member("t.o").unwrap();
    assert_eq!(m.bytes(), &obj[..]);
    assert_eq!(m.bytes().as_ptr() as usize % 8, 0);
    assert!(Types::parse("t.o", m.bytes()).is_ok());
    assert!(ar
        .member("nope.o")
        .err()
        .unwrap()
        .contains("no member nope.o"));
    assert!(ar.symbol_index().unwrap_err().contains("no symbol index"));
    assert!(
        Archive::from_bytes(std::path::Path::new("bad.a"), b"not an archive".to_vec()).is_err()
    );
}
