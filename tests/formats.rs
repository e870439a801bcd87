//! Acceptance tests of the Mach-O and COFF outputs, for x86_64 and
//! aarch64, on the stock module sets of the matrix's pyenv builds (CPython
//! 3.12.1 from its `libpython3.12.a`; 3.11.7 compiled by its own
//! interpreter).
//!
//! * Mach-O (`x86_64-macos`, `aarch64-macos`): symbol names (leading
//!   underscore), sections, the header's `MH_SUBSECTIONS_VIA_SYMBOLS`,
//!   relocation types (ARM64 PAGE21/PAGEOFF12 pairs and BRANCH26, x86_64
//!   SIGNED and BRANCH, UNSIGNED 64-bit data pointers that stay inside
//!   their atom), the stubs as `llvm-objdump` disassembles them
//!   (`tests/support/disasm.rs`, eager and `--lazy`), and a dylib linked
//!   by `ld64.lld` in which each accessor computes the address of its
//!   module's code object (type pointer bound to `_PyCode_Type`) and
//!   `_Py_Deepfreeze_Init`'s table lists every code object; also with
//!   `-dead_strip`, and the lazy object linked.
//! * COFF (`x86_64-windows`, `aarch64-windows`): undecorated names,
//!   section characteristics and alignment, relocation types, unwind
//!   information for the non-leaf functions, the stubs disassembled (eager
//!   and lazy); x86_64 linked with mingw's gcc into a harness that stands
//!   in for the runtime (`tests/support/wine_harness.c`) and run under wine
//!   (Init, its error path, Fini, every accessor, the data the code objects
//!   point to); aarch64 linked by `lld-link` into a DLL whose accessors and
//!   Init table are checked in the image (and the lazy object linked too).
//! * The object graph read back from every format (Mach-O and COFF for
//!   both architectures, ELF aarch64) equals the ELF x86_64 graph of the
//!   same inputs (`tests/support/compare.rs`), with one difference by
//!   design: 3.11's `wstr` follows `sizeof(wchar_t)` (2 on Windows, 4
//!   elsewhere).
//! * Windows is LLP64: no layout-table field depends on C `long`, read
//!   from the DWARF of pyenv's archives (`tests/support/dwarf.rs`); and the
//!   `_PyRuntime` offsets.
//!
//! The tools come from `tests/setup/formats.sh`; a missing tool is a test
//! failure, never a skip.

#[macro_use]
mod support;

use object::{Object, ObjectSection, ObjectSymbol};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use support::builds::{build, Build, BuildId, Scheme};
use support::compare::{
    self, has_no_wstr, has_own_wstr, objects_by_type, runtime_offsets, str_kind, Pair,
};
use support::disasm::{self, data_anchor, Walk};
use support::objgraph::{model, Model, ObjFile, Target, View};
use support::{find_tool, run_text as run, TempDir, STOCK_MODULES, TARGETS};

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

const SETUP: &str = "run tests/setup/formats.sh (apt-get install -y --no-install-recommends \
                     lld lld-19 llvm gcc-mingw-w64-x86-64-win32 wine64)";

/// The first of `names` installed (tests/setup/formats.sh installs them).
fn tool(names: &[&str]) -> PathBuf {
    find_tool(names, SETUP)
}
use disasm::objdump;

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

/// A pyenv build of the matrix and its CPython version's model.
fn py(id: BuildId) -> (&'static Build, &'static Model) {
    let b = build(id);
    (b, model(b.xy))
}

/// Our object for `id`'s stock set and `target`: its file and bytes,
/// emitted once per test binary.
fn emitted(id: BuildId, target: &str) -> (&'static Path, &'static [u8]) {
    build(id).object_at(Some(target), Scheme::Eager)
}

fn parsed(id: BuildId, target: &str) -> ObjFile<'static> {
    ObjFile::parse(emitted(id, target).1).unwrap_or_else(|e| panic!("{target}: {e}"))
}

/// The reference: ELF x86_64 (checked against gcc's deepfreeze.o by
/// tests/graph_gcc.rs).
const REFERENCE: &str = TARGETS[0];

/// What the reference object holds: accessor C names with the data
/// offset of the code object each returns, code objects and strings.
struct Census {
    accessors: BTreeMap<String, u64>,
    /// Data offsets of the code objects and of the str objects.
    code: BTreeSet<u64>,
    strings: BTreeSet<u64>,
    undefined: BTreeSet<String>,
    /// Relocations in the data section.
    data_relocs: usize,
    /// Compact non-ASCII strings by kind (1, 2, 4).
    compact_kind: BTreeMap<u64, usize>,
}

fn census(id: BuildId) -> &'static Census {
    static CELLS: [OnceLock<Census>; 4] = [const { OnceLock::new() }; 4];
    CELLS[id as usize].get_or_init(|| {
        let f = parsed(id, REFERENCE);
        let accessors: BTreeMap<String, u64> = (f.accessors().into_keys())
            .map(|n| {
                let at = f.accessor_object(&n).unwrap();
                (n, at.offset)
            })
            .collect();
        let names = accessors.keys();
        assert_eq!(
            accessors.len(),
            STOCK_MODULES,
            "reference accessors: {names:?}"
        );
        let by_type = objects_by_type(&f, py(id).1);
        let mut compact_kind: BTreeMap<u64, usize> = [(1, 0), (2, 0), (4, 0)].into();
        for at in &by_type["PyUnicode_Type"] {
            let state = u32::from_le_bytes(f.bytes(at.add(32), 4).unwrap().try_into().unwrap());
            if (state >> 5) & 1 == 1 && (state >> 6) & 1 == 0 {
                *compact_kind.get_mut(&((state as u64 >> 2) & 7)).unwrap() += 1;
            }
        }
        let data = f.symbol(&data_anchor(0)).unwrap().loc.unwrap().section;
        Census {
            accessors,
            code: by_type["PyCode_Type"].iter().map(|l| l.offset).collect(),
            strings: by_type["PyUnicode_Type"].iter().map(|l| l.offset).collect(),
            undefined: f.undefined(),
            data_relocs: f.relocs.keys().filter(|l| l.section == data).count(),
            compact_kind,
        }
    })
}

/// Data relocations of an object for a target whose `sizeof(wchar_t)` is
/// `wchar`: the reference's, where 3.11's `wstr` pointers go with the
/// strings of that kind (see [`wstr_follows_wchar_size`]).
fn expected_data_relocs(id: BuildId, wchar: u64) -> usize {
    let c = census(id);
    let mut n = c.data_relocs;
    if py(id).1.l.str_.wstr.is_some() {
        n = n - c.compact_kind[&4] + c.compact_kind[&wchar];
    }
    n
}

/// The table walks of Init and Fini.
fn walks(id: BuildId) -> (Vec<Walk>, Vec<Walk>) {
    let c = census(id);
    disasm::walks(py(id).1, c.code.len(), c.strings.len())
}

// ---------------------------------------------------------------------------
// Reading tool output
// ---------------------------------------------------------------------------
/// `llvm-nm -m` (Mach-O) lines: name -> description, e.g.
/// `(__TEXT,__text) private external`, and the address when defined.
fn nm_macho(path: &Path) -> BTreeMap<String, (String, Option<u64>)> {
    let out = run(Command::new(tool(&["llvm-nm"])).arg("-m").arg(path));
    let mut m = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let (addr, rest) = if line.starts_with(' ') {
            (None, line.trim_start())
        } else {
            let (a, r) = line.split_once(' ').unwrap();
            (Some(u64::from_str_radix(a, 16).unwrap()), r)
        };
        let (descr, name) = rest.rsplit_once(' ').unwrap();
        let prev = m.insert(name.to_string(), (descr.to_string(), addr));
        assert!(prev.is_none(), "{name} twice in llvm-nm output");
    }
    m
}

/// `llvm-nm` (any format) lines: name -> (type letter, address).
fn nm_plain(path: &Path) -> BTreeMap<String, (char, Option<u64>)> {
    let out = run(Command::new(tool(&["llvm-nm"])).arg(path));
    let mut m = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let t: Vec<&str> = line.split_whitespace().collect();
        let (addr, letter, name) = match t.as_slice() {
            [l, n] => (None, l, n),
            [a, l, n] => (Some(u64::from_str_radix(a, 16).unwrap()), l, n),
            _ => panic!("llvm-nm line {line:?}"),
        };
        m.insert(name.to_string(), (letter.chars().next().unwrap(), addr));
    }
    m
}

/// One relocation as `llvm-objdump --macho -r` prints it.
#[derive(Debug, Clone)]
struct MachoReloc {
    pcrel: bool,
    length: String,
    external: bool,
    kind: String,
}

/// `llvm-objdump --macho -r`: section (`__TEXT,__text`) -> relocations.
fn macho_relocs(path: &Path) -> BTreeMap<String, Vec<MachoReloc>> {
    let out = run(Command::new(objdump()).args(["--macho", "-r"]).arg(path));
    let mut m: BTreeMap<String, Vec<MachoReloc>> = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("Relocation information (") {
            cur = Some(rest.split_once(')').unwrap().0.to_string());
            m.entry(cur.clone().unwrap()).or_default();
            continue;
        }
        let t: Vec<&str> = line.split_whitespace().collect();
        if cur.is_none() || t.len() < 7 || t[0] == "address" {
            continue;
        }
        let n = t.len();
        // The length column can be two tokens ("?( 3)").
        m.get_mut(cur.as_ref().unwrap()).unwrap().push(MachoReloc {
            pcrel: t[1] == "True",
            length: t[2..n - 4].join(" "),
            external: t[n - 4] == "True",
            kind: t[n - 3].to_string(),
        });
        assert_eq!(t[n - 2], "False", "scattered relocation: {line}");
    }
    m
}

/// `llvm-objdump --macho --bind` of a linked image: address -> (symbol,
/// addend).
fn macho_binds(path: &Path) -> HashMap<u64, (String, i64)> {
    let out = run(Command::new(objdump())
        .args(["--macho", "--bind"])
        .arg(path));
    let mut m = HashMap::new();
    for line in out.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() == 7 && t[2].starts_with("0x") {
            m.insert(
                u64::from_str_radix(&t[2][2..], 16).unwrap(),
                (t[6].to_string(), t[4].parse().unwrap()),
            );
        }
    }
    m
}

/// `llvm-objdump --macho --rebase`: the rebased addresses.
fn macho_rebases(path: &Path) -> HashSet<u64> {
    let out = run(Command::new(objdump())
        .args(["--macho", "--rebase"])
        .arg(path));
    out.lines()
        .filter_map(|line| {
            let t: Vec<&str> = line.split_whitespace().collect();
            (t.len() == 4 && t[2].starts_with("0x"))
                .then(|| u64::from_str_radix(&t[2][2..], 16).unwrap())
        })
        .collect()
}

/// `llvm-objdump --macho --lazy-bind`: the symbols bound lazily.
fn macho_lazy_binds(path: &Path) -> BTreeSet<String> {
    let out = run(Command::new(objdump())
        .args(["--macho", "--lazy-bind"])
        .arg(path));
    out.lines()
        .filter_map(|line| {
            let t: Vec<&str> = line.split_whitespace().collect();
            (t.len() == 5 && t[2].starts_with("0x")).then(|| t[4].to_string())
        })
        .collect()
}

/// `llvm-objdump -r` (COFF): section -> (offset, type, symbol).
fn coff_relocs(path: &Path) -> BTreeMap<String, Vec<(u64, String, String)>> {
    let out = run(Command::new(objdump()).arg("-r").arg(path));
    let mut m: BTreeMap<String, Vec<(u64, String, String)>> = BTreeMap::new();
    let mut cur = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("RELOCATION RECORDS FOR [") {
            cur = Some(rest.trim_end_matches("]:").to_string());
            m.entry(cur.clone().unwrap()).or_default();
            continue;
        }
        let t: Vec<&str> = line.split_whitespace().collect();
        if let (Some(c), [off, ty, sym]) = (&cur, t.as_slice()) {
            if let Ok(off) = u64::from_str_radix(off, 16) {
                m.get_mut(c)
                    .unwrap()
                    .push((off, ty.to_string(), sym.to_string()));
            }
        }
    }
    m
}

// ---------------------------------------------------------------------------
// Reading linked images
// ---------------------------------------------------------------------------

/// A linked image's memory, by virtual address.
struct Image<'d> {
    file: object::File<'d>,
}

impl<'d> Image<'d> {
    fn parse(bytes: &'d [u8]) -> Image<'d> {
        Image {
            file: object::File::parse(bytes).expect("linked image"),
        }
    }

    /// `len` bytes at virtual address `va`.
    fn read(&self, va: u64, len: u64) -> &'d [u8] {
        let b = self.read_upto(va, len);
        assert_eq!(
            b.len() as u64,
            len,
            "{len} bytes at {va:#x} run past the file data"
        );
        b
    }

    /// Up to `len` bytes at `va` (fewer at the end of a section).
    fn read_upto(&self, va: u64, len: u64) -> &'d [u8] {
        for s in self.file.sections() {
            if (s.address()..s.address() + s.size()).contains(&va) {
                let d = s.data().unwrap();
                let o = (va - s.address()) as usize;
                return &d[o..(o + len as usize).min(d.len())];
            }
        }
        panic!("{va:#x} is in no section")
    }

    fn u32(&self, va: u64) -> u32 {
        u32::from_le_bytes(self.read(va, 4).try_into().unwrap())
    }

    fn u64(&self, va: u64) -> u64 {
        u64::from_le_bytes(self.read(va, 8).try_into().unwrap())
    }

    /// Address of a symbol in the image's symbol table (locals too).
    fn symbol(&self, name: &str) -> u64 {
        self.file
            .symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
            .unwrap_or_else(|| panic!("no symbol {name} in the linked image"))
    }

    fn section(&self, name: &str) -> (u64, u64) {
        let s = self
            .file
            .section_by_name(name)
            .unwrap_or_else(|| panic!("no section {name}"));
        (s.address(), s.size())
    }
}

/// Addresses the start of a linked stub function loads, in order:
/// (register, address). AArch64: `adrp` + `add` pairs; x86_64: RIP-relative
/// `lea`s, and `addq $1` through RIP (register name "inc"). Stops at the
/// first `ret`.
fn loaded_addresses(arch: &str, img: &Image, start: u64) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    if arch == "aarch64" {
        let mut pc = start;
        let mut page: HashMap<u32, u64> = HashMap::new();
        loop {
            let w = img.u32(pc);
            if w == 0xd65f_03c0 {
                return out;
            }
            if w & 0x9f00_0000 == 0x9000_0000 {
                let imm = ((((w >> 5) & 0x7_ffff) << 2 | (w >> 29) & 3) as i64) << 43 >> 31;
                page.insert(w & 31, (pc & !0xfff).wrapping_add(imm as u64));
            } else if w & 0xffc0_0000 == 0x9100_0000 {
                let (rd, rn) = (w & 31, (w >> 5) & 31);
                if let Some(p) = page.remove(&rn) {
                    assert_eq!(
                        rd, rn,
                        "add at {pc:#x} moves an adrp page to another register"
                    );
                    out.push((format!("x{rd}"), p + ((w >> 10) & 0xfff) as u64));
                }
            }
            pc += 4;
            assert!(pc - start < 4096, "no ret");
        }
    }
    // x86_64: the instruction forms of our stubs, by length.
    let mut pc = start;
    loop {
        let b = img.read_upto(pc, 8);
        let rip = |len: u64, at: usize| {
            let d = i32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as i64;
            (pc + len).wrapping_add(d as u64)
        };
        let len = match b {
            [0xc3, ..] => return out,
            [0x53 | 0x55 | 0x5b | 0x5d | 0xcc, ..] => 1,
            [0x41, 0x54 | 0x5c, ..] => 2,
            [0x48, 0x83, 0xec | 0xc4 | 0xc3, ..] => 4,
            [0x48 | 0x4c, 0x8d, m, ..] if m & 0xc7 == 0x05 => {
                let reg = match (b[0], (m >> 3) & 7) {
                    (0x48, 0) => "rax",
                    (0x48, 3) => "rbx",
                    (0x48, 5) => "rbp",
                    (0x4c, 4) => "r12",
                    _ => panic!("lea at {pc:#x}: {b:02x?}"),
                };
                out.push((reg.to_string(), rip(7, 3)));
                7
            }
            [0x48, 0x83, 0x05, ..] => {
                out.push(("inc".to_string(), rip(8, 3)));
                8
            }
            [0x48, 0x39, 0xeb, ..] | [0x4c, 0x01, ..] => 3,
            [0x73 | 0x78 | 0xeb, ..] | [0x8b, ..] | [0x85, 0xc0, ..] | [0x31, 0xc0, ..] => 2,
            [0xe8, ..] | [0xb8, ..] => 5,
            [0x0f, 0x88, ..] => 6,
            _ => panic!("unknown instruction at {pc:#x}: {b:02x?}"),
        };
        pc += len;
        assert!(pc - start < 4096, "no ret");
    }
}

/// The address a linked accessor returns, and the one it increments
/// (3.11), decoded from its instructions.
fn accessor_target(arch: &str, img: &Image, start: u64) -> (u64, Option<u64>) {
    let loads = loaded_addresses(arch, img, start);
    let ret = loads
        .iter()
        .rev()
        .find(|(r, _)| r == "x0" || r == "rax")
        .unwrap_or_else(|| panic!("accessor at {start:#x} loads no address: {loads:?}"))
        .1;
    let inc = if arch == "aarch64" {
        // adrp x16, A; add x16, x16, :lo12:A; then ldr x17, [x16];
        // add x17, x17, #1; str x17, [x16].
        let after = start + 8;
        (img.u32(after) == 0xf940_0211
            && img.u32(after + 4) == 0x9100_0631
            && img.u32(after + 8) == 0xf900_0211)
            .then(|| loads.iter().find(|(r, _)| r == "x16").map(|x| x.1))
            .flatten()
    } else {
        loads.iter().find(|(r, _)| r == "inc").map(|x| x.1)
    };
    (ret, inc)
}

/// A table walk in a linked image: (data base, [table start, end) per
/// walk).
fn walk_bounds(arch: &str, img: &Image, start: u64) -> (u64, Vec<(u64, u64)>) {
    let loads = loaded_addresses(arch, img, start);
    let (base_reg, cur, end) = if arch == "aarch64" {
        ("x21", "x19", "x20")
    } else {
        ("r12", "rbx", "rbp")
    };
    let base = loads.iter().find(|(r, _)| r == base_reg).unwrap().1;
    let starts: Vec<u64> = loads
        .iter()
        .filter(|(r, _)| r == cur)
        .map(|x| x.1)
        .collect();
    let ends: Vec<u64> = loads
        .iter()
        .filter(|(r, _)| r == end)
        .map(|x| x.1)
        .collect();
    assert_eq!(starts.len(), ends.len(), "{loads:?}");
    (base, starts.into_iter().zip(ends).collect())
}

// ---------------------------------------------------------------------------
// Mach-O
// ---------------------------------------------------------------------------

fn underscore(c_name: &str) -> String {
    format!("_{c_name}")
}

/// The symbols an object must have (names spelled by `name`) and how a
/// tool describes each: [function, data, undefined] from `kind`.
fn expected_symbols<K: Clone>(
    id: BuildId,
    name: fn(&str) -> String,
    kind: [K; 3],
) -> BTreeMap<String, K> {
    let c = census(id);
    let [text, data, undefined] = kind;
    let functions = c
        .accessors
        .keys()
        .map(String::as_str)
        .chain(["_Py_Deepfreeze_Init", "_Py_Deepfreeze_Fini"]);
    let mut m: BTreeMap<String, K> = functions.map(|n| (name(n), text.clone())).collect();
    m.extend(py(id).1.next_func_version().map(|n| (name(n), data)));
    m.extend(c.undefined.iter().map(|n| (name(n), undefined.clone())));
    m
}

/// Every symbol has the leading underscore; functions are private
/// externs in `__TEXT,__text`, the undefined ones are exactly the
/// reference's; local anchors sit in `__DATA,__data` / `__TEXT,__const` at
/// the offset their name says. The header says
/// `MH_SUBSECTIONS_VIA_SYMBOLS`; sections are where and how aligned they
/// should be.
fn macho_symbols_and_sections(id: BuildId, arch: &str) {
    let (path, bytes) = emitted(id, &format!("{arch}-macos"));
    let syms = nm_macho(path);
    let bad: Vec<&String> = syms.keys().filter(|n| !n.starts_with('_')).collect();
    assert!(
        bad.is_empty(),
        "names without the leading underscore: {bad:?}"
    );

    let expected = expected_symbols(
        id,
        underscore,
        [
            "(__TEXT,__text) private external",
            "(__DATA,__data) private external",
            "(undefined) external",
        ],
    );
    for must in [
        "__Py_get_os_toplevel",
        "__Py_Deepfreeze_Init",
        "_PyCode_Type",
        "__PyRuntime",
        "__Py_NoneStruct",
    ] {
        assert!(expected.contains_key(must), "expected set lacks {must}");
    }
    let got: BTreeMap<String, &str> = syms
        .iter()
        .filter(|(n, _)| !n.starts_with("_pyfreeze_"))
        .map(|(n, (d, _))| (n.clone(), d.as_str()))
        .collect();
    assert_eq!(got, expected, "llvm-nm -m: symbols differ");

    let o = object::File::parse(bytes).unwrap();
    let sec_addr = |name: &str| o.section_by_name(name).unwrap().address();
    let mut anchors = 0;
    for (name, (descr, addr)) in syms.iter().filter(|(n, _)| n.starts_with("_pyfreeze_")) {
        let (want, base, hex) = if let Some(h) = name.strip_prefix("_pyfreeze_data_") {
            (
                "(__DATA,__data) non-external [no dead strip]",
                sec_addr("__data"),
                h,
            )
        } else if let Some(h) = name.strip_prefix("_pyfreeze_table_") {
            (
                "(__TEXT,__const) non-external [no dead strip]",
                sec_addr("__const"),
                h,
            )
        } else {
            panic!("unexpected local symbol {name}")
        };
        assert_eq!(descr, want, "{name}");
        let off = u64::from_str_radix(hex, 16).unwrap();
        assert_eq!(addr.unwrap(), base + off, "{name} is not at its offset");
        anchors += 1;
    }
    eprintln!("{} symbols, {anchors} local anchors", syms.len());

    // Header and sections.
    let p = run(Command::new(objdump())
        .args(["--macho", "--private-headers"])
        .arg(path));
    let header = p
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("magic"))
        .nth(1)
        .expect("Mach header line");
    let h: Vec<&str> = header.split_whitespace().collect();
    let cpu = if arch == "aarch64" { "ARM64" } else { "X86_64" };
    assert_eq!(
        (h[0], h[1], h[4]),
        ("MH_MAGIC_64", cpu, "OBJECT"),
        "{header}"
    );
    assert!(
        h[7..].contains(&"SUBSECTIONS_VIA_SYMBOLS"),
        "header flags lack SUBSECTIONS_VIA_SYMBOLS: {header}"
    );
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut cur = None;
    for line in p.lines() {
        let Some((k, v)) = line.trim().split_once(' ') else {
            continue;
        };
        let v = v.trim().to_string();
        if k == "sectname" {
            cur = Some(v.clone());
            sections.insert(v, BTreeMap::new());
        } else if let Some(c) = &cur {
            sections
                .get_mut(c)
                .unwrap()
                .entry(k.to_string())
                .or_insert(v);
        }
    }
    let field = |s: &str, k: &str| sections[s][k].clone();
    assert_eq!(
        sections.keys().cloned().collect::<Vec<_>>(),
        ["__const", "__data", "__text"]
    );
    assert_eq!(field("__text", "segname"), "__TEXT");
    assert_eq!(
        field("__text", "attributes"),
        "PURE_INSTRUCTIONS SOME_INSTRUCTIONS"
    );
    assert_eq!(field("__text", "type"), "S_REGULAR");
    assert_eq!(field("__data", "segname"), "__DATA");
    assert_eq!(field("__data", "type"), "S_REGULAR");
    assert_eq!(field("__const", "segname"), "__TEXT");
    let align = |s: &str| -> u64 {
        let a = field(s, "align");
        let p: u32 = a
            .strip_prefix("2^")
            .and_then(|x| x.split_whitespace().next())
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("align {a}"));
        1 << p
    };
    assert!(align("__text") >= 16, "__text align {}", align("__text"));
    assert!(align("__data") >= 8, "__data align {}", align("__data"));
    assert!(align("__const") >= 4, "__const align {}", align("__const"));
}

/// Relocation types: arm64 PAGE21/PAGEOFF12 pairs on the same anchor and
/// BRANCH26 to the runtime's functions; x86_64 SIGNED (RIP-relative) and
/// BRANCH; data pointers UNSIGNED, 64-bit, external, as many as the
/// reference has, and each within the atom of the anchor it names.
fn macho_relocations(id: BuildId, arch: &str) {
    let (path, bytes) = emitted(id, &format!("{arch}-macos"));
    let relocs = macho_relocs(path);
    assert_eq!(
        relocs.keys().cloned().collect::<Vec<_>>(),
        ["__DATA,__data", "__TEXT,__text"]
    );
    // Code: only these kinds, PC-relative or not, external, 32-bit (which
    // instruction has which, against which symbol: the stub checker,
    // `disassembly`).
    let text = &relocs["__TEXT,__text"];
    let kinds = [
        ("aarch64", "PAGE21", true),
        ("aarch64", "PAGOF12", false),
        ("aarch64", "BR26", true),
        ("x86_64", "SIGNED", true),
        ("x86_64", "BRANCH", true),
    ];
    for r in text {
        assert!(r.external && r.length == "long", "{r:?}");
        let want = (arch, r.kind.as_str(), r.pcrel);
        assert!(kinds.contains(&want), "unexpected code relocation {r:?}");
    }
    // Data: UNSIGNED 64-bit everywhere, as many as the reference's.
    let data = &relocs["__DATA,__data"];
    for r in data {
        assert!(
            r.kind == "UNSIGND"
                && !r.pcrel
                && r.external
                && (r.length == "quad" || r.length == "?( 3)"),
            "data relocation {r:?}"
        );
    }
    assert_eq!(
        data.len(),
        expected_data_relocs(id, 4),
        "data relocations vs the reference"
    );

    // The same from the object crate: r_length 3 (LLVM 14 prints the arm64
    // one as "?( 3)"), and each pointer inside the atom of its anchor
    // (subsections via symbols: an atom runs from its symbol to the next).
    let o = object::File::parse(bytes).unwrap();
    let sec = o.section_by_name("__data").unwrap();
    let mut anchors: Vec<u64> = o
        .symbols()
        .filter(|s| s.section_index() == Some(sec.index()))
        .map(|s| s.address())
        .collect();
    anchors.sort();
    anchors.dedup();
    let sec_end = sec.address() + sec.size();
    let sdata = sec.data().unwrap();
    let mut checked = 0;
    for (off, r) in sec.relocations() {
        assert_eq!(
            r.flags(),
            object::RelocationFlags::MachO {
                r_type: 0, // UNSIGNED on both
                r_pcrel: false,
                r_length: 3
            }
        );
        let object::RelocationTarget::Symbol(i) = r.target() else {
            panic!("data relocation at {off:#x} is not external")
        };
        let s = o.symbol_by_index(i).unwrap();
        if !s.is_undefined() {
            let field =
                u64::from_le_bytes(sdata[off as usize..off as usize + 8].try_into().unwrap());
            let next = anchors
                .iter()
                .find(|&&a| a > s.address())
                .copied()
                .unwrap_or(sec_end);
            assert!(
                s.address() + field < next,
                "pointer at {off:#x} to {}+{field:#x} leaves the atom (next symbol at {next:#x})",
                s.name().unwrap()
            );
            checked += 1;
        }
    }
    eprintln!(
        "{} code relocations, {} data relocations ({checked} local, inside their atoms)",
        text.len(),
        data.len()
    );
}

/// The stubs as `llvm-objdump` disassembles them
/// (`tests/support/disasm.rs`): each accessor loads the address of its
/// module's code object, 3.11 increments its refcount; Init and Fini are
/// the table loops calling the runtime. Lazy objects: the structure.
fn disassembly(id: BuildId, target: &str, scheme: Scheme) {
    let (path, bytes) = build(id).object_at(Some(target), scheme);
    match scheme {
        Scheme::Eager => disasm::check_stubs(path, bytes, py(id).1),
        Scheme::Lazy => disasm::check_lazy_stubs(path, bytes, py(id).1),
    }
}

/// Link `obj` into a dylib with ld64.lld; `extra` arguments go first.
fn link_dylib(dir: &TempDir, arch: &str, obj: &Path, extra: &[String], out: &str) -> PathBuf {
    let out = dir.path().join(out);
    run(Command::new(tool(&["ld64.lld-19", "ld64.lld"]))
        .args(["-arch", if arch == "x86_64" { arch } else { "arm64" }])
        .args(["-platform_version", "macos", "11.0", "11.0"])
        .args(["-dylib", "-undefined", "dynamic_lookup"])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(obj));
    out
}

/// In a dylib linked by ld64.lld, each accessor computes the address of
/// its module's code object: the 8 bytes at +8 are bound to
/// `_PyCode_Type`, `co_consts` (+24) is rebased to a tuple (its +8 bound
/// to `_PyTuple_Type`); 3.11's increment hits the same object. Init's and
/// Fini's tables, added to the data base they load, land on every code
/// object (and, 3.11 Fini, every string), and the runtime's functions are
/// bound lazily.
fn macho_dylib(id: BuildId, arch: &str) {
    let dir = TempDir::new("macho-dylib");
    let obj = emitted(id, &format!("{arch}-macos")).0;
    let dylib = link_dylib(&dir, arch, obj, &[], "libdeepfreeze.dylib");
    let bytes = std::fs::read(&dylib).unwrap();
    let img = Image::parse(&bytes);
    let binds = macho_binds(&dylib);
    let rebases = macho_rebases(&dylib);
    let bound = |va: u64, ty: &str| match binds.get(&va) {
        Some((s, 0)) if *s == underscore(ty) => Ok(()),
        other => Err(format!(
            "{va:#x} is bound to {other:?}, not {}",
            underscore(ty)
        )),
    };
    let entry = |name: &str| img.symbol(&underscore(name));
    let base = check_image(id, arch, &img, &entry, &bound, &|va| rebases.contains(&va));
    assert_eq!(base, img.section("__data").0, "data base");
    for (name, off) in &census(id).accessors {
        let (obj_va, _) = accessor_target(arch, &img, entry(name));
        let anchor = img.symbol(&underscore(&data_anchor(*off)));
        assert_eq!(obj_va, anchor, "{name} computes another address");
    }
    let lazy = macho_lazy_binds(&dylib);
    for c in py(id).1.callees() {
        assert!(lazy.contains(&underscore(c)), "{c} not bound: {lazy:?}");
    }
    eprintln!(
        "{}: {} binds, {} rebases",
        dylib.display(),
        binds.len(),
        rebases.len()
    );
}

/// In a linked image (`entry` gives a function's address, `typed` whether
/// the pointer at an address is bound or relocated to a type object,
/// `relocated` whether the loader adjusts a pointer): each accessor computes
/// its module's code object, whose type pointer is `PyCode_Type`, whose
/// `co_consts` is relocated and points to a tuple, and which 3.11
/// increments; Init's and Fini's tables, added to the data base they load,
/// land on every object of the walk's type, each once. Returns the data
/// base.
fn check_image(
    id: BuildId,
    arch: &str,
    img: &Image,
    entry: &dyn Fn(&str) -> u64,
    typed: &dyn Fn(u64, &str) -> Result<(), String>,
    relocated: &dyn Fn(u64) -> bool,
) -> u64 {
    for name in census(id).accessors.keys() {
        let (obj_va, inc) = accessor_target(arch, img, entry(name));
        typed(obj_va + 8, "PyCode_Type").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            relocated(obj_va + 24),
            "{name}: co_consts at {:#x} is not relocated",
            obj_va + 24
        );
        typed(img.u64(obj_va + 24) + 8, "PyTuple_Type")
            .unwrap_or_else(|e| panic!("{name}: co_consts: {e}"));
        let want = (!py(id).1.immortal()).then_some(obj_va);
        assert_eq!(inc, want, "{name}: refcount increment");
    }
    let (init, fini) = walks(id);
    let mut bases = BTreeSet::new();
    for (func, walks) in [("_Py_Deepfreeze_Init", init), ("_Py_Deepfreeze_Fini", fini)] {
        let (base, bounds) = walk_bounds(arch, img, entry(func));
        bases.insert(base);
        assert_eq!(bounds.len(), walks.len(), "{func}: walks");
        for ((t0, t1), w) in bounds.iter().zip(&walks) {
            assert_eq!((t1 - t0) / 4, (w.end - w.start) / 4, "{func}: table length");
            let mut seen = HashSet::new();
            for e in (*t0..*t1).step_by(4) {
                let o = base + img.u32(e) as u64;
                assert!(seen.insert(o), "{func}: {o:#x} twice");
                typed(o + 8, w.ty).unwrap_or_else(|err| {
                    panic!("{func}: table entry {:#x} -> {o:#x}: {err}", e - t0)
                });
            }
        }
    }
    assert_eq!(
        bases.len(),
        1,
        "Init and Fini load different data bases: {bases:x?}"
    );
    bases.pop_first().unwrap()
}

/// The lazy object links into a dylib too: every accessor, Init and Fini
/// are in the image, and what it binds lazily are the runtime functions
/// the lazy scheme calls, its init function among them.
fn macho_dylib_lazy(id: BuildId, arch: &str) {
    let dir = TempDir::new("macho-dylib-lazy");
    let obj = build(id)
        .object_at(Some(&format!("{arch}-macos")), Scheme::Lazy)
        .0;
    let dylib = link_dylib(&dir, arch, obj, &[], "liblazy.dylib");
    let bytes = std::fs::read(&dylib).unwrap();
    let img = Image::parse(&bytes);
    let want = census(id).accessors.keys().map(String::as_str);
    for name in want.chain(["_Py_Deepfreeze_Init", "_Py_Deepfreeze_Fini"]) {
        img.symbol(&underscore(name));
    }
    let m = py(id).1;
    let lazy = macho_lazy_binds(&dylib);
    let allowed: BTreeSet<String> = m
        .callees()
        .into_iter()
        .chain(m.lazy_callees())
        .map(underscore)
        .collect();
    assert!(
        lazy.is_subset(&allowed),
        "bound lazily: {lazy:?}, allowed {allowed:?}"
    );
    assert!(lazy.contains(&underscore(m.init_callee())), "{lazy:?}");
}

/// With `-dead_strip` (roots: every function but one accessor), Init's
/// table must still land on code objects: the atoms it walks by offset
/// must stay where the table says.
fn macho_dead_strip(id: BuildId, arch: &str) {
    let dir = TempDir::new("macho-deadstrip");
    let obj = emitted(id, &format!("{arch}-macos")).0;
    // frozen_only is the last module: no other object points into the
    // atom of its code object.
    let dropped = "__Py_get_frozen_only_toplevel";
    let mut args = vec!["-dead_strip".to_string()];
    for (n, (descr, _)) in nm_macho(obj) {
        if descr == "(__TEXT,__text) private external" && n != dropped {
            args.push("-u".into());
            args.push(n);
        }
    }
    let dylib = link_dylib(&dir, arch, obj, &args, "stripped.dylib");
    let full = link_dylib(&dir, arch, obj, &[], "full.dylib");
    let size = |p: &Path| Image::parse(&std::fs::read(p).unwrap()).section("__data").1;
    let (stripped_size, full_size) = (size(&dylib), size(&full));
    let bytes = std::fs::read(&dylib).unwrap();
    let img = Image::parse(&bytes);
    let binds = macho_binds(&dylib);
    let (base, bounds) = walk_bounds(arch, &img, img.symbol("__Py_Deepfreeze_Init"));
    let (t0, t1) = bounds[0];
    let mut bad = Vec::new();
    for e in (t0..t1).step_by(4) {
        let o = base + img.u32(e) as u64;
        if binds.get(&(o + 8)).map(|b| b.0.as_str()) != Some("_PyCode_Type") {
            bad.push(format!("{:#x} -> {o:#x}", img.u32(e)));
        }
    }
    assert!(
        bad.is_empty(),
        "linked with -dead_strip and every function but {dropped} as a root, __data shrinks \
         from {full_size:#x} to {stripped_size:#x} bytes (ld64 drops the atom of the unused \
         module's code object: MH_SUBSECTIONS_VIA_SYMBOLS and the local anchors split \
         __data into atoms) while _Py_Deepfreeze_Init's table, offsets from \
         _pyfreeze_data_0 without relocations, still lists it: {} of {} entries do not \
         land on a code object: {:?}",
        bad.len(),
        (t1 - t0) / 4,
        &bad[..bad.len().min(5)]
    );
}

// ---------------------------------------------------------------------------
// COFF
// ---------------------------------------------------------------------------

/// Names exactly as in C (no underscore added, on x64 or arm64), the
/// functions typed as functions, section characteristics and alignment.
fn coff_symbols_and_sections(id: BuildId, arch: &str) {
    let (path, bytes) = emitted(id, &format!("{arch}-windows"));
    let c = census(id);
    let syms = nm_plain(path);
    let expected = expected_symbols(id, str::to_string, ['T', 'D', 'U']);
    let got: BTreeMap<String, char> = syms
        .iter()
        .filter(|(n, _)| !n.starts_with("pyfreeze_") && !n.starts_with('.'))
        .map(|(n, (l, _))| (n.clone(), *l))
        .collect();
    assert_eq!(got, expected, "llvm-nm: symbols differ");
    for (n, (l, _)) in syms.iter().filter(|(n, _)| n.starts_with("pyfreeze_")) {
        let want = if n.starts_with("pyfreeze_data_") {
            'd'
        } else {
            'r'
        };
        assert_eq!(*l, want, "{n}");
    }
    for must in [
        "_Py_get_os_toplevel",
        "PyCode_Type",
        "_PyRuntime",
        "_Py_NoneStruct",
    ] {
        assert!(got.contains_key(must), "no {must}");
    }

    // Function symbols (defined and undefined) have the function type;
    // data symbols have none.
    let ro = run(Command::new(tool(&["llvm-readobj"]))
        .arg("--symbols")
        .arg(path));
    let mut complex: BTreeMap<String, String> = BTreeMap::new();
    let mut name = None;
    for line in ro.lines() {
        let l = line.trim();
        if let Some(n) = l.strip_prefix("Name: ") {
            name = Some(n.to_string());
        } else if let (Some(t), Some(n)) = (l.strip_prefix("ComplexType: "), &name) {
            complex.insert(n.clone(), t.to_string());
        }
    }
    let functions: BTreeSet<String> = c
        .accessors
        .keys()
        .cloned()
        .chain(["_Py_Deepfreeze_Init".into(), "_Py_Deepfreeze_Fini".into()])
        .chain(py(id).1.callees().into_iter().map(String::from))
        .collect();
    for (n, t) in &complex {
        if n.starts_with('.') || n.starts_with("pyfreeze_") {
            continue;
        }
        let want = if functions.contains(n) {
            "Function (0x2)"
        } else {
            "Null (0x0)"
        };
        assert_eq!(t, want, "ComplexType of {n}");
    }

    let o = object::File::parse(bytes).unwrap();
    let machine = if arch == "aarch64" {
        object::Architecture::Aarch64
    } else {
        object::Architecture::X86_64
    };
    assert_eq!(o.architecture(), machine);
    use object::pe;
    let mut seen = BTreeMap::new();
    for s in o.sections() {
        let object::SectionFlags::Coff { characteristics } = s.flags() else {
            panic!("not COFF flags")
        };
        let name = s.name().unwrap().to_string();
        let align_bits = characteristics & pe::IMAGE_SCN_ALIGN_MASK;
        let align = if align_bits == 0 {
            0
        } else {
            1u64 << ((align_bits >> 20) - 1)
        };
        seen.insert(name, (characteristics & !pe::IMAGE_SCN_ALIGN_MASK, align));
    }
    let (text, rdata, data) = (seen[".text"], seen[".rdata"], seen[".data"]);
    assert_eq!(
        text.0,
        pe::IMAGE_SCN_CNT_CODE | pe::IMAGE_SCN_MEM_EXECUTE | pe::IMAGE_SCN_MEM_READ,
        ".text characteristics {:#x}",
        text.0
    );
    assert_eq!(
        data.0,
        pe::IMAGE_SCN_CNT_INITIALIZED_DATA | pe::IMAGE_SCN_MEM_READ | pe::IMAGE_SCN_MEM_WRITE,
        ".data characteristics {:#x}",
        data.0
    );
    assert_eq!(
        rdata.0,
        pe::IMAGE_SCN_CNT_INITIALIZED_DATA | pe::IMAGE_SCN_MEM_READ,
        ".rdata characteristics {:#x}",
        rdata.0
    );
    assert!(text.1 >= 16, ".text alignment {}", text.1);
    assert!(data.1 >= 8, ".data alignment {}", data.1);
    assert!(rdata.1 >= 4, ".rdata alignment {}", rdata.1);
    eprintln!("sections: {seen:x?}");
}

/// Relocation types: x64 REL32 in code, ADDR64 in data; arm64
/// PAGEBASE_REL21/PAGEOFFSET_12A pairs and BRANCH26 in code, ADDR64 in
/// data; as many data relocations as the reference.
fn coff_relocations(id: BuildId, arch: &str) {
    let path = emitted(id, &format!("{arch}-windows")).0;
    let relocs = coff_relocs(path);
    assert_eq!(
        relocs.keys().cloned().collect::<Vec<_>>(),
        [".data", ".pdata", ".text"],
        "sections with relocations"
    );
    // .pdata: image-relative addresses of functions and their .xdata.
    let nb = if arch == "aarch64" {
        "IMAGE_REL_ARM64_ADDR32NB"
    } else {
        "IMAGE_REL_AMD64_ADDR32NB"
    };
    let bad: Vec<_> = relocs[".pdata"].iter().filter(|r| r.1 != nb).collect();
    assert!(bad.is_empty(), ".pdata relocations not {nb}: {bad:?}");
    // Code: only these kinds (which instruction has which, against which
    // symbol: the stub checker, `disassembly`).
    let kinds: &[&str] = match arch {
        "aarch64" => &[
            "IMAGE_REL_ARM64_PAGEBASE_REL21",
            "IMAGE_REL_ARM64_PAGEOFFSET_12A",
            "IMAGE_REL_ARM64_BRANCH26",
        ],
        _ => &["IMAGE_REL_AMD64_REL32", "IMAGE_REL_AMD64_REL32_1"],
    };
    for (off, ty, sym) in &relocs[".text"] {
        assert!(
            kinds.contains(&ty.as_str()),
            "unexpected code relocation {ty} at {off:#x} to {sym}"
        );
    }
    let want = if arch == "aarch64" {
        "IMAGE_REL_ARM64_ADDR64"
    } else {
        "IMAGE_REL_AMD64_ADDR64"
    };
    let data = &relocs[".data"];
    let other: Vec<_> = data.iter().filter(|r| r.1 != want).collect();
    assert!(other.is_empty(), "data relocations not {want}: {other:?}");
    assert_eq!(
        data.len(),
        expected_data_relocs(id, 2),
        "data relocations vs the reference"
    );
}

/// The implicit addends are what each format's linkers expect: Mach-O
/// x86_64 SIGNED and COFF REL32 hold the distance from the end of the
/// field to the end of the instruction, negated (0 for `lea` and `call`,
/// -1 for `addq $1`; or SIGNED_1/REL32_1 with 0); AArch64 instructions in
/// Mach-O and COFF carry no addend (code refers to anchors). Then, read
/// back, every format's accessor returns (and 3.11 increments) exactly
/// the anchor of its code object, at the same data offset as the
/// reference.
fn implicit_addends(id: BuildId) {
    use object::{macho, pe, RelocationFlags};
    for target in &TARGETS[2..] {
        let bytes = emitted(id, target).1;
        let file = object::File::parse(bytes).unwrap();
        let arch = file.architecture();
        let text = file
            .sections()
            .find(|s| s.kind() == object::SectionKind::Text)
            .unwrap();
        let code = text.data().unwrap();
        let mut n = 0;
        for (off, r) in text.relocations() {
            let o = off as usize;
            let field = i32::from_le_bytes(code[o..o + 4].try_into().unwrap());
            let x86_tail = || -> i32 {
                match (code[o - 3], code[o - 2], code[o - 1]) {
                    (_, _, 0xe8) => 0,           // call
                    (0x48 | 0x4c, 0x8d, _) => 0, // lea
                    (0x48, 0x83, 0x05) => 1,     // addq $imm8
                    b => panic!("{target}: field at {off:#x} after {b:02x?}"),
                }
            };
            match r.flags() {
                RelocationFlags::MachO {
                    r_type: macho::X86_64_RELOC_SIGNED | macho::X86_64_RELOC_BRANCH,
                    ..
                }
                | RelocationFlags::Coff {
                    typ: pe::IMAGE_REL_AMD64_REL32,
                } if arch == object::Architecture::X86_64 => {
                    assert_eq!(field, -x86_tail(), "{target}: field at {off:#x}");
                }
                RelocationFlags::MachO {
                    r_type: macho::X86_64_RELOC_SIGNED_1,
                    ..
                }
                | RelocationFlags::Coff {
                    typ: pe::IMAGE_REL_AMD64_REL32_1,
                } if arch == object::Architecture::X86_64 => {
                    assert_eq!((field, x86_tail()), (0, 1), "{target}: field at {off:#x}");
                }
                RelocationFlags::MachO { .. } | RelocationFlags::Coff { .. }
                    if arch == object::Architecture::Aarch64 =>
                {
                    let w = field as u32;
                    let imm = if w & 0x9f00_0000 == 0x9000_0000 {
                        w & 0x60ff_ffe0 // adrp immlo/immhi
                    } else if w & 0xffc0_0000 == 0x9100_0000 {
                        w & 0x003f_fc00 // add imm12
                    } else if w & 0xfc00_0000 == 0x9400_0000 {
                        w & 0x03ff_ffff // bl imm26
                    } else {
                        panic!("{target}: relocated instruction {w:#010x} at {off:#x}")
                    };
                    assert_eq!(imm, 0, "{target}: addend in the instruction at {off:#x}");
                }
                f => panic!("{target}: code relocation {f:?} at {off:#x}"),
            }
            n += 1;
        }
        assert!(n > 0);

        // (that each accessor returns, increments and touches no more than
        // its anchor: `disassembly`, tests/support/disasm.rs)
        let f = ObjFile::parse(bytes).unwrap();
        for (name, off) in &census(id).accessors {
            let code = f
                .accessor_code(name)
                .unwrap_or_else(|e| panic!("{target}: {e}"));
            let anchor = f.symbol(&data_anchor(*off)).unwrap().loc.unwrap();
            assert_eq!(anchor.offset, *off);
            assert_eq!(code.returned, Some(anchor), "{target}: {name}: {code:?}");
        }
    }
}

/// Windows x64 and ARM64 require unwind data (`.pdata`) for every
/// function that is not a leaf (calls, saves registers, moves the stack
/// pointer); `_Py_Deepfreeze_Init` and `_Py_Deepfreeze_Fini` are such
/// functions.
fn coff_unwind_info(id: BuildId, arch: &str) {
    let f = parsed(id, &format!("{arch}-windows"));
    let mut missing = Vec::new();
    for func in ["_Py_Deepfreeze_Init", "_Py_Deepfreeze_Fini"] {
        let at = f.symbol(func).unwrap().loc.unwrap();
        let covered = f.relocs.iter().any(|(l, r)| {
            f.sections[&l.section].name.starts_with(".pdata") && r.target == Target::Local(at)
        });
        if !covered {
            missing.push(func);
        }
    }
    assert!(
        missing.is_empty(),
        "{arch}-windows: no .pdata entry (RUNTIME_FUNCTION) for {missing:?}: sections {:?}. \
         Without one, Windows unwinds through these non-leaf functions as if they were leaves \
         (return address at [rsp]/lr): an exception or a stack walk inside _PyStaticCode_* \
         goes astray (see coff_x64_wine_unwind for the run-time evidence)",
        f.sections.values().map(|s| &s.name).collect::<Vec<_>>()
    );
}

/// What the wine runs print, per version: line key -> fields.
struct WineRun {
    lines: Vec<(String, Vec<String>)>,
    seconds: f64,
}

impl WineRun {
    /// The fields of the one line starting with `key` (after the key).
    fn line(&self, key: &str) -> BTreeMap<String, String> {
        let found: Vec<_> = self.lines.iter().filter(|(k, _)| k == key).collect();
        assert_eq!(found.len(), 1, "harness output lines {key:?}: {found:?}");
        pairs(&found[0].1)
    }
}

fn pairs(v: &[String]) -> BTreeMap<String, String> {
    v.chunks(2)
        .map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default()))
        .collect()
}

/// Build the harnesses (3.12, 3.11; eager and lazy) and run each once under
/// wine, in one private prefix: the first run creates it (~10 s).
fn wine_runs() -> &'static BTreeMap<(BuildId, Scheme), WineRun> {
    static RUNS: OnceLock<BTreeMap<(BuildId, Scheme), WineRun>> = OnceLock::new();
    RUNS.get_or_init(|| {
        let gcc = find_tool(&["x86_64-w64-mingw32-gcc"], SETUP);
        let wine = find_tool(&["/usr/lib/wine/wine64", "wine64"], SETUP);
        let wineserver = find_tool(&["/usr/lib/wine/wineserver", "wineserver"], SETUP);
        let dir = TempDir::new("wine");
        let prefix = dir.path().join("wineprefix");
        std::fs::create_dir_all(&prefix).unwrap();
        let mut out = BTreeMap::new();
        let ids = [Scheme::Eager, Scheme::Lazy]
            .map(|s| [BuildId::Pyenv312, BuildId::Pyenv311].map(|i| (i, s)));
        for (id, scheme) in ids.into_iter().flatten() {
            let (b, m) = py(id);
            let (obj, obj_bytes) = b.object_at(Some("x86_64-windows"), scheme);
            let accessors = census(id).accessors.keys().map(|n| format!("X({n})"));
            let exe = dir.0.join(format!("harness{}-{}.exe", b.xy, scheme.tag()));
            let f = ObjFile::parse(obj_bytes).unwrap();
            let mut cc = Command::new(&gcc);
            cc.args(["-O0", "-g0", "-Wall", "-o"]).arg(&exe);
            cc.arg(format!("-DRUNTIME_SIZE={}", runtime_size(id, &f)));
            cc.arg(format!(
                "-DACCESSORS={}",
                accessors.collect::<Vec<_>>().join(" ")
            ));
            cc.arg(format!("-DCODE_INIT={}", m.init_callee()));
            cc.args((scheme == Scheme::Lazy).then_some("-DLAZY"));
            for (k, v) in ["-DCODE_FINI", "-DSTR_FINI"].iter().zip(m.fini_callees()) {
                cc.arg(format!("{k}={v}"));
            }
            let harness = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/wine_harness.c");
            run(cc.arg(harness).arg(obj));
            let t = std::time::Instant::now();
            let mut child = Command::new(&wine)
                .arg(&exe)
                .env("WINEPREFIX", &prefix)
                .env("WINEDEBUG", "-all")
                .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
                .env_remove("DISPLAY")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", wine.display()));
            // A generous limit: creating the prefix takes 5-20 s.
            let limit = std::time::Duration::from_secs(300);
            let status = loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break s;
                }
                if t.elapsed() > limit {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("wine did not finish {} within {limit:?}", exe.display());
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            };
            let output = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                status.success() && stdout.contains("\ndone"),
                "{} under wine: {status}\nstdout:\n{stdout}\nstderr:\n{}",
                exe.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            let seconds = t.elapsed().as_secs_f64();
            eprintln!("{}: {seconds:.1} s under wine\n{stdout}", exe.display());
            let lines = stdout
                .lines()
                .filter_map(|l| {
                    let mut t = l.split_whitespace().map(String::from);
                    Some((t.next()?, t.collect()))
                })
                .collect();
            out.insert((id, scheme), WineRun { lines, seconds });
        }
        // Stop this prefix's wineserver (started by these runs).
        let _ = Command::new(wineserver)
            .arg("-k")
            .env("WINEPREFIX", &prefix)
            .status();
        out
    })
}

/// x86_64 COFF, linked by mingw's gcc with a harness standing in for the
/// runtime, run under wine: Init calls the init function once with each
/// code object (as many as the reference has, no duplicates, each typed
/// `PyCode_Type`) and returns 0; a callee failing on the 5th call makes
/// Init return -1 after 5 calls; every code object's pointer fields
/// point to objects of the right type (or into the runtime); each
/// accessor returns a code object Init saw, whose `co_consts` is a tuple,
/// a new reference in 3.11 (refcount +1) and an immortal one in 3.12;
/// Fini calls the fini function with the same code objects, and (3.11)
/// then the string dealloc function once with each string we emit. Lazy:
/// Init calls nothing, the accessors initialize every code object once
/// (with the same checks), Fini runs.
fn coff_x64_wine_runtime(id: BuildId, scheme: Scheme) {
    let r = &wine_runs()[&(id, scheme)];
    let c = census(id);
    let n = c.code.len().to_string();
    let lazy = scheme == Scheme::Lazy;
    // The lazy scheme's Init does nothing: its accessors initialize.
    let (fail_ret, fail_calls, init_calls) = if lazy {
        ("0", "0", "0")
    } else {
        ("-1", "5", &n[..])
    };
    let fail = r.line("init_fail");
    assert_eq!(
        (fail["ret"].as_str(), fail["calls"].as_str()),
        (fail_ret, fail_calls),
        "Init with a callee failing on its 5th call"
    );
    let init = r.line("init");
    assert_eq!(init["ret"], "0", "Init: {init:?}");
    assert_eq!(
        init["calls"], init_calls,
        "Init calls vs code objects: {init:?}"
    );
    for line in ["init", "after_accessors"].into_iter().skip(lazy as usize) {
        let init = r.line(line);
        assert_eq!(init["calls"], n, "{line}: calls vs code objects: {init:?}");
        assert_eq!(init["distinct"], n, "{line}: {init:?}");
        assert_eq!(init["code_type"], n, "{line}: {init:?}");
    }
    let graph = r.line("graph");
    assert_eq!(
        graph["bad"], "0",
        "pointer fields of code objects: {graph:?}"
    );
    assert!(graph["checked"].parse::<u64>().unwrap() > 10 * c.code.len() as u64);
    let got: BTreeSet<String> = r
        .lines
        .iter()
        .filter(|(k, _)| k == "accessor")
        .map(|(_, v)| {
            let name = v[0].clone();
            let f = pairs(&v[1..]);
            let delta = if py(id).1.immortal() { "0" } else { "1" };
            assert_eq!(
                (
                    f["code"].as_str(),
                    f["consts_tuple"].as_str(),
                    f["initialized"].as_str(),
                    f["same"].as_str(),
                    f["refcnt_delta"].as_str()
                ),
                ("1", "1", "1", "1", delta),
                "{name}: {f:?}"
            );
            name
        })
        .collect();
    let want: BTreeSet<String> = c.accessors.keys().cloned().collect();
    assert_eq!(got, want, "accessors run");
    if lazy {
        // Fini calls the runtime only for code objects with runtime state
        // (none here): that it ran and returned is what counts.
        eprintln!("{} s under wine; Fini: {:?}", r.seconds, r.line("fini"));
        return;
    }
    let fini = r.line("fini");
    assert_eq!(
        (fini["calls"].as_str(), fini["same_set"].as_str()),
        (n.as_str(), "1"),
        "Fini: {fini:?}"
    );
    let strings = r.line("strings");
    let ns = if py(id).1.str_fini().is_some() {
        c.strings.len().to_string()
    } else {
        "0".into()
    };
    assert_eq!(
        (
            strings["calls"].as_str(),
            strings["distinct"].as_str(),
            strings["str_type"].as_str(),
            strings["after_code"].as_str()
        ),
        (ns.as_str(), ns.as_str(), ns.as_str(), "1"),
        "Fini's string deallocs: {strings:?}"
    );
    eprintln!("{} s under wine", r.seconds);
}

/// Under wine, Windows' own unwinder must find `_Py_Deepfreeze_Init` and
/// `_Py_Deepfreeze_Fini` (`RtlLookupFunctionEntry`), and a stack walk from
/// inside the init callback must reach the harness function that called
/// Init.
fn coff_x64_wine_unwind(id: BuildId) {
    let u = wine_runs()[&(id, Scheme::Eager)].line("unwind");
    assert_eq!(
        u["control"], "1",
        "the harness's own check fails: a stack walk from a C function does not reach \
         its caller ({u:?})"
    );
    assert_eq!(
        (
            u["init_entry"].as_str(),
            u["fini_entry"].as_str(),
            u["reaches_caller"].as_str()
        ),
        ("1", "1", "1"),
        "Windows cannot unwind through our functions: RtlLookupFunctionEntry finds \
         Init {} / Fini {} (1 = found), and RtlCaptureStackBackTrace from inside \
         _PyStaticCode_* ({} frames) reaches Init's caller: {}",
        u["init_entry"],
        u["fini_entry"],
        u["frames"],
        u["reaches_caller"]
    );
}

/// Bytes of a `_PyRuntime` that holds every offset `f` refers to (a lazy
/// object's own pointers are offsets its accessors relocate: the model's
/// shared objects too).
fn runtime_size(id: BuildId, f: &ObjFile) -> u64 {
    let end = *runtime_offsets(f).last().unwrap() as u64;
    (end.max(py(id).1.runtime_objects_range().end) + 4096).next_multiple_of(4096)
}

/// A COFF ARM64 object defining what our object references: the type
/// objects, singletons and `_PyRuntime` as data, the runtime's functions
/// as `mov w0, #0; ret`.
fn arm64_runtime_stub(m: &Model, runtime_size: u64) -> Vec<u8> {
    use object::write::{Object as W, StandardSection, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SymbolFlags, SymbolKind, SymbolScope};
    let mut o = W::new(
        BinaryFormat::Coff,
        Architecture::Aarch64,
        Endianness::Little,
    );
    let data = o.section_id(StandardSection::Data);
    let text = o.section_id(StandardSection::Text);
    let mut add = |name: &str, text_: bool, bytes: &[u8]| {
        let (section, kind) = if text_ {
            (text, SymbolKind::Text)
        } else {
            (data, SymbolKind::Data)
        };
        let value = o.append_section_data(section, bytes, 16);
        o.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value,
            size: bytes.len() as u64,
            kind,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Section(section),
            flags: SymbolFlags::None,
        });
    };
    for name in m.runtime_objects() {
        let size = if name == "_PyRuntime" {
            runtime_size
        } else {
            512
        };
        add(name, false, &vec![0u8; size as usize]);
    }
    // mov w0, #0; ret
    let ret0: Vec<u8> = [0x5280_0000u32, 0xd65f_03c0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    for name in m.callees().into_iter().chain(m.lazy_callees()) {
        add(name, true, &ret0);
    }
    o.write().unwrap()
}

/// aarch64 COFF links with lld-link into a DLL (the runtime from a stub
/// object): in the image, each accessor's adrp+add computes its code
/// object, whose type pointer slot has a DIR64 base relocation and holds
/// the address of `PyCode_Type`; Init's and Fini's tables land on every
/// code object (and 3.11 string). The lazy object links too, exporting
/// its accessors.
fn coff_arm64_dll(id: BuildId, scheme: Scheme) {
    let dir = TempDir::new("coff-arm64-dll");
    let bytes = build(id).object(Some("aarch64-windows"), scheme);
    let obj = dir.write("deepfreeze.obj", bytes);
    let f = ObjFile::parse(bytes).unwrap();
    let stub = dir.write(
        "runtime.obj",
        &arm64_runtime_stub(py(id).1, runtime_size(id, &f)),
    );
    let c = census(id);
    let dll = dir.path().join("deepfreeze.dll");
    let mut cmd = Command::new(tool(&["lld-link-19", "lld-link"]));
    cmd.args(["/machine:arm64", "/dll", "/noentry", "/nodefaultlib"])
        .arg(format!("/out:{}", dll.display()));
    for n in c
        .accessors
        .keys()
        .map(String::as_str)
        .chain(["_Py_Deepfreeze_Init", "_Py_Deepfreeze_Fini"])
    {
        cmd.arg(format!("/export:{n}"));
    }
    for n in ["PyCode_Type", "PyTuple_Type", "PyUnicode_Type"] {
        cmd.arg(format!("/export:{n},DATA"));
    }
    run(cmd.arg(&obj).arg(&stub));
    if scheme == Scheme::Lazy {
        // (lld-link may leave the export directory 2-byte aligned after a
        // lazy object's read-only data: llvm-readobj reads it)
        let listing = run(Command::new(tool(&["llvm-readobj"]))
            .arg("--coff-exports")
            .arg(&dll));
        let want = c
            .accessors
            .keys()
            .map(String::as_str)
            .chain(["_Py_Deepfreeze_Init", "_Py_Deepfreeze_Fini"]);
        for name in want {
            assert!(
                listing.contains(&format!("Name: {name}\n")),
                "the DLL does not export {name}"
            );
        }
        return;
    }
    let image = std::fs::read(&dll).unwrap();
    let pe = object::read::pe::PeFile64::parse(&*image).unwrap();
    let base = pe.relative_address_base();
    let exports: HashMap<String, u64> = pe
        .exports()
        .unwrap()
        .iter()
        .map(|e| (String::from_utf8_lossy(e.name()).into_owned(), e.address()))
        .collect();
    let mut dir64 = HashSet::new();
    let mut blocks = pe
        .data_directories()
        .relocation_blocks(&*image, &pe.section_table())
        .unwrap()
        .expect("the DLL has base relocations");
    while let Some(block) = blocks.next().unwrap() {
        for r in block {
            if r.typ == object::pe::IMAGE_REL_BASED_DIR64 {
                dir64.insert(base + r.virtual_address as u64);
            }
        }
    }
    let img = Image {
        file: object::File::Pe64(pe),
    };
    let pointer_to = |va: u64, ty: &str| {
        if !dir64.contains(&va) {
            return Err(format!("no DIR64 base relocation at {va:#x}"));
        }
        let v = img.u64(va);
        if v != exports[ty] {
            return Err(format!(
                "{va:#x} holds {v:#x}, not {ty} at {:#x}",
                exports[ty]
            ));
        }
        Ok(())
    };
    let relocated = |va| dir64.contains(&va);
    check_image(
        id,
        "aarch64",
        &img,
        &|n| exports[n],
        &pointer_to,
        &relocated,
    );
    // The relocation types, as llvm-objdump names them in the object.
    let listing = run(Command::new(objdump()).args(["-d", "-r"]).arg(&obj));
    for ty in [
        "IMAGE_REL_ARM64_PAGEBASE_REL21",
        "IMAGE_REL_ARM64_PAGEOFFSET_12A",
        "IMAGE_REL_ARM64_BRANCH26",
    ] {
        assert!(listing.contains(ty), "llvm-objdump -d -r shows no {ty}");
    }
    let data_types: BTreeSet<String> = coff_relocs(&obj)[".data"]
        .iter()
        .map(|r| r.1.clone())
        .collect();
    assert_eq!(
        data_types.into_iter().collect::<Vec<_>>(),
        ["IMAGE_REL_ARM64_ADDR64"]
    );
    eprintln!("{}: {} DIR64 base relocations", dll.display(), dir64.len());
}

// ---------------------------------------------------------------------------
// Object graphs across formats
// ---------------------------------------------------------------------------

/// The graph read back from `target` equals the reference's (ELF
/// x86_64): same accessors, undefined symbols and `_Py_next_func_version`,
/// every module's graph equal (bytes and pointer targets), every object
/// of both sides reached by the comparison and from an accessor, and the
/// known differences (3.11 on Windows) all needed. The runtime's shared
/// objects may sit elsewhere inside `_PyRuntime` on another target (3.11
/// aarch64: pthread mutexes are larger): the target's `_PyRuntime` offsets
/// are moved by one constant, the difference of the smallest offset on
/// each side, and must then match the reference's everywhere.
fn graph_equals_reference(id: BuildId, target: &'static str) {
    let mut ours = parsed(id, target);
    let theirs = parsed(id, REFERENCE);
    let arch = |t: &str| {
        if t.starts_with("aarch64") {
            object::Architecture::Aarch64
        } else {
            object::Architecture::X86_64
        }
    };
    assert_eq!((ours.arch, theirs.arch), (arch(target), arch(REFERENCE)));
    let (a, b) = (runtime_offsets(&ours), runtime_offsets(&theirs));
    let shift = a.first().unwrap() - b.first().unwrap();
    for r in ours.relocs.values_mut() {
        if let Target::Extern { name, addend } = &mut r.target {
            if name == "_PyRuntime" {
                *addend -= shift;
            }
        }
    }
    assert_eq!(
        runtime_offsets(&ours),
        b,
        "{target}: the _PyRuntime offsets are not the reference's moved by {shift}"
    );
    let m = py(id).1;
    let pair = Pair {
        ours: &ours,
        theirs: &theirs,
        labels: (target, REFERENCE),
        model: m,
    };
    pair.assert_same_symbols();
    let count = |f: &ObjFile| objects_by_type(f, m).into_iter().map(|(t, o)| (t, o.len()));
    let counts: BTreeMap<String, usize> = count(&ours).collect();
    assert_eq!(
        counts,
        count(&theirs).collect(),
        "{target}: objects by type"
    );
    let stats = pair.assert_graphs_equal(compare::known_vs_linux(m, target));
    pair.assert_every_object_reached();
    eprintln!("{target}: _PyRuntime offsets moved by {shift}; {stats:?}");
}

/// 3.11: for Windows targets (`sizeof(wchar_t)` 2) the UCS-2 strings
/// carry `wstr`/`wstr_length` and the UCS-4 ones do not; for Linux and
/// macOS the reverse; latin-1 and ASCII strings never.
fn wstr_follows_wchar_size(id: BuildId) {
    for target in TARGETS {
        let f = parsed(id, target);
        let wchar = if target.contains("windows") { 2 } else { 4 };
        let mut counts: BTreeMap<(u64, bool), usize> = BTreeMap::new();
        let w = compare::wstr_layout();
        for at in &objects_by_type(&f, py(id).1)["PyUnicode_Type"] {
            let bytes = f.bytes(*at, w.data).unwrap();
            let relocs = f.relocs_in(*at, w.data);
            let v = View {
                at: *at,
                bytes,
                relocs: &relocs,
            };
            let (kind, compact) = str_kind(&v);
            let with = compact && kind == wchar;
            if with {
                assert!(
                    has_own_wstr(&v),
                    "{target}: kind {kind} str at {at:?} lacks wstr"
                );
            } else if compact {
                assert!(
                    has_no_wstr(&v),
                    "{target}: kind {kind} str at {at:?} has wstr"
                );
            } else {
                // ASCII: wstr is the last field of the header.
                assert!(
                    v.reloc_offsets(w.wstr..w.wstr + 8).is_empty() && v.int(w.wstr, 8) == 0,
                    "{target}: ASCII str at {at:?} has wstr"
                );
            }
            *counts.entry((kind, with)).or_default() += 1;
        }
        eprintln!("{target}: str (kind, wstr) counts {counts:?}");
        assert!(
            counts.get(&(2, wchar == 2)).copied().unwrap_or(0) > 0
                && counts.get(&(4, wchar == 4)).copied().unwrap_or(0) > 0,
            "{target}: the stock set should have UCS-2 and UCS-4 strings: {counts:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// LLP64: the layouts must not depend on C `long`
// ---------------------------------------------------------------------------

/// Every member of every object struct the writer fills, up to the end
/// of what it fills, has the same size on LLP64 (no C `long`, no POSIX
/// type), and each 8-byte field it writes is a pointer, `Py_ssize_t`,
/// `Py_hash_t` or a fixed 64-bit integer in pyenv's DWARF.
fn object_fields_do_not_depend_on_long(id: BuildId) {
    let (b, m) = py(id);
    let mut by_member: BTreeMap<&str, support::dwarf::Dwarf> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (member, sname, end, fields) in m.structs() {
        let dwarf = (by_member.entry(member))
            .or_insert_with(|| support::dwarf::Dwarf::of(&b.archive, member));
        let members = dwarf.members_before(sname, end);
        assert!(!members.is_empty(), "{sname}: no members");
        for mem in &members {
            problems.extend(
                mem.platform
                    .iter()
                    .map(|w| format!("{w} at +{}", mem.offset)),
            );
            checked += 1;
        }
        for (off, size, name) in fields {
            let here: Vec<_> = members.iter().filter(|x| x.offset == off).collect();
            if size == 8 && !here.iter().any(|x| x.stable_8) {
                problems.push(format!(
                    "{sname}.{name} (+{off}, 8 bytes): not a pointer, Py_ssize_t or \
                     Py_hash_t: {:?}",
                    here.iter()
                        .map(|x| format!("{}: {}", x.path, x.type_name))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(checked > 40, "only {checked} members checked");
    assert!(
        problems.is_empty(),
        "layout fields that differ on LLP64:\n  {}",
        problems.join("\n  ")
    );
    eprintln!("{checked} struct members checked");
}

/// The runtime's shared objects are addressed as `_PyRuntime` + offset;
/// the offsets come from Linux's DWARF. Every member of `_PyRuntimeState`
/// before the first object used would have to have the same size on every
/// target (no C `long`, no POSIX type) for them to hold elsewhere: they do
/// not, so emitting for macOS or Windows is refused unless explicitly asked
/// to assume Linux's layout.
fn runtime_offsets_are_platform_independent(id: BuildId) {
    let (b, m) = py(id);
    let range = m.runtime_objects_range();
    let members = support::dwarf::Dwarf::of(&b.archive, "pylifecycle.o")
        .members_before("_PyRuntimeState", range.start);
    let mut problems = Vec::new();
    for mem in &members {
        problems.extend(
            mem.platform
                .iter()
                .map(|w| format!("{w} at +{}", mem.offset)),
        );
        // Arrays sized by the platform's signal count precede the objects too.
        if mem.path.ends_with("handlers") {
            problems.push(format!(
                "{}[{}] at +{}: Py_NSIG = NSIG entries (65 with glibc, 32 on macOS, 23 on \
                 Windows)",
                mem.path,
                mem.count.unwrap_or(0),
                mem.offset
            ));
        }
    }
    assert!(
        !problems.is_empty(),
        "no platform-dependent member precedes the shared objects any more: \
         the refusal below may be lifted"
    );
    let dir = TempDir::new("runtime-refusal");
    let input = dir.write("m.marshal", &support::compiled(id, "x = 1", "m"));
    for t in &TARGETS[2..] {
        let out = support::output(
            support::ours()
                .args(["emit", "--python", b.xy, "--target", t, "-o"])
                .arg(dir.0.join("x.o"))
                .arg(format!("{}:m", input.display())),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{t}: {err}");
        assert!(err.contains("only known for Linux builds"), "{t}: {err}");
    }
    eprintln!(
        "{}: shared objects up to _PyRuntime+{} follow platform-dependent members:\n  {}",
        b.xy,
        range.end,
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Target spellings
// ---------------------------------------------------------------------------

/// The short forms and the full triples (msvc and gnu environments alike)
/// give byte-identical objects.
#[test]
fn target_spellings_give_identical_objects() {
    for group in [
        &["x86_64-macos", "x86_64-apple-darwin"][..],
        &["aarch64-macos", "aarch64-apple-darwin"],
        &[
            "x86_64-windows",
            "x86_64-pc-windows-msvc",
            "x86_64-pc-windows-gnu",
        ],
        &[
            "aarch64-windows",
            "aarch64-pc-windows-msvc",
            "aarch64-pc-windows-gnu",
        ],
    ] {
        let first = emitted(BuildId::Pyenv312, group[0]).1;
        for t in &group[1..] {
            assert!(
                emitted(BuildId::Pyenv312, t).1 == first,
                "{t} differs from {}",
                group[0]
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

// Properties of the code the writer generates, the same for 3.11 and 3.12:
// checked once, on 3.12.

tests! {
    macho_x86_64_dead_strip: macho_dead_strip(BuildId::Pyenv312, "x86_64");
    macho_aarch64_dead_strip: macho_dead_strip(BuildId::Pyenv312, "aarch64");
    coff_x86_64_unwind_info: coff_unwind_info(BuildId::Pyenv312, "x86_64");
    coff_aarch64_unwind_info: coff_unwind_info(BuildId::Pyenv312, "aarch64");
    coff_x86_64_wine_unwind: coff_x64_wine_unwind(BuildId::Pyenv312);
}

macro_rules! version_tests {
    ($($module:ident: $id:ident [$($extra:ident),*];)*) => {$(
        mod $module {
            use super::*;
            const ID: BuildId = BuildId::$id;
            #[test] fn macho_x86_64_symbols_and_sections() { macho_symbols_and_sections(ID, "x86_64") }
            #[test] fn macho_aarch64_symbols_and_sections() { macho_symbols_and_sections(ID, "aarch64") }
            #[test] fn macho_x86_64_relocations() { macho_relocations(ID, "x86_64") }
            #[test] fn macho_aarch64_relocations() { macho_relocations(ID, "aarch64") }
            #[test] fn macho_x86_64_disassembly() { disassembly(ID, "x86_64-macos", Scheme::Eager) }
            #[test] fn macho_aarch64_disassembly() { disassembly(ID, "aarch64-macos", Scheme::Eager) }
            #[test] fn macho_x86_64_disassembly_lazy() { disassembly(ID, "x86_64-macos", Scheme::Lazy) }
            #[test] fn macho_aarch64_disassembly_lazy() { disassembly(ID, "aarch64-macos", Scheme::Lazy) }
            #[test] fn elf_x86_64_disassembly() { disassembly(ID, "x86_64-linux", Scheme::Eager) }
            #[test] fn elf_x86_64_disassembly_lazy() { disassembly(ID, "x86_64-linux", Scheme::Lazy) }
            #[test] fn coff_x86_64_disassembly() { disassembly(ID, "x86_64-windows", Scheme::Eager) }
            #[test] fn coff_aarch64_disassembly() { disassembly(ID, "aarch64-windows", Scheme::Eager) }
            #[test] fn coff_x86_64_disassembly_lazy() { disassembly(ID, "x86_64-windows", Scheme::Lazy) }
            #[test] fn coff_aarch64_disassembly_lazy() { disassembly(ID, "aarch64-windows", Scheme::Lazy) }
            #[test] fn macho_x86_64_dylib() { macho_dylib(ID, "x86_64") }
            #[test] fn macho_aarch64_dylib() { macho_dylib(ID, "aarch64") }
            #[test] fn macho_x86_64_dylib_lazy() { macho_dylib_lazy(ID, "x86_64") }
            #[test] fn macho_aarch64_dylib_lazy() { macho_dylib_lazy(ID, "aarch64") }
            #[test] fn coff_x86_64_symbols_and_sections() { coff_symbols_and_sections(ID, "x86_64") }
            #[test] fn coff_aarch64_symbols_and_sections() { coff_symbols_and_sections(ID, "aarch64") }
            #[test] fn coff_x86_64_relocations() { coff_relocations(ID, "x86_64") }
            #[test] fn coff_aarch64_relocations() { coff_relocations(ID, "aarch64") }
            #[test] fn coff_x86_64_wine_runtime() { coff_x64_wine_runtime(ID, Scheme::Eager) }
            #[test] fn coff_x86_64_wine_runtime_lazy() { coff_x64_wine_runtime(ID, Scheme::Lazy) }
            #[test] fn coff_aarch64_dll() { coff_arm64_dll(ID, Scheme::Eager) }
            #[test] fn coff_aarch64_dll_lazy() { coff_arm64_dll(ID, Scheme::Lazy) }
            #[test] fn implicit_addends_and_accessors() { implicit_addends(ID) }
            #[test] fn graph_aarch64_linux_equals_x86_64_elf() { graph_equals_reference(ID, "aarch64-linux") }
            #[test] fn graph_x86_64_macos_equals_x86_64_elf() { graph_equals_reference(ID, "x86_64-macos") }
            #[test] fn graph_aarch64_macos_equals_x86_64_elf() { graph_equals_reference(ID, "aarch64-macos") }
            #[test] fn graph_x86_64_windows_equals_x86_64_elf() { graph_equals_reference(ID, "x86_64-windows") }
            #[test] fn graph_aarch64_windows_equals_x86_64_elf() { graph_equals_reference(ID, "aarch64-windows") }
            #[test] fn llp64_object_fields_do_not_depend_on_long() { object_fields_do_not_depend_on_long(ID) }
            #[test] fn runtime_offsets_outside_linux_are_refused() { runtime_offsets_are_platform_independent(ID) }
            $(#[test] fn $extra() { super::$extra(ID) })*
        }
    )*};
}

version_tests! {
    py312: Pyenv312 [];
    py311: Pyenv311 [wstr_follows_wchar_size];
}
