//! Acceptance tests of the Mach-O and COFF outputs, for x86_64 and
//! aarch64, on pyenv's stock module sets (CPython 3.12.1 from its
//! `libpython3.12.a`; 3.11.7 compiled by its own interpreter).
//!
//! * Mach-O (`x86_64-macos`, `aarch64-macos`): symbol names (leading
//!   underscore), sections, the header's `MH_SUBSECTIONS_VIA_SYMBOLS`,
//!   relocation types (ARM64 PAGE21/PAGEOFF12 pairs and BRANCH26, x86_64
//!   SIGNED and BRANCH, UNSIGNED 64-bit data pointers that stay inside
//!   their atom), the stubs as `llvm-objdump` disassembles them, and a
//!   dylib linked by `ld64.lld` in which each accessor computes the address
//!   of its module's code object (type pointer bound to `_PyCode_Type`) and
//!   `_Py_Deepfreeze_Init`'s table lists every code object; also with
//!   `-dead_strip`.
//! * COFF (`x86_64-windows`, `aarch64-windows`): undecorated names,
//!   section characteristics and alignment, relocation types, unwind
//!   information for the non-leaf functions; x86_64 linked with mingw's gcc
//!   into a harness that stands in for the runtime and run under wine
//!   (Init, its error path, Fini, every accessor, the data the code
//!   objects point to); aarch64 linked by `lld-link` into a DLL whose
//!   accessors and Init table are checked in the image.
//! * The object graph read back from every format (Mach-O and COFF for
//!   both architectures, ELF aarch64) equals the ELF x86_64 graph of the
//!   same inputs, with one difference by design: 3.11's `wstr` follows
//!   `sizeof(wchar_t)` (2 on Windows, 4 elsewhere).
//! * Windows is LLP64: no layout-table field depends on C `long`, read
//!   from the DWARF of pyenv's archives; and the `_PyRuntime` offsets.
//!
//! The tools come from `tests/setup/formats.sh`; a missing tool is a test
//! failure, never a skip.

mod support;

use object::{Object, ObjectSection, ObjectSymbol};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use support::objgraph::{
    all_objects, Accept, Comparer, KnownDifference, Loc, ObjFile, Reloc, Target, View, X64Model,
    PY311_X64, PY312_X64,
};
use support::TempDir;

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

const SETUP: &str = "tests/setup/formats.sh (apt-get install -y --no-install-recommends \
                     lld lld-19 llvm gcc-mingw-w64-x86-64-win32 wine64)";

/// The first of `names` that exists (absolute paths as given, others
/// looked up on `PATH`); panics naming the package otherwise.
fn tool(names: &[&str], package: &str) -> PathBuf {
    for n in names {
        let p = Path::new(n);
        if p.is_absolute() {
            if p.is_file() {
                return p.to_path_buf();
            }
            continue;
        }
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let c = dir.join(n);
            if c.is_file() {
                return c;
            }
        }
    }
    panic!(
        "tool missing: none of {names:?} is installed (Debian package {package}). \
         Run {SETUP}; this test cannot run without it."
    )
}

fn ld64() -> PathBuf {
    tool(&["ld64.lld-19", "ld64.lld"], "lld-19")
}
fn lld_link() -> PathBuf {
    tool(&["lld-link-19", "lld-link"], "lld-19")
}
fn objdump() -> PathBuf {
    tool(&["llvm-objdump"], "llvm")
}
fn nm() -> PathBuf {
    tool(&["llvm-nm"], "llvm")
}
fn readobj() -> PathBuf {
    tool(&["llvm-readobj"], "llvm")
}
fn mingw_gcc() -> PathBuf {
    tool(&["x86_64-w64-mingw32-gcc"], "gcc-mingw-w64-x86-64-win32")
}
fn wine() -> PathBuf {
    tool(&["/usr/lib/wine/wine64", "wine64"], "wine64")
}
fn wineserver() -> PathBuf {
    tool(&["/usr/lib/wine/wineserver", "wineserver"], "wine64")
}

/// Run `cmd`; its stdout, or a panic with its output.
fn run(cmd: &mut Command) -> String {
    String::from_utf8(support::stdout_of(cmd))
        .unwrap_or_else(|e| panic!("{cmd:?}: output is not UTF-8: {e}"))
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

/// One CPython version and what the runtime side of it looks like.
struct Py {
    /// `--python`.
    python: &'static str,
    /// pyenv's build whose stock module set is the input.
    pyenv: &'static str,
    /// 3.11's `frozen.o` keeps no marshal bytes: compile with the build's
    /// own interpreter.
    compile: bool,
    model: &'static X64Model,
    /// C names of the functions `_Py_Deepfreeze_Init` calls (one walk:
    /// code objects, result checked) and `_Py_Deepfreeze_Fini` calls
    /// (code objects, then, for 3.11, every string).
    init_callee: &'static str,
    fini_code: &'static str,
    fini_str: Option<&'static str>,
    /// Static objects are immortal: accessors leave the refcount alone.
    immortal: bool,
    /// Defines `_Py_next_func_version`.
    next_func_version: bool,
    archive: OnceLock<PathBuf>,
}

static PY312: Py = Py {
    python: "3.12",
    pyenv: "3.12.1",
    compile: false,
    model: &PY312_X64,
    init_callee: "_PyStaticCode_Init",
    fini_code: "_PyStaticCode_Fini",
    fini_str: None,
    immortal: true,
    next_func_version: true,
    archive: OnceLock::new(),
};

static PY311: Py = Py {
    python: "3.11",
    pyenv: "3.11.7",
    compile: true,
    model: &PY311_X64,
    init_callee: "_PyStaticCode_InternStrings",
    fini_code: "_PyStaticCode_Dealloc",
    fini_str: Some("_PyStaticUnicode_Dealloc"),
    immortal: false,
    next_func_version: false,
    archive: OnceLock::new(),
};

/// Modules deep-frozen by a stock 3.11 or 3.12 build.
const STOCK_MODULES: usize = 23;

impl Py {
    fn archive(&self) -> &Path {
        self.archive
            .get_or_init(|| support::pyenv_archive(self.pyenv))
    }

    /// Every function the runtime provides to Init and Fini.
    fn callees(&self) -> Vec<&'static str> {
        let mut v = vec![self.init_callee, self.fini_code];
        v.extend(self.fini_str);
        v
    }
}

/// Our object for `py`'s stock set and `target`, emitted once per test
/// binary.
fn emitted(py: &'static Py, target: &'static str) -> &'static [u8] {
    type Cache = HashMap<(&'static str, &'static str), &'static [u8]>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(b) = cache.get(&(py.python, target)) {
        return b;
    }
    let python = py.compile.then(|| support::pyenv_python(py.pyenv));
    let mut extra = vec!["--target", target];
    if target.contains("macos") || target.contains("darwin") || target.contains("windows") {
        extra.push("--assume-linux-runtime");
    }
    if let Some(p) = &python {
        extra.push("--compile-with");
        extra.push(p.to_str().expect("interpreter path is UTF-8"));
    }
    let bytes: &'static [u8] =
        Vec::leak(support::emit_from_archive(py.python, py.archive(), &extra));
    cache.insert((py.python, target), bytes);
    bytes
}

fn parsed(py: &'static Py, target: &'static str) -> ObjFile<'static> {
    ObjFile::parse(emitted(py, target)).unwrap_or_else(|e| panic!("{target}: {e}"))
}

/// The reference: ELF x86_64 (checked against gcc's deepfreeze.o by
/// tests/graph_gcc.rs).
const REFERENCE: &str = "x86_64-linux";

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

fn census(py: &'static Py) -> &'static Census {
    static C312: OnceLock<Census> = OnceLock::new();
    static C311: OnceLock<Census> = OnceLock::new();
    let cell = if py.python == "3.12" { &C312 } else { &C311 };
    cell.get_or_init(|| {
        let f = parsed(py, REFERENCE);
        let accessors: BTreeMap<String, u64> = f
            .accessors()
            .into_keys()
            .map(|n| {
                let at = f.accessor_object(&n).unwrap();
                (n, at.offset)
            })
            .collect();
        assert_eq!(
            accessors.len(),
            STOCK_MODULES,
            "reference accessors: {:?}",
            accessors.keys()
        );
        let by_type = objects_by_type(&f, py.model);
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

/// The objects of `f`, by the name of their type.
fn objects_by_type(f: &ObjFile, model: &X64Model) -> BTreeMap<String, BTreeSet<Loc>> {
    let mut out: BTreeMap<String, BTreeSet<Loc>> = BTreeMap::new();
    for l in all_objects(f, model) {
        if let Some(Target::Extern { name, .. }) = f.reloc_at(l.add(8)).map(|r| &r.target) {
            out.entry(name.clone()).or_default().insert(l);
        }
    }
    out
}

/// Data relocations of an object for a target whose `sizeof(wchar_t)` is
/// `wchar`: the reference's, where 3.11's `wstr` pointers go with the
/// strings of that kind (see [`wstr_follows_wchar_size`]).
fn expected_data_relocs(py: &'static Py, wchar: u64) -> usize {
    let c = census(py);
    let mut n = c.data_relocs;
    if py.fini_str.is_some() {
        n = n - c.compact_kind[&4] + c.compact_kind[&wchar];
    }
    n
}

/// Anchor symbol name of a data offset, as the writer spells it.
fn data_anchor(off: u64) -> String {
    format!("pyfreeze_data_{off:x}")
}
fn table_anchor(off: u64) -> String {
    format!("pyfreeze_table_{off:x}")
}

/// The table walks of Init and Fini: (C name of the callee, first and
/// end byte offset in the table section, result checked).
fn walks(py: &'static Py) -> (Vec<Walk>, Vec<Walk>) {
    let c = census(py);
    let (nc, ns) = (4 * c.code.len() as u64, 4 * c.strings.len() as u64);
    let init = vec![Walk {
        callee: py.init_callee,
        start: 0,
        end: nc,
        check: true,
    }];
    let mut fini = vec![Walk {
        callee: py.fini_code,
        start: 0,
        end: nc,
        check: false,
    }];
    if let Some(s) = py.fini_str {
        fini.push(Walk {
            callee: s,
            start: nc,
            end: nc + ns,
            check: false,
        });
    }
    (init, fini)
}

#[derive(Clone, Copy, Debug)]
struct Walk {
    callee: &'static str,
    start: u64,
    end: u64,
    check: bool,
}

// ---------------------------------------------------------------------------
// Reading tool output
// ---------------------------------------------------------------------------

/// `llvm-nm -m` (Mach-O) lines: name -> description, e.g.
/// `(__TEXT,__text) private external`, and the address when defined.
fn nm_macho(path: &Path) -> BTreeMap<String, (String, Option<u64>)> {
    let out = run(Command::new(nm()).arg("-m").arg(path));
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
    let out = run(Command::new(nm()).arg(path));
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
    address: u64,
    pcrel: bool,
    length: String,
    external: bool,
    kind: String,
    symbol: String,
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
            address: u64::from_str_radix(t[0], 16).unwrap(),
            pcrel: t[1] == "True",
            length: t[2..n - 4].join(" "),
            external: t[n - 4] == "True",
            kind: t[n - 3].to_string(),
            symbol: t[n - 1].to_string(),
        });
        assert_eq!(t[n - 2], "False", "scattered relocation: {line}");
    }
    m
}

/// One disassembled instruction.
#[derive(Debug, Clone)]
struct Insn {
    address: u64,
    /// `mnemonic operands`, single-spaced.
    text: String,
    /// Target address of a direct branch (from the operand-only listing).
    branch: Option<u64>,
}

/// `llvm-objdump --macho -d`: function -> instructions, up to and
/// including the last `ret` (alignment padding dropped). An instruction
/// with a relocation is shown as LLVM symbolizes it; others without
/// symbolic operands (LLVM would otherwise name a displacement of 0 after
/// the first function, e.g. `movl __Py_get_...(%rbx)`).
fn macho_functions(path: &Path, relocated: &BTreeSet<u64>) -> BTreeMap<String, Vec<Insn>> {
    let listing = |extra: &[&str]| -> Vec<(String, u64, String, String)> {
        let out = run(Command::new(objdump())
            .args(["--macho", "-d", "--no-show-raw-insn"])
            .args(extra)
            .arg(path));
        let mut v = Vec::new();
        let mut func = String::new();
        for line in out.lines() {
            if !line.starts_with(' ') {
                if let Some(name) = line.strip_suffix(':') {
                    func = name.to_string();
                }
                continue;
            }
            let Some((addr, rest)) = line.trim_start().split_once(':') else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            let rest = rest.trim_start_matches('\t');
            let (mnemonic, operands) = rest.split_once('\t').unwrap_or((rest, ""));
            v.push((
                func.clone(),
                addr,
                mnemonic.trim().to_string(),
                operands.split_whitespace().collect::<Vec<_>>().join(" "),
            ));
        }
        v
    };
    let symbolic = listing(&[]);
    let plain = listing(&["--no-symbolic-operands"]);
    assert_eq!(symbolic.len(), plain.len());
    let mut out: BTreeMap<String, Vec<Insn>> = BTreeMap::new();
    for (i, ((func, addr, mn, sym_ops), (_, addr2, _, plain_ops))) in
        symbolic.iter().zip(&plain).enumerate()
    {
        assert_eq!(addr, addr2);
        let next = symbolic.get(i + 1).map_or(u64::MAX, |x| x.1);
        let has_reloc = relocated.range(*addr..next).next().is_some();
        let ops = if has_reloc { sym_ops } else { plain_ops };
        let is_branch = !has_reloc
            && (mn.starts_with('j') || mn == "b" || mn.starts_with("b.") || mn.starts_with("tb"));
        let branch = is_branch.then(|| {
            let last = plain_ops.rsplit([' ', ',']).next().unwrap();
            u64::from_str_radix(last.trim_start_matches("0x"), 16)
                .unwrap_or_else(|_| panic!("branch target of {mn} {plain_ops}"))
        });
        out.entry(func.clone()).or_default().push(Insn {
            address: *addr,
            text: format!("{mn} {ops}").trim().to_string(),
            branch,
        });
    }
    for insns in out.values_mut() {
        let last_ret = insns.iter().rposition(|i| i.text.starts_with("ret"));
        if let Some(r) = last_ret {
            assert!(
                insns[r + 1..]
                    .iter()
                    .all(|i| i.text == "nop" || i.text == "int3"),
                "code after the last ret: {:?}",
                &insns[r + 1..]
            );
            insns.truncate(r + 1);
        }
    }
    out
}

/// Instructions as text, branch targets replaced by `<index>` of the
/// instruction they reach.
fn render(insns: &[Insn]) -> Vec<String> {
    render_from(insns, 0)
}

/// [`render`], with branch targets counted from instruction `base`.
fn render_from(insns: &[Insn], base: usize) -> Vec<String> {
    insns
        .iter()
        .map(|i| match i.branch {
            Some(t) => {
                let k = insns
                    .iter()
                    .position(|j| j.address == t)
                    .and_then(|k| k.checked_sub(base))
                    .unwrap_or_else(|| {
                        panic!(
                            "{} branches to {t:#x}, not an instruction of its function body",
                            i.text
                        )
                    });
                let mnemonic = i.text.split_whitespace().next().unwrap();
                let ops = i.text[mnemonic.len()..].trim();
                let head = ops.rsplit_once(", ").map(|(h, _)| format!("{h}, "));
                format!("{mnemonic} {}<{k}>", head.unwrap_or_default())
            }
            None => i.text.clone(),
        })
        .collect()
}

/// An expected listing with labels: `name:` lines mark the next
/// instruction; `<name>` in an operand becomes `<index>`.
fn template(lines: &[String]) -> Vec<String> {
    let mut labels = HashMap::new();
    let mut insns = Vec::new();
    for l in lines {
        match l.strip_suffix(':') {
            Some(name) => {
                labels.insert(name.to_string(), insns.len());
            }
            None => insns.push(l.clone()),
        }
    }
    insns
        .into_iter()
        .map(|l| match l.split_once('<') {
            Some((head, label)) => {
                let label = label.strip_suffix('>').unwrap();
                format!("{head}<{}>", labels[label])
            }
            None => l,
        })
        .collect()
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
        for s in self.file.sections() {
            if (s.address()..s.address() + s.size()).contains(&va) {
                let d = s.data().unwrap();
                let o = (va - s.address()) as usize;
                return d.get(o..o + len as usize).unwrap_or_else(|| {
                    panic!(
                        "{len} bytes at {va:#x} past the file data of {:?}",
                        s.name()
                    )
                });
            }
        }
        panic!("{va:#x} is in no section")
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

fn macho_target(arch: &str) -> &'static str {
    match arch {
        "x86_64" => "x86_64-macos",
        "aarch64" => "aarch64-macos",
        _ => unreachable!(),
    }
}

/// `-arch` for ld64.
fn macho_arch(arch: &str) -> &'static str {
    match arch {
        "x86_64" => "x86_64",
        _ => "arm64",
    }
}

fn underscore(c_name: &str) -> String {
    format!("_{c_name}")
}

/// Every symbol has the leading underscore; functions are private
/// externs in `__TEXT,__text`, the undefined ones are exactly the
/// reference's; local anchors sit in `__DATA,__data` / `__TEXT,__const` at
/// the offset their name says. The header says
/// `MH_SUBSECTIONS_VIA_SYMBOLS`; sections are where and how aligned they
/// should be.
fn macho_symbols_and_sections(py: &'static Py, arch: &str) {
    let dir = TempDir::new("macho-syms");
    let path = write(&dir, "deepfreeze.o", emitted(py, macho_target(arch)));
    let c = census(py);

    let syms = nm_macho(&path);
    let bad: Vec<&String> = syms.keys().filter(|n| !n.starts_with('_')).collect();
    assert!(
        bad.is_empty(),
        "names without the leading underscore: {bad:?}"
    );

    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let text = "(__TEXT,__text) private external";
    for name in c.accessors.keys() {
        expected.insert(underscore(name), text.into());
    }
    for name in ["_Py_Deepfreeze_Init", "_Py_Deepfreeze_Fini"] {
        expected.insert(underscore(name), text.into());
    }
    if py.next_func_version {
        expected.insert(
            underscore("_Py_next_func_version"),
            "(__DATA,__data) private external".into(),
        );
    }
    for name in &c.undefined {
        expected.insert(underscore(name), "(undefined) external".into());
    }
    for must in [
        "__Py_get_os_toplevel",
        "__Py_Deepfreeze_Init",
        "_PyCode_Type",
        "__PyRuntime",
        "__Py_NoneStruct",
    ] {
        assert!(expected.contains_key(must), "expected set lacks {must}");
    }
    let got: BTreeMap<String, String> = syms
        .iter()
        .filter(|(n, _)| !n.starts_with("_pyfreeze_"))
        .map(|(n, (d, _))| (n.clone(), d.clone()))
        .collect();
    assert_eq!(got, expected, "llvm-nm -m: symbols differ");

    let o = object::File::parse(emitted(py, macho_target(arch))).unwrap();
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
        .arg(&path));
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
fn macho_relocations(py: &'static Py, arch: &str) {
    let dir = TempDir::new("macho-relocs");
    let bytes = emitted(py, macho_target(arch));
    let path = write(&dir, "deepfreeze.o", bytes);
    let relocs = macho_relocs(&path);
    assert_eq!(
        relocs.keys().cloned().collect::<Vec<_>>(),
        ["__DATA,__data", "__TEXT,__text"]
    );
    let callees: BTreeSet<String> = py.callees().iter().map(|c| underscore(c)).collect();
    let text = &relocs["__TEXT,__text"];
    let by_addr: BTreeMap<u64, &MachoReloc> = text.iter().map(|r| (r.address, r)).collect();
    let mut calls = BTreeSet::new();
    let (mut pairs, mut rip) = (0, 0);
    for r in text {
        assert!(r.external && r.length == "long", "{r:?}");
        match (arch, r.kind.as_str()) {
            ("aarch64", "PAGE21") => {
                assert!(r.pcrel && r.symbol.starts_with("_pyfreeze_"), "{r:?}");
                let lo = by_addr.get(&(r.address + 4)).unwrap_or_else(|| {
                    panic!("PAGE21 at {:#x} has no PAGEOFF12 after it", r.address)
                });
                assert_eq!(
                    (lo.kind.as_str(), lo.symbol.as_str(), lo.pcrel),
                    ("PAGOF12", r.symbol.as_str(), false),
                    "{r:?}"
                );
                pairs += 1;
            }
            ("aarch64", "PAGOF12") => {
                let hi = by_addr.get(&(r.address - 4)).map(|h| h.kind.as_str());
                assert_eq!(hi, Some("PAGE21"), "PAGEOFF12 without its PAGE21: {r:?}");
            }
            ("aarch64", "BR26") | ("x86_64", "BRANCH") => {
                assert!(r.pcrel && callees.contains(&r.symbol), "{r:?}");
                calls.insert(r.symbol.clone());
            }
            ("x86_64", "SIGNED") => {
                assert!(r.pcrel && r.symbol.starts_with("_pyfreeze_"), "{r:?}");
                rip += 1;
            }
            _ => panic!("unexpected code relocation {r:?}"),
        }
    }
    assert_eq!(calls, callees, "calls");
    let n_walks = 2 + py.fini_str.is_some() as usize;
    let expected_addresses = STOCK_MODULES * (1 + !py.immortal as usize)
        + 3 * n_walks // data base, table start, table end
        - (n_walks - 2); // Fini's second walk reuses the data base
    assert_eq!(
        pairs + rip,
        expected_addresses,
        "address relocations (pairs {pairs}, rip {rip})"
    );
    let n_calls = text
        .iter()
        .filter(|r| r.kind == "BR26" || r.kind == "BRANCH")
        .count();
    assert_eq!(n_calls, n_walks, "call relocations");

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
        expected_data_relocs(py, 4),
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

/// Expected listing of an accessor (Mach-O spelling): address of `anchor`
/// into the return register, 3.11 increments the refcount, return.
fn expected_accessor(arch: &str, py: &Py, anchor: &str, signed_1: bool) -> Vec<String> {
    let a = underscore(anchor);
    match (arch, py.immortal) {
        ("aarch64", immortal) => {
            let mut v = vec![];
            if !immortal {
                // The reference count (at offset 0) through IP0 and IP1.
                v.extend([
                    format!("adrp x16, {a}@PAGE"),
                    format!("add x16, x16, {a}@PAGEOFF"),
                ]);
                v.extend(
                    ["ldr x17, [x16]", "add x17, x17, #1", "str x17, [x16]"].map(String::from),
                );
            }
            v.push(format!("adrp x0, {a}@PAGE"));
            v.push(format!("add x0, x0, {a}@PAGEOFF"));
            v.push("ret".into());
            v
        }
        (_, immortal) => {
            let mut v = vec![];
            if !immortal {
                // SIGNED with the field holding -1 (the immediate after
                // it), or SIGNED_1 with 0: the same address for ld64.
                v.push(if signed_1 {
                    format!("addq $1, {a}(%rip)")
                } else {
                    format!("addq $1, {a}-1(%rip)")
                });
            }
            v.push(format!("leaq {a}(%rip), %rax"));
            v.push("retq".into());
            v
        }
    }
}

/// Expected listing of the body of a function of table walks (Mach-O
/// spelling), between the prologue and the epilogue that
/// [`split_frame`] checks; `<n>` in a branch counts from the body's first
/// instruction (`n` = the body's length: the epilogue).
fn expected_walks(arch: &str, walks: &[Walk]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut push = |s: String| v.push(s);
    let any_check = walks.iter().any(|w| w.check);
    if arch == "aarch64" {
        for s in [
            "adrp x21, _pyfreeze_data_0@PAGE",
            "add x21, x21, _pyfreeze_data_0@PAGEOFF",
        ] {
            push(s.into());
        }
        for (k, w) in walks.iter().enumerate() {
            let (s, e) = (table_anchor(w.start), table_anchor(w.end));
            push(format!("adrp x19, _{s}@PAGE"));
            push(format!("add x19, x19, _{s}@PAGEOFF"));
            push(format!("adrp x20, _{e}@PAGE"));
            push(format!("add x20, x20, _{e}@PAGEOFF"));
            push(format!("top{k}:"));
            push("cmp x19, x20".into());
            push(format!("b.hs <next{k}>"));
            push("ldr w0, [x19]".into());
            push("add x0, x21, x0".into());
            push(format!("bl _{}", w.callee));
            push("add x19, x19, #4".into());
            if w.check {
                push("tbnz w0, #31, <fail>".into());
            }
            push(format!("b <top{k}>"));
            push(format!("next{k}:"));
        }
        push("mov w0, #0".into());
        if any_check {
            push("b <out>".into());
            push("fail:".into());
            push("mov w0, #-1".into());
        }
        push("out:".into());
    } else {
        push("leaq _pyfreeze_data_0(%rip), %r12".into());
        for (k, w) in walks.iter().enumerate() {
            push(format!("leaq _{}(%rip), %rbx", table_anchor(w.start)));
            push(format!("leaq _{}(%rip), %rbp", table_anchor(w.end)));
            push(format!("top{k}:"));
            push("cmpq %rbp, %rbx".into());
            push(format!("jae <next{k}>"));
            push("movl (%rbx), %edi".into());
            push("addq %r12, %rdi".into());
            push(format!("callq _{}", w.callee));
            push("addq $4, %rbx".into());
            if w.check {
                push("testl %eax, %eax".into());
                push("js <fail>".into());
            }
            push(format!("jmp <top{k}>"));
            push(format!("next{k}:"));
        }
        push("xorl %eax, %eax".into());
        if any_check {
            push("jmp <out>".into());
            push("fail:".into());
            push("movl $4294967295, %eax".into());
        }
        push("out:".into());
    }
    template(&v)
}

/// Split a function into prologue, body and epilogue, checking the frame
/// against the ABI: AArch64 `stp x29, x30, [sp, #-N]!; mov x29, sp`, then
/// stores of callee-saved registers (x19-x28) that the epilogue loads back
/// from the same slots before `ldp x29, x30, [sp], #N; ret`, N a multiple
/// of 16; x86_64 pushes of callee-saved registers (and `subq $N, %rsp`)
/// undone in reverse before `retq`, leaving `%rsp` 16-byte aligned at the
/// calls. `uses`: registers the body uses, which must be among the saved.
/// Returns the body's range.
fn split_frame(arch: &str, insns: &[String], uses: &[&str]) -> std::ops::Range<usize> {
    let fail = |what: &str| -> ! { panic!("{what}:\n  {}", insns.join("\n  ")) };
    let mut saved: BTreeSet<(String, String)> = BTreeSet::new();
    let (start, end);
    if arch == "aarch64" {
        let frame = insns[0]
            .strip_prefix("stp x29, x30, [sp, #-")
            .and_then(|x| x.strip_suffix("]!"))
            .unwrap_or_else(|| fail("no frame record first"));
        let n: u64 = frame.parse().unwrap();
        assert!(n.is_multiple_of(16), "frame of {n} bytes");
        assert_eq!(insns[1], "mov x29, sp");
        let mut i = 2;
        let slot = |s: &str, m: &str| -> Option<Vec<(String, String)>> {
            let rest = s.strip_prefix(m)?;
            let (regs, at) = rest.split_once(", [sp, #")?;
            let at = at.strip_suffix(']')?.to_string();
            Some(
                regs.split(", ")
                    .map(|r| (r.to_string(), at.clone()))
                    .collect(),
            )
        };
        while let Some(v) = slot(&insns[i], "stp ").or_else(|| slot(&insns[i], "str ")) {
            saved.extend(v);
            i += 1;
        }
        start = i;
        let n_ = insns.len();
        assert_eq!(insns[n_ - 1], "ret");
        assert_eq!(insns[n_ - 2], format!("ldp x29, x30, [sp], #{n}"));
        let mut j = n_ - 2;
        let mut restored = BTreeSet::new();
        while let Some(v) = slot(&insns[j - 1], "ldp ").or_else(|| slot(&insns[j - 1], "ldr ")) {
            restored.extend(v);
            j -= 1;
        }
        end = j;
        assert_eq!(saved, restored, "registers saved and restored");
        for (r, at) in &saved {
            let k: u32 = r[1..].parse().unwrap();
            assert!((19..=28).contains(&k), "saves {r}, not callee-saved");
            assert!(
                at.parse::<u64>().unwrap() + 8 <= n,
                "{r} saved outside the frame"
            );
        }
    } else {
        let mut i = 0;
        let mut pushed = Vec::new();
        while let Some(r) = insns[i].strip_prefix("pushq %") {
            pushed.push(r.to_string());
            i += 1;
        }
        let sub: u64 = match insns[i].strip_prefix("subq $") {
            Some(x) => {
                i += 1;
                x.strip_suffix(", %rsp").unwrap().parse().unwrap()
            }
            None => 0,
        };
        start = i;
        let n_ = insns.len();
        assert_eq!(insns[n_ - 1], "retq");
        let mut j = n_ - 1;
        let mut popped = Vec::new();
        while let Some(r) = insns[j - 1].strip_prefix("popq %") {
            popped.push(r.to_string());
            j -= 1;
        }
        if sub > 0 {
            assert_eq!(insns[j - 1], format!("addq ${sub}, %rsp"));
            j -= 1;
        }
        end = j;
        assert_eq!(pushed, popped, "pushes undone in reverse");
        for r in &pushed {
            assert!(
                ["rbx", "rbp", "r12", "r13", "r14", "r15"].contains(&r.as_str()),
                "pushes {r}, not callee-saved"
            );
            saved.insert((r.clone(), String::new()));
        }
        assert_eq!(
            (8 + 8 * pushed.len() as u64 + sub) % 16,
            0,
            "%rsp misaligned at the calls"
        );
    }
    for u in uses {
        assert!(
            saved.iter().any(|(r, _)| r == u),
            "{u} is used but not saved: {saved:?}"
        );
    }
    start..end
}

/// The stubs as `llvm-objdump` disassembles them: each accessor loads
/// the address of its module's code object (the anchor at the code
/// object's offset in the reference), 3.11 increments its refcount; Init
/// and Fini are the table loops calling the runtime.
fn macho_disassembly(py: &'static Py, arch: &str) {
    let dir = TempDir::new("macho-disasm");
    let bytes = emitted(py, macho_target(arch));
    let path = write(&dir, "deepfreeze.o", bytes);
    let relocs = macho_relocs(&path);
    let relocated: BTreeSet<u64> = relocs["__TEXT,__text"].iter().map(|r| r.address).collect();
    let signed_1: BTreeSet<u64> = relocs["__TEXT,__text"]
        .iter()
        .filter(|r| r.kind == "SIGNED1")
        .map(|r| r.address)
        .collect();
    let funcs = macho_functions(&path, &relocated);
    let c = census(py);
    let ours = ObjFile::parse(bytes).unwrap();
    let data = ours.symbol(&data_anchor(0)).unwrap().loc.unwrap().section;
    for (name, off) in &c.accessors {
        let got = render(&funcs[&underscore(name)]);
        let anchor = data_anchor(*off);
        let want = expected_accessor(arch, py, &anchor, !signed_1.is_empty());
        assert_eq!(got, want, "{name}");
        // The anchor is the code object.
        let ty = ours.reloc_at(Loc {
            section: data,
            offset: off + 8,
        });
        assert!(
            matches!(ty.map(|r| &r.target),
                Some(Target::Extern { name, addend: 0 }) if name == "PyCode_Type"),
            "{name}: {anchor} is no code object: {ty:?}"
        );
    }
    let (init, fini) = walks(py);
    let uses: &[&str] = if arch == "aarch64" {
        &["x19", "x20", "x21"]
    } else {
        &["rbx", "rbp", "r12"]
    };
    for (name, w) in [
        ("_Py_Deepfreeze_Init", &init),
        ("_Py_Deepfreeze_Fini", &fini),
    ] {
        let insns = &funcs[&underscore(name)];
        let body = split_frame(arch, &render(insns), uses);
        let got = render_from(insns, body.start)[body.clone()].to_vec();
        let want = expected_walks(arch, w);
        assert_eq!(
            got,
            want,
            "{name}:\n  got  {}\n  want {}",
            got.join("\n       "),
            want.join("\n       ")
        );
    }
    assert_eq!(
        funcs.len(),
        STOCK_MODULES + 2,
        "functions: {:?}",
        funcs.keys()
    );
}

/// Link `obj` into a dylib with ld64.lld; `extra` arguments go first.
fn link_dylib(dir: &TempDir, arch: &str, obj: &Path, extra: &[String], out: &str) -> PathBuf {
    let out = dir.path().join(out);
    run(Command::new(ld64())
        .args(["-arch", macho_arch(arch)])
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
fn macho_dylib(py: &'static Py, arch: &str) {
    let dir = TempDir::new("macho-dylib");
    let obj = write(&dir, "deepfreeze.o", emitted(py, macho_target(arch)));
    let dylib = link_dylib(&dir, arch, &obj, &[], "libdeepfreeze.dylib");
    let bytes = std::fs::read(&dylib).unwrap();
    let img = Image::parse(&bytes);
    let binds = macho_binds(&dylib);
    let rebases = macho_rebases(&dylib);
    let bound = |va: u64| binds.get(&va).map(|(s, a)| (s.as_str(), *a));
    let c = census(py);
    for (name, off) in &c.accessors {
        let at = img.symbol(&underscore(name));
        let (obj_va, inc) = accessor_target(arch, &img, at);
        assert_eq!(
            obj_va,
            img.symbol(&underscore(&data_anchor(*off))),
            "{name} computes another address"
        );
        assert_eq!(
            bound(obj_va + 8),
            Some(("_PyCode_Type", 0)),
            "{name}: the object at {obj_va:#x} has no type pointer to _PyCode_Type"
        );
        assert!(
            rebases.contains(&(obj_va + 24)),
            "{name}: co_consts at {:#x} is not rebased",
            obj_va + 24
        );
        let consts = img.u64(obj_va + 24);
        assert_eq!(
            bound(consts + 8),
            Some(("_PyTuple_Type", 0)),
            "{name}: co_consts -> {consts:#x} is no tuple"
        );
        assert_eq!(
            inc,
            (!py.immortal).then_some(obj_va),
            "{name}: refcount increment"
        );
    }
    let (data_va, _) = img.section("__data");
    let (init, fini) = walks(py);
    for (func, walks) in [("_Py_Deepfreeze_Init", init), ("_Py_Deepfreeze_Fini", fini)] {
        let (base, bounds) = walk_bounds(arch, &img, img.symbol(&underscore(func)));
        assert_eq!(base, data_va, "{func}: data base");
        assert_eq!(bounds.len(), walks.len(), "{func}: walks");
        for ((t0, t1), w) in bounds.iter().zip(&walks) {
            let ty = if w.callee == py.fini_str.unwrap_or("") {
                "_PyUnicode_Type"
            } else {
                "_PyCode_Type"
            };
            let want = (w.end - w.start) / 4;
            assert_eq!((t1 - t0) / 4, want, "{func}: table length");
            let mut seen = HashSet::new();
            for e in (*t0..*t1).step_by(4) {
                let o = base + img.u32(e) as u64;
                assert!(seen.insert(o), "{func}: {o:#x} twice");
                assert_eq!(
                    bound(o + 8),
                    Some((ty, 0)),
                    "{func}: table entry {:#x} -> {o:#x} is no {ty} object",
                    e - t0
                );
            }
        }
    }
    let lazy = macho_lazy_binds(&dylib);
    for c in py.callees() {
        assert!(lazy.contains(&underscore(c)), "{c} not bound: {lazy:?}");
    }
    eprintln!(
        "{}: {} binds, {} rebases",
        dylib.display(),
        binds.len(),
        rebases.len()
    );
}

/// With `-dead_strip` (roots: every function but one accessor), Init's
/// table must still land on code objects: the atoms it walks by offset
/// must stay where the table says.
fn macho_dead_strip(py: &'static Py, arch: &str) {
    let dir = TempDir::new("macho-deadstrip");
    let bytes = emitted(py, macho_target(arch));
    let obj = write(&dir, "deepfreeze.o", bytes);
    // frozen_only is the last module: no other object points into the
    // atom of its code object.
    let dropped = "__Py_get_frozen_only_toplevel";
    let mut args = vec!["-dead_strip".to_string()];
    for (n, (descr, _)) in nm_macho(&obj) {
        if descr == "(__TEXT,__text) private external" && n != dropped {
            args.push("-u".into());
            args.push(n);
        }
    }
    let dylib = link_dylib(&dir, arch, &obj, &args, "stripped.dylib");
    let full = link_dylib(&dir, arch, &obj, &[], "full.dylib");
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

fn coff_target(arch: &str) -> &'static str {
    match arch {
        "x86_64" => "x86_64-windows",
        "aarch64" => "aarch64-windows",
        _ => unreachable!(),
    }
}

/// Names exactly as in C (no underscore added, on x64 or arm64), the
/// functions typed as functions, section characteristics and alignment.
fn coff_symbols_and_sections(py: &'static Py, arch: &str) {
    let dir = TempDir::new("coff-syms");
    let bytes = emitted(py, coff_target(arch));
    let path = write(&dir, "deepfreeze.o", bytes);
    let c = census(py);
    let syms = nm_plain(&path);
    let mut expected: BTreeMap<String, char> = BTreeMap::new();
    for n in c.accessors.keys() {
        expected.insert(n.clone(), 'T');
    }
    expected.insert("_Py_Deepfreeze_Init".into(), 'T');
    expected.insert("_Py_Deepfreeze_Fini".into(), 'T');
    if py.next_func_version {
        expected.insert("_Py_next_func_version".into(), 'D');
    }
    for n in &c.undefined {
        expected.insert(n.clone(), 'U');
    }
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
    let ro = run(Command::new(readobj()).arg("--symbols").arg(&path));
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
        .chain(py.callees().into_iter().map(String::from))
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
fn coff_relocations(py: &'static Py, arch: &str) {
    let dir = TempDir::new("coff-relocs");
    let path = write(&dir, "deepfreeze.o", emitted(py, coff_target(arch)));
    let relocs = coff_relocs(&path);
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
    let callees: BTreeSet<String> = py.callees().iter().map(|c| c.to_string()).collect();
    let text = &relocs[".text"];
    let at: BTreeMap<u64, (&str, &str)> = text
        .iter()
        .map(|(o, t, s)| (*o, (t.as_str(), s.as_str())))
        .collect();
    let mut calls = BTreeSet::new();
    for (off, ty, sym) in text {
        match (arch, ty.as_str()) {
            ("x86_64", "IMAGE_REL_AMD64_REL32_1") => {
                // addq $1, X(%rip): the field ends one byte before the
                // instruction does.
                assert!(sym.starts_with("pyfreeze_"), "REL32_1 to {sym}");
            }
            ("x86_64", "IMAGE_REL_AMD64_REL32") => {
                if callees.contains(sym) {
                    calls.insert(sym.clone());
                } else {
                    assert!(sym.starts_with("pyfreeze_"), "REL32 to {sym}");
                }
            }
            ("aarch64", "IMAGE_REL_ARM64_PAGEBASE_REL21") => {
                assert!(sym.starts_with("pyfreeze_"), "{ty} to {sym}");
                assert_eq!(
                    at.get(&(off + 4)),
                    Some(&("IMAGE_REL_ARM64_PAGEOFFSET_12A", sym.as_str())),
                    "PAGEBASE_REL21 at {off:#x} without its PAGEOFFSET_12A"
                );
            }
            ("aarch64", "IMAGE_REL_ARM64_PAGEOFFSET_12A") => {
                assert_eq!(
                    at.get(&(off - 4)).map(|x| x.0),
                    Some("IMAGE_REL_ARM64_PAGEBASE_REL21"),
                    "PAGEOFFSET_12A at {off:#x} without its PAGEBASE_REL21"
                );
            }
            ("aarch64", "IMAGE_REL_ARM64_BRANCH26") => {
                assert!(callees.contains(sym), "BRANCH26 to {sym}");
                calls.insert(sym.clone());
            }
            _ => panic!("unexpected code relocation {ty} at {off:#x} to {sym}"),
        }
    }
    assert_eq!(calls, callees);
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
        expected_data_relocs(py, 2),
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
fn implicit_addends(py: &'static Py) {
    use object::{macho, pe, RelocationFlags};
    for target in [
        "x86_64-macos",
        "x86_64-windows",
        "aarch64-macos",
        "aarch64-windows",
    ] {
        let bytes = emitted(py, target);
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

        let f = ObjFile::parse(bytes).unwrap();
        for (name, off) in &census(py).accessors {
            let code = f
                .accessor_code(name)
                .unwrap_or_else(|e| panic!("{target}: {e}"));
            let anchor = f.symbol(&data_anchor(*off)).unwrap().loc.unwrap();
            assert_eq!(anchor.offset, *off);
            assert_eq!(code.returned, Some(anchor), "{target}: {name}: {code:?}");
            let inc: Vec<Loc> = if py.immortal { vec![] } else { vec![anchor] };
            assert_eq!(code.increments, inc, "{target}: {name}: {code:?}");
            assert!(code.other.is_empty(), "{target}: {name}: {code:?}");
        }
    }
}

/// Windows x64 and ARM64 require unwind data (`.pdata`) for every
/// function that is not a leaf (calls, saves registers, moves the stack
/// pointer); `_Py_Deepfreeze_Init` and `_Py_Deepfreeze_Fini` are such
/// functions.
fn coff_unwind_info(py: &'static Py, arch: &str) {
    let f = parsed(py, coff_target(arch));
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
        "{}: no .pdata entry (RUNTIME_FUNCTION) for {missing:?}: sections {:?}. Without one, \
         Windows unwinds through these non-leaf functions as if they were leaves (return \
         address at [rsp]/lr): an exception or a stack walk inside _PyStaticCode_* goes \
         astray (see coff_x64_wine_unwind for the run-time evidence)",
        coff_target(arch),
        f.sections.values().map(|s| &s.name).collect::<Vec<_>>()
    );
}

/// The runtime harness for the x86_64 COFF object: defines what the
/// object references, records what Init and Fini call, and checks what
/// the accessors return. Prints `key value...` lines.
fn harness_c(py: &Py, accessors: &[String], runtime_size: u64) -> String {
    let mut decls = String::new();
    let mut table = String::new();
    for a in accessors {
        decls.push_str(&format!("void *{a}(void);\n"));
        table.push_str(&format!("    {{\"{a}\", {a}}},\n"));
    }
    let callbacks = if py.fini_str.is_some() {
        "int _PyStaticCode_InternStrings(void *co) { return on_init(co); }\n\
         void _PyStaticCode_Dealloc(void *co) { on_fini(co); }\n\
         void _PyStaticUnicode_Dealloc(void *s) { on_str(s); }\n"
    } else {
        "int _PyStaticCode_Init(void *co) { return on_init(co); }\n\
         void _PyStaticCode_Fini(void *co) { on_fini(co); }\n"
    };
    format!(
        r#"/* Generated by tests/formats.rs: stands in for the CPython runtime. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <windows.h>

#define TYPE_SIZE 512
__attribute__((aligned(16))) char PyCode_Type[TYPE_SIZE], PyBytes_Type[TYPE_SIZE],
    PyUnicode_Type[TYPE_SIZE], PyTuple_Type[TYPE_SIZE], PyLong_Type[TYPE_SIZE],
    PyFloat_Type[TYPE_SIZE], PyComplex_Type[TYPE_SIZE];
__attribute__((aligned(16))) char _Py_NoneStruct[64], _Py_TrueStruct[64],
    _Py_FalseStruct[64], _Py_EllipsisObject[64];
__attribute__((aligned(64))) char _PyRuntime[{runtime_size}];

int _Py_Deepfreeze_Init(void);
void _Py_Deepfreeze_Fini(void);
{decls}
static const struct {{ const char *name; void *(*fn)(void); }} accessors[] = {{
{table}}};
#define N_ACCESSORS (sizeof accessors / sizeof accessors[0])

#define MAX 200000
static void *init_rec[MAX], *fini_rec[MAX], *str_rec[MAX];
static int n_init, n_fini, n_str, fail_at = -1, str_before_code_done;
static int unwind_frames = -1, unwind_reaches_caller = -1, control_reaches_caller = -1;
__declspec(noinline) int run_init(void);
__declspec(noinline) int run_control(void);

static int in_function(void *pc, void *fn) {{
    DWORD64 base = 0;
    PRUNTIME_FUNCTION f = RtlLookupFunctionEntry((DWORD64)fn, &base, NULL);
    DWORD64 a = (DWORD64)pc;
    return f && a > base + f->BeginAddress && a <= base + f->EndAddress;
}}

/* Control: a stack walk from a C function called by another reaches it. */
__declspec(noinline) static int control_leaf(void) {{
    void *frames[64];
    int n = RtlCaptureStackBackTrace(0, 64, frames, NULL);
    control_reaches_caller = 0;
    for (int i = 0; i < n; i++)
        if (in_function(frames[i], (void *)run_control)) control_reaches_caller = 1;
    return n;
}}
__declspec(noinline) int run_control(void) {{
    int r = control_leaf();
    __asm__ volatile("" ::: "memory");
    return r;
}}

/* The callbacks spill their argument to the caller's shadow space (-O0),
   as the Win64 convention allows. */
static int on_init(void *co) {{
    if (n_init == 0 && unwind_frames < 0) {{
        void *frames[64];
        unwind_frames = RtlCaptureStackBackTrace(0, 64, frames, NULL);
        unwind_reaches_caller = 0;
        for (int i = 0; i < unwind_frames; i++)
            if (in_function(frames[i], (void *)run_init)) unwind_reaches_caller = 1;
    }}
    if (n_init < MAX) init_rec[n_init] = co;
    n_init++;
    return n_init == fail_at ? -1 : 0;
}}
static void on_fini(void *co) {{
    if (n_str) str_before_code_done = 1;
    if (n_fini < MAX) fini_rec[n_fini] = co;
    n_fini++;
}}
static void on_str(void *s) {{
    if (n_str < MAX) str_rec[n_str] = s;
    n_str++;
}}
{callbacks}
#define TYPE(o) (((void **)(o))[1])
static int is_type(void *t) {{
    return t == PyCode_Type || t == PyBytes_Type || t == PyUnicode_Type || t == PyTuple_Type
        || t == PyLong_Type || t == PyFloat_Type || t == PyComplex_Type;
}}
static int in_runtime(void *p) {{
    return (char *)p >= _PyRuntime && (char *)p < _PyRuntime + sizeof _PyRuntime;
}}
static int is_singleton(void *p) {{
    return p == _Py_NoneStruct || p == _Py_TrueStruct || p == _Py_FalseStruct
        || p == _Py_EllipsisObject;
}}
/* An object pointer: one of ours (a known type) or the runtime's. */
static int is_object(void *p) {{
    return p && (in_runtime(p) || is_singleton(p) || is_type(TYPE(p)));
}}
/* Ours of type t, or inside the runtime (its shared objects). */
static int is_a(void *p, char *t) {{ return p && (in_runtime(p) || TYPE(p) == t); }}

static long long checked_items, bad_items;
static void check(int ok) {{ checked_items++; if (!ok) bad_items++; }}
static void check_tuple_items(void *t, int depth) {{
    if (!t || in_runtime(t) || TYPE(t) != PyTuple_Type || depth > 64) return;
    intptr_t n = ((intptr_t *)t)[2];
    void **items = (void **)((char *)t + 24);
    for (intptr_t i = 0; i < n; i++) {{
        check(is_object(items[i]));
        void *it = items[i];
        if (it && !in_runtime(it) && !is_singleton(it) && TYPE(it) == PyTuple_Type)
            check_tuple_items(it, depth + 1);
    }}
}}
/* A code object's pointer fields (offsets the same in 3.11 and 3.12). */
static void check_code(void *co) {{
    void **f = (void **)co;
    check(is_a(f[24 / 8], PyTuple_Type));   /* co_consts */
    check(is_a(f[32 / 8], PyTuple_Type));   /* co_names */
    check(is_a(f[40 / 8], PyBytes_Type));   /* co_exceptiontable */
    check(is_a(f[96 / 8], PyTuple_Type));   /* co_localsplusnames */
    check(is_a(f[104 / 8], PyBytes_Type));  /* co_localspluskinds */
    check(is_a(f[112 / 8], PyUnicode_Type)); /* co_filename */
    check(is_a(f[120 / 8], PyUnicode_Type)); /* co_name */
    check(is_a(f[128 / 8], PyUnicode_Type)); /* co_qualname */
    check(is_a(f[136 / 8], PyBytes_Type));  /* co_linetable */
    check_tuple_items(f[24 / 8], 0);
    void *names = f[32 / 8];
    if (!in_runtime(names) && TYPE(names) == PyTuple_Type) {{
        intptr_t n = ((intptr_t *)names)[2];
        for (intptr_t i = 0; i < n; i++)
            check(is_a(((void **)((char *)names + 24))[i], PyUnicode_Type));
    }}
}}

static int cmp_ptr(const void *a, const void *b) {{
    uintptr_t x = *(uintptr_t *)a, y = *(uintptr_t *)b;
    return x < y ? -1 : x > y;
}}
static int distinct(void **v, int n) {{
    void **c = malloc(sizeof(void *) * (n ? n : 1));
    memcpy(c, v, sizeof(void *) * n);
    qsort(c, n, sizeof(void *), cmp_ptr);
    int d = n > 0;
    for (int i = 1; i < n; i++) d += c[i] != c[i - 1];
    free(c);
    return d;
}}
static int same_set(void **a, int na, void **b, int nb) {{
    if (na != nb) return 0;
    void **x = malloc(sizeof(void *) * (na ? na : 1)), **y = malloc(sizeof(void *) * (nb ? nb : 1));
    memcpy(x, a, sizeof(void *) * na);
    memcpy(y, b, sizeof(void *) * nb);
    qsort(x, na, sizeof(void *), cmp_ptr);
    qsort(y, nb, sizeof(void *), cmp_ptr);
    int same = memcmp(x, y, sizeof(void *) * na) == 0;
    free(x);
    free(y);
    return same;
}}
static int count_type(void **v, int n, char *t) {{
    int k = 0;
    for (int i = 0; i < n; i++) k += TYPE(v[i]) == t;
    return k;
}}
static int recorded(void *p) {{
    for (int i = 0; i < n_init && i < MAX; i++)
        if (init_rec[i] == p) return 1;
    return 0;
}}

__declspec(noinline) int run_init(void) {{
    int r = _Py_Deepfreeze_Init();
    __asm__ volatile("" ::: "memory"); /* not a tail call */
    return r;
}}

int main(void) {{
    setvbuf(stdout, NULL, _IONBF, 0);
    fail_at = 5;
    int r = run_init();
    printf("init_fail ret %d calls %d\n", r, n_init);
    n_init = 0;
    fail_at = -1;
    r = run_init();
    printf("init ret %d calls %d distinct %d code_type %d\n", r, n_init, distinct(init_rec, n_init),
           count_type(init_rec, n_init, PyCode_Type));
    for (int i = 0; i < n_init; i++) check_code(init_rec[i]);
    printf("graph checked %lld bad %lld\n", checked_items, bad_items);
    for (size_t i = 0; i < N_ACCESSORS; i++) {{
        void *o = accessors[i].fn();
        intptr_t before = *(intptr_t *)o;
        void *o2 = accessors[i].fn();
        intptr_t after = *(intptr_t *)o2;
        void *consts = ((void **)o)[3];
        printf("accessor %s code %d consts_tuple %d initialized %d same %d refcnt_delta %lld\n",
               accessors[i].name, TYPE(o) == PyCode_Type,
               consts && !in_runtime(consts) && TYPE(consts) == PyTuple_Type, recorded(o), o == o2,
               (long long)(after - before));
    }}
    _Py_Deepfreeze_Fini();
    printf("fini calls %d same_set %d same_order %d\n", n_fini,
           same_set(init_rec, n_init, fini_rec, n_fini),
           n_fini == n_init && memcmp(init_rec, fini_rec, sizeof(void *) * n_init) == 0);
    printf("strings calls %d distinct %d str_type %d after_code %d\n", n_str,
           distinct(str_rec, n_str),
           count_type(str_rec, n_str, PyUnicode_Type), !str_before_code_done);
    DWORD64 base;
    run_control();
    printf("unwind init_entry %d fini_entry %d frames %d reaches_caller %d control %d\n",
           RtlLookupFunctionEntry((DWORD64)_Py_Deepfreeze_Init, &base, NULL) != NULL,
           RtlLookupFunctionEntry((DWORD64)_Py_Deepfreeze_Fini, &base, NULL) != NULL,
           unwind_frames, unwind_reaches_caller, control_reaches_caller);
    printf("done\n");
    return 0;
}}
"#
    )
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

/// Build both harnesses (3.12, 3.11) and run each once under wine, in one
/// private prefix: the first run creates it (~10 s).
fn wine_runs() -> &'static BTreeMap<&'static str, WineRun> {
    static RUNS: OnceLock<BTreeMap<&'static str, WineRun>> = OnceLock::new();
    RUNS.get_or_init(|| {
        let (gcc, wine, wineserver) = (mingw_gcc(), wine(), wineserver());
        let dir = TempDir::new("wine");
        let prefix = dir.path().join("wineprefix");
        std::fs::create_dir_all(&prefix).unwrap();
        let mut out = BTreeMap::new();
        for py in [&PY312, &PY311] {
            let obj_bytes = emitted(py, "x86_64-windows");
            let obj = write(&dir, &format!("deepfreeze{}.o", py.python), obj_bytes);
            // Accessor declarations from the object's own symbol table.
            let accessors: Vec<String> = nm_plain(&obj)
                .into_iter()
                .filter(|(n, (l, _))| *l == 'T' && n.starts_with("_Py_get_"))
                .map(|(n, _)| n)
                .collect();
            assert_eq!(accessors.len(), STOCK_MODULES, "{accessors:?}");
            let f = ObjFile::parse(obj_bytes).unwrap();
            let runtime_end = f
                .relocs
                .values()
                .filter_map(|r| match &r.target {
                    Target::Extern { name, addend } if name == "_PyRuntime" => Some(*addend),
                    _ => None,
                })
                .max()
                .unwrap();
            let runtime_size = (runtime_end as u64 + 4096).next_multiple_of(4096);
            let c = write(
                &dir,
                &format!("harness{}.c", py.python),
                harness_c(py, &accessors, runtime_size).as_bytes(),
            );
            let exe = dir.path().join(format!("harness{}.exe", py.python));
            run(Command::new(&gcc)
                .args(["-O0", "-g0", "-Wall", "-o"])
                .arg(&exe)
                .arg(&c)
                .arg(&obj));
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
            out.insert(py.python, WineRun { lines, seconds });
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
/// then the string dealloc function once with each string we emit.
fn coff_x64_wine_runtime(py: &'static Py) {
    let r = &wine_runs()[py.python];
    let c = census(py);
    let n = c.code.len().to_string();
    let fail = r.line("init_fail");
    assert_eq!(
        (fail["ret"].as_str(), fail["calls"].as_str()),
        ("-1", "5"),
        "Init with a callee failing on its 5th call"
    );
    let init = r.line("init");
    assert_eq!(init["ret"], "0", "Init: {init:?}");
    assert_eq!(init["calls"], n, "Init calls vs code objects: {init:?}");
    assert_eq!(init["distinct"], n, "Init: {init:?}");
    assert_eq!(init["code_type"], n, "Init: {init:?}");
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
            let delta = if py.immortal { "0" } else { "1" };
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
    let fini = r.line("fini");
    assert_eq!(
        (fini["calls"].as_str(), fini["same_set"].as_str()),
        (n.as_str(), "1"),
        "Fini: {fini:?}"
    );
    let strings = r.line("strings");
    let ns = if py.fini_str.is_some() {
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
fn coff_x64_wine_unwind(py: &'static Py) {
    let u = wine_runs()[py.python].line("unwind");
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

/// A COFF ARM64 object defining what our object references: the type
/// objects, singletons and `_PyRuntime` as data, the runtime's functions
/// as `mov w0, #0; ret`.
fn arm64_runtime_stub(runtime_size: u64) -> Vec<u8> {
    use object::write::{Object as W, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SymbolFlags, SymbolKind, SymbolScope};
    let mut o = W::new(
        BinaryFormat::Coff,
        Architecture::Aarch64,
        Endianness::Little,
    );
    let data = o.section_id(object::write::StandardSection::Data);
    let text = o.section_id(object::write::StandardSection::Text);
    let add = |o: &mut W, name: &str, section, value, size, kind| {
        o.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value,
            size,
            kind,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Section(section),
            flags: SymbolFlags::None,
        });
    };
    for (name, size) in [
        ("PyCode_Type", 512),
        ("PyBytes_Type", 512),
        ("PyUnicode_Type", 512),
        ("PyTuple_Type", 512),
        ("PyLong_Type", 512),
        ("PyFloat_Type", 512),
        ("PyComplex_Type", 512),
        ("_Py_NoneStruct", 64),
        ("_Py_TrueStruct", 64),
        ("_Py_FalseStruct", 64),
        ("_Py_EllipsisObject", 64),
        ("_PyRuntime", runtime_size),
    ] {
        let off = o.append_section_data(data, &vec![0u8; size as usize], 16);
        add(&mut o, name, data, off, size, SymbolKind::Data);
    }
    for name in [
        "_PyStaticCode_Init",
        "_PyStaticCode_Fini",
        "_PyStaticCode_InternStrings",
        "_PyStaticCode_Dealloc",
        "_PyStaticUnicode_Dealloc",
    ] {
        let code: Vec<u8> = [0x5280_0000u32, 0xd65f_03c0]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let off = o.append_section_data(text, &code, 4);
        add(&mut o, name, text, off, 8, SymbolKind::Text);
    }
    o.write().unwrap()
}

/// aarch64 COFF links with lld-link into a DLL (the runtime from a stub
/// object): in the image, each accessor's adrp+add computes its code
/// object, whose type pointer slot has a DIR64 base relocation and holds
/// the address of `PyCode_Type`; Init's and Fini's tables land on every
/// code object (and 3.11 string).
fn coff_arm64_dll(py: &'static Py) {
    let dir = TempDir::new("coff-arm64-dll");
    let bytes = emitted(py, "aarch64-windows");
    let obj = write(&dir, "deepfreeze.obj", bytes);
    let f = ObjFile::parse(bytes).unwrap();
    let runtime_end = f
        .relocs
        .values()
        .filter_map(|r| match &r.target {
            Target::Extern { name, addend } if name == "_PyRuntime" => Some(*addend),
            _ => None,
        })
        .max()
        .unwrap();
    let stub = write(
        &dir,
        "runtime.obj",
        &arm64_runtime_stub((runtime_end as u64 + 4096).next_multiple_of(4096)),
    );
    let c = census(py);
    let dll = dir.path().join("deepfreeze.dll");
    let mut cmd = Command::new(lld_link());
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
    let pointer_to = |va: u64, ty: &str| -> Result<(), String> {
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
    for name in c.accessors.keys() {
        let (obj_va, inc) = accessor_target("aarch64", &img, exports[name]);
        pointer_to(obj_va + 8, "PyCode_Type").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            dir64.contains(&(obj_va + 24)),
            "{name}: co_consts not relocated"
        );
        pointer_to(img.u64(obj_va + 24) + 8, "PyTuple_Type")
            .unwrap_or_else(|e| panic!("{name}: co_consts: {e}"));
        assert_eq!(inc, (!py.immortal).then_some(obj_va), "{name}");
    }
    let (init, fini) = walks(py);
    for (func, walks) in [("_Py_Deepfreeze_Init", init), ("_Py_Deepfreeze_Fini", fini)] {
        let (data, bounds) = walk_bounds("aarch64", &img, exports[func]);
        assert_eq!(bounds.len(), walks.len());
        for ((t0, t1), w) in bounds.iter().zip(&walks) {
            let ty = if Some(w.callee) == py.fini_str {
                "PyUnicode_Type"
            } else {
                "PyCode_Type"
            };
            assert_eq!((t1 - t0) / 4, (w.end - w.start) / 4, "{func}");
            let mut seen = HashSet::new();
            for e in (*t0..*t1).step_by(4) {
                let o = data + img.u32(e) as u64;
                assert!(seen.insert(o));
                pointer_to(o + 8, ty).unwrap_or_else(|e| panic!("{func}: {e}"));
            }
        }
    }
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

/// 3.11 `PyCompactUnicodeObject`: `wstr` (in the `PyASCIIObject` part),
/// `utf8_length`, `utf8`, `wstr_length`, data (pyenv 3.11.7's DWARF).
const WSTR: u64 = 40;
const UTF8_LENGTH: u64 = 48;
const WSTR_LENGTH: u64 = 64;
const DATA_311: u64 = 72;

/// (kind, compact non-ASCII) of a 3.11 str.
fn str_kind(v: &View) -> (u64, bool) {
    let state = v.int(32, 4);
    (
        (state >> 2) & 7,
        (state >> 5) & 1 == 1 && (state >> 6) & 1 == 0,
    )
}

/// `wstr` points to the string's own data and `wstr_length` is its
/// length; `utf8_length`/`utf8` stay 0.
fn has_own_wstr(v: &View) -> bool {
    let own = matches!(
        v.reloc(WSTR),
        Some(Reloc { target: Target::Local(l), size: 8, pcrel: false })
            if *l == v.at.add(DATA_311 as i64)
    );
    own && v.reloc_offsets(WSTR..DATA_311) == [WSTR]
        && v.int(UTF8_LENGTH, 8) == 0
        && v.int(UTF8_LENGTH + 8, 8) == 0
        && v.int(WSTR_LENGTH, 8) == v.int(16, 8)
        && v.int(16, 8) > 0
}

/// Bytes 40..72 all zero, no pointer there.
fn has_no_wstr(v: &View) -> bool {
    v.bytes
        .get(WSTR as usize..DATA_311 as usize)
        .is_some_and(|b| b.iter().all(|&x| x == 0))
        && v.reloc_offsets(WSTR..DATA_311).is_empty()
}

/// Ours (Windows, `sizeof(wchar_t)` 2) has the UCS-2 string's `wstr`,
/// the reference (Linux) has not.
fn ucs2_wstr_on_windows(ours: &View, theirs: &View) -> bool {
    str_kind(ours) == (2, true)
        && str_kind(theirs) == (2, true)
        && has_own_wstr(ours)
        && has_no_wstr(theirs)
}

/// The reference (Linux, `sizeof(wchar_t)` 4) has the UCS-4 string's
/// `wstr`, ours (Windows) has not.
fn ucs4_wstr_on_linux(ours: &View, theirs: &View) -> bool {
    str_kind(ours) == (4, true)
        && str_kind(theirs) == (4, true)
        && has_no_wstr(ours)
        && has_own_wstr(theirs)
}

const KNOWN_311_WINDOWS: &[KnownDifference] = &[
    KnownDifference {
        ty: "PyUnicode_Type",
        via: None,
        bytes: WSTR..DATA_311,
        accept: Accept::Range(ucs2_wstr_on_windows),
        reason: "3.11 wstr/wstr_length of a UCS-2 str: its data is the wchar_t form on \
                 Windows (sizeof(wchar_t) == 2), not on Linux",
    },
    KnownDifference {
        ty: "PyUnicode_Type",
        via: None,
        bytes: WSTR..DATA_311,
        accept: Accept::Range(ucs4_wstr_on_linux),
        reason: "3.11 wstr/wstr_length of a UCS-4 str: its data is the wchar_t form on \
                 Linux (sizeof(wchar_t) == 4), not on Windows",
    },
];

/// `_PyRuntime` offsets referenced by `f`.
fn runtime_offsets(f: &ObjFile) -> BTreeSet<i64> {
    f.relocs
        .values()
        .filter_map(|r| match &r.target {
            Target::Extern { name, addend } if name == "_PyRuntime" => Some(*addend),
            _ => None,
        })
        .collect()
}

/// The graph read back from `target` equals the reference's (ELF
/// x86_64): same accessors, undefined symbols and `_Py_next_func_version`,
/// every module's graph equal (bytes and pointer targets), every object
/// of both sides reached, and the known differences (3.11 on Windows)
/// all needed. The runtime's shared objects may sit elsewhere inside
/// `_PyRuntime` on another target (3.11 aarch64: pthread mutexes are
/// larger): the target's `_PyRuntime` offsets are moved by one constant,
/// the difference of the smallest offset on each side, and must then
/// match the reference's everywhere.
fn graph_equals_reference(py: &'static Py, target: &'static str) {
    let mut ours = parsed(py, target);
    let theirs = parsed(py, REFERENCE);
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
    let c = census(py);
    let names: BTreeSet<String> = ours.accessors().into_keys().collect();
    assert_eq!(
        names,
        c.accessors.keys().cloned().collect::<BTreeSet<_>>(),
        "accessors"
    );
    assert_eq!(ours.undefined(), c.undefined, "undefined symbols");
    if py.next_func_version {
        assert_eq!(
            ours.read_u32_symbol("_Py_next_func_version").unwrap(),
            theirs.read_u32_symbol("_Py_next_func_version").unwrap()
        );
    }
    let known: &[KnownDifference] = if py.fini_str.is_some() && target.contains("windows") {
        KNOWN_311_WINDOWS
    } else {
        &[]
    };
    let mut cmp = Comparer::new(&ours, &theirs, py.model, known).labels(target, REFERENCE);
    let mut failures = Vec::new();
    for name in &names {
        let root = format!("{name} ->");
        let ra = ours
            .accessor_object(name)
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        let rb = theirs.accessor_object(name).unwrap();
        if let Err(m) = cmp.compare(&root, ra, rb) {
            failures.push(m.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{target} vs {REFERENCE}: {} modules differ:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    let (all_a, all_b) = (all_objects(&ours, py.model), all_objects(&theirs, py.model));
    assert_eq!(
        cmp.reached_a.len(),
        all_a.len(),
        "{target}: objects reached"
    );
    assert_eq!(
        cmp.reached_b.len(),
        all_b.len(),
        "{REFERENCE}: objects reached"
    );
    let stale: Vec<&str> = known
        .iter()
        .enumerate()
        .filter(|(i, _)| !cmp.stats.known_used.contains_key(i))
        .map(|(_, k)| k.reason)
        .collect();
    assert!(
        stale.is_empty(),
        "known differences never needed: {stale:?}"
    );
    eprintln!(
        "{target}: _PyRuntime offsets moved by {shift}; {:?}",
        cmp.stats
    );
}

/// The tables Init and Fini walk (from the anchor `pyfreeze_table_0`, in
/// every format): the code objects, each once, then (both versions lay it
/// out; 3.11's Fini walks it) every str object; the section ends with a 0
/// sentinel (other tables may come in between).
fn tables_list_every_object(py: &'static Py) {
    for target in [
        REFERENCE,
        "aarch64-linux",
        "x86_64-macos",
        "aarch64-macos",
        "x86_64-windows",
        "aarch64-windows",
    ] {
        let f = parsed(py, target);
        let by_type = objects_by_type(&f, py.model);
        let table = f
            .symbol(&table_anchor(0))
            .unwrap_or_else(|| panic!("{target}: no {}", table_anchor(0)))
            .loc
            .unwrap();
        assert_eq!(table.offset, 0);
        let data = f.symbol(&data_anchor(0)).unwrap().loc.unwrap().section;
        let words: Vec<u64> = f
            .tail(table)
            .unwrap()
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()) as u64)
            .collect();
        let set = |ty: &str| -> Vec<u64> {
            let mut v: Vec<u64> = by_type[ty]
                .iter()
                .inspect(|l| assert_eq!(l.section, data))
                .map(|l| l.offset)
                .collect();
            v.sort();
            v
        };
        let (code, strs) = (set("PyCode_Type"), set("PyUnicode_Type"));
        assert!(
            words.len() > code.len() + strs.len(),
            "{target}: {} table words",
            words.len()
        );
        let mut t_code = words[..code.len()].to_vec();
        t_code.sort();
        assert_eq!(t_code, code, "{target}: code table");
        let mut t_strs = words[code.len()..code.len() + strs.len()].to_vec();
        t_strs.sort();
        assert_eq!(t_strs, strs, "{target}: string table");
        assert_eq!(*words.last().unwrap(), 0, "{target}: sentinel");
        let c = census(py);
        assert_eq!((code.len(), strs.len()), (c.code.len(), c.strings.len()));
    }
}

/// 3.11: for Windows targets (`sizeof(wchar_t)` 2) the UCS-2 strings
/// carry `wstr`/`wstr_length` and the UCS-4 ones do not; for Linux and
/// macOS the reverse; latin-1 and ASCII strings never.
fn wstr_follows_wchar_size(py: &'static Py) {
    for target in [
        REFERENCE,
        "aarch64-linux",
        "x86_64-macos",
        "aarch64-macos",
        "x86_64-windows",
        "aarch64-windows",
    ] {
        let f = parsed(py, target);
        let wchar = if target.contains("windows") { 2 } else { 4 };
        let mut counts: BTreeMap<(u64, bool), usize> = BTreeMap::new();
        for at in &objects_by_type(&f, py.model)["PyUnicode_Type"] {
            let bytes = f.bytes(*at, DATA_311).unwrap();
            let relocs = f.relocs_in(*at, DATA_311);
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
                    v.reloc_offsets(WSTR..WSTR + 8).is_empty() && v.int(WSTR, 8) == 0,
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

/// A small DWARF reader for one relocatable ELF object of pyenv's
/// archive: type DIEs by offset, structs by name.
mod dwarf {
    use gimli::{EndianSlice, LittleEndian};
    use object::{Object, ObjectSection, ObjectSymbol};
    use std::collections::HashMap;

    #[derive(Debug)]
    pub struct Die {
        pub tag: gimli::DwTag,
        pub name: Option<String>,
        pub size: Option<u64>,
        pub ty: Option<usize>,
        pub member_offset: Option<u64>,
        pub bit_size: Option<u64>,
        pub count: Option<u64>,
        pub declaration: bool,
        pub children: Vec<usize>,
    }

    pub struct Types {
        pub dies: HashMap<usize, Die>,
        by_name: HashMap<String, Vec<usize>>,
    }

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

    impl Types {
        pub fn parse(bytes: &[u8]) -> Types {
            let obj = object::File::parse(bytes).unwrap();
            let mut secs: HashMap<&'static str, Vec<u8>> = HashMap::new();
            for id in [
                gimli::SectionId::DebugInfo,
                gimli::SectionId::DebugAbbrev,
                gimli::SectionId::DebugStr,
                gimli::SectionId::DebugLineStr,
                gimli::SectionId::DebugStrOffsets,
                gimli::SectionId::DebugLine,
                gimli::SectionId::DebugAddr,
                gimli::SectionId::DebugRngLists,
                gimli::SectionId::DebugRanges,
                gimli::SectionId::DebugLocLists,
                gimli::SectionId::DebugLoc,
            ] {
                secs.insert(id.name(), relocated(&obj, id.name()));
            }
            assert!(
                !secs[".debug_info"].is_empty(),
                "no DWARF (built without -g?)"
            );
            let dwarf = gimli::Dwarf::load(|id| -> gimli::Result<_> {
                Ok(EndianSlice::new(
                    secs.get(id.name()).map_or(&[][..], |v| v.as_slice()),
                    LittleEndian,
                ))
            })
            .unwrap();
            let mut t = Types {
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
                        size: None,
                        ty: None,
                        member_offset: None,
                        bit_size: None,
                        count: None,
                        declaration: false,
                        children: Vec::new(),
                    };
                    let mut attrs = e.attrs();
                    while let Some(a) = attrs.next().unwrap() {
                        match a.name() {
                            gimli::DW_AT_name => {
                                d.name = Some(
                                    dwarf
                                        .attr_string(&unit, a.value())
                                        .unwrap()
                                        .to_string_lossy()
                                        .into_owned(),
                                )
                            }
                            gimli::DW_AT_byte_size => d.size = a.udata_value(),
                            gimli::DW_AT_bit_size => d.bit_size = a.udata_value(),
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

        /// The definition of struct (or typedef of a struct) `name`.
        pub fn named(&self, name: &str) -> usize {
            let cands = self.by_name.get(name).map_or(&[][..], |v| v.as_slice());
            for &c in cands {
                let d = &self.dies[&c];
                if matches!(
                    d.tag,
                    gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
                ) && !d.declaration
                {
                    return c;
                }
            }
            for &c in cands {
                if self.dies[&c].tag == gimli::DW_TAG_typedef {
                    let s = self.strip(self.dies[&c].ty.unwrap());
                    if !self.dies[&s].declaration {
                        return s;
                    }
                }
            }
            panic!("no struct {name} in the DWARF")
        }

        /// Through qualifiers (not typedefs).
        pub fn strip(&self, mut t: usize) -> usize {
            loop {
                let d = &self.dies[&t];
                match d.tag {
                    gimli::DW_TAG_const_type
                    | gimli::DW_TAG_volatile_type
                    | gimli::DW_TAG_atomic_type
                    | gimli::DW_TAG_restrict_type
                    | gimli::DW_TAG_typedef => match d.ty {
                        Some(n) => t = n,
                        None => return t,
                    },
                    _ => return t,
                }
            }
        }
    }
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

/// A typedef from the platform's C library (POSIX), through qualifiers
/// and further typedefs: its name.
fn posix_typedef(ty: &dwarf::Types, mut t: usize) -> Option<&str> {
    loop {
        let d = &ty.dies[&t];
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

/// Why the type `t` (reached as `path`) may have another size or layout
/// on Windows (LLP64) or another platform: C `long`, or a type from the
/// platform's headers. Pushes one line per finding.
fn platform_dependence(ty: &dwarf::Types, t: usize, path: &str, out: &mut Vec<String>) {
    let d = &ty.dies[&t];
    let name = d.name.as_deref().unwrap_or("");
    match d.tag {
        gimli::DW_TAG_typedef if STABLE_8.contains(&name) => {}
        gimli::DW_TAG_typedef if posix_typedef(ty, t).is_some() => {
            out.push(format!("{path}: {name} (a POSIX type)"))
        }
        gimli::DW_TAG_base_type if name.contains("long") && !name.contains("long long") => {
            out.push(format!("{path}: C {name} (4 bytes on LLP64)"))
        }
        gimli::DW_TAG_pointer_type | gimli::DW_TAG_base_type | gimli::DW_TAG_enumeration_type => {}
        gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
            for &m in &d.children {
                let md = &ty.dies[&m];
                if md.tag == gimli::DW_TAG_member {
                    let mname = md.name.as_deref().unwrap_or("<anon>");
                    if let Some(mt) = md.ty {
                        platform_dependence(ty, mt, &format!("{path}.{mname}"), out);
                    }
                }
            }
        }
        _ => {
            if let Some(n) = d.ty {
                platform_dependence(ty, n, path, out);
            }
        }
    }
}

/// The members of struct `s` (flattened through nested structs and
/// unions) whose bytes start before `end`: (offset, path, type).
fn members_before(ty: &dwarf::Types, s: usize, end: u64) -> Vec<(u64, String, usize)> {
    let mut out = Vec::new();
    fn walk(
        ty: &dwarf::Types,
        s: usize,
        base: u64,
        path: &str,
        end: u64,
        out: &mut Vec<(u64, String, usize)>,
    ) {
        for &m in &ty.dies[&s].children {
            let d = &ty.dies[&m];
            if d.tag != gimli::DW_TAG_member {
                continue;
            }
            let off = base + d.member_offset.unwrap_or(0);
            if off >= end {
                continue;
            }
            let name = d.name.as_deref().unwrap_or("<anon>");
            let p = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
            let Some(t) = d.ty else { continue };
            let st = ty.strip(t);
            if posix_typedef(ty, t).is_none()
                && matches!(
                    ty.dies[&st].tag,
                    gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
                )
            {
                walk(ty, st, off, &p, end, out);
            } else {
                out.push((off, p, t));
            }
        }
    }
    walk(ty, s, 0, "", end, &mut out);
    out
}

/// The DWARF of member `member` of pyenv's archive for `py`.
fn archive_types(py: &'static Py, member: &str) -> dwarf::Types {
    let archive = std::fs::read(py.archive()).unwrap();
    let m = support::objgraph::archive_member(&archive, member).unwrap();
    // Members are only 2-byte aligned inside the archive, too little for
    // the ELF reader: a fresh heap copy (malloc: 16-byte aligned).
    let owned: Vec<u8> = Vec::from(m);
    assert!(
        owned.as_ptr().align_offset(8) == 0,
        "copy not 8-byte aligned"
    );
    dwarf::Types::parse(&owned)
}

/// One object struct the writer lays out: the archive member whose DWARF
/// describes it, its C name, where the bytes the writer fills end, and the
/// table's fields in it as (offset, size, name).
type UsedStruct = (
    &'static str,
    &'static str,
    u64,
    Vec<(u64, u8, &'static str)>,
);

/// The object structs the writer lays out (from the version's layout
/// table).
fn used_structs(l: &pyfreeze_obj::layout::Layout) -> Vec<UsedStruct> {
    use pyfreeze_obj::layout::{Field, IntSize};
    let f = |x: Field, n: &'static str| (x.off as u64, x.size, n);
    let c = &l.code;
    let mut code = vec![
        f(c.consts, "co_consts"),
        f(c.names, "co_names"),
        f(c.exceptiontable, "co_exceptiontable"),
        f(c.flags, "co_flags"),
        f(c.argcount, "co_argcount"),
        f(c.posonlyargcount, "co_posonlyargcount"),
        f(c.kwonlyargcount, "co_kwonlyargcount"),
        f(c.stacksize, "co_stacksize"),
        f(c.firstlineno, "co_firstlineno"),
        f(c.nlocalsplus, "co_nlocalsplus"),
        f(c.nlocals, "co_nlocals"),
        f(c.ncellvars, "co_ncellvars"),
        f(c.nfreevars, "co_nfreevars"),
        f(c.localsplusnames, "co_localsplusnames"),
        f(c.localspluskinds, "co_localspluskinds"),
        f(c.filename, "co_filename"),
        f(c.name, "co_name"),
        f(c.qualname, "co_qualname"),
        f(c.linetable, "co_linetable"),
    ];
    for (x, n) in [
        (c.framesize, "co_framesize"),
        (c.version, "co_version"),
        (c.firsttraceable, "_co_firsttraceable"),
        (c.nplaincellvars, "co_nplaincellvars"),
    ] {
        if let Some(x) = x {
            code.push(f(x, n));
        }
    }
    for (x, _) in c.fixed {
        code.push(f(*x, "fixed"));
    }
    let head = vec![
        f(l.head.refcnt, "ob_refcnt"),
        f(l.head.type_, "ob_type"),
        f(l.head.size, "ob_size"),
    ];
    let s = &l.str_;
    let mut ascii = vec![
        f(s.length, "length"),
        f(s.hash, "hash"),
        f(s.state, "state"),
    ];
    let mut compact = vec![f(s.utf8_length, "utf8_length"), f(s.utf8, "utf8")];
    if let Some((w, wl)) = s.wstr {
        ascii.push(f(w, "wstr"));
        compact.push(f(wl, "wstr_length"));
    }
    let mut long = vec![];
    if let IntSize::LvTag(x) = l.int.size {
        long.push(f(x, "lv_tag"));
    }
    vec![
        ("codeobject.o", "PyVarObject", 24, head),
        ("codeobject.o", "PyCodeObject", c.code_adaptive as u64, code),
        ("codeobject.o", "PyASCIIObject", s.ascii_size as u64, ascii),
        (
            "codeobject.o",
            "PyCompactUnicodeObject",
            s.compact_size as u64,
            compact,
        ),
        (
            "codeobject.o",
            "PyBytesObject",
            l.bytes.sval as u64,
            vec![f(l.bytes.shash, "ob_shash")],
        ),
        ("longobject.o", "PyLongObject", l.int.digits as u64, long),
        (
            "floatobject.o",
            "PyFloatObject",
            l.float.fval as u64 + 8,
            vec![],
        ),
        (
            "complexobject.o",
            "PyComplexObject",
            l.float.cval as u64 + 16,
            vec![],
        ),
        (
            "codeobject.o",
            "PyTupleObject",
            l.tuple.items as u64,
            vec![],
        ),
    ]
}

/// Every member of every object struct the writer fills, up to the end
/// of what it fills, has the same size on LLP64 (no C `long`, no POSIX
/// type), and each 8-byte field it writes is a pointer, `Py_ssize_t`,
/// `Py_hash_t` or a fixed 64-bit integer in pyenv's DWARF.
fn object_fields_do_not_depend_on_long(py: &'static Py) {
    let (maj, min) = py.python.split_once('.').unwrap();
    let l = pyfreeze_obj::version::Version::get(maj.parse().unwrap(), min.parse().unwrap())
        .unwrap()
        .layout;
    let mut by_member: BTreeMap<&str, dwarf::Types> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (member, sname, end, fields) in used_structs(l) {
        let ty = by_member
            .entry(member)
            .or_insert_with(|| archive_types(py, member));
        let s = ty.named(sname);
        let members = members_before(ty, s, end);
        assert!(!members.is_empty(), "{sname}: no members");
        for (off, path, t) in &members {
            let mut why = Vec::new();
            platform_dependence(ty, *t, &format!("{sname}.{path}"), &mut why);
            problems.extend(why.into_iter().map(|w| format!("{w} at +{off}")));
            checked += 1;
        }
        for (off, size, name) in fields {
            if size != 8 {
                continue;
            }
            let here: Vec<&(u64, String, usize)> =
                members.iter().filter(|(o, _, _)| *o == off).collect();
            let ok = here.iter().any(|(_, _, t)| {
                let d = &ty.dies[t];
                let tn = d.name.as_deref().unwrap_or("");
                let st = ty.strip(*t);
                ty.dies[&st].tag == gimli::DW_TAG_pointer_type
                    || (d.tag == gimli::DW_TAG_typedef && STABLE_8.contains(&tn))
            });
            if !ok {
                problems.push(format!(
                    "{sname}.{name} (+{off}, 8 bytes): not a pointer, Py_ssize_t or \
                     Py_hash_t: {:?}",
                    here.iter()
                        .map(|(_, p, t)| format!("{p}: {:?}", ty.dies[t].name))
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
/// before the last object used must then have the same size on every
/// target (no C `long`, no POSIX type), or the offsets are wrong there.
fn runtime_offsets_are_platform_independent(py: &'static Py) {
    let (maj, min) = py.python.split_once('.').unwrap();
    let l = pyfreeze_obj::version::Version::get(maj.parse().unwrap(), min.parse().unwrap())
        .unwrap()
        .layout;
    let r = &l.runtime;
    let mut end = [
        r.small_ints as u64,
        r.bytes_empty as u64,
        r.tuple_empty as u64,
    ]
    .into_iter()
    .chain(r.global_strings.iter().map(|(_, o)| *o as u64))
    .max()
    .unwrap();
    for (o, stride, n) in [
        r.bytes_characters.map(|(o, s)| (o, s, 256)),
        r.ascii_chars.map(|(o, s)| (o, s, 128)),
        r.latin1_chars.map(|(o, s)| (o, s, 128)),
    ]
    .into_iter()
    .flatten()
    {
        end = end.max(o as u64 + stride as u64 * n);
    }
    let ty = archive_types(py, "pylifecycle.o");
    let s = ty.named("pyruntimestate");
    let smallest = r.small_ints.min(r.bytes_empty).min(r.tuple_empty) as u64;
    let mut problems = Vec::new();
    for (off, path, t) in members_before(&ty, s, smallest) {
        let mut why = Vec::new();
        platform_dependence(&ty, t, &format!("_PyRuntimeState.{path}"), &mut why);
        problems.extend(why.into_iter().map(|w| format!("{w} at +{off}")));
    }
    // Arrays sized by the platform's signal count precede the objects too.
    for (off, path, t) in members_before(&ty, s, smallest) {
        if path.ends_with("handlers") {
            let d = &ty.dies[&ty.strip(t)];
            let n = d
                .children
                .iter()
                .find_map(|c| ty.dies[c].count)
                .unwrap_or(0);
            problems.push(format!(
                "_PyRuntimeState.{path}[{n}] at +{off}: Py_NSIG = NSIG entries (65 with glibc, \
                 32 on macOS, 23 on Windows)"
            ));
        }
    }
    // Members before the shared objects differ in size on other platforms,
    // so their offsets are Linux's only: emitting for macOS or Windows must
    // be refused unless explicitly asked to assume Linux's layout.
    assert!(
        !problems.is_empty(),
        "no platform-dependent member precedes the shared objects any more: \
         the refusal below may be lifted"
    );
    let dir = TempDir::new("runtime-refusal");
    let input = dir.0.join("m.marshal");
    std::fs::write(&input, emitted_marshal(py)).unwrap();
    for t in [
        "x86_64-macos",
        "aarch64-macos",
        "x86_64-windows",
        "aarch64-windows",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pyfreeze-obj"))
            .args(["emit", "--python", py.python, "--target", t, "-o"])
            .arg(dir.0.join("x.o"))
            .arg(format!("{}:m", input.display()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{t}: {err}");
        assert!(err.contains("only known for Linux builds"), "{t}: {err}");
    }
    eprintln!(
        "{}: shared objects up to _PyRuntime+{end} follow platform-dependent members:\n  {}",
        py.python,
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
        let first = emitted(&PY312, group[0]);
        for t in &group[1..] {
            assert!(emitted(&PY312, t) == first, "{t} differs from {}", group[0]);
        }
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

// Properties of the code the writer generates, the same for 3.11 and 3.12:
// checked once, on 3.12.

#[test]
fn macho_x86_64_dead_strip() {
    macho_dead_strip(&PY312, "x86_64")
}
#[test]
fn macho_aarch64_dead_strip() {
    macho_dead_strip(&PY312, "aarch64")
}
#[test]
fn coff_x86_64_unwind_info() {
    coff_unwind_info(&PY312, "x86_64")
}
#[test]
fn coff_aarch64_unwind_info() {
    coff_unwind_info(&PY312, "aarch64")
}
#[test]
fn coff_x86_64_wine_unwind() {
    coff_x64_wine_unwind(&PY312)
}

macro_rules! version_tests {
    ($($module:ident: $py:ident [$($extra:ident),*];)*) => {$(
        mod $module {
            use super::*;
            #[test]
            fn macho_x86_64_symbols_and_sections() {
                macho_symbols_and_sections(&$py, "x86_64")
            }
            #[test]
            fn macho_aarch64_symbols_and_sections() {
                macho_symbols_and_sections(&$py, "aarch64")
            }
            #[test]
            fn macho_x86_64_relocations() {
                macho_relocations(&$py, "x86_64")
            }
            #[test]
            fn macho_aarch64_relocations() {
                macho_relocations(&$py, "aarch64")
            }
            #[test]
            fn macho_x86_64_disassembly() {
                macho_disassembly(&$py, "x86_64")
            }
            #[test]
            fn macho_aarch64_disassembly() {
                macho_disassembly(&$py, "aarch64")
            }
            #[test]
            fn macho_x86_64_dylib() {
                macho_dylib(&$py, "x86_64")
            }
            #[test]
            fn macho_aarch64_dylib() {
                macho_dylib(&$py, "aarch64")
            }
            #[test]
            fn coff_x86_64_symbols_and_sections() {
                coff_symbols_and_sections(&$py, "x86_64")
            }
            #[test]
            fn coff_aarch64_symbols_and_sections() {
                coff_symbols_and_sections(&$py, "aarch64")
            }
            #[test]
            fn coff_x86_64_relocations() {
                coff_relocations(&$py, "x86_64")
            }
            #[test]
            fn coff_aarch64_relocations() {
                coff_relocations(&$py, "aarch64")
            }
            #[test]
            fn coff_x86_64_wine_runtime() {
                coff_x64_wine_runtime(&$py)
            }
            #[test]
            fn coff_aarch64_dll() {
                coff_arm64_dll(&$py)
            }
            #[test]
            fn implicit_addends_and_accessors() {
                implicit_addends(&$py)
            }
            #[test]
            fn tables_list_every_code_object_and_string() {
                tables_list_every_object(&$py)
            }
            #[test]
            fn graph_aarch64_linux_equals_x86_64_elf() {
                graph_equals_reference(&$py, "aarch64-linux")
            }
            #[test]
            fn graph_x86_64_macos_equals_x86_64_elf() {
                graph_equals_reference(&$py, "x86_64-macos")
            }
            #[test]
            fn graph_aarch64_macos_equals_x86_64_elf() {
                graph_equals_reference(&$py, "aarch64-macos")
            }
            #[test]
            fn graph_x86_64_windows_equals_x86_64_elf() {
                graph_equals_reference(&$py, "x86_64-windows")
            }
            #[test]
            fn graph_aarch64_windows_equals_x86_64_elf() {
                graph_equals_reference(&$py, "aarch64-windows")
            }
            #[test]
            fn llp64_object_fields_do_not_depend_on_long() {
                object_fields_do_not_depend_on_long(&$py)
            }
            #[test]
            fn runtime_offsets_outside_linux_are_refused() {
                runtime_offsets_are_platform_independent(&$py)
            }
            $(#[test] fn $extra() { super::$extra(&$py) })*
        }
    )*};
}

version_tests! {
    py312: PY312 [];
    py311: PY311 [wstr_follows_wchar_size];
}

/// Marshal bytes of a one-line module, compiled by `py`'s interpreter.
fn emitted_marshal(py: &'static Py) -> Vec<u8> {
    let out = Command::new(support::pyenv_python(py.pyenv))
        .args(["-c", "import marshal, sys; sys.stdout.buffer.write(marshal.dumps(compile('x = 1', '<frozen m>', 'exec')))"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
