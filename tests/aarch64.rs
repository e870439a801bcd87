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
//! CPython 3.14 and 3.15: Debian sid's arm64 archives
//! (`libpython3.1X-dev:arm64`, downloaded with a private apt state and
//! unpacked by `tests/setup/arm64-sid.sh`), read statically (no arm64 sid
//! root to run them in):
//!
//! * `py31X_sid_arm64_emit_is_verified`: emit for aarch64 succeeds; the
//!   archive check reads the function version counter at aarch64's offset
//!   (patched there: refused; at x86_64's: accepted).
//! * `py31X_sid_arm64_image_equals_x86_64`: data, relocations and
//!   read-only tables equal the x86_64 object's from sid's x86_64 archive.
//! * `py31X_sid_arm64_offsets_in_code`: every interpreter offset the hooks
//!   read is the table's x86_64 offset in the x86_64 archive's code and its
//!   aarch64 offset (and not the x86_64 one) in the arm64 archive's.
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

// ---------------------------------------------------------------------------
// CPython 3.14 and 3.15: Debian sid's arm64 archives, read statically
// (tests/setup/arm64-sid.sh; no arm64 sid root to run them in)
// ---------------------------------------------------------------------------

use pyfreeze_obj::arch::Arch;
use pyfreeze_obj::layout::{ArchField, Layout};
use std::path::{Path, PathBuf};
use std::process::Command;

const ARM64_SID_SETUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/setup/arm64-sid.sh");

/// sid's `libpythonX.Y.a` for `arch` (arm64: unpacked by arm64-sid.sh;
/// x86_64: the sid chroot's, tests/setup/sid.sh).
fn sid_archive(xy: &str, arch: Arch) -> PathBuf {
    static ARM64: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let (root, triple): (&Path, &str) = match arch {
        Arch::Aarch64 => (
            ARM64.get_or_init(|| {
                let out = support::run_text(&mut Command::new(ARM64_SID_SETUP));
                PathBuf::from(out.lines().last().expect("arm64-sid.sh printed no folder"))
            }),
            "aarch64-linux-gnu",
        ),
        _ => (support::sid::root(), "x86_64-linux-gnu"),
    };
    let p = root.join(format!(
        "usr/lib/python{xy}/config-{xy}-{triple}/libpython{xy}.a"
    ));
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

fn layout_of(xy: &str) -> &'static Layout {
    match xy {
        "3.14" => &pyfreeze_obj::layout::PY314,
        "3.15" => &pyfreeze_obj::layout::PY315,
        _ => unreachable!(),
    }
}

/// `llvm-objdump -dr` of archive member `member`, extracted into `dir`.
fn member_disassembly(archive: &Path, member: &str, dir: &Path) -> String {
    let bytes = std::fs::read(archive).unwrap();
    let ar = object::read::archive::ArchiveFile::parse(&*bytes).unwrap();
    let m = (ar.members())
        .map(Result::unwrap)
        .find(|m| m.name() == member.as_bytes())
        .unwrap_or_else(|| panic!("{}: no member {member}", archive.display()));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(member);
    std::fs::write(&path, m.data(&*bytes).unwrap()).unwrap();
    support::run_text(
        Command::new(disasm::objdump())
            .args(["-dr", "--no-show-raw-insn"])
            .arg(&path),
    )
}

/// The lines of function `name` in a disassembly.
fn function_lines<'a>(dis: &'a str, name: &str) -> Vec<&'a str> {
    let head = format!("<{name}>:");
    let mut lines = dis.lines().skip_while(|l| !l.ends_with(&head));
    assert!(lines.next().is_some(), "no function {name}");
    lines.take_while(|l| !l.trim().is_empty()).collect()
}

/// A number as llvm-objdump prints it (`#52`, `#0x34`, `$0x1f60`, `0x34`).
fn number(s: &str) -> Option<i64> {
    let s = s.trim().trim_start_matches(['#', '$']);
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let v = match s.strip_prefix("0x") {
        Some(h) => i64::from_str_radix(h, 16).ok()?,
        None => s.parse().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// Offsets from a register that function `lines` uses: x86_64 memory
/// displacements `D(%reg)` and `add $C, %reg` constants; AArch64 the
/// effective displacement of loads and stores and the running sum of
/// `add` chains (`add xD, xS, #hi, lsl #12; add ..., #lo; ldr [xD,
/// #d]`, constants built by `mov`/`movk` and added), followed in order
/// (straight-line, which is how gcc materializes a large offset).
fn offsets(lines: &[&str], arch: Arch) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    let insns = lines
        .iter()
        .filter(|l| !l.starts_with("\t\t"))
        .filter_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let comment = if arch == Arch::X86_64 { " #" } else { " //" };
            let rest = rest.split(comment).next().unwrap();
            let mut parts = rest.split('\t').map(str::trim).filter(|s| !s.is_empty());
            Some((
                parts.next()?.to_string(),
                parts.collect::<Vec<_>>().join(" "),
            ))
        });
    if arch == Arch::X86_64 {
        for (m, ops) in insns {
            for piece in ops.split(',') {
                if let Some((d, _)) = piece.split_once("(%") {
                    out.extend(number(d));
                }
            }
            if m.starts_with("add") {
                if let Some(c) = ops.split(',').next().filter(|o| o.starts_with('$')) {
                    out.extend(number(c));
                }
            }
        }
        return out;
    }
    let reg = |s: &str| -> Option<u32> {
        let s = s.trim();
        s.strip_prefix('x')
            .or_else(|| s.strip_prefix('w'))
            .and_then(|n| n.parse().ok())
    };
    let mut sum: BTreeMap<u32, i64> = BTreeMap::new();
    let mut konst: BTreeMap<u32, i64> = BTreeMap::new();
    for (m, ops) in insns {
        let (before, mem) = match ops.split_once('[') {
            Some((b, rest)) => (
                b.to_string(),
                Some(rest.split(']').next().unwrap().to_string()),
            ),
            None => (ops.clone(), None),
        };
        let args: Vec<&str> = before
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(mem) = mem {
            let parts: Vec<&str> = mem.split(',').map(str::trim).collect();
            if let Some(base) = parts.first().and_then(|b| reg(b)) {
                let base_off = sum.get(&base).copied().unwrap_or(0);
                let extra = match parts.get(1) {
                    None => Some(0),
                    Some(p) if p.starts_with('#') => number(p),
                    Some(p) => reg(p).and_then(|r| konst.get(&r).copied()),
                };
                out.extend(extra.map(|e| base_off + e));
            }
            if m.starts_with("ld") {
                for a in &args {
                    if let Some(r) = reg(a) {
                        sum.remove(&r);
                        konst.remove(&r);
                    }
                }
            }
            continue;
        }
        let Some(d) = args.first().and_then(|a| reg(a)) else {
            continue;
        };
        match (m.as_str(), &args[..]) {
            ("add", [_, s, imm, shift @ ..]) if imm.starts_with('#') => {
                let scale = if shift.first() == Some(&"lsl #12") {
                    4096
                } else {
                    1
                };
                let v = reg(s).and_then(|r| sum.get(&r)).copied().unwrap_or(0)
                    + number(imm).unwrap() * scale;
                sum.insert(d, v);
                konst.remove(&d);
                out.insert(v);
            }
            ("add", [_, s, t]) if reg(t).is_some_and(|r| konst.contains_key(&r)) => {
                let v = reg(s).and_then(|r| sum.get(&r)).copied().unwrap_or(0)
                    + konst[&reg(t).unwrap()];
                sum.insert(d, v);
                konst.remove(&d);
                out.insert(v);
            }
            ("mov", [_, imm]) if imm.starts_with('#') => {
                konst.insert(d, number(imm).unwrap());
                sum.remove(&d);
            }
            ("movk", [_, imm, shift]) if imm.starts_with('#') => {
                let sh: i64 = shift.trim_start_matches("lsl #").parse().unwrap();
                let v = konst.get(&d).copied().unwrap_or(0) | number(imm).unwrap() << sh;
                konst.insert(d, v);
            }
            _ => {
                sum.remove(&d);
                konst.remove(&d);
            }
        }
    }
    out
}

/// Addends of the relocations against `symbol` in function `lines`.
fn addends(lines: &[&str], symbol: &str) -> BTreeSet<i64> {
    let pre = format!("\t{symbol}");
    lines
        .iter()
        .filter(|l| l.starts_with("\t\t"))
        .filter_map(|l| l.find(&pre).map(|i| &l[i + pre.len()..]))
        .map(|rest| match rest.trim() {
            "" => 0,
            r => number(r.trim_start_matches('+')).unwrap_or_else(|| panic!("addend {r}")),
        })
        .collect()
}

/// Where a hooked offset shows in CPython's own code.
enum Probe {
    /// A displacement (or add chain) in function `.1` of member `.0`.
    Disp(&'static str, &'static str),
    /// An addend of a relocation against the runtime variable.
    Addend(&'static str, &'static str),
    /// Interpreter + config (the constant `_Py_GetConfig` of pystate.o
    /// adds), then the first load from its result in function `.1` of
    /// member `.0`.
    ViaGetConfig(&'static str, &'static str),
}

/// The offset `probe` finds in `arch`'s archive, checked to be `want`:
/// Err with what was found otherwise.
fn probe_finds(xy: &str, arch: Arch, probe: &Probe, want: i64) -> Result<(), String> {
    let archive = sid_archive(xy, arch);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("arm64-sid-{xy}-{arch:?}-{}", std::process::id()));
    match *probe {
        Probe::Disp(member, func) => {
            let dis = member_disassembly(&archive, member, &dir);
            let got = offsets(&function_lines(&dis, func), arch);
            got.contains(&want)
                .then_some(())
                .ok_or_else(|| format!("{member} {func}: no {want} among {got:?}"))
        }
        Probe::Addend(member, func) => {
            let dis = member_disassembly(&archive, member, &dir);
            let got = addends(&function_lines(&dis, func), "_PyRuntime");
            got.contains(&want)
                .then_some(())
                .ok_or_else(|| format!("{member} {func}: _PyRuntime+{want} not among {got:?}"))
        }
        Probe::ViaGetConfig(member, func) => {
            let dis = member_disassembly(&archive, member, &dir);
            let lines = function_lines(&dis, func);
            let call = (lines.iter())
                .position(|l| {
                    l.starts_with("\t\t") && l.ends_with("\t_Py_GetConfig")
                        || l.ends_with("\t_Py_GetConfig-0x4")
                })
                .unwrap_or_else(|| panic!("{member} {func}: no call of _Py_GetConfig"));
            // the first load through the result register (x0 / %rax)
            let load = (lines[call + 1..].iter())
                .find(|l| !l.starts_with("\t\t") && (l.contains("[x0, #") || l.contains("(%rax)")))
                .unwrap_or_else(|| panic!("{member} {func}: no load after _Py_GetConfig"));
            let field = *offsets(&[load], arch).iter().next().unwrap();
            let pystate = member_disassembly(&archive, "pystate.o", &dir);
            let config = offsets(&function_lines(&pystate, "_Py_GetConfig"), arch);
            config.contains(&(want - field)).then_some(()).ok_or_else(|| {
                format!(
                    "{func} reads config+{field}; _Py_GetConfig adds none of {config:?} to make {want}"
                )
            })
        }
    }
}

/// Every interpreter offset the 3.14/3.15 stubs use that verify.rs does
/// not check, found in Debian's own code: the table's x86_64 offset in
/// the x86_64 archive, its aarch64 offset in the arm64 archive, and (when
/// they differ) not the x86_64 offset in the arm64 code.
fn sid_offsets_in_code(xy: &str) {
    let l = layout_of(xy);
    let i = &l.interp;
    let mut fields: Vec<(String, ArchField, Probe)> = vec![
        (
            "main".into(),
            i.main,
            Probe::Addend("pystate.o", "_PyInterpreterState_New"),
        ),
        (
            "next_func_version".into(),
            i.next_func_version.expect("a function version counter"),
            Probe::Disp("codeobject.o", "_PyCode_New"),
        ),
        (
            "interned_dict".into(),
            i.interned_dict.expect("an interned dict"),
            Probe::Disp("unicodeobject.o", "clear_interned_dict"),
        ),
        (
            "tstate_interp".into(),
            i.tstate_interp,
            Probe::Disp("pystate.o", "_Py_GetConfig"),
        ),
    ];
    assert_eq!(i.requires.len(), 1, "one required flag (code_debug_ranges)");
    fields.push((
        "requires[0] (config.code_debug_ranges)".into(),
        i.requires[0],
        Probe::ViaGetConfig("codeobject.o", "_PyCode_New"),
    ));
    for (k, (e, _)) in i.expects.iter().enumerate() {
        // opt_config's four counters are quickening's; the flag _PyCode_New's
        let probe = if e.field.size == 2 {
            Probe::Disp("specialize.o", "_PyCode_Quicken")
        } else {
            Probe::Disp("codeobject.o", "_PyCode_New")
        };
        fields.push((format!("expects[{k}]"), *e, probe));
    }
    if xy == "3.15" {
        assert_eq!(i.expects.len(), 5, "3.15's opt_config defaults");
    }
    let mut failures = Vec::new();
    for (name, f, probe) in &fields {
        let (x, a) = (
            f.on(Arch::X86_64).off as i64,
            f.on(Arch::Aarch64).off as i64,
        );
        for (arch, want) in [(Arch::X86_64, x), (Arch::Aarch64, a)] {
            if let Err(e) = probe_finds(xy, arch, probe, want) {
                failures.push(format!("{xy} {name} on {arch:?} (table: {want}): {e}"));
            }
        }
        if a != x && probe_finds(xy, Arch::Aarch64, probe, x).is_ok() {
            failures.push(format!(
                "{xy} {name}: the arm64 code also uses the x86_64 offset {x}: the probe cannot tell"
            ));
        }
        eprintln!("{xy} {name}: x86_64 {x}, aarch64 {a}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

tests! {
    py314_sid_arm64_offsets_in_code: sid_offsets_in_code("3.14");
    py315_sid_arm64_offsets_in_code: sid_offsets_in_code("3.15");
}

/// `pyfreeze-obj emit --python xy --modules-from archive --target
/// target -o out`: (exit code, stderr).
fn sid_emit(xy: &str, archive: &Path, target: &str, out: &Path) -> (Option<i32>, String) {
    let o = support::ours()
        .args(["emit", "--python", xy, "--modules-from"])
        .arg(archive)
        .args(["--target", target, "-o"])
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A copy of `archive` in `dir` with `byte` written at `delta` bytes into
/// `_PyRuntime` of its `pylifecycle.o`.
fn patched_runtime(archive: &Path, dir: &Path, delta: u64, byte: u8) -> PathBuf {
    use object::ObjectSymbol;
    let mut data = std::fs::read(archive).unwrap();
    let at = {
        let ar = object::read::archive::ArchiveFile::parse(&*data).unwrap();
        let m = (ar.members())
            .map(Result::unwrap)
            .find(|m| m.name() == b"pylifecycle.o")
            .expect("no pylifecycle.o");
        let (start, size) = m.file_range();
        let bytes =
            pyfreeze_obj::dwarf::Aligned::new(&data[start as usize..(start + size) as usize]);
        let obj = object::File::parse(bytes.bytes()).unwrap();
        let s = obj.symbol_by_name("_PyRuntime").expect("no _PyRuntime");
        let sec = obj.section_by_index(s.section_index().unwrap()).unwrap();
        start + sec.file_range().unwrap().0 + (s.address() - sec.address()) + delta
    };
    data[at as usize] = byte;
    let out = dir.join(format!("patched-{delta}.a"));
    std::fs::write(&out, data).unwrap();
    out
}

/// Emitting sid's arm64 archive for aarch64 Linux succeeds, and the
/// archive really was checked against the table at aarch64's offsets: a
/// copy whose main-interpreter function version counter (at the aarch64
/// offset) no longer starts at its first value is refused in one line,
/// while the same byte written where the counter would be on x86_64 (16
/// bytes before it on aarch64, a field verify does not read) is accepted.
fn sid_arm64_emit_is_verified(xy: &str) {
    let l = layout_of(xy);
    let dir = support::work_dir(&format!("arm64-sid-emit-{xy}"));
    let archive = sid_archive(xy, Arch::Aarch64);
    let out = dir.join("ok.o");
    let (code, err) = sid_emit(xy, &archive, "aarch64-unknown-linux-gnu", &out);
    assert_eq!(code, Some(0), "{err}");
    let bytes = std::fs::read(&out).unwrap();
    let f = object::File::parse(&*bytes).unwrap();
    assert_eq!(f.architecture(), object::Architecture::Aarch64);
    let i = &l.interp;
    let next = i.next_func_version.unwrap();
    let main = |a: Arch| (i.main.on(a).off + next.on(a).off) as u64;
    let (a, x) = (main(Arch::Aarch64), main(Arch::X86_64));
    assert_ne!(a, x, "{xy}: the counter does not move on aarch64");
    let bad = patched_runtime(&archive, &dir, a, 7);
    let (code, err) = sid_emit(xy, &bad, "aarch64-unknown-linux-gnu", &dir.join("bad.o"));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("main interpreter's function version counter is not where the table says")
            && err.contains(bad.to_str().unwrap()),
        "{err}"
    );
    let elsewhere = patched_runtime(&archive, &dir, x, 7);
    let (code, err) = sid_emit(
        xy,
        &elsewhere,
        "aarch64-unknown-linux-gnu",
        &dir.join("x.o"),
    );
    assert_eq!(
        code,
        Some(0),
        "the x86_64 offset {x} is read on aarch64: {err}"
    );
}

/// The aarch64 object from sid's arm64 archive lays out exactly the
/// x86_64 object's (from sid's x86_64 archive, the same Debian version)
/// data and read-only tables, relocations included (a reference to the
/// main interpreter moved by the table's aarch64 shift).
fn sid_arm64_image_equals_x86_64(xy: &str) {
    let dir = support::work_dir(&format!("arm64-sid-image-{xy}"));
    let mut objects = Vec::new();
    for (arch, target) in [
        (Arch::Aarch64, "aarch64-unknown-linux-gnu"),
        (Arch::X86_64, "x86_64-unknown-linux-gnu"),
    ] {
        let out = dir.join(format!("{arch:?}.o"));
        let (code, err) = sid_emit(xy, &sid_archive(xy, arch), target, &out);
        assert_eq!(code, Some(0), "{target}: {err}");
        objects.push(std::fs::read(&out).unwrap());
    }
    let (ours, theirs) = (
        ObjFile::parse(&objects[0]).unwrap(),
        ObjFile::parse(&objects[1]).unwrap(),
    );
    assert_eq!(
        (ours.arch, theirs.arch),
        (object::Architecture::Aarch64, object::Architecture::X86_64)
    );
    let (a, b) = (
        support::compare::image(&ours, "aarch64-linux"),
        support::compare::image(&theirs, "x86_64-linux"),
    );
    assert!(
        b.data.len() > 500_000 && b.relocs.len() > 100 && b.rodata.len() > 50_000,
        "the x86_64 object is too small to compare: {} data bytes, {} relocations, {} \
         read-only bytes",
        b.data.len(),
        b.relocs.len(),
        b.rodata.len()
    );
    assert_eq!(a.rodata, b.rodata, "{xy}: read-only tables differ");
    assert!(a.data == b.data, "{xy}: data bytes differ");
    let main = &layout_of(xy).interp.main;
    let (ma, mx) = (main.on(Arch::Aarch64).off, main.on(Arch::X86_64).off);
    let moved: BTreeMap<u64, String> = (a.relocs.iter())
        .map(|(k, v)| {
            let v = match v.strip_prefix(&format!("_PyRuntime+{ma} ")) {
                Some(rest) => format!("_PyRuntime+{mx} {rest}"),
                None => v.clone(),
            };
            (*k, v)
        })
        .collect();
    assert!(
        moved == b.relocs,
        "{xy}: data relocations differ: {:?}",
        (b.relocs.iter())
            .filter(|(k, v)| moved.get(k) != Some(v))
            .take(10)
            .collect::<Vec<_>>()
    );
    let undefined = |f: &ObjFile| f.undefined();
    assert_eq!(
        undefined(&ours),
        undefined(&theirs),
        "{xy}: undefined symbols"
    );
    eprintln!(
        "{xy}: {} data bytes, {} data relocations, {} read-only bytes equal",
        a.data.len(),
        a.relocs.len(),
        a.rodata.len()
    );
}

tests! {
    py314_sid_arm64_emit_is_verified: sid_arm64_emit_is_verified("3.14");
    py315_sid_arm64_emit_is_verified: sid_arm64_emit_is_verified("3.15");
    py314_sid_arm64_image_equals_x86_64: sid_arm64_image_equals_x86_64("3.14");
    py315_sid_arm64_image_equals_x86_64: sid_arm64_image_equals_x86_64("3.15");
}
