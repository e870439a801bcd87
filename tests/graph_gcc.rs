//! Our object's object graph equals gcc's, for every reference build of
//! the matrix (`tests/support/builds.rs`): pyenv 3.12.1 (our input: the
//! marshal bytes its `frozen.o` keeps), pyenv 3.11.7, Debian's 3.11.2 and
//! Debian's arm64 3.11.2 (3.11's `frozen.o` keeps no marshal bytes, so our
//! input is the stdlib compiled by the build's own interpreter,
//! `--compile-with`; for arm64, the host's Debian 3.11.2 on the arm64
//! package's stdlib).
//!
//! For every module that has an accessor in gcc's `deepfreeze.o` (the one
//! inside the build's `libpython3.X.a`, compiled by gcc from CPython's
//! generated C), the graph reachable from our `<module>_toplevel` must
//! equal gcc's: the same bytes in every object and the same pointer
//! targets, compared structurally (independent of where either side put
//! its objects, what it named them, and how much it shares). Also: the
//! same accessors, each returning a new reference to its module's code
//! object, the same undefined symbols, (3.12) the same
//! `_Py_next_func_version`, and no object on either side that no accessor
//! reaches. The checks are `tests/support/compare.rs`'s, instantiated per
//! build by `case_tests!`; the differences by design are its
//! `known_vs_gcc` tables (each entry with its reason; nothing else is
//! ignored).

mod support;

use std::sync::OnceLock;
use support::builds::{build, BuildId, Scheme};
use support::compare::{self, accessor_names, known_vs_gcc, module_of, Pair};
use support::objgraph::{file_offset, model, Comparer, Loc, Model, ObjFile, Reloc, Target, View};

struct Inputs {
    ours: ObjFile<'static>,
    theirs: ObjFile<'static>,
    ours_bytes: &'static [u8],
    model: &'static Model,
}

/// gcc's deepfreeze.o and ours, read once per test binary.
fn inputs(id: BuildId) -> &'static Inputs {
    static CELLS: [OnceLock<Inputs>; 4] = [const { OnceLock::new() }; 4];
    CELLS[id as usize].get_or_init(|| {
        let b = build(id);
        let ours_bytes = b.object(None, Scheme::Eager);
        Inputs {
            ours: ObjFile::parse(ours_bytes).expect("our object"),
            theirs: ObjFile::parse(b.gcc_object()).expect("gcc's deepfreeze.o"),
            ours_bytes,
            model: model(b.xy),
        }
    })
}

impl Inputs {
    fn pair(&self) -> Pair<'_, 'static> {
        Pair {
            ours: &self.ours,
            theirs: &self.theirs,
            labels: ("ours", "gcc's"),
            model: self.model,
        }
    }
}

// --- the checks, once for every build ------------------------------------------

fn object_graph_equals_gcc_for_every_module(id: BuildId) {
    let i = inputs(id);
    i.pair().assert_graphs_equal(known_vs_gcc(i.model));
}

/// No object on either side that no accessor reaches (gcc's has none;
/// ours must not carry dead data either).
fn every_object_is_reached_from_an_accessor(id: BuildId) {
    inputs(id).pair().assert_every_object_reached();
}

/// The same accessors, undefined symbols and `_Py_next_func_version`
/// (3.12; defined by neither in 3.11); gcc's references the runtime's
/// functions, `_PyRuntime` and the code and str types.
fn same_accessors_and_symbols(id: BuildId) {
    let i = inputs(id);
    let theirs = i.theirs.undefined();
    let mut must = i.model.callees();
    must.extend(["_PyRuntime", "PyCode_Type", "PyUnicode_Type"]);
    for m in must {
        assert!(theirs.contains(m), "gcc's object lacks {m}: {theirs:?}");
    }
    i.pair().assert_same_symbols();
}

fn accessors_return_new_references(id: BuildId) {
    inputs(id).pair().assert_new_references();
}

// --- the comparer must be able to fail ---------------------------------------

/// gcc's graph for one module against gcc's graph for another differs.
fn negative_different_modules_differ(id: BuildId) {
    let (t, model) = (&inputs(id).theirs, inputs(id).model);
    let a = t.accessor_object("_Py_get_os_toplevel").unwrap();
    let b = t.accessor_object("_Py_get_stat_toplevel").unwrap();
    let mut cmp = Comparer::new(t, t, model, &[]).labels("os", "stat");
    cmp.expect_mismatch("os/stat toplevel", a, b, "os and stat compared equal");
    // And a module against itself is equal.
    let mut cmp = Comparer::new(t, t, model, &[]);
    cmp.compare("os toplevel", a, a).unwrap();
}

/// Our `os` toplevel -> co_consts -> first code object -> co_linetable.
fn deep_linetable(f: &ObjFile, model: &Model) -> Loc {
    let c = &model.l.code;
    let top = f.accessor_object("_Py_get_os_toplevel").unwrap();
    let consts = f.follow(top, c.consts.off as u64);
    let n = u64::from_le_bytes(f.bytes(consts, 24).unwrap()[16..24].try_into().unwrap());
    let code = (0..n)
        .map(|i| f.reloc_at(consts.add(24 + 8 * i as i64)).unwrap())
        .find_map(|r| match &r.target {
            Target::Local(l) => match &f.reloc_at(l.add(8)).unwrap().target {
                Target::Extern { name, .. } if name == "PyCode_Type" => Some(*l),
                _ => None,
            },
            _ => None,
        })
        .expect("os defines a function");
    f.follow(code, c.linetable.off as u64)
}

/// One flipped byte deep in our data is found, with its path.
fn negative_flipped_byte_is_found(id: BuildId) {
    let inp = inputs(id);
    let target = deep_linetable(&inp.ours, inp.model);
    let mut bytes = inp.ours_bytes.to_vec();
    bytes[file_offset(inp.ours_bytes, target) + 33] ^= 0x01;
    let bent = ObjFile::parse(&bytes).unwrap();
    // Against our own unbent object, so that the test does not depend on
    // how ours compares with gcc's.
    let mut cmp = Comparer::new(&bent, &inp.ours, inp.model, &[]);
    let ra = bent.accessor_object("_Py_get_os_toplevel").unwrap();
    let rb = inp.ours.accessor_object("_Py_get_os_toplevel").unwrap();
    assert_eq!(ra, rb);
    let err = cmp.expect_mismatch("os toplevel", ra, rb, "a flipped byte went unnoticed");
    assert!(
        err.path.starts_with("os toplevel -> co_consts[")
            && err.path.ends_with("-> co_linetable")
            && err
                .what
                .starts_with("byte 33 (PyBytes_Type.ob_sval[1]) differs: "),
        "unexpected report: {err}"
    );
}

/// Two swapped pointers (same bytes, different targets) are found.
fn negative_swapped_pointers_are_found(id: BuildId) {
    let inp = inputs(id);
    let model = inp.model;
    let mut ours = ObjFile::parse(inp.ours_bytes).unwrap();
    let top = ours.accessor_object("_Py_get_os_toplevel").unwrap();
    let names = ours.follow(top, model.l.code.names.off as u64);
    // Swap co_names[0] and co_names[1]: both are str, so only the
    // targets tell them apart.
    let (p0, p1) = (names.add(24), names.add(32));
    let t0 = ours.relocs[&p0].target.clone();
    let t1 = ours.relocs[&p1].target.clone();
    assert_ne!(t0, t1);
    ours.relocs.get_mut(&p0).unwrap().target = t1;
    ours.relocs.get_mut(&p1).unwrap().target = t0;
    let mut cmp = Comparer::new(&ours, &inp.ours, model, &[]);
    let err = cmp.expect_mismatch("os toplevel", top, top, "swapped pointers went unnoticed");
    assert!(
        err.path == "os toplevel -> co_names[0]" || err.path == "os toplevel -> co_names",
        "unexpected report: {err}"
    );
    // The same must hold for the extern comparison: point co_names[0] at
    // a runtime string with another offset.
    let mut ours = ObjFile::parse(inp.ours_bytes).unwrap();
    let ext = ours
        .relocs
        .values_mut()
        .find(|r| matches!(&r.target, Target::Extern { name, .. } if name == "_PyRuntime"))
        .unwrap();
    if let Target::Extern { addend, .. } = &mut ext.target {
        *addend += 8;
    }
    let mut cmp = Comparer::new(&ours, &inp.ours, model, &[]);
    let mut any = false;
    for name in accessor_names(&inp.ours) {
        let ra = ours.accessor_object(&name).unwrap();
        let rb = inp.ours.accessor_object(&name).unwrap();
        if let Err(e) = cmp.compare(&format!("{} toplevel", module_of(&name)), ra, rb) {
            eprintln!("expected mismatch: {e}");
            assert!(e.what.contains("_PyRuntime"), "unexpected report: {e}");
            any = true;
        }
    }
    assert!(any, "a changed _PyRuntime offset went unnoticed");
}

/// 3.11: bending our one statically set `wstr` (in `__hello__`'s UCS-4
/// string) 4 bytes past the data is caught both against gcc's object
/// (the known-difference rule refuses it) and against our own.
fn negative_bent_wstr_is_found(id: BuildId) {
    let inp = inputs(id);
    let w = compare::wstr_layout();
    let is_str = |f: &ObjFile, at: Loc| {
        matches!(f.reloc_at(at.add(8)).map(|r| &r.target),
            Some(Target::Extern { name, addend: 0 }) if name == "PyUnicode_Type")
    };
    let wstr: Vec<Loc> = inp
        .ours
        .relocs
        .iter()
        .filter(|(at, r)| {
            let obj = at.add(-(w.wstr as i64));
            at.offset >= w.wstr
                && is_str(&inp.ours, obj)
                && r.target == Target::Local(obj.add(w.data as i64))
        })
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(wstr.len(), 1, "our static wstr pointers: {wstr:?}");
    let mut bent = ObjFile::parse(inp.ours_bytes).unwrap();
    let r = bent.relocs.get_mut(&wstr[0]).unwrap();
    if let Target::Local(l) = &mut r.target {
        *l = l.add(4);
    }
    let top = "_Py_get___hello___toplevel";
    let (rb, ro) = (
        inp.theirs.accessor_object(top).unwrap(),
        inp.ours.accessor_object(top).unwrap(),
    );
    let ra = bent.accessor_object(top).unwrap();
    let mut cmp = Comparer::new(&bent, &inp.theirs, inp.model, known_vs_gcc(inp.model));
    let err = cmp.expect_mismatch(
        "__hello__ toplevel",
        ra,
        rb,
        "a bent wstr passed against gcc's",
    );
    assert!(
        err.path.ends_with("-> wstr") && err.what.starts_with("only ours has a pointer here"),
        "unexpected report: {err}"
    );
    let mut cmp = Comparer::new(&bent, &inp.ours, inp.model, &[]);
    let err = cmp.expect_mismatch(
        "__hello__ toplevel",
        ra,
        ro,
        "a bent wstr passed against our own",
    );
    assert!(
        err.path.ends_with("-> wstr")
            && err.what.starts_with(
                "interior pointer differs: ours object+Some(76), theirs object+Some(72)"
            ),
        "unexpected report: {err}"
    );
}

/// One module per build, with every check as a test of its own, plus the
/// build's own extra checks.
macro_rules! case_tests {
    ($($module:ident: $id:ident [$($extra:ident),*];)*) => {$(
        mod $module {
            use super::*;
            checks!($id: $($extra,)* object_graph_equals_gcc_for_every_module,
                every_object_is_reached_from_an_accessor, same_accessors_and_symbols,
                accessors_return_new_references, negative_different_modules_differ,
                negative_flipped_byte_is_found, negative_swapped_pointers_are_found);
        }
    )*};
}

macro_rules! checks {
    ($id:ident: $($check:ident),*) => {
        $(#[test] fn $check() { super::$check(BuildId::$id) })*
    };
}

case_tests! {
    py312_pyenv: Pyenv312 [];
    py311_pyenv: Pyenv311 [negative_bent_wstr_is_found];
    py311_debian: Debian311 [negative_bent_wstr_is_found];
    py311_debian_arm64: DebianArm64 [negative_bent_wstr_is_found];
}

// --- the rules themselves --------------------------------------------------------

/// The 3.12 hidden-bit rule accepts exactly the difference it describes.
#[test]
fn known_difference_rules_are_narrow_312() {
    let bc = compare::bytes_characters();
    let rt = |k: i64| Target::Extern {
        name: "_PyRuntime".to_string(),
        addend: bc.0 + k * bc.1,
    };
    let ok = compare::one_byte_kinds_hidden_only;
    assert!(ok(&rt(0x30), &rt(0x20)));
    assert!(ok(&rt(0x50), &rt(0x40)));
    assert!(!ok(&rt(0x20), &rt(0x30)), "the bit must be ours");
    assert!(!ok(&rt(0x20), &rt(0x20)));
    assert!(!ok(&rt(0x70), &rt(0x20)), "only the hidden bit");
    assert!(!ok(&rt(0x30), &rt(0x21)));
    let other = Target::Extern {
        name: "_PyRuntime".to_string(),
        addend: bc.0 + 0x30 * bc.1 + 8,
    };
    assert!(!ok(&other, &rt(0x20)), "not an element of bytes_characters");
    let elsewhere = Target::Extern {
        name: "PyBytes_Type".to_string(),
        addend: bc.0 + 0x30 * bc.1,
    };
    assert!(!ok(&elsewhere, &rt(0x20)));
}

/// The 3.11 wstr rule accepts exactly the difference it describes.
#[test]
fn known_difference_rules_are_narrow_311() {
    let w = compare::wstr_layout();
    let at = Loc {
        section: 3,
        offset: 0x1000,
    };
    // A compact UCS-4 str of length 2: state kind 4, compact, ready.
    let str_bytes = |kind: u64, wstr_length: u64| -> Vec<u8> {
        let mut b = vec![0u8; (w.data + 3 * kind) as usize];
        b[16..24].copy_from_slice(&2u64.to_le_bytes());
        b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        let state = (kind << 2) | (1 << 5) | (1 << 7);
        b[32..36].copy_from_slice(&(state as u32).to_le_bytes());
        b[w.wstr_length as usize..w.data as usize].copy_from_slice(&wstr_length.to_le_bytes());
        b
    };
    let ptr = |to: Loc| Reloc {
        target: Target::Local(to),
        size: 8,
        pcrel: false,
    };
    let good = ptr(at.add(w.data as i64));
    let check = |ours_b: &[u8], ours_r: &[(u64, &Reloc)], theirs_b: &[u8]| {
        compare::wstr_ours_ucs4(
            &View {
                at,
                bytes: ours_b,
                relocs: ours_r,
            },
            &View {
                at: at.add(0x500),
                bytes: theirs_b,
                relocs: &[],
            },
        )
    };
    let (ours, theirs) = (str_bytes(4, 2), str_bytes(4, 0));
    assert!(check(&ours, &[(w.wstr, &good)], &theirs));
    assert!(!check(&ours, &[], &theirs), "no pointer on our side");
    let past = ptr(at.add(w.data as i64 + 4));
    assert!(!check(&ours, &[(w.wstr, &past)], &theirs), "not the data");
    let elsewhere = ptr(at.add(0x500 + w.data as i64));
    assert!(
        !check(&ours, &[(w.wstr, &elsewhere)], &theirs),
        "another object's data"
    );
    assert!(
        !check(&str_bytes(4, 3), &[(w.wstr, &good)], &theirs),
        "wstr_length is not the length"
    );
    assert!(
        !check(&ours, &[(w.wstr, &good)], &str_bytes(4, 2)),
        "gcc's must be 0"
    );
    assert!(
        !check(&str_bytes(2, 2), &[(w.wstr, &good)], &str_bytes(2, 0)),
        "UCS-2 is not wchar_t here"
    );
    let mut utf8 = ours.clone();
    utf8[w.utf8_length as usize] = 1;
    assert!(
        !check(&utf8, &[(w.wstr, &good)], &theirs),
        "utf8_length must stay 0"
    );
    let utf8_ptr = ptr(at);
    assert!(
        !check(&ours, &[(w.wstr, &good), (56, &utf8_ptr)], &theirs),
        "no utf8 pointer"
    );
}

/// The accessor decoder reads the instruction forms both compilers use.
#[test]
fn accessor_decoder_reads_both_forms() {
    use object::Architecture::X86_64;
    use support::objgraph::accessor_code;
    let data = |off: u64| Loc {
        section: 2,
        offset: off,
    };
    let rel = |off: u64, pcrel: bool| Reloc {
        target: Target::Local(data(off)),
        size: 4,
        pcrel,
    };
    // PIC: addq $1, X(%rip); lea X(%rip), %rax; ret  (field targets ).
    let code = [
        0x48, 0x83, 0x05, 0, 0, 0, 0, 0x01, 0x48, 0x8d, 0x05, 0, 0, 0, 0, 0xc3,
    ];
    let (a, b) = (rel(0x100 - 5, true), rel(0x100 - 4, true));
    let got = accessor_code(X86_64, &code, &[(3, &a), (11, &b)]).unwrap();
    assert_eq!(got.returned, Some(data(0x100)));
    assert_eq!(got.increments, [data(0x100)]);
    assert!(got.other.is_empty());
    // Non-PIC: incq X(%rip); mov $X, %eax; ret.
    let code = [0x48, 0xff, 0x05, 0, 0, 0, 0, 0xb8, 0, 0, 0, 0, 0xc3];
    let (a, b) = (rel(0x100 - 4, true), rel(0x100, false));
    let got = accessor_code(X86_64, &code, &[(3, &a), (8, &b)]).unwrap();
    assert_eq!(got.returned, Some(data(0x100)));
    assert_eq!(got.increments, [data(0x100)]);
    // A 32-bit add is not a refcount increment; movq $imm32, X(%rip)
    // ends 4 bytes after its field.
    let code = [
        0x83, 0x05, 0, 0, 0, 0, 0x01, 0x48, 0xc7, 0x05, 0, 0, 0, 0, 1, 0, 0, 0, 0xc3,
    ];
    let (a, b) = (rel(0x100 - 5, true), rel(0x200 - 8, true));
    let got = accessor_code(X86_64, &code, &[(2, &a), (10, &b)]).unwrap();
    assert_eq!(got.returned, None);
    assert!(got.increments.is_empty());
    assert_eq!(
        got.other,
        [Target::Local(data(0x100)), Target::Local(data(0x200))]
    );
}
