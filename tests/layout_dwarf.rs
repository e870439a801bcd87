//! The per-version layout tables (`src/layout/py3XX.rs`) against pyenv's
//! builds of CPython 3.11.7 and 3.12.1 (3.13.0's: tests/py313.rs).
//!
//! 1. Each committed table is byte for byte what `pyfreeze-obj gen-layout`
//!    writes from the build's archive, headers and interpreter, and the
//!    value it compiles to is the generator's (how each value is derived,
//!    and from which input: `src/genlayout`).
//! 2. The generator reads what it says it reads: a changed header macro or
//!    interpreter answer changes exactly the value taken from it; an
//!    archive without a member it needs or without DWARF is refused in
//!    one line with exit code 1.
//! 3. What the generator does not derive is checked against gcc's own
//!    `deepfreeze.o` in the archive, read through the table: its objects
//!    (refcounts, `state` bits, fixed and derived code fields, every set
//!    byte in a table field, object sizes, pointers into the runtime landing
//!    on shared objects the table lists), its functions (accessors; Init
//!    and Fini calling the version contract's hooks), the symbols it
//!    references and defines; the runtime's small ints through the table's
//!    int encoding and its latin1 strings against the contract's UTF-8
//!    form; the code fini's machine code against `runtime_state`; the
//!    global string lookup against what gcc shares. Meta-tests corrupt a
//!    table and see each check fail.
//!
//! A missing reference build or tool fails the tests with what to install;
//! nothing is skipped.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use pyfreeze_obj::dwarf::{Archive, ObjectData, Sym, Variable};
use pyfreeze_obj::layout::{Field, IntSize, Layout, StrLayout};
use pyfreeze_obj::version::{Contract, Version};
use support::TempDir;

// ---------------------------------------------------------------------------
// The reference builds

/// A version the tool knows and the pyenv build its table comes from.
struct Ref {
    pyenv: &'static str,
    /// The committed table, relative to the crate.
    table: &'static str,
    version: &'static Version,
    oracle: OnceLock<Oracle>,
}

static PY312: Ref = Ref {
    pyenv: "3.12.1",
    table: "src/layout/py312.rs",
    version: &pyfreeze_obj::version::PY312,
    oracle: OnceLock::new(),
};

static PY311: Ref = Ref {
    pyenv: "3.11.7",
    table: "src/layout/py311.rs",
    version: &pyfreeze_obj::version::PY311,
    oracle: OnceLock::new(),
};

impl Ref {
    fn layout(&self) -> &'static Layout {
        self.version.layout
    }

    fn contract(&self) -> &'static Contract {
        self.version.contract
    }

    fn python(&self) -> PathBuf {
        support::pyenv_python(self.pyenv)
    }

    fn archive(&self) -> PathBuf {
        support::pyenv_archive(self.pyenv)
    }

    fn oracle(&'static self) -> &'static Oracle {
        self.oracle.get_or_init(|| load_oracle(self))
    }
}

/// What the checks read from one build, once.
struct Oracle {
    /// The interpreter's `INCLUDEPY`.
    include: PathBuf,
    /// Defined global symbol -> archive member (the archive index).
    index: HashMap<String, String>,
    /// gcc's deepfreeze.o.
    gcc: ObjectData,
    /// codeobject.o: the code hooks, the per-code fini's machine code.
    code: ObjectData,
    /// pylifecycle.o: calls Init and Fini, defines the runtime.
    life: ObjectData,
    /// The runtime variable's initializer and relocations.
    runtime: Variable,
}

fn load_oracle(r: &Ref) -> Oracle {
    let archive = r.archive();
    let ar = Archive::open(&archive).unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
    let obj = |n: &str| {
        let b = ar
            .member(n)
            .unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
        ObjectData::parse(n, b.bytes()).unwrap_or_else(|e| panic!("{e}"))
    };
    let life = obj("pylifecycle.o");
    let runtime = life
        .variable(r.layout().runtime.symbol)
        .unwrap_or_else(|e| panic!("{e}"));
    let include = support::stdout_of(Command::new(r.python()).args([
        "-c",
        "import sysconfig; print(sysconfig.get_config_var('INCLUDEPY'))",
    ]));
    Oracle {
        include: PathBuf::from(String::from_utf8_lossy(&include).trim()),
        index: ar.symbol_index().unwrap_or_else(|e| panic!("{e}")),
        gcc: obj("deepfreeze.o"),
        code: obj("codeobject.o"),
        life,
        runtime,
    }
}

// ---------------------------------------------------------------------------
// 1. The committed tables are the generator's output

/// `pyfreeze-obj gen-layout --archive A [--python P] [--include I]`:
/// (exit code, stdout, stderr).
fn gen(archive: &Path, python: Option<&Path>, include: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pyfreeze-obj"));
    cmd.arg("gen-layout").arg("--archive").arg(archive);
    python.map(|p| cmd.arg("--python").arg(p));
    include.map(|p| cmd.arg("--include").arg(p));
    let out = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// `gen-layout`'s output, or a panic with its error.
fn gen_ok(archive: &Path, python: Option<&Path>, include: Option<&Path>) -> String {
    let (code, out, err) = gen(archive, python, include);
    assert_eq!(code, 0, "gen-layout on {} failed: {err}", archive.display());
    out
}

/// `gen-layout` refuses: exit code 1, no output, one error line with
/// `expect` (and no panic).
fn refuses(archive: &Path, python: Option<&Path>, include: Option<&Path>, expect: &str) {
    let (code, out, err) = gen(archive, python, include);
    assert!(
        code == 1 && out.is_empty() && err.lines().count() == 1 && err.contains(expect),
        "gen-layout on {}: exit {code}, expected one line with {expect:?}, got: {err}",
        archive.display()
    );
    assert!(err.starts_with("pyfreeze-obj: error: ") && !err.contains("panicked"));
}

/// The lines where `got` and `want` differ, with three lines of context.
fn diff(want: &str, got: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let from = head.saturating_sub(3);
    let mut out = format!("@@ line {} @@\n", from + 1);
    for l in &a[from..head] {
        out += &format!("  {l}\n");
    }
    for l in a[head..a.len() - tail].iter().take(40) {
        out += &format!("- {l}\n");
    }
    for l in b[head..b.len() - tail].iter().take(40) {
        out += &format!("+ {l}\n");
    }
    for l in b[b.len() - tail..].iter().take(3) {
        out += &format!("  {l}\n");
    }
    out
}

/// The differing lines of two texts of the same length in lines.
fn changed_lines<'a>(a: &'a str, b: &'a str) -> Vec<(&'a str, &'a str)> {
    assert_eq!(a.lines().count(), b.lines().count(), "{}", diff(a, b));
    a.lines().zip(b.lines()).filter(|(x, y)| x != y).collect()
}

fn table_is_generated(r: &'static Ref) {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join(r.table);
    let want = std::fs::read_to_string(&committed).unwrap();
    let python = r.python();
    let got = gen_ok(&r.archive(), Some(&python), None);
    assert!(
        got == want,
        "{} is not what gen-layout writes for pyenv {} (regenerate it with `pyfreeze-obj \
         gen-layout --archive {} -o {}`):\n{}",
        r.table,
        r.pyenv,
        r.archive().display(),
        r.table,
        diff(&want, &got)
    );
    // And the value it spells is the generator's (the writer writes what
    // it derived).
    let g = pyfreeze_obj::genlayout::generate(&pyfreeze_obj::genlayout::Options {
        archive: r.archive(),
        python: Some(python),
        include: None,
        types: None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(format!("{:#?}", g.layout), format!("{:#?}", r.layout()));
    assert_eq!(g.text, want);
    let first = want.lines().next().unwrap_or("");
    assert_eq!(
        first,
        format!(
            "// Generated by pyfreeze-obj gen-layout from {} (CPython {}); do not edit.",
            r.archive().file_name().unwrap().to_string_lossy(),
            r.pyenv
        )
    );
}

// ---------------------------------------------------------------------------
// 2. The generator follows its inputs and refuses broken ones

/// Replace the line of `file` that starts with `prefix` by `line`.
fn edit_line(file: &Path, prefix: &str, line: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.lines().any(|l| l.starts_with(prefix)), "{prefix}");
    let new: Vec<&str> = text
        .lines()
        .map(|l| if l.starts_with(prefix) { line } else { l })
        .collect();
    std::fs::write(file, new.join("\n") + "\n").unwrap();
}

fn tool(name: &str) -> &str {
    let ok = Command::new(name).arg("--version").output().is_ok();
    assert!(
        ok,
        "{name} is missing: install binutils (`apt-get install binutils`)"
    );
    name
}

#[test]
fn generator_follows_headers_and_interpreter() {
    let r = &PY312;
    let (archive, python) = (r.archive(), r.python());
    let base = gen_ok(&archive, Some(&python), None);
    let dir = TempDir::new("gen-layout");

    // A header macro: exactly the value taken from it changes.
    let include = dir.path().join("include");
    support::copy_tree(&r.oracle().include, &include);
    let code_h = include.join("internal/pycore_code.h");
    edit_line(&code_h, "#define CO_FAST_CELL", "#define CO_FAST_CELL 0x10");
    let inc = Some(include.as_path());
    let out = gen_ok(&archive, Some(&python), inc);
    let changed = changed_lines(&base, &out);
    assert_eq!(
        changed,
        [("        co_fast_cell: 0x40,", "        co_fast_cell: 0x10,")]
    );
    // A macro that disagrees with DWARF; a header missing.
    let glob_h = include.join("internal/pycore_global_objects.h");
    edit_line(
        &glob_h,
        "#define _PY_NSMALLNEGINTS",
        "#define _PY_NSMALLNEGINTS 6",
    );
    let msg = "small_ints has Some(262) elements, the headers say 263";
    refuses(&archive, Some(&python), inc, msg);
    std::fs::remove_file(&code_h).unwrap();
    refuses(
        &archive,
        Some(&python),
        inc,
        "pycore_code.h: cannot read header",
    );

    // The interpreter's answers: a stand-in with another magic (other
    // scripts go to the real interpreter).
    let fake = dir.path().join("python3.12");
    let names = "code bytes str tuple int float complex NoneType bool ellipsis slice";
    let write_fake = |resume: u8| {
        let script = format!(
            "#!/bin/sh\ncase \"$3\" in *MAGIC_NUMBER*) printf '%s\\n' '{0} {0}' '{1}' {resume} \
             d20d0d0a '{names}' 4;; *) exec '{2}' \"$@\";; esac\n",
            r.pyenv,
            r.oracle().include.display(),
            python.display()
        );
        std::fs::write(&fake, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_fake(151);
    let out = gen_ok(&archive, Some(&fake), None);
    let changed = changed_lines(&base, &out);
    assert_eq!(changed, [("    pyc_magic: 3531,", "    pyc_magic: 3538,")]);
    // Another RESUME opcode: the interpreter's code objects say otherwise
    // (their _co_firsttraceable).
    write_fake(150);
    let msg = "_co_firsttraceable differs from the interpreter's";
    refuses(&archive, Some(&fake), None, msg);
    // An interpreter of another version.
    let msg = "is CPython 3.12.1 (getversion.o), but the interpreter is 3.11.7";
    refuses(&archive, Some(&PY311.python()), None, msg);
}

#[test]
fn generator_refuses_archives_lacking_what_it_needs() {
    let r = &PY312;
    let python = r.python();
    let py = Some(python.as_path());
    let dir = TempDir::new("gen-layout-ar");
    let (ar, objcopy) = (tool("ar"), tool("objcopy"));
    let copy = dir.path().join("libpython3.12.a");
    std::fs::copy(r.archive(), &copy).unwrap();
    let run = |tool: &str, args: &[&str]| {
        support::stdout_of(Command::new(tool).args(args).current_dir(dir.path()));
    };
    let a = copy.to_str().unwrap();

    // A member without DWARF.
    run(ar, &["x", a, "complexobject.o"]);
    run(objcopy, &["--strip-debug", "complexobject.o"]);
    run(ar, &["r", a, "complexobject.o"]);
    let msg = format!("{a}: complexobject.o: no .debug_info (built without -g?)");
    refuses(&copy, py, None, &msg);
    // No deepfreeze.o (one replaced by ours would not say what CPython's
    // generator shares), no frozen.o.
    std::fs::copy(r.archive(), &copy).unwrap();
    run(ar, &["d", a, "deepfreeze.o"]);
    refuses(&copy, py, None, "no deepfreeze.o: which shared objects");
    run(ar, &["d", a, "frozen.o"]);
    refuses(&copy, py, None, "no member frozen.o");
    // No interpreter where the installation would keep it; not an archive.
    refuses(&copy, None, None, "pass --python");
    std::fs::write(&copy, b"junk").unwrap();
    refuses(&copy, py, None, a);
}

#[test]
fn gen_layout_help_teaches() {
    let bin = env!("CARGO_BIN_EXE_pyfreeze-obj");
    let out = support::stdout_of(Command::new(bin).args(["gen-layout", "--help"]));
    let out = String::from_utf8(out).unwrap();
    for want in [
        "DWARF",
        "--archive",
        "--python",
        "--include",
        "libpython3.12.a",
        "py312.rs",
    ] {
        assert!(
            out.contains(want),
            "gen-layout --help lacks {want:?}:\n{out}"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. gcc's deepfreeze.o and the runtime's data, read through the table

/// Collects every mismatch, so one run reports them all.
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
    format!(
        "{} ({} in all)",
        bad[..bad.len().min(5)].join("; "),
        bad.len()
    )
}

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

/// `state` word of a static string of `kind` per the table.
fn str_state(s: &StrLayout, kind: u64, ascii: bool) -> u64 {
    (kind << s.kind_shift)
        | (1 << s.compact_bit)
        | (u64::from(ascii) << s.ascii_bit)
        | u64::from(s.static_bits)
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

/// Displacements of the 64-bit zero stores to memory (`movq $0,
/// disp32(%reg)`: REX.W [+B], C7, ModRM mod=10 reg=0 without SIB, disp32,
/// imm32 0) in function `func` of `obj`, sorted and deduplicated.
fn null_stores(obj: &ObjectData, func: &str) -> Result<Vec<u64>, String> {
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

/// An accessor's name: `_Py_get_<module>_toplevel`.
fn is_accessor(name: &str) -> bool {
    name.starts_with("_Py_get_") && name.ends_with("_toplevel")
}

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
    /// Offset in `_PyRuntime` -> kind, for every shared object the table
    /// lists.
    runtime: BTreeMap<u64, Kind>,
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
        let small = (rt.small_ints, rt.small_int_stride);
        for (arr, n, kind) in [
            (
                Some(small),
                (rt.small_int_neg + rt.small_int_pos + 1) as u64,
                Kind::Int,
            ),
            (Some((rt.bytes_empty, 0)), 1, Kind::Bytes),
            (Some((rt.tuple_empty, 0)), 1, Kind::Tuple),
            (rt.bytes_characters, 256, Kind::Bytes),
            (rt.ascii_chars, 128, Kind::Str),
            (rt.latin1_chars, 128, Kind::Str),
        ] {
            if let Some((off, stride)) = arr {
                for i in 0..n {
                    runtime.insert(u64::from(off) + i * u64::from(stride), kind);
                }
            }
        }
        for (_, off) in rt.global_strings {
            runtime.insert(u64::from(*off), Kind::Str);
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
        let g: &'a ObjectData = &self.o.gcc;
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
            Ptr::Runtime(o) => self.runtime.get(o).copied(),
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
            Ptr::Runtime(o) => Some((&self.o.runtime.bytes, *o)),
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
                f.push(match l.int.size {
                    IntSize::LvTag(f) => f,
                    IntSize::SignedObSize => h.size,
                });
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

const REFCNT: &str = "head.static_refcnt (ob_refcnt of every object in gcc's deepfreeze.o)";
const FRAME: &str = "object sizes and starts match gcc's symbols";
const FIXED: &str = "code.fixed values in gcc's code objects";
const CODE: &str = "code fields: firsttraceable, framesize, pointer kinds, runtime_state NULL";
const KINDS: &str = "code counts vs CO_FAST_* kinds (co_fast_local/cell/free, nplaincellvars)";
const STR: &str = "str: state bits (kind_shift, compact_bit, ascii_bit, static_bits), hash -1, NUL";
const UTF8: &str = "contract utf8 (gcc's non-ASCII strings carry their UTF-8 form or not)";
const OTHER: &str = "bytes / int / tuple data";
const SHARED: &str = "gcc emits no object the table says is shared";

/// gcc's objects, read with the table: every object has the static
/// refcount; every byte gcc sets in an object's fixed part lies in a field
/// the table has; sizes, `state` bits, fixed and derived code fields agree
/// with the table; every pointer into `_PyRuntime` lands on a shared object
/// the table lists.
fn check_gcc_objects(o: &Oracle, l: &Layout, ct: &Contract, k: &mut Checker) {
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
    let mut bad: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    macro_rules! bad {
        ($key:expr, $($f:tt)*) => {
            bad.entry($key).or_default().push(format!($($f)*))
        };
    }
    let mut uncovered: BTreeMap<(Kind, u64), usize> = BTreeMap::new();
    let mut versions = Vec::new();
    let mut non_ascii = 0;
    let mut covered_bytes: HashMap<(Kind, bool), Vec<bool>> = HashMap::new();

    for (&(sec, obj), &kind) in &view.objects {
        *count.entry(kind).or_default() += 1;
        let data = view.data(sec);
        let at = || format!("{sec}+{obj:#x} ({kind:?})");
        if rd_field(data, obj, h.refcnt) != h.static_refcnt {
            bad!(
                REFCNT,
                "{}: ob_refcnt {:#x}",
                at(),
                rd_field(data, obj, h.refcnt)
            );
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
        let mut frame: Option<(u64, u64)> = None;
        match kind {
            Kind::Code => {
                let units = rd_field(data, obj, h.size);
                let adaptive = obj + u64::from(c.code_adaptive);
                frame = Some((obj, round8(u64::from(c.code_adaptive) + 2 * units)));
                let bc = data
                    .get(adaptive as usize..(adaptive + 2 * units) as usize)
                    .unwrap_or(&[]);
                let int = |f: Field| rd_signed(data, obj, f);
                for (f, value) in c.fixed {
                    if rd_field(data, obj, *f) != *value {
                        bad!(
                            FIXED,
                            "{}: {f:?} holds {:#x}, table says {value:#x}",
                            at(),
                            rd_field(data, obj, *f)
                        );
                    }
                }
                if let Some(f) = c.firsttraceable {
                    let first = bc
                        .chunks(2)
                        .position(|u| u[0] == c.opcode_resume)
                        .unwrap_or(0) as i64;
                    if int(f) != first {
                        bad!(
                            CODE,
                            "{}: _co_firsttraceable {} but first RESUME at {first}",
                            at(),
                            int(f)
                        );
                    }
                }
                if let Some(f) = c.framesize {
                    let want =
                        int(c.stacksize) + int(c.nlocalsplus) + i64::from(c.frame_specials_size);
                    if int(f) != want {
                        bad!(CODE, "{}: co_framesize {} != {want}", at(), int(f));
                    }
                }
                if let Some(f) = c.version {
                    versions.push(int(f));
                }
                // Runtime state starts out NULL.
                for f in c.runtime_state {
                    let at_ = obj + u64::from(f.off);
                    if rd_field(data, obj, *f) != 0 || view.ptr(sec, at_).is_some() {
                        bad!(CODE, "{}: runtime_state {f:?} is not NULL", at());
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
                        bad!(CODE, "{}: co_{name} -> {p:?} ({got:?})", at());
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
                        bad!(
                            KINDS,
                            "{}: nlocalsplus, nlocals, ncellvars, nfreevars[, nplaincellvars] \
                             {got:?}, from the kinds {want:?}; {names} names",
                            at()
                        );
                    }
                } else {
                    bad!(KINDS, "{}: localspluskinds/names unreadable", at());
                }
            }
            Kind::Str => {
                let len = rd_field(data, obj, s.length);
                let kind_ = (state >> s.kind_shift) & 7;
                let start = obj + u64::from(if ascii { s.ascii_size } else { s.compact_size });
                if ![1, 2, 4].contains(&kind_) || start + (len + 1) * kind_ > data.len() as u64 {
                    bad!(STR, "{}: kind {kind_}, length {len}", at());
                    continue;
                }
                frame = Some((obj, round8(start - obj + (len + 1) * kind_)));
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
                    bad!(
                        STR,
                        "{}: state {state:#x} (want {:#x}), length {len}, hash {:#x}",
                        at(),
                        str_state(s, want_kind, max < 128),
                        rd_field(data, obj, s.hash)
                    );
                }
                if len == 1 && max < 256 {
                    let shared = if max < 128 {
                        l.runtime.ascii_chars
                    } else {
                        l.runtime.latin1_chars
                    };
                    if shared.is_some() {
                        bad!(SHARED, "{}: a one-character string U+{max:04X}", at());
                    }
                }
                if !ascii {
                    non_ascii += 1;
                    // The UTF-8 form: filled (and pointing to it) exactly
                    // when the contract says so.
                    let ulen = rd_field(data, obj, s.utf8_length);
                    let uptr = view.ptr(sec, obj + u64::from(s.utf8.off));
                    let ok = if ct.precompute.utf8 {
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
                        bad!(
                            UTF8,
                            "{}: utf8_length {ulen}, utf8 -> {uptr:?} (contract: utf8 {})",
                            at(),
                            ct.precompute.utf8
                        );
                    }
                }
            }
            Kind::Bytes => {
                let n = rd_field(data, obj, h.size);
                frame = Some((obj, round8(u64::from(l.bytes.sval) + n + 1)));
                let nul = data
                    .get((obj + u64::from(l.bytes.sval) + n) as usize)
                    .copied();
                if rd_field(data, obj, l.bytes.shash) as i64 != -1 || nul != Some(0) {
                    bad!(OTHER, "{}: ob_shash or NUL", at());
                }
                if n == 0 || (n == 1 && l.runtime.bytes_characters.is_some()) {
                    bad!(SHARED, "{}: bytes of length {n}", at());
                }
            }
            Kind::Int => match int_decode(l, data, obj) {
                Some((sign, n)) => {
                    let ds = u64::from(l.int.digit_size);
                    if obj + u64::from(l.int.digits) + ds * n > data.len() as u64 {
                        bad!(OTHER, "{}: {n} digits", at());
                        continue;
                    }
                    frame = Some((
                        obj,
                        u64::from(l.int.min_size).max(round8(u64::from(l.int.digits) + ds * n)),
                    ));
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
                        bad!(OTHER, "{}: sign {sign}, digits {digits:?}", at());
                    }
                    if small {
                        bad!(SHARED, "{}: a small int", at());
                    }
                }
                None => bad!(OTHER, "{}: undecodable int size word", at()),
            },
            Kind::Tuple => {
                let n = rd_field(data, obj, h.size);
                let gc = u64::from(l.tuple.gc_head_size);
                if obj < gc || obj + u64::from(l.tuple.items) + 8 * n > data.len() as u64 {
                    bad!(OTHER, "{}: {n} items", at());
                    continue;
                }
                frame = Some((obj - gc, gc + u64::from(l.tuple.items) + 8 * n));
                // The GC header: zero, no pointers.
                let gc_set = (obj - gc..obj)
                    .any(|i| data[i as usize] != 0 || o.gcc.relocs[sec].contains_key(&i));
                let items_ok = (0..n).all(|i| {
                    view.ptr(sec, obj + u64::from(l.tuple.items) + 8 * i)
                        .is_some_and(|p| view.kind_of(&p).is_some() || view.is_constant(&p))
                });
                if gc_set || !items_ok {
                    bad!(
                        OTHER,
                        "{}: GC header set {gc_set}, items all objects {items_ok}",
                        at()
                    );
                }
                if n == 0 {
                    bad!(SHARED, "{}: an empty tuple", at());
                }
            }
            Kind::Float => frame = Some((obj, u64::from(l.float.float_size))),
            Kind::Complex => frame = Some((obj, u64::from(l.float.complex_size))),
        }
        if let Some((start, size)) = frame {
            if sym.map(|(a, sz, _)| (a, sz)) != Some((start, size)) {
                bad!(
                    FRAME,
                    "{}: symbol {sym:?}, expected start {start:#x} size {size}",
                    at()
                );
            }
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
    let unc: Vec<String> = uncovered
        .iter()
        .map(|((kind, off), n)| format!("{kind:?} byte {off} set in {n} objects"))
        .collect();
    k.none_bad(
        "gcc sets only bytes that are in table fields (fixed part of each object)",
        &unc,
    );
    for key in [REFCNT, FRAME, FIXED, CODE, KINDS, STR, UTF8, OTHER, SHARED] {
        k.none_bad(key, bad.get(key).map_or(&[], Vec::as_slice));
    }

    // co_version: 1, 2, ... N in some order; the counter is N + 1.
    if c.version.is_some() {
        let n = versions.len() as i64;
        versions.sort();
        k.eq(
            "code.version: gcc numbers its code objects 1..=N",
            versions.clone(),
            (1..=n).collect::<Vec<_>>(),
        );
        if let Some(s) = ct.precompute.version_counter {
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
/// exactly the contract's hooks, each once with every object it is for.
fn check_gcc_code(o: &Oracle, l: &Layout, ct: &Contract, k: &mut Checker) {
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
    for (fname, callees) in [
        (
            ct.entry.init().unwrap(),
            vec![(ct.code_init_hook().unwrap(), &all_code)],
        ),
        (
            ct.entry.fini().unwrap(),
            std::iter::once((ct.code_fini_hook().unwrap(), &all_code))
                .chain(ct.str_fini_hook().map(|f| (f, &all_str)))
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
            if fname == ct.entry.init().unwrap() {
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
// Symbols, the runtime's data, the code fini: what the table and the
// version contract assume of the archive

/// The version contract's names against the archive: gcc's deepfreeze.o
/// references the table's types and singletons and the contract's hooks
/// and nothing else, defines the contract's entry points (which
/// pylifecycle.o calls) and nothing else but accessors; the public API
/// the lazy scheme calls is declared in the headers and defined where it
/// belongs.
fn check_symbols(o: &Oracle, l: &Layout, ct: &Contract, k: &mut Checker) {
    let df = &o.gcc.syms;
    let s = &l.sym;
    let h = &ct.hooks;
    let mut always: Vec<&str> = vec![
        s.code_type,
        s.bytes_type,
        s.str_type,
        s.tuple_type,
        s.int_type,
        s.none,
        s.true_,
        s.false_,
        s.ellipsis,
        l.runtime.symbol,
    ];
    let (code_init, code_fini) = (ct.code_init_hook(), ct.code_fini_hook());
    always.extend(
        code_init
            .iter()
            .chain(&code_fini)
            .chain(&ct.str_fini_hook()),
    );
    for name in &always {
        k.is(
            &format!("{name}: referenced by deepfreeze.o"),
            o.gcc.references(name),
            || "gcc's deepfreeze.o does not reference it".into(),
        );
        let owner = o.index.get(*name);
        k.is(
            &format!("{name}: defined in libpython"),
            owner.is_some_and(|m| m != "deepfreeze.o"),
            || format!("archive index says {owner:?}"),
        );
    }
    for (name, member) in [
        (s.float_type, "floatobject.o"),
        (s.complex_type, "complexobject.o"),
        (h.frozenset_new, "setobject.o"),
        (h.decref, "object.o"),
    ] {
        k.eq(
            &format!("{name}: defining member"),
            o.index.get(name).map(String::as_str),
            Some(member),
        );
    }
    for (name, header) in [(h.frozenset_new, "setobject.h"), (h.decref, "object.h")] {
        let text = std::fs::read_to_string(o.include.join(header)).unwrap();
        k.is(
            &format!("contract: {name} is PyAPI_FUNC in {header}"),
            text.lines().any(|l| {
                l.trim_start().starts_with("PyAPI_FUNC(") && l.contains(&format!(" {name}("))
            }),
            || "not declared".into(),
        );
    }
    let undefined: BTreeSet<&str> = df
        .iter()
        .filter(|s| s.undefined)
        .map(|s| s.name.as_str())
        .collect();
    let mut allowed: BTreeSet<&str> = always.iter().copied().collect();
    allowed.extend([s.float_type, s.complex_type]);
    k.eq(
        "symbols deepfreeze.o references beyond the table's and the contract's",
        undefined.difference(&allowed).copied().collect::<Vec<_>>(),
        vec![],
    );
    for hook in code_init.iter().chain(&code_fini) {
        k.is(
            &format!("contract: {hook} defined by codeobject.o"),
            o.code.defines(hook),
            || "not defined".into(),
        );
    }
    for f in [ct.entry.init().unwrap(), ct.entry.fini().unwrap()] {
        k.is(
            &format!("contract: {f} defined by deepfreeze.o"),
            o.gcc.defines(f),
            || "no".into(),
        );
        k.is(
            &format!("contract: {f} called by pylifecycle.o"),
            o.life.references(f),
            || "no".into(),
        );
    }
    let defined: BTreeSet<&str> = df
        .iter()
        .filter(|s| !s.undefined && s.global && !is_accessor(&s.name))
        .map(|s| s.name.as_str())
        .collect();
    let mut want: BTreeSet<&str> = [ct.entry.init().unwrap(), ct.entry.fini().unwrap()].into();
    want.extend(ct.precompute.version_counter);
    k.eq(
        "global symbols deepfreeze.o defines besides the accessors",
        want,
        defined,
    );
    if let Some(v) = ct.precompute.version_counter {
        let d = df.iter().find(|x| x.name == v && !x.undefined);
        k.eq(
            &format!("contract: {v} is 4 bytes"),
            d.map(|d| d.size),
            Some(4),
        );
        k.is(
            &format!("contract: {v} used by codeobject.o"),
            o.code.references(v),
            || "no".into(),
        );
    }
    // The per-code fini (machine code in codeobject.o) stores a 64-bit
    // NULL (`movq $0, disp32(%reg)`) at exactly the table's runtime_state.
    if let Some(fini) = code_fini {
        let mut want: Vec<u64> = l
            .code
            .runtime_state
            .iter()
            .map(|f| u64::from(f.off))
            .collect();
        want.sort_unstable();
        if let Some(stores) = k.get(
            "code.runtime_state: code fini's NULL stores",
            null_stores(&o.code, fini),
        ) {
            k.eq(
                &format!("code.runtime_state: offsets {fini} stores NULL at"),
                want,
                stores,
            );
        }
    }
}

/// The runtime's shared objects through what the emitter assumes beyond
/// the table (the generator checks the rest as it reads them): the int
/// size encoding reads back every small int, and the non-ASCII shared
/// strings carry their UTF-8 form exactly when the contract says so.
fn check_runtime_data(o: &Oracle, l: &Layout, ct: &Contract, k: &mut Checker) {
    let (rt, s, buf) = (&l.runtime, &l.str_, &o.runtime.bytes);
    let mut bad = Vec::new();
    for i in 0..=(rt.small_int_neg + rt.small_int_pos) {
        let val = i - rt.small_int_neg;
        let base = u64::from(rt.small_ints) + i as u64 * u64::from(rt.small_int_stride);
        if int_decode(l, buf, base) != Some((val.signum(), u64::from(val != 0))) {
            bad.push(format!("small_ints[{i}] does not decode as {val}"));
        }
    }
    k.none_bad("runtime.small_ints data (int size encoding)", &bad);
    let mut bad = Vec::new();
    if let Some((off, stride)) = rt.latin1_chars {
        for i in 0..128u64 {
            let base = u64::from(off) + i * u64::from(stride);
            let n = rd_field(buf, base, s.utf8_length);
            let p = o.runtime.reloc_at(base + u64::from(s.utf8.off));
            if (n == 2 && p.is_some()) != ct.precompute.utf8 || (n == 0) == ct.precompute.utf8 {
                bad.push(format!("U+{:04X}: utf8_length {n}, utf8 -> {p:?}", 128 + i));
            }
        }
    }
    k.none_bad("contract utf8 (the runtime's latin1 strings)", &bad);
}

/// The lookup the writer uses shares what gcc's object shares: it finds
/// every entry but those CPython's generator cannot match (spelled with an
/// escape in the C source), which gcc's object copies.
fn global_string_lookup_shares_what_gcc_shares(r: &'static Ref) {
    let (o, l) = (r.oracle(), r.layout());
    let table = l.runtime.global_strings;
    let view = GccView::new(o, l);
    let refs = gcc_runtime_refs(o, l);
    let copied: BTreeSet<Vec<u32>> = view
        .objects
        .iter()
        .filter(|(_, k)| **k == Kind::Str)
        .filter_map(|(&(sec, off), _)| view.str_value(&Ptr::Local(sec, off)))
        .collect();
    let to_str = |s: &str| pyfreeze_obj::graph::Str(s.chars().map(u32::from).collect());
    let mut shared = 0;
    for &(s, off) in table {
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
            None => assert!(
                !in_gcc.0 && s.contains(|c: char| c < ' ' || c == '"' || c == '\\'),
                "the lookup does not find {s:?} (gcc's object shares it: {})",
                in_gcc.0
            ),
        }
    }
    assert!(
        shared > 100,
        "gcc's object shares only {shared} global strings"
    );
}

// ---------------------------------------------------------------------------
// Meta-tests: the checks above fail on a corrupted table

type Check = fn(&Oracle, &Layout, &Contract, &mut Checker);

fn wrong_values_are_detected(r: &'static Ref) {
    let (o, l, ct) = (r.oracle(), r.layout(), r.contract());
    assert_eq!(format!("{:?}", l.clone()), format!("{l:?}"));
    let objects: Check = check_gcc_objects;
    let code: Check = check_gcc_code;
    let runtime: Check = check_runtime_data;
    let symbols: Check = check_symbols;
    // CHECK "a failure it reports mentions this": |b| a corruption of table b;
    macro_rules! cases {
        ($($check:ident $expect:literal: |$b:ident| $e:expr;)*) => {
            [$((stringify!($e), $check, $expect, (|$b: &mut Layout| { $e; }) as fn(&mut Layout))),*]
        };
    }
    let cases = cases! {
        objects "ob_refcnt of every object": |b| b.head.static_refcnt += 1;
        code "head.immortal": |b| b.head.immortal ^= true;
        objects "str: state bits": |b| b.str_.static_bits = 0;
        objects "fixed part of each object":
            |b| b.code.firsttraceable = b.code.firsttraceable.map(
                |f| Field { off: f.off + 4, ..f });
        objects "code.fixed": |b| b.code.fixed = &[(Field { off: 48, size: 4 }, 0x7777)];
        objects "code counts vs CO_FAST_* kinds":
            |b| std::mem::swap(&mut b.code.nlocals, &mut b.code.ncellvars);
        objects "code counts vs CO_FAST_* kinds": |b| b.code.co_fast_cell = 0x10;
        objects "object sizes and starts": |b| b.str_.compact_size += 8;
        objects "object sizes and starts": |b| b.str_.ascii_size += 8;
        objects "object sizes and starts": |b| b.tuple.gc_head_size = 24;
        runtime "small_ints data (int size encoding)": |b| b.int.size = match b.int.size {
            IntSize::LvTag(_) => IntSize::SignedObSize,
            IntSize::SignedObSize => IntSize::LvTag(b.head.size),
        };
        objects "land on objects the table lists":
            |b| b.runtime.global_strings = &b.runtime.global_strings[1..];
        objects "land on objects the table lists": |b| b.runtime.bytes_characters = None;
        symbols "stores NULL at": |b| b.code.runtime_state = &b.code.runtime_state[1..];
        objects "runtime_state NULL": |b| b.code.runtime_state = &[Field { off: 24, size: 8 }];
        symbols "references beyond": |b| b.sym.tuple_type = "PyList_Type";
    };
    for (what, check, expect, corrupt) in cases {
        let mut bad = l.clone();
        corrupt(&mut bad);
        let mut k = Checker::default();
        check(o, &bad, ct, &mut k);
        assert!(
            k.errors.iter().any(|e| e.contains(expect)),
            "{} table with `{what}`: no failure mentioning {expect:?}; got {:#?}",
            r.pyenv,
            k.errors
        );
    }
}

// ---------------------------------------------------------------------------
// The tests, once per version

fn run(r: &'static Ref, min_checks: usize, check: Check) {
    let mut k = Checker::default();
    check(r.oracle(), r.layout(), r.contract(), &mut k);
    k.finish(min_checks);
}

macro_rules! per_version {
    ($($m:ident: $r:ident;)*) => {$(
        mod $m {
            use super::*;

            #[test]
            fn table_is_what_gen_layout_writes() {
                super::table_is_generated(&$r);
            }

            #[test]
            fn gcc_objects_match_table() {
                run(&$r, 18, check_gcc_objects);
            }

            #[test]
            fn gcc_functions_match_table_and_contract() {
                run(&$r, 11, check_gcc_code);
            }

            #[test]
            fn symbols_match_archive_and_contract() {
                run(&$r, 30, check_symbols);
            }

            #[test]
            fn runtime_objects_read_back() {
                run(&$r, 2, check_runtime_data);
            }

            #[test]
            fn global_string_lookup_shares_what_gcc_shares() {
                super::global_string_lookup_shares_what_gcc_shares(&$r);
            }

            #[test]
            fn wrong_values_are_detected() {
                super::wrong_values_are_detected(&$r);
            }
        }
    )*};
}

per_version! {
    py312: PY312;
    py311: PY311;
}
