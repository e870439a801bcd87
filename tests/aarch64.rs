//! Acceptance tests for `--target aarch64-linux`.
//!
//! CPython 3.11: Debian's arm64 build, a row of the matrix
//! (`tests/support/builds.rs`; `tests/setup/arm64.sh` installs the cross
//! toolchain, qemu-user and llvm and unpacks Debian's arm64 CPython 3.11
//! packages into a cache folder without installing them, REFERENCE.md
//! section 4). Its archive relinked with our object instead of gcc's, eager
//! and `--lazy`, run under qemu:
//!
//! * `py311_hello_world*`, `py311_frozen_code_equals_stock*`: Hello world,
//!   and for every frozen module a code object equal to the stock link's
//!   (`tests/support/relinked.rs`).
//! * `slow_py311_cpython_tests_match_stock`: CPython's `test_frozen` and
//!   `test_code` give the same per-test outcomes with ours as with the
//!   stock link (same archive, unmodified; `tests/support/regrtest.rs`).
//! * `py311_stubs_disassemble_as_intended*`, `py311_relocation_types*`.
//!
//! Its object graph against gcc's arm64 `deepfreeze.o` is checked with the
//! other builds' in `tests/graph_gcc.rs` (the comparer's AArch64 accessor
//! rule is tested here); the 3.11 and 3.12 aarch64 graphs against the
//! x86_64 ones in `tests/formats.rs`.
//!
//! CPython 3.12 (no arm64 archive exists; pyenv 3.12.1's stock set):
//! `py312_stubs_disassemble_as_intended*`, and a flipped byte in the
//! aarch64 object is found against the x86_64 one.
//!
//! Inputs of the 3.11 object: the modules named by the archive's
//! `frozen.o`, compiled by the host's Debian `/usr/bin/python3.11` (the same
//! 3.11.2 release), run as a user would (README's cross-freeze recipe: no
//! `PYTHONHOME`): the tool takes the sources from the target's stdlib beside
//! the archive. `py311_cross_freeze_takes_the_targets_sources` proves it on a
//! target revision that differs from the host's (Debian's security updates
//! change frozen modules' sources between revisions, e.g.
//! `posixpath.expandvars`); graph_gcc.rs's arm64 row finds the result equal
//! to the target's own gcc-built `deepfreeze.o`.
//!
//! Time: a few seconds for everything but the `slow_` test; that one runs
//! the two CPython test modules under qemu on both interpreters in parallel
//! (~10 s; skip it with `-- --skip slow_`).

#[macro_use]
mod support;

use object::{Object, ObjectSection, RelocationFlags};
use std::collections::{BTreeMap, BTreeSet};
use support::builds::{build, relinked, BuildId::*, Scheme};
use support::objgraph::{accessor_code, file_offset, model, Comparer, Loc, ObjFile, Reloc, Target};
use support::{disasm, regrtest, relinked as check};

tests! {
    py311_hello_world: check::check_hello(relinked(DebianArm64, Scheme::Eager));
    py311_hello_world_lazy: check::check_hello(relinked(DebianArm64, Scheme::Lazy));
    py311_frozen_code_equals_stock: check::check_frozen_code(relinked(DebianArm64, Scheme::Eager));
    py311_frozen_code_equals_stock_lazy: check::check_frozen_code(relinked(DebianArm64, Scheme::Lazy));
    py311_relocation_types: relocation_types(Scheme::Eager);
    py311_relocation_types_lazy: relocation_types(Scheme::Lazy);
    py311_stubs_disassemble_as_intended: stubs(DebianArm64, Scheme::Eager);
    py311_stubs_disassemble_as_intended_lazy: stubs(DebianArm64, Scheme::Lazy);
    py312_stubs_disassemble_as_intended: stubs(Pyenv312, Scheme::Eager);
    py312_stubs_disassemble_as_intended_lazy: stubs(Pyenv312, Scheme::Lazy);
}

#[test]
fn slow_py311_cpython_tests_match_stock() {
    let r = relinked(DebianArm64, Scheme::Eager);
    let suite = regrtest::Suite {
        tests: &["test_frozen", "test_code"],
        jobs: 1,
        concurrent: true,
        min_cases: 24,
        ..Default::default()
    };
    let dir = r.build.work_dir("cpython-tests");
    regrtest::check_matches_stock(r.build, &r.stock, &r.ours, &dir, &suite);
}

/// Relocation types: AArch64 ELF, exactly ADRP/ADD pairs and CALL26 in
/// code, ABS64 in data; every ADRP's ADD follows it against the same
/// symbol and addend. The same for the lazy object.
fn relocation_types(scheme: Scheme) {
    use object::elf;
    let bytes = build(DebianArm64).object(None, scheme);
    let file = object::File::parse(bytes).unwrap();
    assert_eq!(file.architecture(), object::Architecture::Aarch64);
    assert_eq!(file.format(), object::BinaryFormat::Elf);
    assert!(file.is_little_endian() && file.is_64());
    let mut seen: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for s in file.sections() {
        let relocs: Vec<_> = s.relocations().collect();
        for (i, (off, r)) in relocs.iter().enumerate() {
            let RelocationFlags::Elf { r_type } = r.flags() else {
                panic!("non-ELF relocation flags {:?}", r.flags())
            };
            *seen
                .entry((s.name().unwrap().to_string(), r_type))
                .or_default() += 1;
            if r_type == elf::R_AARCH64_ADR_PREL_PG_HI21 {
                let (next_off, next) = relocs.get(i + 1).expect("an ADD after the ADRP");
                assert_eq!(*next_off, off + 4, "ADD right after ADRP at {off:#x}");
                assert_eq!(
                    next.flags(),
                    RelocationFlags::Elf {
                        r_type: elf::R_AARCH64_ADD_ABS_LO12_NC
                    }
                );
                assert_eq!((next.target(), next.addend()), (r.target(), r.addend()));
            }
        }
    }
    let kinds: BTreeSet<(&str, u32)> = seen.keys().map(|(s, t)| (s.as_str(), *t)).collect();
    let want: BTreeSet<(&str, u32)> = [
        (".text", elf::R_AARCH64_ADR_PREL_PG_HI21),
        (".text", elf::R_AARCH64_ADD_ABS_LO12_NC),
        (".text", elf::R_AARCH64_CALL26),
        (".data", elf::R_AARCH64_ABS64),
    ]
    .into_iter()
    .collect();
    assert_eq!(kinds, want, "relocation types per section: {seen:?}");
}

// --- 3.12: aarch64 vs x86_64, both ours ------------------------------------------------

/// The 3.12 comparison (both sides ours, from the same code) can fail:
/// one flipped byte in the aarch64 object's `os` module code is found.
#[test]
fn py312_negative_flipped_byte_is_found() {
    let b = build(Pyenv312);
    let (bytes, x64) = (
        b.object(Some("aarch64-linux"), Scheme::Eager),
        b.object(None, Scheme::Eager),
    );
    let theirs = ObjFile::parse(x64).unwrap();
    let m = model("3.12");
    let name = "_Py_get_os_toplevel";
    let top = ObjFile::parse(bytes)
        .unwrap()
        .accessor_object(name)
        .unwrap();
    let mut bent = bytes.to_vec();
    bent[file_offset(bytes, top) + m.l.code.firstlineno.off as usize] ^= 0x40;
    let bent = ObjFile::parse(&bent).unwrap();
    let mut cmp = Comparer::new(&bent, &theirs, m, &[]);
    let (ra, rb) = (
        bent.accessor_object(name).unwrap(),
        theirs.accessor_object(name).unwrap(),
    );
    let err = cmp.expect_mismatch("os toplevel", ra, rb, "a flipped byte went unnoticed");
    assert!(
        err.path == "os toplevel" && err.what.contains("co_firstlineno"),
        "unexpected report: {err}"
    );
}

// ---------------------------------------------------------------------------
// The stubs, disassembled (tests/support/disasm.rs)
// ---------------------------------------------------------------------------

fn stubs(id: support::BuildId, scheme: Scheme) {
    let b = build(id);
    let (path, bytes) = b.object_at(Some("aarch64-linux"), scheme);
    match scheme {
        Scheme::Eager => disasm::check_stubs(path, bytes, model(b.xy)),
        Scheme::Lazy => disasm::check_lazy_stubs(path, bytes, model(b.xy)),
    }
}

// ---------------------------------------------------------------------------
// The AArch64 accessor rule itself (tests/support/objgraph.rs)
// ---------------------------------------------------------------------------

fn loc(offset: u64) -> Loc {
    Loc { section: 3, offset }
}

fn local(offset: u64) -> Reloc {
    Reloc {
        target: Target::Local(loc(offset)),
        size: 0,
        pcrel: false,
    }
}

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn decode(ws: &[u32], relocs: &[(u64, &Reloc)]) -> Result<support::objgraph::AccessorCode, String> {
    accessor_code(object::Architecture::Aarch64, &words(ws), relocs)
}

/// Our accessor shape and gcc's (anchor + offset, inlined wstr patch-ups,
/// the increment through another register) decode to what they do.
#[test]
fn aarch64_rule_decodes_both_compilers() {
    let obj = local(0x1000);
    // adrp x0; add x0, x0, :lo12:; ldr x1, [x0]; add x1, x1, #1; str x1, [x0]; ret
    let ours = [
        0x9000_0000,
        0x9100_0000,
        0xf940_0001,
        0x9100_0421,
        0xf900_0001,
        0xd65f_03c0,
    ];
    let c = decode(&ours, &[(0, &obj), (4, &obj)]).unwrap();
    assert_eq!(c.returned, Some(loc(0x1000)));
    assert_eq!(c.increments, [loc(0x1000)]);
    assert!(c.other.is_empty());
    // gcc's __hello__ (3.11, AArch64): anchors at 0x44000 (x2) and
    // 0x82b00 (x1); the str at 0x82b00+424 gets wstr = its data
    // (+496 = +424+72) and wstr_length = 1; the code object at
    // 0x44000+3456 is returned with its refcount incremented.
    let (a2, a1) = (local(0x44000), local(0x82b00));
    let gcc = [
        0x9000_0002, // adrp x2
        0x9100_0042, // add x2, x2, :lo12:
        0x9000_0001, // adrp x1
        0x9100_0021, // add x1, x1, :lo12:
        0x9106_a024, // add x4, x1, #424
        0x9107_c021, // add x1, x1, #496
        0xf946_c043, // ldr x3, [x2, #3456]
        0xd280_0025, // mov x5, #1
        0x9136_0040, // add x0, x2, #3456
        0xf900_1481, // str x1, [x4, #40]
        0x8b05_0061, // add x1, x3, x5
        0xf900_2085, // str x5, [x4, #64]
        0xf906_c041, // str x1, [x2, #3456]
        0xd65f_03c0, // ret
    ];
    let c = decode(&gcc, &[(0, &a2), (4, &a2), (8, &a1), (12, &a1)]).unwrap();
    let code = loc(0x44000 + 3456);
    let s = 0x82b00 + 424;
    assert_eq!(c.returned, Some(code));
    assert_eq!(c.increments, [code]);
    assert_eq!(
        c.other,
        [
            Target::Local(loc(s + 40)),
            Target::Local(loc(s + 72)),
            Target::Local(loc(s + 64)),
        ]
    );
    // sub and ldur/stur with a negative offset (gcc's __phello__.ham)
    let ham = [
        0x9000_0001, // adrp x1
        0x9100_0021, // add x1, x1, :lo12:
        0xd101_c020, // sub x0, x1, #112
        0xf859_0022, // ldur x2, [x1, #-112]
        0x9100_0442, // add x2, x2, #1
        0xf819_0022, // stur x2, [x1, #-112]
        0xd65f_03c0, // ret
    ];
    let c = decode(&ham, &[(0, &a1), (4, &a1)]).unwrap();
    assert_eq!(c.returned, Some(loc(0x82b00 - 112)));
    assert_eq!(c.increments, [loc(0x82b00 - 112)]);
    assert!(c.other.is_empty());
}

/// What the rule must not accept as an accessor returning a new reference.
#[test]
fn aarch64_rule_is_strict() {
    let obj = local(0x1000);
    let other = local(0x2000);
    let both = [(0, &obj), (4, &obj)];
    // adding 2 is not an increment: the load and the store are reported
    let c = decode(
        &[
            0x9000_0000,
            0x9100_0000,
            0xf940_0001,
            0x9100_0821,
            0xf900_0001,
            0xd65f_03c0,
        ],
        &both,
    )
    .unwrap();
    assert!(c.increments.is_empty(), "{c:?}");
    assert_eq!(
        c.other,
        [Target::Local(loc(0x1000)), Target::Local(loc(0x1000))]
    );
    // incrementing one object and returning another (x0 moved by 8)
    let c = decode(
        &[
            0x9000_0000,
            0x9100_0000,
            0xf940_0001,
            0x9100_0421,
            0xf900_0001,
            0x9100_2000,
            0xd65f_03c0,
        ],
        &both,
    )
    .unwrap();
    assert_eq!(c.returned, Some(loc(0x1008)));
    assert_eq!(c.increments, [loc(0x1000)]);
    // the adrp and the add name different places
    let e = decode(
        &[0x9000_0000, 0x9100_0000, 0xd65f_03c0],
        &[(0, &obj), (4, &other)],
    );
    assert!(e.is_err(), "{e:?}");
    // x0 overwritten by something untracked (ldr w0, [sp])
    let c = decode(&[0x9000_0000, 0x9100_0000, 0xb940_03e0, 0xd65f_03c0], &both).unwrap();
    assert_eq!(c.returned, None);
    // branches and calls are refused, and so is a missing ret
    for w in [
        0x1400_0001u32,
        0x9400_0000,
        0x5400_0002,
        0xb400_0040,
        0x3700_0040,
        0xd63f_0020,
    ] {
        let e = decode(&[0x9000_0000, 0x9100_0000, w, 0xd65f_03c0], &both);
        assert!(e.is_err(), "{w:#x}: {e:?}");
    }
    assert!(decode(&[0x9000_0000, 0x9100_0000], &both).is_err());
    // an unrecognized store through the object's address (str w1, [x0])
    let e = decode(&[0x9000_0000, 0x9100_0000, 0xb900_0001, 0xd65f_03c0], &both);
    assert!(e.is_err(), "{e:?}");
}

/// Issue #15: the cross-freeze of README, run as written (no `PYTHONHOME`),
/// compiles the target's own stdlib, not the host interpreter's. Proven on a
/// target revision that differs from the host's, with frozen modules whose
/// sources differ between the two: the default object differs from one
/// made from the host's sources (`--stdlib` at the host's stdlib), and
/// graph_gcc.rs's arm64 row finds the default one equal to the target's own
/// gcc-built `deepfreeze.o`.
#[test]
fn py311_cross_freeze_takes_the_targets_sources() {
    let b = build(DebianArm64);
    let root = b.home.parent().expect("the unpacked root").to_path_buf();
    let stamp = std::fs::read_to_string(root.join(".packages")).unwrap();
    let target_rev = stamp
        .lines()
        .find_map(|l| l.strip_prefix("libpython3.11-stdlib "))
        .expect("tests/setup/arm64.sh records the unpacked revisions")
        .to_string();
    let host_rev = String::from_utf8(support::stdout_of(
        std::process::Command::new("dpkg-query").args([
            "-W",
            "-f",
            "${Version}",
            "libpython3.11-stdlib",
        ]),
    ))
    .unwrap();
    assert_ne!(
        target_rev, host_rev,
        "the proof needs a target revision other than the host's (the host's Debian \
         python3.11 is {host_rev}; tests/setup/arm64.sh unpacked {target_rev})"
    );
    let (host_lib, target_lib) = (
        std::path::Path::new("/usr/lib/python3.11"),
        b.home.join("lib/python3.11"),
    );
    // Sources of frozen modules (3.11's stock set) that Debian patched
    // between the two revisions.
    let frozen = [
        "posixpath.py",
        "ntpath.py",
        "os.py",
        "site.py",
        "importlib/_bootstrap_external.py",
        "importlib/_bootstrap.py",
        "genericpath.py",
        "stat.py",
        "codecs.py",
        "io.py",
        "abc.py",
        "_collections_abc.py",
        "_sitebuiltins.py",
        "zipimport.py",
        "importlib/util.py",
        "importlib/machinery.py",
        "runpy.py",
    ];
    let differing: Vec<&str> = frozen
        .iter()
        .copied()
        .filter(|f| std::fs::read(host_lib.join(f)).ok() != std::fs::read(target_lib.join(f)).ok())
        .collect();
    assert!(
        !differing.is_empty(),
        "no frozen module's source differs between host {host_rev} and target {target_rev}: \
         this revision pair cannot tell whose sources were frozen"
    );
    let dir = b.work_dir("cross-freeze");
    let (ours, host) = (dir.join("target-sources.o"), dir.join("host-sources.o"));
    support::run_ok(&mut b.emit_cmd(&ours, "aarch64-linux", &[]));
    let host_lib_arg = host_lib.to_str().unwrap();
    support::run_ok(&mut b.emit_cmd(&host, "aarch64-linux", &["--stdlib", host_lib_arg]));
    let data = |p: &std::path::Path| {
        let bytes = std::fs::read(p).unwrap();
        let f = object::File::parse(&*bytes).unwrap();
        f.section_by_name(".data").unwrap().data().unwrap().to_vec()
    };
    assert_ne!(
        data(&ours),
        data(&host),
        "the default cross-freeze froze the same code as the host's sources give \
         (differing sources: {differing:?})"
    );
}
