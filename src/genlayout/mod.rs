//! `pyfreeze-obj gen-layout`: a version's layout table (`src/layout/py3XX.rs`)
//! written from a libpython archive built with debug info, the headers
//! installed with it and its interpreter.
//!
//! Every value of the table comes from one of these inputs:
//! - struct offsets, sizes, bit fields and which members exist: the DWARF of
//!   `codeobject.o` (object types), `complexobject.o`, `frozen.o` and
//!   `pylifecycle.o` (`_PyRuntimeState`);
//! - the runtime's shared objects and the global string table: `_PyRuntime`'s
//!   static initializer in `pylifecycle.o` (bytes and relocations) located
//!   by DWARF; the `state` bits static strings carry: the same initializer;
//! - which shared objects CPython's generator points at (one-byte bytes,
//!   one-character strings): the relocations of gcc's `deepfreeze.o`;
//! - type and singleton symbols: the archive's type objects, found by the
//!   `tp_name` of their static initializers (the Python names of the types
//!   come from the interpreter), and the objects whose `ob_type` points at
//!   them;
//! - the module tables: `frozen.o`'s DWARF variables, data and relocations;
//! - where the hooks find the main interpreter, its function version
//!   counter and configuration: the DWARF of `pylifecycle.o`
//!   (`_PyRuntimeState`, `PyInterpreterState`, `PyThreadState`);
//! - how the runtime releases what it hangs on a code object: the DWARF of
//!   the blocks it points to, `PyCode_Type`'s `tp_weaklistoffset`
//!   (codeobject.o's data) and the archive's symbols (tier 2);
//! - 3.13+ quickening: `_PyOpcode_Caches` and `_PyOpcode_Deopt` from
//!   the data of compile.o (3.14+: codegen.o), the counters from the headers' macros laid out by
//!   `_Py_BackoffCounter`'s bit fields, checked against the bytecode the
//!   interpreter's own constructor writes;
//! - macros (the static refcount, `CO_FAST_*`, `_PY_NSMALL*INTS`,
//!   `FRAME_SPECIALS_SIZE`, `QUICKENING_INITIAL_WARMUP_VALUE`, the backoff
//!   counters): the headers;
//! - opcode numbers, the `.pyc` magic and the version: the interpreter.
//!
//! - that the archive is the interpreter's build: `PY_VERSION` in
//!   `getversion.o`.
//!
//! A release archive has no DWARF: with `--types-from` (Options::types)
//! every type and the names of the variables read come from one object
//! compiled with -g from the installed headers (src/genlayout/types.c),
//! and everything else still from the archive, whose `_PyRuntime` must be
//! the size the types say and whose shared objects must read back.
//!
//! What the inputs cannot say is in small documented tables here:
//! [`FILLED`] (the code object pointers CPython's generator fills; every
//! other pointer member is runtime state), [`OWNED`] (how the runtime
//! releases each runtime-state pointer), [`RESET`] (scalar runtime
//! state), [`FIXED`] (code members every static code object resets to a
//! macro's value), [`PLACED`] and [`ZERO`] (with FIXED and RESET, every
//! scalar code member; any other is refused), [`QUICKEN`] (which opcodes
//! get which initial counter), [`OPARGS`] (opargs the constructor
//! rewrites), [`FIRSTTRACEABLE_SKIP`] (RESUMEs that do not start tracing;
//! checked against the interpreter's code objects) and [`GLIBC_MUTEX`]
//! (glibc's `pthread_mutex_t` per architecture, for the per-architecture
//! runtime shift; a build whose mutex is not glibc's is refused, so the
//! table is known on Linux/glibc only).
//!
//! The generator checks the assumptions the tool makes of a layout (the
//! shapes it writes), reads back every shared object it lists through the
//! table it derived, and refuses, with a one-line error naming the archive
//! and what is missing, when something does not hold.

mod headers;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::arch::Arch;
use crate::dwarf::{Archive, ObjectData, Types, Variable};
use crate::error::{Error, Result};
use crate::layout::*;
use crate::target::Os;
use headers::{macro_bodies, Headers};

/// What `gen-layout` reads.
#[derive(Clone, Debug)]
pub struct Options {
    /// `libpython3.X.a`, built with `-g`.
    pub archive: PathBuf,
    /// The interpreter of that build; default: `bin/python3.X` of the
    /// installation the archive belongs to.
    pub python: Option<PathBuf>,
    /// The installed headers; default: the interpreter's `INCLUDEPY`.
    pub include: Option<PathBuf>,
    /// An object compiled with -g from the installed headers
    /// (src/genlayout/types.c) whose DWARF describes the types, for an
    /// archive without debug info (a release build's); the archive still
    /// gives every symbol, initializer and relocation.
    pub types: Option<PathBuf>,
}

/// A generated table: the value and the Rust source that spells it.
pub struct Generated {
    pub layout: &'static Layout,
    pub notes: Notes,
    pub text: String,
}

/// What the table's comments say about where values come from.
#[derive(Clone, Debug, Default)]
pub struct Notes {
    /// The archive's file name.
    pub archive: String,
    /// `PY_VERSION` of the archive (and the interpreter): `3.12.1`.
    pub full_version: String,
    /// How the headers define the static refcount.
    pub refcnt: String,
    /// Where the headers define `_Py_IsImmortal()`.
    pub immortal: String,
    /// One line per `code.quicken.opargs` entry.
    pub opargs: Vec<String>,
    /// Names of the `state` bits in `static_bits`.
    pub static_bits: Vec<String>,
    /// One line per `code.fixed` entry.
    pub fixed: Vec<String>,
    /// Member names of `code.runtime_state`.
    pub runtime_state: Vec<String>,
    /// Member names of `code.runtime_scalars`.
    pub runtime_scalars: Vec<String>,
    /// One line per opcode group of `code.quicken.counters`.
    pub quicken: Vec<String>,
    /// Where each member of `interp` is (path), and the mutexes before it.
    pub interp: Vec<String>,
    /// Where `code.firsttraceable_skip` comes from, and how it was checked.
    pub firsttraceable: String,
    /// Where `interp.first_code_version` comes from (empty without a
    /// counter).
    pub first_code_version: String,
    /// How `frame_specials_size` was computed (empty without `co_framesize`).
    pub frame_specials: String,
    /// Path of the singletons in `_PyRuntimeState`.
    pub singletons: String,
    /// `pthread_mutex_t` members before the singletons.
    pub mutexes: Vec<String>,
    /// The shared arrays used are the ones gcc's deepfreeze.o points into.
    pub shared_by_generator: bool,
}

/// Generate the table for `opts`.
pub fn generate(opts: &Options) -> Result<Generated> {
    let cx = Cx::open(opts)?;
    let mut notes = Notes {
        archive: match &cx.types_from {
            Some(t) => format!("{} with the types of {t}", file_name(&opts.archive)),
            None => file_name(&opts.archive),
        },
        full_version: cx.py.release.clone(),
        ..Notes::default()
    };
    let ptr_size = cx.ptr_size()?;
    let head = cx.head(&mut notes)?;
    let code = cx.code(&mut notes)?;
    let mut str_ = cx.str_()?;
    let bytes = cx.bytes()?;
    let int = cx.int()?;
    let float = cx.float()?;
    let tuple = cx.tuple()?;
    let slice = cx.slice()?;
    let frozen = cx.frozen()?;
    let runtime = cx.runtime(&head, &mut str_, &int, &frozen, &mut notes)?;
    let interp = cx.interp(&runtime, &mut notes)?;
    let sym = cx.symbols(&head, &int, &runtime, slice.is_some())?;
    let (major, minor, _) = cx.py.version;
    let layout: &'static Layout = Box::leak(Box::new(Layout {
        version: (major, minor),
        release: leak_str(&cx.py.release),
        pyc_magic: cx.pyc_magic()?,
        ptr_size,
        head,
        code,
        str_,
        bytes,
        int,
        float,
        tuple,
        slice,
        runtime,
        sym,
        frozen,
        interp,
    }));
    cx.verify_shared(layout)?;
    let text = write::table(layout, &notes);
    Ok(Generated {
        layout,
        notes,
        text,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn leak<T>(v: Vec<T>) -> &'static [T] {
    Box::leak(v.into_boxed_slice())
}

fn leak_str(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// The `PyCodeObject` pointers CPython's generator fills (with constants,
/// names, strings and bytes); every other pointer member belongs to the
/// runtime and starts out NULL (`code.runtime_state`).
pub const FILLED: [&str; 9] = [
    "co_consts",
    "co_names",
    "co_exceptiontable",
    "co_localsplusnames",
    "co_localspluskinds",
    "co_filename",
    "co_name",
    "co_qualname",
    "co_linetable",
];

/// Code members every static code object resets to a macro's value (the
/// per-code fini of 3.11 resets `co_warmup`; CPython's generator writes the
/// same value): (member, header, macro). Applied when the member exists.
///
/// 3.14+ `_co_unique_id` is the id of free-threaded builds' per-thread
/// reference counts: a default build's code neither writes nor reads it
/// (its constructor leaves it unset); a static code object gets "no id",
/// `_Py_INVALID_UNIQUE_ID`.
pub const FIXED: &[(&str, &str, &str)] = &[
    (
        "co_warmup",
        "internal/pycore_code.h",
        "QUICKENING_INITIAL_WARMUP_VALUE",
    ),
    (
        "_co_unique_id",
        "internal/pycore_uniqueid.h",
        "_Py_INVALID_UNIQUE_ID",
    ),
];

/// `PyCodeObject` scalar members the layout places ([`CodeLayout`]'s
/// fields): with [`FIXED`], [`RESET`] and [`ZERO`], every scalar member
/// gen-layout accepts; any other is refused (a member nobody classified
/// would silently stay 0).
pub const PLACED: &[&str] = &[
    "co_flags",
    "co_argcount",
    "co_posonlyargcount",
    "co_kwonlyargcount",
    "co_stacksize",
    "co_firstlineno",
    "co_nlocalsplus",
    "co_nlocals",
    "co_ncellvars",
    "co_nfreevars",
    "co_nplaincellvars",
    "co_framesize",
    "co_version",
    "_co_firsttraceable",
];

/// RESUMEs that do not start tracing (3.15 `_PyCode_New`: the first RESUME
/// whose `oparg & RESUME_OPARG_LOCATION_MASK != RESUME_AT_GEN_EXPR_START`
/// sets `_co_firsttraceable`): (header, mask macro, value macro), applied
/// where the headers define the value macro.
pub const FIRSTTRACEABLE_SKIP: (&str, &str, &str) = (
    "internal/pycore_opcode_utils.h",
    "RESUME_OPARG_LOCATION_MASK",
    "RESUME_AT_GEN_EXPR_START",
);

/// `PyCodeObject` scalar members a static code object leaves 0, and why.
pub const ZERO: &[(&str, &str)] = &[(
    "_co_linearray_entry_size",
    "3.11: the entry size of _co_linearray, read only while that runtime-state pointer is set",
)];

/// How the runtime releases each pointer member of `PyCodeObject` it fills
/// in (what its code dealloc does), by member name; a runtime-state
/// member missing here is refused. What each kind needs of the build is
/// checked: the weak reference list is the one `PyCode_Type`'s
/// `tp_weaklistoffset` names, an object pointer is a `PyObject *`, a
/// block's members are read from its DWARF (object pointers dropped,
/// other pointers freed), and tier-2 executors exist only in a build
/// that defines [`TIER2`].
pub const OWNED: &[(&str, Own)] = &[
    ("co_weakreflist", Own::WeakRefs),
    // 3.11
    ("_co_code", Own::Object),
    ("_co_linearray", Own::Block),
    // 3.12+
    ("_co_cached", Own::Block),
    ("_co_monitoring", Own::Block),
    // Freed as one block: the free functions registered for it are not
    // called (as 3.12's `_PyStaticCode_Fini` did not).
    ("co_extra", Own::Block),
    // 3.13+: released by the code dealloc through the runtime's function
    // (3.14+ codeobject.o: if co_executors, clear_executors(), which
    // _PyCode_Clear_Executors is); 3.13 has no such entry point.
    ("co_executors", Own::Tier2("_PyCode_Clear_Executors")),
];

/// How a member of [`OWNED`] is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Own {
    WeakRefs,
    Object,
    Block,
    /// Filled in only by the tier-2 optimizer; released, in a build with
    /// one, by the runtime function named (which the archive must define
    /// in codeobject.o).
    Tier2(&'static str),
}

/// The symbol only a build with the tier-2 optimizer defines
/// (Python/optimizer.c is all `#ifdef _Py_TIER2`).
pub const TIER2: &str = "_PyOptimizer_Optimize";

/// Members of `PyInterpreterState` the runtime's code constructor reads
/// when it quickens (3.15's `opt_config`, which `PYTHON_JIT_*_INITIAL_*`
/// and `PYTHON_SPECIALIZATION_OFF` change), with the default values the
/// emitted bytecode's quickening assumes. Where the struct holding them
/// exists, every one must. The load wrapper falls back to unmarshalling
/// when one differs (`InterpLayout::expects`).
pub const EXPECTS: &[(&str, &str, Expect)] = &[
    (
        "opt_config",
        "jump_backward_initial_value",
        Expect::Macro("internal/pycore_backoff.h", "JUMP_BACKWARD_INITIAL_VALUE"),
    ),
    (
        "opt_config",
        "jump_backward_initial_backoff",
        Expect::Macro("internal/pycore_backoff.h", "JUMP_BACKWARD_INITIAL_BACKOFF"),
    ),
    (
        "opt_config",
        "resume_initial_value",
        Expect::Macro("internal/pycore_backoff.h", "RESUME_INITIAL_VALUE"),
    ),
    (
        "opt_config",
        "resume_initial_backoff",
        Expect::Macro("internal/pycore_backoff.h", "RESUME_INITIAL_BACKOFF"),
    ),
    (
        "opt_config",
        "specialization_enabled",
        Expect::Value(1, "true unless PYTHON_SPECIALIZATION_OFF is set"),
    ),
];

/// Where an [`EXPECTS`] default comes from.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// A macro of a header.
    Macro(&'static str, &'static str),
    /// A value, and why.
    Value(u32, &'static str),
}

/// `PyCodeObject` members that are not pointers and that the runtime moves
/// from 0 while the code runs (the instrumentation version it last
/// instrumented the code for). Applied when the member exists.
pub const RESET: &[&str] = &["_co_instrumentation_version"];

/// What `_PyCode_Quicken` (Python/specialize.c, 3.13+) writes into the
/// first cache entry of an instruction with cache entries, for the
/// opcodes named; every other such instruction gets [`WARMUP`]. Used when
/// `_Py_CODEUNIT` has a backoff `counter` (3.13+); a group none of whose
/// opcodes has cache entries in the build is left out (RESUME before
/// 3.15). gen-layout checks the result against the interpreter's own
/// quickened bytecode. (3.15 takes the JUMP_BACKWARD and RESUME counters
/// from the interpreter's optimizer configuration, whose defaults are
/// these macros: the probe runs isolated, with the defaults.)
pub const QUICKEN: &[(&[&str], Counter)] = &[
    (
        &["RESUME"],
        Counter::Backoff(
            "internal/pycore_backoff.h",
            "RESUME_INITIAL_VALUE",
            "RESUME_INITIAL_BACKOFF",
        ),
    ),
    (
        &["JUMP_BACKWARD"],
        Counter::Backoff(
            "internal/pycore_backoff.h",
            "JUMP_BACKWARD_INITIAL_VALUE",
            "JUMP_BACKWARD_INITIAL_BACKOFF",
        ),
    ),
    (
        &[
            "POP_JUMP_IF_FALSE",
            "POP_JUMP_IF_TRUE",
            "POP_JUMP_IF_NONE",
            "POP_JUMP_IF_NOT_NONE",
        ],
        // "Alternating 0, 1 bits": a literal in specialize.c.
        Counter::Literal(0x5555),
    ),
];

/// Opargs `_PyCode_Quicken` rewrites (3.15: a nonzero GET_ITER oparg
/// becomes "no check" in code flagged a coroutine, "coroutine check"
/// elsewhere; specialize.o tests `co_flags & 0x180`): (opcode, header,
/// flag macros of cpython/code.h, macro when flagged, macro otherwise).
/// Applied when the header defines the macros; checked against the
/// interpreter's constructor on probe code whose such opargs are 1.
pub const OPARGS: &[(&str, &str, &[&str], &str, &str)] = &[(
    "GET_ITER",
    "internal/pycore_opcode_utils.h",
    &["CO_COROUTINE", "CO_ITERABLE_COROUTINE"],
    "GET_ITER_YIELD_FROM_NO_CHECK",
    "GET_ITER_YIELD_FROM_CORO_CHECK",
)];

/// `adaptive_counter_warmup()` (internal/pycore_code.h).
pub const WARMUP: Counter = Counter::Backoff(
    "internal/pycore_code.h",
    "ADAPTIVE_WARMUP_VALUE",
    "ADAPTIVE_WARMUP_BACKOFF",
);

/// A cache entry's initial value.
#[derive(Clone, Copy, Debug)]
pub enum Counter {
    /// A backoff counter from (header, value macro, backoff macro), laid
    /// out as `_Py_BackoffCounter`'s bit fields say.
    Backoff(&'static str, &'static str, &'static str),
    Literal(u16),
}

/// glibc's `pthread_mutex_t` size per architecture (`__SIZEOF_PTHREAD_MUTEX_T`
/// in sysdeps/<arch>/nptl/bits/pthreadtypes-arch.h). Each mutex embedded in
/// `_PyRuntimeState` before its shared objects moves them by the difference
/// to the DWARF's own architecture. The other types there are the same
/// size on both (`pthread_cond_t` 48 bytes; 3.12's `pthread_condattr_t`
/// grows from 4 to 8 bytes on aarch64 into tail padding).
pub const GLIBC_MUTEX: &[(Arch, u64)] = &[(Arch::X86_64, 40), (Arch::Aarch64, 48)];

/// Per-architecture growth of an offset.
type Shift = &'static [(Arch, u32)];

/// Facts the interpreter gives.
struct Interp {
    exe: PathBuf,
    version: (u8, u8, u8),
    /// `PY_VERSION`: `3.12.1`, `3.13.0rc1`, ...
    release: String,
    include: PathBuf,
    resume: u8,
    magic: Vec<u8>,
    /// Python names of code, bytes, str, tuple, int, float, complex,
    /// NoneType, bool, ellipsis, slice.
    type_names: Vec<String>,
    /// `marshal.version`: 5+ writes slice constants.
    marshal: u32,
}

const INTERP_SCRIPT: &str = "import sys, sysconfig, opcode, importlib.util, types\n\
print('%d.%d.%d' % sys.version_info[:3], sys.version.split()[0])\n\
print(sysconfig.get_config_var('INCLUDEPY'))\n\
print(opcode.opmap['RESUME'])\n\
print(importlib.util.MAGIC_NUMBER.hex())\n\
print(*(t.__name__ for t in (types.CodeType, bytes, str, tuple, int, float, complex,\n\
      type(None), bool, type(...), slice)))\n\
import marshal; print(marshal.version)\n";

/// Code the quickening probe compiles: a loop (JUMP_BACKWARD), tests
/// (POP_JUMP_IF_*), attribute loads, calls and operators (warmup).
const QUICKEN_PROBE: &str = "def f(a, b):\n    for i in a:\n        if i:\n            \
     b.append(i + 1)\n        if i is None:\n            continue\n        if i is not None \
     and not i:\n            break\n    while a:\n        a = a.x\n    return b\n\
     def g(a):\n    yield from a\n\
     async def h(a):\n    for i in a:\n        await i\n\
     def k(a):\n    return (x for x in a)\n";

/// What [`Cx::quicken_probe`] reads.
struct Probe {
    opcodes: HashMap<&'static str, u8>,
    /// (co_flags, co_code, _co_code_adaptive) of each code object, and of
    /// each one's copy whose instructions with the rewritten opcodes have
    /// oparg 1.
    codes: Vec<(u32, Vec<u8>, Vec<u8>)>,
}

/// Run `script` in the interpreter (isolated): its standard output.
fn run_interpreter(exe: &Path, script: &str) -> Result<String> {
    let out = Command::new(exe)
        .args(["-I", "-c", script])
        .output()
        .map_err(|e| Error::file(exe, format!("cannot run: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::file(
            exe,
            format!(
                "failed ({}): {}",
                out.status,
                err.lines().last().unwrap_or("").trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (s.as_bytes().chunks(2))
        .map(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
        .collect()
}

/// `X.Y` from `libpythonX.Y.a`.
fn archive_version(archive: &Path) -> Option<(u8, u8)> {
    let n = file_name(archive);
    let v = n.strip_prefix("libpython")?.strip_suffix(".a")?;
    let v = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn interpreter(opts: &Options) -> Result<Interp> {
    let exe = match &opts.python {
        Some(p) => p.clone(),
        None => {
            // PREFIX/lib/pythonX.Y/config-X.Y-TRIPLE/libpythonX.Y.a
            let (a, b) = archive_version(&opts.archive).ok_or_else(|| {
                Error::file(
                    &opts.archive,
                    "not named libpythonX.Y.a: say which interpreter it belongs to with --python",
                )
            })?;
            let prefix = opts.archive.ancestors().nth(4).unwrap_or(Path::new("/"));
            let p = prefix.join(format!("bin/python{a}.{b}"));
            if !p.is_file() {
                return Err(Error::file(
                    &opts.archive,
                    format!(
                        "no interpreter at {} (where an installation keeps it): pass --python",
                        p.display()
                    ),
                ));
            }
            p
        }
    };
    let text = run_interpreter(&exe, INTERP_SCRIPT)?;
    let bad = |what: &str| Error::file(&exe, format!("unexpected output ({what}): {text:?}"));
    let lines: Vec<&str> = text.lines().collect();
    let [version, include, resume, magic, names, marshal] = lines.as_slice() else {
        return Err(bad("6 lines"));
    };
    let Some((version, release)) = version.split_once(' ') else {
        return Err(bad("version"));
    };
    let v: Vec<u8> = version.split('.').filter_map(|x| x.parse().ok()).collect();
    let [a, b, c] = v.as_slice() else {
        return Err(bad("version"));
    };
    let magic = (magic.as_bytes().chunks(2))
        .map(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| bad("magic"))?;
    Ok(Interp {
        exe: exe.clone(),
        version: (*a, *b, *c),
        release: release.to_owned(),
        include: PathBuf::from(include),
        resume: resume.parse().map_err(|_| bad("RESUME"))?,
        magic,
        type_names: names.split_whitespace().map(str::to_owned).collect(),
        marshal: marshal.parse().map_err(|_| bad("marshal.version"))?,
    })
}

/// Everything read from the inputs.
struct Cx {
    archive: PathBuf,
    ar: Archive,
    py: Interp,
    headers: Headers,
    /// codeobject.o: the object types.
    code: Arc<Types>,
    /// complexobject.o: `PyComplexObject`.
    complex: Arc<Types>,
    /// frozen.o: `struct _frozen`, the module tables.
    frozen: Arc<Types>,
    /// pylifecycle.o: `_PyRuntimeState`.
    life: Arc<Types>,
    /// The types object (`--types-from`), which stands for all four.
    types_from: Option<String>,
    life_data: ObjectData,
    frozen_data: ObjectData,
    /// codeobject.o: `PyCode_Type`.
    code_data: ObjectData,
    /// gcc's deepfreeze.o (CPython 3.13 has none).
    gcc: Option<ObjectData>,
}

impl Cx {
    fn open(opts: &Options) -> Result<Cx> {
        let archive = opts.archive.clone();
        let ar = Archive::open(&archive).map_err(|e| Error::file(&archive, e))?;
        let py = interpreter(opts)?;
        let include = opts.include.clone().unwrap_or_else(|| py.include.clone());
        let e = |m: String| Error::file(&archive, m);
        let member = |n: &str| ar.member(n).map_err(&e);
        let members = [
            "codeobject.o",
            "complexobject.o",
            "frozen.o",
            "pylifecycle.o",
        ];
        let bytes: Vec<_> = match &opts.types {
            // One object describes every type and names the variables.
            Some(t) => {
                let b =
                    std::fs::read(t).map_err(|x| Error::file(t, format!("cannot read: {x}")))?;
                vec![(
                    leak_str(&file_name(t)) as &str,
                    crate::dwarf::Aligned::new(&b),
                )]
            }
            None => members
                .iter()
                .map(|n| member(n).map(|b| (*n, b)))
                .collect::<Result<_>>()?,
        };
        // The DWARF parses are independent: run them in parallel.
        let mut types = std::thread::scope(|s| {
            let handles: Vec<_> = bytes
                .iter()
                .map(|(n, b)| s.spawn(move || Types::parse(n, b.bytes())))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("DWARF reader panicked".into()))
                })
                .collect::<Vec<_>>()
        })
        .into_iter();
        let types_err = |m: String| match &opts.types {
            Some(t) => Error::file(t, m),
            None => Error::file(&archive, m),
        };
        let mut next = || {
            types
                .next()
                .unwrap_or_else(|| Err("missing".into()))
                .map(Arc::new)
                .map_err(types_err)
        };
        let (code, complex, frozen, life) = if opts.types.is_some() {
            let t = next()?;
            (t.clone(), t.clone(), t.clone(), t)
        } else {
            (next()?, next()?, next()?, next()?)
        };
        let data = |n: &str| ObjectData::parse(n, member(n)?.bytes()).map_err(e);
        // The archive is the interpreter's build: its PY_VERSION (a string
        // of getversion.o) is the interpreter's.
        let getversion = data("getversion.o")?;
        let releases: Vec<String> = (getversion.sections.iter())
            .filter(|(n, _)| n.starts_with(".rodata"))
            .flat_map(|(_, d)| d.split(|&b| b == 0))
            .filter_map(|s| std::str::from_utf8(s).ok())
            .filter(|s| crate::input::archive::is_py_version(s))
            .map(str::to_owned)
            .collect();
        if !releases.contains(&py.release) {
            return Err(e(format!(
                "is CPython {} (getversion.o), but the interpreter is {}",
                releases.join(", "),
                py.release
            )));
        }
        let gcc = match ar.member("deepfreeze.o") {
            Ok(b) => Some(ObjectData::parse("deepfreeze.o", b.bytes()).map_err(e)?),
            Err(_) => None,
        };
        Ok(Cx {
            life_data: data("pylifecycle.o")?,
            frozen_data: data("frozen.o")?,
            code_data: data("codeobject.o")?,
            gcc,
            headers: Headers::new(&include),
            archive,
            ar,
            py,
            code,
            complex,
            frozen,
            life,
            types_from: opts.types.as_deref().map(file_name),
        })
    }

    /// The data, symbols and relocations of archive member `name`.
    fn data_member(&self, name: &str) -> Result<ObjectData> {
        let b = self.ar.member(name).map_err(|e| self.err(e))?;
        ObjectData::parse(name, b.bytes()).map_err(|e| self.err(e))
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error::file(&self.archive, msg)
    }

    fn dw<T>(&self, r: crate::dwarf::Result<T>) -> Result<T> {
        r.map_err(|e| self.err(e))
    }

    fn u32_(&self, v: u64, what: &str) -> Result<u32> {
        u32::try_from(v).map_err(|_| self.err(format!("{what}: {v} does not fit 32 bits")))
    }

    /// Member `path` of `ty` as a table field.
    fn field(&self, t: &Types, ty: &str, path: &str) -> Result<Field> {
        let m = self.dw(t.member(ty, path))?;
        if m.bits.is_some() {
            return Err(self.err(format!("{}: {ty}.{path} is a bit field", t.object)));
        }
        Ok(Field {
            off: self.u32_(m.offset, path)?,
            size: u8::try_from(m.size)
                .map_err(|_| self.err(format!("{ty}.{path}: size {} too large", m.size)))?,
        })
    }

    /// Member `path` of `ty` if `ty` has it.
    fn opt_field(&self, t: &Types, ty: &str, path: &str) -> Result<Option<Field>> {
        self.dw(t.sizeof(ty))?;
        match t.member(ty, path) {
            Ok(_) => self.field(t, ty, path).map(Some),
            Err(_) => Ok(None),
        }
    }

    fn offset(&self, t: &Types, ty: &str, path: &str) -> Result<u32> {
        let o = self.dw(t.member_path_offset(ty, path))?;
        self.u32_(o, path)
    }

    fn sizeof(&self, t: &Types, ty: &str) -> Result<u32> {
        let s = self.dw(t.sizeof(ty))?;
        self.u32_(s, ty)
    }

    /// An assumption the tool makes of every layout.
    fn require(&self, ok: bool, what: impl FnOnce() -> String) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(self.err(format!("unsupported layout: {}", what())))
        }
    }

    /// Evaluate macro expression `expr` of header `rel`; `sizeof` from
    /// codeobject.o's DWARF.
    fn eval(&self, rel: &str, more: &[&str], expr: &str) -> Result<i64> {
        let t = &self.code;
        let sizeof = |ty: &str| -> std::result::Result<u64, String> {
            if ty.ends_with('*') {
                Ok(u64::from(t.address_size))
            } else {
                t.sizeof(ty)
            }
        };
        self.headers.eval(rel, more, expr, &sizeof)
    }

    /// The single 64-bit value of macro `name` in `rel`.
    fn macro_value(&self, rel: &str, name: &str) -> Result<i64> {
        self.eval(rel, &[], name)
    }

    fn ptr_size(&self) -> Result<u8> {
        let m = self.dw(self.code.member("PyObject", "ob_type"))?;
        for t in [&self.code, &self.complex, &self.frozen, &self.life] {
            self.require(u64::from(t.address_size) == m.size, || {
                format!(
                    "{} has {}-byte addresses, PyObject.ob_type is {}",
                    t.object, t.address_size, m.size
                )
            })?;
        }
        self.require(m.size == 8, || "not a 64-bit build".into())?;
        Ok(m.size as u8)
    }

    fn head(&self, notes: &mut Notes) -> Result<HeadLayout> {
        let c = &self.code;
        self.require(
            c.member_type_name("PyVarObject", "ob_base").ok().as_deref() == Some("PyObject")
                && c.member_path_offset("PyVarObject", "ob_base") == Ok(0),
            || "PyVarObject does not start with its PyObject".into(),
        )?;
        // The word holding ob_refcnt: the member of PyObject around it
        // (3.12+: a union with the split count; 3.14+ also with ob_flags).
        let count = self.field(c, "PyObject", "ob_refcnt")?;
        let word = self
            .dw(c.struct_layout("PyObject"))?
            .into_iter()
            .find(|m| m.offset <= u64::from(count.off) && u64::from(count.off) < m.offset + m.size)
            .ok_or_else(|| self.err("PyObject: no member holds ob_refcnt"))?;
        let refcnt = Field {
            off: self.u32_(word.offset, "ob_refcnt")?,
            size: u8::try_from(word.size).unwrap_or(0),
        };
        self.require(refcnt.off == 0 && refcnt.size == 8, || {
            format!(
                "PyObject's reference count word is {} bytes at {}",
                word.size, word.offset
            )
        })?;
        let flags = self.opt_field(c, "PyObject", "ob_flags")?;
        let (static_refcnt, note) = self.static_refcnt(count, flags)?;
        notes.refcnt = note;
        // Where the headers define _Py_IsImmortal() (object.h 3.12-3.13,
        // refcount.h 3.14+), if anywhere.
        let immortal = (self.headers.all().iter())
            .find(|(_, t)| {
                t.lines().any(|l| {
                    let l = l.trim_start();
                    (l.starts_with("static inline") || l.starts_with("#define"))
                        && l.contains("_Py_IsImmortal(")
                })
            })
            .map(|(f, _)| f.clone());
        notes.immortal = match &immortal {
            Some(f) => format!("{f} defines _Py_IsImmortal()"),
            None => "no header defines _Py_IsImmortal()".into(),
        };
        Ok(HeadLayout {
            refcnt,
            type_: self.field(c, "PyObject", "ob_type")?,
            size: self.field(c, "PyVarObject", "ob_size")?,
            static_refcnt,
            immortal: immortal.is_some(),
        })
    }

    /// The reference count word the headers' static object initializer
    /// sets (3.12+: `_PyObject_HEAD_INIT`, 3.11: `_PyObject_IMMORTAL_INIT`,
    /// in internal/pycore_object.h), evaluated for a 64-bit build: its
    /// `.ob_refcnt` (`count`), and (3.14+) its `.ob_flags` where `flags`
    /// sits in the same word.
    fn static_refcnt(&self, count: Field, flags: Option<Field>) -> Result<(u64, String)> {
        const H: &str = "internal/pycore_object.h";
        let text = self.headers.text(H)?;
        let member = |body: &str, m: &str| -> Option<String> {
            let rest = body.split(&format!(".{m}")).nth(1)?;
            let rest = rest.trim_start().strip_prefix('=')?;
            Some(
                rest.split([',', '}', '\n'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
            )
        };
        for mac in ["_PyObject_HEAD_INIT", "_PyObject_IMMORTAL_INIT"] {
            for body in macro_bodies(&text, mac) {
                let Some(expr) = member(&body, "ob_refcnt") else {
                    continue;
                };
                let v = self.eval(H, &["object.h"], &expr)?;
                let mask = u64::MAX >> (64 - 8 * u32::from(count.size));
                let mut word = (v as u64 & mask) << (8 * count.off);
                let mut note = format!("{mac}: .ob_refcnt = {expr}");
                if let (Some(f), Some(fx)) = (flags, member(&body, "ob_flags")) {
                    let fv = self.eval(H, &[], &fx)?;
                    self.require(
                        fv >= 0 && fv < 1 << (8 * u32::from(f.size)) && f.off < 8,
                        || format!("ob_flags = {fv} does not fit"),
                    )?;
                    word |= (fv as u64) << (8 * f.off);
                    note += &format!(
                        ", .ob_flags = {fx} ({fv}); the word holds both (ob_flags at byte {})",
                        f.off
                    );
                }
                let origin = if expr.starts_with(|c: char| c.is_ascii_digit()) {
                    format!(" ({H})")
                } else {
                    format!(" ({H}; 64-bit)")
                };
                return Ok((word, note + &origin));
            }
        }
        Err(Error::file(
            self.headers.dir.join(H),
            "no static object initializer setting .ob_refcnt (_PyObject_HEAD_INIT or \
             _PyObject_IMMORTAL_INIT)",
        ))
    }

    fn code(&self, notes: &mut Notes) -> Result<CodeLayout> {
        const CO: &str = "PyCodeObject";
        let c = &self.code;
        let fl = |m: &str| self.field(c, CO, m);
        let opt = |m: &str| self.opt_field(c, CO, m);
        self.require(c.sizeof("_Py_CODEUNIT") == Ok(2), || {
            "_Py_CODEUNIT is not 2 bytes".into()
        })?;
        let adaptive = self.dw(c.array(CO, "co_code_adaptive"))?;
        self.require(adaptive.stride == 1, || {
            "co_code_adaptive is not a char array".into()
        })?;
        self.require(
            c.member_type_name(CO, "ob_base").ok().as_deref() == Some("PyVarObject"),
            || "PyCodeObject does not start with a PyVarObject".into(),
        )?;
        let mut runtime_state = Vec::new();
        let mut release = Vec::new();
        for m in self.dw(c.struct_layout(CO))? {
            if self.dw(c.is_pointer(&m))? && !FILLED.contains(&m.name.as_str()) {
                release.push(self.release(&m)?);
                runtime_state.push(self.field(c, CO, &m.name)?);
                notes.runtime_state.push(m.name.clone());
            }
        }
        let mut runtime_scalars = Vec::new();
        for member in RESET {
            if let Some(f) = opt(member)? {
                runtime_scalars.push(f);
                notes.runtime_scalars.push((*member).to_owned());
            }
        }
        let mut fixed = Vec::new();
        for (member, h, mac) in FIXED {
            if let Some(f) = opt(member)? {
                let v = self.macro_value(h, mac)?;
                self.require((1..=8).contains(&f.size), || {
                    format!("{member} is {} bytes", f.size)
                })?;
                let mask = u64::MAX >> (64 - 8 * u32::from(f.size));
                fixed.push((f, v as u64 & mask));
                notes.fixed.push(format!("{member} = {mac} ({v})"));
            }
        }
        // Every scalar member is placed, fixed, reset or left 0 knowingly.
        for m in self.dw(c.struct_layout(CO))? {
            let n = m.name.as_str();
            let known = n == "ob_base"
                || n == "co_code_adaptive"
                || self.dw(c.is_pointer(&m))?
                || PLACED.contains(&n)
                || FIXED.iter().any(|f| f.0 == n)
                || RESET.contains(&n)
                || ZERO.iter().any(|z| z.0 == n);
            self.require(known, || {
                format!(
                    "PyCodeObject.{n} ({} bytes at {}) is a member gen-layout has not classified \
                     (genlayout::PLACED, FIXED, RESET or ZERO): static code would leave it 0",
                    m.size, m.offset
                )
            })?;
        }
        let firsttraceable = opt("_co_firsttraceable")?;
        let firsttraceable_skip = match firsttraceable {
            Some(_) => self.firsttraceable_skip(notes)?,
            None => None,
        };
        let framesize = opt("co_framesize")?;
        let frame_specials_size = match framesize {
            Some(_) => {
                const FS: &str = "FRAME_SPECIALS_SIZE";
                let v = self.macro_value("internal/pycore_frame.h", FS)?;
                let frame = self.dw(c.sizeof("_PyInterpreterFrame"))?;
                let at = match self
                    .headers
                    .defines("internal/pycore_frame.h", FS)?
                    .is_empty()
                {
                    false => "pycore_frame.h".to_owned(),
                    true => self.headers.anywhere(FS).map_err(|e| self.err(e))?.0,
                };
                notes.frame_specials = format!("{FS} ({at}); _PyInterpreterFrame: {frame} bytes");
                self.u32_(v as u64, "FRAME_SPECIALS_SIZE")?
            }
            None => 0,
        };
        let fast = |m: &str| -> Result<u8> {
            let v = self.macro_value("internal/pycore_code.h", m)?;
            u8::try_from(v).map_err(|_| self.err(format!("{m} = {v} is not a byte")))
        };
        let out = CodeLayout {
            code_adaptive: self.u32_(adaptive.offset, "co_code_adaptive")?,
            consts: fl("co_consts")?,
            names: fl("co_names")?,
            exceptiontable: fl("co_exceptiontable")?,
            flags: fl("co_flags")?,
            argcount: fl("co_argcount")?,
            posonlyargcount: fl("co_posonlyargcount")?,
            kwonlyargcount: fl("co_kwonlyargcount")?,
            stacksize: fl("co_stacksize")?,
            firstlineno: fl("co_firstlineno")?,
            nlocalsplus: fl("co_nlocalsplus")?,
            nlocals: fl("co_nlocals")?,
            ncellvars: fl("co_ncellvars")?,
            nfreevars: fl("co_nfreevars")?,
            localsplusnames: fl("co_localsplusnames")?,
            localspluskinds: fl("co_localspluskinds")?,
            filename: fl("co_filename")?,
            name: fl("co_name")?,
            qualname: fl("co_qualname")?,
            linetable: fl("co_linetable")?,
            framesize,
            frame_specials_size,
            version: opt("co_version")?,
            firsttraceable,
            firsttraceable_skip,
            nplaincellvars: opt("co_nplaincellvars")?,
            fixed: leak(fixed),
            runtime_state: leak(runtime_state),
            release: leak(release),
            runtime_scalars: leak(runtime_scalars),
            quicken: self.quicken(notes)?,
            opcode_resume: self.py.resume,
            co_fast_local: fast("CO_FAST_LOCAL")?,
            co_fast_cell: fast("CO_FAST_CELL")?,
            co_fast_free: fast("CO_FAST_FREE")?,
        };
        self.check_firsttraceable(&out, notes)?;
        Ok(out)
    }

    /// The interpreter's own code objects (compiled from the quickening
    /// probe, which has generators, a coroutine and a generator
    /// expression) hold in `_co_firsttraceable`, read through ctypes at the
    /// DWARF's offset, what [`CodeLayout::first_traceable`] computes.
    fn check_firsttraceable(&self, c: &CodeLayout, notes: &mut Notes) -> Result<()> {
        let Some(f) = c.firsttraceable else {
            return Ok(());
        };
        self.require(f.size == 4, || "_co_firsttraceable is not an int".into())?;
        let script = format!(
            "import ctypes\n\
             todo = [compile({QUICKEN_PROBE:?}, '<probe>', 'exec')]\n\
             while todo:\n\
             \x20   co = todo.pop()\n\
             \x20   print(co.co_code.hex(), ctypes.c_int.from_address(id(co) + {}).value)\n\
             \x20   todo += [c for c in co.co_consts if hasattr(c, 'co_code')]\n",
            f.off
        );
        let out = run_interpreter(&self.py.exe, &script)?;
        let mut n = 0;
        for l in out.lines() {
            let parsed = l
                .split_once(' ')
                .and_then(|(a, b)| Some((unhex(a)?, b.parse().ok()?)));
            let Some((code, first)) = parsed else {
                return Err(Error::file(
                    &self.py.exe,
                    format!("unexpected _co_firsttraceable probe output: {out:?}"),
                ));
            };
            let ours: usize = c.first_traceable(&code);
            self.require(ours == first, || {
                format!(
                    "_co_firsttraceable differs from the interpreter's: bytecode {}, \
                     interpreter {first}, ours {ours}",
                    hex(&code)
                )
            })?;
            n += 1;
        }
        self.require(n >= 5, || "the _co_firsttraceable probe saw no code".into())?;
        if !notes.firsttraceable.is_empty() {
            notes.firsttraceable += "; checked against the interpreter's code objects";
        }
        Ok(())
    }

    /// Which RESUMEs do not start tracing ([`FIRSTTRACEABLE_SKIP`]), where
    /// the headers define the macros.
    fn firsttraceable_skip(&self, notes: &mut Notes) -> Result<Option<(u8, u8)>> {
        let (h, mask, value) = FIRSTTRACEABLE_SKIP;
        if self.headers.anywhere(value).is_err() {
            return Ok(None);
        }
        let byte = |m: &str| -> Result<u8> {
            let v = self.macro_value(h, m)?;
            u8::try_from(v).map_err(|_| self.err(format!("{m} = {v} is not a byte")))
        };
        let (m, v) = (byte(mask)?, byte(value)?);
        notes.firsttraceable = format!(
            "RESUME with oparg & {mask} ({m:#x}) == {value} ({v}) does not start tracing ({h})"
        );
        Ok(Some((m, v)))
    }

    /// How the runtime releases runtime-state member `m` of the code
    /// object ([`OWNED`]).
    fn release(&self, m: &crate::dwarf::Member) -> Result<Release> {
        let c = &self.code;
        let own = OWNED.iter().find(|(n, _)| *n == m.name).map(|x| x.1);
        let Some(own) = own else {
            return Err(self.err(format!(
                "unsupported layout: PyCodeObject.{} is a pointer the runtime fills in, and how \
                 it is released is not known (genlayout::OWNED)",
                m.name
            )));
        };
        let ty = self.dw(c.type_name_of(m))?;
        Ok(match own {
            Own::WeakRefs => {
                let tp = self.dw(c.member_path_offset("PyTypeObject", "tp_weaklistoffset"))?;
                let ty_obj = self.dw(self.code_data.variable("PyCode_Type"))?;
                let off = rd(&ty_obj.bytes, tp, 8);
                self.require(off == m.offset, || {
                    format!(
                        "PyCode_Type.tp_weaklistoffset is {off}, not {}'s offset {}",
                        m.name, m.offset
                    )
                })?;
                Release::WeakRefs
            }
            Own::Object => {
                self.require(ty == "*PyObject", || {
                    format!("PyCodeObject.{} is {ty}, not an object pointer", m.name)
                })?;
                Release::Object
            }
            Own::Block => {
                let (mut decref, mut free) = (Vec::new(), Vec::new());
                for x in self.dw(c.pointee_members(m))?.unwrap_or_default() {
                    if !self.dw(c.is_pointer(&x))? {
                        continue;
                    }
                    let off = self.u32_(x.offset, &x.name)?;
                    if self.dw(c.type_name_of(&x))? == "*PyObject" {
                        decref.push(off);
                    } else {
                        free.push(off);
                    }
                }
                Release::Block {
                    decref: leak(decref),
                    free: leak(free),
                }
            }
            Own::Tier2(func) => {
                let index = self.dw(self.ar.symbol_index())?;
                if !index.contains_key(TIER2) {
                    Release::Unused
                } else {
                    self.require(
                        index.get(func).map(String::as_str) == Some("codeobject.o")
                            && self.code_data.defined(func).is_some_and(|s| s.global),
                        || {
                            format!(
                                "a build with the tier-2 optimizer ({TIER2} in {}) without \
                                 {func} in codeobject.o: PyCodeObject.{} holds executors no \
                                 teardown here can release",
                                index[TIER2], m.name
                            )
                        },
                    )?;
                    Release::Call(func)
                }
            }
        })
    }

    /// [`QUICKEN`] as data, where `_Py_CODEUNIT` has a backoff counter:
    /// opcodes from the interpreter, cache sizes and deoptimizations from
    /// compile.o's `_PyOpcode_Caches` and `_PyOpcode_Deopt`, counters from
    /// the headers' macros laid out by `_Py_BackoffCounter`'s bit fields;
    /// checked against the interpreter's own quickened bytecode.
    fn quicken(&self, notes: &mut Notes) -> Result<Option<Quicken>> {
        let c = &self.code;
        if c.member_type_name("_Py_CODEUNIT", "counter")
            .ok()
            .as_deref()
            != Some("_Py_BackoffCounter")
        {
            return Ok(None);
        }
        self.require(self.dw(c.sizeof("_Py_BackoffCounter"))? == 2, || {
            "_Py_BackoffCounter is not 16 bits".into()
        })?;
        // (value bits, value shift, backoff bits, backoff shift): 3.13's
        // bit fields, or 3.14+'s `value_and_backoff` = value << BACKOFF_BITS
        // | backoff (internal/pycore_backoff.h).
        let bits = match c.bitfield("_Py_BackoffCounter", "value") {
            Ok(value) => {
                let backoff = self.dw(c.bitfield("_Py_BackoffCounter", "backoff"))?;
                self.require(
                    value.offset + value.size <= 16 && backoff.offset + backoff.size <= 16,
                    || "_Py_BackoffCounter's bit fields exceed 16 bits".into(),
                )?;
                (value.size, value.offset, backoff.size, backoff.offset)
            }
            Err(_) => {
                let f = self.field(c, "_Py_BackoffCounter", "value_and_backoff")?;
                let b = self.macro_value("internal/pycore_backoff.h", "BACKOFF_BITS")?;
                self.require(f.off == 0 && f.size == 2 && (1..16).contains(&b), || {
                    format!("_Py_BackoffCounter.value_and_backoff with BACKOFF_BITS {b}")
                })?;
                (16 - b as u64, b as u64, b as u64, 0)
            }
        };
        let counter = |k: &Counter| -> Result<u16> {
            Ok(match *k {
                Counter::Literal(v) => v,
                Counter::Backoff(h, v, b) => {
                    let (v, b) = (self.macro_value(h, v)?, self.macro_value(h, b)?);
                    let fits = |x: i64, bits: u64| x >= 0 && x < 1 << bits;
                    self.require(fits(v, bits.0) && fits(b, bits.2), || {
                        format!("backoff counter ({v}, {b}) does not fit its bits")
                    })?;
                    ((v << bits.1) | (b << bits.3)) as u16
                }
            })
        };
        // compile.o (3.13), codegen.o (3.14+): where the archive's index
        // says.
        let index = self.dw(self.ar.symbol_index())?;
        let table = |name: &str| -> Result<Vec<u8>> {
            let m = index
                .get(name)
                .ok_or_else(|| self.err(format!("no member defines {name}")))?;
            let v = self.dw(self.data_member(m)?.variable(name))?;
            self.require(v.bytes.len() == 256, || {
                format!("{m}: {name} is {} bytes, not 256", v.bytes.len())
            })?;
            Ok(v.bytes)
        };
        let (caches, deopt) = (table("_PyOpcode_Caches")?, table("_PyOpcode_Deopt")?);
        // The oparg rewrites the headers define.
        let mut rewrites = Vec::new();
        for &(op, h, flags, yes, no) in OPARGS {
            if self.headers.anywhere(yes).is_err() {
                continue;
            }
            let mut mask = 0;
            for f in flags {
                mask |= self.macro_value("cpython/code.h", f)?;
            }
            let (y, n) = (self.macro_value(h, yes)?, self.macro_value(h, no)?);
            let byte = |v: i64| u8::try_from(v).map_err(|_| self.err(format!("{op}: oparg {v}")));
            rewrites.push((op, mask as u32, byte(y)?, byte(n)?));
            notes.opargs.push(format!(
                "{op}: a nonzero oparg becomes {yes} ({y}) where co_flags has {} ({mask:#x}), \
                 else {no} ({n}) ({h})",
                flags.join(" or ")
            ));
        }
        let names: Vec<&'static str> = (QUICKEN.iter())
            .flat_map(|(n, _)| n.iter().copied())
            .chain(rewrites.iter().map(|r| r.0))
            .collect();
        let rewritten: Vec<&'static str> = rewrites.iter().map(|r| r.0).collect();
        let probe = self.quicken_probe(&names, &rewritten)?;
        let mut counters = Vec::new();
        for (ops, k) in QUICKEN {
            if ops
                .iter()
                .all(|op| caches[usize::from(probe.opcodes[*op])] == 0)
            {
                continue;
            }
            let v = counter(k)?;
            for op in *ops {
                counters.push((probe.opcodes[*op], v));
            }
            notes.quicken.push(format!("{} {v:#06x}", ops.join(", ")));
        }
        let warmup = counter(&WARMUP)?;
        let opargs: Vec<(u8, u32, u8, u8)> = (rewrites.iter())
            .map(|&(op, m, y, n)| (probe.opcodes[op], m, y, n))
            .collect();
        let q = Quicken {
            caches: leak((0..=255u8).zip(caches).filter(|&(_, n)| n != 0).collect()),
            deopt: leak((0..=255u8).zip(deopt).filter(|&(o, d)| o != d).collect()),
            counters: leak(counters),
            warmup,
            opargs: leak(opargs),
        };
        // The interpreter's own constructor agrees on every code object of
        // the probe, which uses every kind of counter and rewrite.
        let mut seen = std::collections::BTreeSet::new();
        let mut rewrote = std::collections::BTreeSet::new();
        for (flags, raw, adaptive) in &probe.codes {
            let mut ours = raw.clone();
            q.apply(&mut ours, *flags);
            self.require(ours == *adaptive, || {
                format!(
                    "quickening differs from the interpreter's: co_flags {flags:#x}, raw {}, \
                     interpreter {}, ours {}",
                    hex(raw),
                    hex(adaptive),
                    hex(&ours)
                )
            })?;
            for (r, a) in raw.chunks(2).zip(adaptive.chunks(2)) {
                if r[0] == a[0] && r[1] != a[1] {
                    rewrote.insert((r[0], a[1]));
                }
                if r != a {
                    seen.insert(u16::from_le_bytes([a[0], a[1]]));
                }
            }
        }
        for v in q.counters.iter().map(|c| c.1).chain([q.warmup]) {
            self.require(seen.contains(&v), || {
                format!("the quickening probe never shows the counter {v:#06x}")
            })?;
        }
        for &(op, _, y, n) in q.opargs {
            self.require(
                rewrote.contains(&(op, y)) && rewrote.contains(&(op, n)),
                || format!("the quickening probe never shows opcode {op}'s opargs {y} and {n}"),
            )?;
        }
        Ok(Some(q))
    }

    /// Compile the quickening probe in the interpreter: the opcodes of
    /// `names`, and each code object's flags, raw and quickened bytecode
    /// (and those of its copy with the opargs of `rewritten` opcodes 1).
    fn quicken_probe(&self, names: &[&'static str], rewritten: &[&str]) -> Result<Probe> {
        let script = format!(
            "import opcode\n\
             print(*(opcode.opmap[n] for n in {names:?}))\n\
             rw = {{opcode.opmap[n] for n in {rewritten:?}}}\n\
             src = {QUICKEN_PROBE:?}\n\
             todo = [compile(src, '<probe>', 'exec')]\n\
             while todo:\n\
             \x20   co = todo.pop()\n\
             \x20   print(co.co_flags, co.co_code.hex(), co._co_code_adaptive.hex())\n\
             \x20   b = bytearray(co.co_code)\n\
             \x20   hit = [i for i in range(0, len(b), 2) if b[i] in rw]\n\
             \x20   for i in hit:\n\
             \x20       b[i + 1] = 1\n\
             \x20   if hit:\n\
             \x20       v = co.replace(co_code=bytes(b))\n\
             \x20       print(co.co_flags, bytes(b).hex(), v._co_code_adaptive.hex())\n\
             \x20   todo += [c for c in co.co_consts if hasattr(c, 'co_code')]\n"
        );
        let out = run_interpreter(&self.py.exe, &script)?;
        let bad = |what: &str| {
            Error::file(
                &self.py.exe,
                format!("unexpected quickening probe output ({what}): {out:?}"),
            )
        };
        let mut lines = out.lines();
        let ops: Vec<u8> = (lines.next().unwrap_or(""))
            .split_whitespace()
            .map(|x| x.parse().map_err(|_| bad("opcodes")))
            .collect::<Result<_>>()?;
        if ops.len() != names.len() {
            return Err(bad("opcodes"));
        }
        let mut codes = Vec::new();
        for l in lines {
            let mut w = l.split(' ');
            let (Some(f), Some(a), Some(b), None) = (w.next(), w.next(), w.next(), w.next()) else {
                return Err(bad("bytecode"));
            };
            let (f, a, b) = (
                f.parse().map_err(|_| bad("co_flags"))?,
                unhex(a).ok_or_else(|| bad("hex"))?,
                unhex(b).ok_or_else(|| bad("hex"))?,
            );
            if a.len() != b.len() {
                return Err(bad("lengths"));
            }
            codes.push((f, a, b));
        }
        Ok(Probe {
            opcodes: names.iter().copied().zip(ops).collect(),
            codes,
        })
    }

    /// `PyASCIIObject` / `PyCompactUnicodeObject`; `static_bits` comes from
    /// the runtime's static strings ([`Cx::runtime`]).
    fn str_(&self) -> Result<StrLayout> {
        const AS: &str = "PyASCIIObject";
        const CU: &str = "PyCompactUnicodeObject";
        let c = &self.code;
        self.require(c.member_path_offset(CU, "_base") == Ok(0), || {
            "PyCompactUnicodeObject does not start with its PyASCIIObject".into()
        })?;
        let bit = |m: &str, min: u64| -> Result<u32> {
            let b = self.dw(c.bitfield(AS, &format!("state.{m}")))?;
            self.require(b.size >= min && b.offset + b.size <= 32, || {
                format!("state.{m} is {} bits at bit {}", b.size, b.offset)
            })?;
            self.u32_(b.offset, m)
        };
        let interned = self.dw(c.bitfield(AS, "state.interned"))?;
        self.require(
            interned.size <= 8 && interned.offset + interned.size <= 32,
            || {
                format!(
                    "state.interned is {} bits at bit {}",
                    interned.size, interned.offset
                )
            },
        )?;
        let interned_mask = ((1u32 << interned.size) - 1) << interned.offset;
        let wstr = match self.opt_field(c, AS, "wstr")? {
            Some(p) => Some((p, self.field(c, CU, "wstr_length")?)),
            None => None,
        };
        Ok(StrLayout {
            length: self.field(c, AS, "length")?,
            hash: self.field(c, AS, "hash")?,
            state: self.field(c, AS, "state")?,
            ascii_size: self.sizeof(c, AS)?,
            compact_size: self.sizeof(c, CU)?,
            utf8_length: self.field(c, CU, "utf8_length")?,
            utf8: self.field(c, CU, "utf8")?,
            kind_shift: bit("kind", 3)?,
            compact_bit: bit("compact", 1)?,
            ascii_bit: bit("ascii", 1)?,
            static_bits: 0,
            interned_mask,
            wstr,
        })
    }

    fn bytes(&self) -> Result<BytesLayout> {
        let c = &self.code;
        Ok(BytesLayout {
            shash: self.field(c, "PyBytesObject", "ob_shash")?,
            sval: self.offset(c, "PyBytesObject", "ob_sval")?,
        })
    }

    fn int(&self) -> Result<IntLayout> {
        const LO: &str = "PyLongObject";
        let c = &self.code;
        let (size, digits) = match self.opt_field(c, LO, "long_value.lv_tag")? {
            Some(f) => (IntSize::LvTag(f), "long_value.ob_digit"),
            None => {
                self.require(
                    c.member_type_name(LO, "ob_base").ok().as_deref() == Some("PyVarObject"),
                    || "PyLongObject has neither long_value.lv_tag nor a PyVarObject".into(),
                )?;
                (IntSize::SignedObSize, "ob_digit")
            }
        };
        let d = self.dw(c.array(LO, digits))?;
        let digit_size = self.sizeof(c, "digit")?;
        self.require(d.stride == u64::from(digit_size), || {
            "ob_digit is not a digit array".into()
        })?;
        Ok(IntLayout {
            size,
            digits: self.u32_(d.offset, digits)?,
            digit_size: digit_size as u8,
            min_size: self.sizeof(c, LO)?,
        })
    }

    fn float(&self) -> Result<FloatLayout> {
        let (c, x) = (&self.code, &self.complex);
        let cval = self.offset(x, "PyComplexObject", "cval")?;
        self.require(
            x.member_path_offset("PyComplexObject", "cval.real") == Ok(u64::from(cval))
                && x.member_path_offset("PyComplexObject", "cval.imag") == Ok(u64::from(cval) + 8),
            || "PyComplexObject.cval is not {double real, imag}".into(),
        )?;
        Ok(FloatLayout {
            fval: self.offset(c, "PyFloatObject", "ob_fval")?,
            float_size: self.sizeof(c, "PyFloatObject")?,
            cval,
            complex_size: self.sizeof(x, "PyComplexObject")?,
        })
    }

    fn tuple(&self) -> Result<TupleLayout> {
        let c = &self.code;
        Ok(TupleLayout {
            gc_head_size: self.sizeof(c, "PyGC_Head")?,
            items: self.offset(c, "PyTupleObject", "ob_item")?,
            hash: self.opt_field(c, "PyTupleObject", "ob_hash")?,
        })
    }

    /// `PySliceObject`, where the build's marshal format has slices
    /// (version 5+).
    fn slice(&self) -> Result<Option<SliceLayout>> {
        if self.py.marshal < 5 {
            return Ok(None);
        }
        const SL: &str = "PySliceObject";
        let c = &self.code;
        let fl = |m: &str| self.field(c, SL, m);
        let (start, stop, step) = (fl("start")?, fl("stop")?, fl("step")?);
        for (m, f) in [("start", start), ("stop", stop), ("step", step)] {
            self.require(
                f.size == 8 && self.dw(c.member_type_name(SL, m))? == "*PyObject",
                || format!("PySliceObject.{m} is not an object pointer"),
            )?;
        }
        Ok(Some(SliceLayout {
            size: self.sizeof(c, SL)?,
            start,
            stop,
            step,
        }))
    }

    /// Offsets inside the runtime variable that gcc's deepfreeze.o points to.
    fn gcc_refs(&self, runtime: &str) -> Result<BTreeMap<u64, usize>> {
        let gcc = self.gcc.as_ref().ok_or_else(|| {
            self.err(
                "no deepfreeze.o: which shared objects CPython's generator points at cannot be \
                 read (an archive whose deepfreeze.o was replaced, or CPython 3.13+)",
            )
        })?;
        let mut out = BTreeMap::new();
        for (sec, rs) in &gcc.relocs {
            if sec.starts_with(".text") {
                continue;
            }
            for (t, a) in rs.values() {
                if t == runtime {
                    *out.entry(*a as u64).or_default() += 1;
                }
            }
        }
        Ok(out)
    }

    /// The size of glibc's `pthread_mutex_t` on the archive's (x86_64)
    /// architecture, or a refusal.
    fn own_mutex(&self) -> Result<u64> {
        let arch = match self.life_data.architecture {
            object::Architecture::X86_64 => Arch::X86_64,
            object::Architecture::Aarch64 => Arch::Aarch64,
            a => return Err(self.err(format!("unsupported architecture {a:?}"))),
        };
        self.require(arch == Arch::X86_64, || {
            "the tables hold x86_64 offsets; this archive is for another architecture".into()
        })?;
        let mutex = self.life.sizeof("pthread_mutex_t").ok();
        let own = GLIBC_MUTEX.iter().find(|(a, _)| *a == arch).map(|x| x.1);
        own.filter(|o| mutex == Some(*o)).ok_or_else(|| {
            self.err(format!(
                "pthread_mutex_t is {mutex:?} bytes: not a glibc Linux build"
            ))
        })
    }

    /// The per-architecture growth of offset `off` in `ty`: every
    /// `pthread_mutex_t` held in place before it ([`GLIBC_MUTEX`]); and
    /// their paths.
    fn mutexes_before(&self, t: &Types, ty: &str, off: u64) -> Result<(Shift, Vec<String>)> {
        let own = self.own_mutex()?;
        let mut names = Vec::new();
        for m in self.dw(t.struct_layout(ty))? {
            for e in self.dw(t.embedded(&m, "pthread_mutex_t"))? {
                if e.offset < off {
                    names.push(format!("{}{}", m.name, e.name));
                }
            }
        }
        let n = names.len() as u64;
        let mut shift = Vec::new();
        for &(a, size) in GLIBC_MUTEX {
            if n > 0 && size != own {
                let grow = size.checked_sub(own).ok_or_else(|| {
                    self.err(format!(
                        "pthread_mutex_t is smaller on {a:?}: offsets would shrink"
                    ))
                })?;
                shift.push((a, self.u32_(n * grow, "arch_shift")?));
            }
        }
        Ok((leak(shift), names))
    }

    /// The member at `path` of `ty` (pylifecycle.o's DWARF), with its
    /// per-architecture growth; a note naming it and what moves it.
    fn arch_field(&self, ty: &str, path: &str, notes: &mut Notes) -> Result<ArchField> {
        let t = &self.life;
        let m = self.dw(t.member(ty, path))?;
        self.require(m.bits.is_none(), || format!("{ty}.{path} is a bit field"))?;
        let (shift, mutexes) = self.mutexes_before(t, ty, m.offset)?;
        let moved = if mutexes.is_empty() {
            String::new()
        } else {
            format!(" (after pthread_mutex_t {})", mutexes.join(", "))
        };
        notes.interp.push(format!("{ty}.{path}{moved}"));
        Ok(ArchField {
            field: Field {
                off: self.u32_(m.offset, path)?,
                // A struct (the main interpreter) is only an address.
                size: if m.size <= 8 { m.size as u8 } else { 0 },
            },
            shift,
        })
    }

    /// [`InterpLayout`]: the main interpreter inside the runtime variable,
    /// and the thread and interpreter state members the hooks read.
    fn interp(&self, rt: &RuntimeLayout, notes: &mut Notes) -> Result<InterpLayout> {
        const RT: &str = "_PyRuntimeState";
        const IS: &str = "PyInterpreterState";
        let t = &self.life;
        self.require(
            self.dw(t.member_type_name(RT, "_main_interpreter"))? == IS,
            || "_PyRuntimeState._main_interpreter is not a PyInterpreterState".into(),
        )?;
        self.require(
            self.dw(t.member_type_name("PyThreadState", "interp"))? == format!("*{IS}"),
            || "PyThreadState.interp is not a PyInterpreterState pointer".into(),
        )?;
        let main = self.arch_field(RT, "_main_interpreter", notes)?;
        // 3.11 numbers functions from a global counter instead.
        let next = match t.member(IS, "func_state.next_version") {
            Ok(_) => Some(self.arch_field(IS, "func_state.next_version", notes)?),
            Err(_) => None,
        };
        let ranges = self.arch_field(IS, "config.code_debug_ranges", notes)?;
        self.require(
            next.is_none_or(|n| n.field.size == 4) && ranges.field.size == 4,
            || "func_state.next_version or config.code_debug_ranges is not 32 bits".into(),
        )?;
        let tstate_interp = self.arch_field("PyThreadState", "interp", notes)?;
        self.require(tstate_interp.field.size == 8, || {
            "PyThreadState.interp is not 64 bits".into()
        })?;
        // Where the counter starts: the main interpreter's static
        // initializer inside the runtime variable.
        let first_code_version = match next {
            Some(n) => {
                let init = self.dw(self.life_data.variable(rt.symbol))?;
                let at = u64::from(main.field.off) + u64::from(n.field.off);
                let v = rd(&init.bytes, at, n.field.size);
                self.require(v >= 1, || {
                    format!(
                        "{}'s main interpreter starts func_state.next_version at 0",
                        rt.symbol
                    )
                })?;
                notes.first_code_version = format!(
                    "{}._main_interpreter.func_state.next_version's initial value",
                    rt.symbol
                );
                v as u32
            }
            None => 0,
        };
        let expects = self.expects(notes)?;
        // 3.13+: each interpreter's own dict of interned strings.
        let interned_dict = match t.member(IS, "cached_objects.interned_strings") {
            Ok(_) => {
                let f = self.arch_field(IS, "cached_objects.interned_strings", notes)?;
                self.require(f.field.size == 8, || {
                    "PyInterpreterState.cached_objects.interned_strings is not a pointer".into()
                })?;
                Some(f)
            }
            Err(_) => None,
        };
        Ok(InterpLayout {
            main,
            tstate_interp,
            next_func_version: next,
            first_code_version,
            requires: leak(vec![ranges]),
            expects,
            interned_dict,
        })
    }

    /// [`EXPECTS`] where its structs exist, with their defaults; a note
    /// each saying where the value comes from.
    fn expects(&self, notes: &mut Notes) -> Result<&'static [(ArchField, u32)]> {
        const IS: &str = "PyInterpreterState";
        let t = &self.life;
        let mut out = Vec::new();
        for &(within, member, how) in EXPECTS {
            if t.member(IS, within).is_err() {
                continue;
            }
            let path = format!("{within}.{member}");
            let f = self.arch_field(IS, &path, notes)?;
            let (value, source) = match how {
                Expect::Macro(h, name) => (self.macro_value(h, name)?, format!("{name} ({h})")),
                Expect::Value(v, why) => (i64::from(v), why.to_string()),
            };
            let bits = 8 * u32::from(f.field.size);
            self.require(
                (1..=4).contains(&f.field.size) && value >= 0 && value < 1i64 << bits.min(31),
                || format!("{IS}.{path}: default {value} does not fit its {bits} bits"),
            )?;
            if let Some(n) = notes.interp.last_mut() {
                n.push_str(&format!(" = {source}"));
            }
            out.push((f, value as u32));
        }
        Ok(leak(out))
    }

    fn runtime(
        &self,
        head: &HeadLayout,
        str_: &mut StrLayout,
        int: &IntLayout,
        frozen: &FrozenLayout,
        notes: &mut Notes,
    ) -> Result<RuntimeLayout> {
        const RT: &str = "_PyRuntimeState";
        let t = &self.life;
        let vars = self.dw(t.variables_of_type(RT))?;
        let [symbol] = vars.as_slice() else {
            return Err(self.err(format!(
                "pylifecycle.o: expected one _PyRuntimeState variable, found {vars:?}"
            )));
        };
        let init = self.dw(self.life_data.variable(symbol))?;
        self.require(init.bytes.len() as u64 == self.dw(t.sizeof(RT))?, || {
            format!("{symbol}'s symbol and its DWARF type differ in size")
        })?;
        let s_ = self.singletons_path(t, RT)?;
        notes.singletons.clone_from(&s_);
        let arr = |path: &str| self.dw(t.array(RT, &format!("{s_}.{path}")));
        // A build that deep-freezes (its `struct _frozen` has `get_code`)
        // says through gcc's object which shared arrays CPython's generator
        // points at; without a generator (3.13+), each one-character or
        // one-byte constant is the runtime's, as unmarshalling gives it.
        let refs = match frozen.get_code {
            Some(_) => Some(self.gcc_refs(symbol)?),
            None => None,
        };
        notes.shared_by_generator = refs.is_some();
        // An array of shared objects, if gcc's object points into it.
        let used = |path: &str, n: u64| -> Result<Option<(u32, u32)>> {
            let a = arr(path)?;
            self.require(a.count == Some(n), || {
                format!("{s_}.{path} has not {n} elements")
            })?;
            if let Some(refs) = &refs {
                if refs
                    .range(a.offset..a.offset + a.stride * n)
                    .next()
                    .is_none()
                {
                    return Ok(None);
                }
            }
            Ok(Some((
                self.u32_(a.offset, path)?,
                self.u32_(a.stride, path)?,
            )))
        };

        // Small ints: the array spans -_PY_NSMALLNEGINTS .. _PY_NSMALLPOSINTS - 1.
        const GLOB: &str = "internal/pycore_global_objects.h";
        let neg = self.macro_value(GLOB, "_PY_NSMALLNEGINTS")?;
        let pos = self.macro_value(GLOB, "_PY_NSMALLPOSINTS")? - 1;
        self.require(neg >= 0 && pos >= 0 && neg + pos < 1 << 20, || {
            format!("_PY_NSMALLNEGINTS {neg}, _PY_NSMALLPOSINTS {}", pos + 1)
        })?;
        let small = arr("small_ints")?;
        self.require(small.count == Some((neg + pos + 1) as u64), || {
            format!(
                "small_ints has {:?} elements, the headers say {}",
                small.count,
                neg + pos + 1
            )
        })?;
        let refcnt = rd(
            &init.bytes,
            small.offset + u64::from(head.refcnt.off),
            head.refcnt.size,
        );
        self.require(refcnt == head.static_refcnt, || {
            format!(
                "the headers give static objects refcount {}, {symbol}'s small ints have {refcnt}",
                head.static_refcnt
            )
        })?;
        // The int encoding the table states reads back every small int.
        for i in 0..=(neg + pos) as u64 {
            let base = small.offset + i * small.stride;
            let digit = rd(&init.bytes, base + u64::from(int.digits), int.digit_size);
            let val = i as i64 - neg;
            let (sign, n) = match &int.size {
                IntSize::LvTag(f) => {
                    let tag = rd(&init.bytes, base + u64::from(f.off), f.size);
                    let sign = match tag & 3 {
                        0 => 1,
                        1 => 0,
                        2 => -1,
                        _ => 2,
                    };
                    (sign, tag >> 3)
                }
                IntSize::SignedObSize => {
                    let v = rd(&init.bytes, base + u64::from(head.size.off), head.size.size) as i64;
                    (v.signum(), v.unsigned_abs())
                }
            };
            self.require(
                sign == val.signum() && n == u64::from(val != 0) && digit == val.unsigned_abs(),
                || format!("{symbol}: small_ints[{i}] does not decode as {val}"),
            )?;
        }

        // Global strings, and the state bits of a static string.
        let (strings, state) = self.global_strings(t, &init, &s_, str_)?;
        str_.static_bits = self.static_bits(str_, state, notes)?;

        // Per-architecture shift: pthread_mutex_t members before the singletons.
        let top = s_.split('.').next().unwrap_or(&s_);
        let holder = self.dw(t.member(RT, top))?;
        let (arch_shift, mutexes) = self.mutexes_before(t, RT, holder.offset)?;
        notes.mutexes = mutexes;
        Ok(RuntimeLayout {
            symbol: leak_str(symbol),
            small_ints: self.u32_(small.offset, "small_ints")?,
            small_int_stride: self.u32_(small.stride, "small_ints")?,
            small_int_neg: neg,
            small_int_pos: pos,
            bytes_empty: self.offset(t, RT, &format!("{s_}.bytes_empty"))?,
            bytes_characters: used("bytes_characters", 256)?,
            tuple_empty: self.offset(t, RT, &format!("{s_}.tuple_empty"))?,
            ascii_chars: used("strings.ascii", 128)?,
            latin1_chars: used("strings.latin1", 128)?,
            global_strings: leak(strings),
            arch_shift,
            known_on: &[Os::Linux],
        })
    }

    /// Path of the member holding `singletons` inside `ty` (e.g.
    /// `static_objects.singletons`).
    fn singletons_path(&self, t: &Types, ty: &str) -> Result<String> {
        for m in self.dw(t.struct_layout(ty))? {
            if m.name.is_empty() || m.bits.is_some() {
                continue;
            }
            if t.member(ty, &format!("{}.singletons", m.name)).is_ok() {
                return Ok(format!("{}.singletons", m.name));
            }
        }
        Err(self.err(format!(
            "{}: no member of {ty} holds `singletons`",
            t.object
        )))
    }

    /// The `_Py_global_strings` members (`literals`, `identifiers`) as
    /// (value, offset), sorted by value; and the `state` word they share.
    fn global_strings(
        &self,
        t: &Types,
        init: &Variable,
        s_: &str,
        s: &StrLayout,
    ) -> Result<(Vec<(&'static str, u32)>, u64)> {
        const RT: &str = "_PyRuntimeState";
        let mut out = Vec::new();
        let mut states = std::collections::BTreeSet::new();
        for group in ["literals", "identifiers"] {
            let path = format!("{s_}.strings.{group}");
            for m in self.dw(t.members_at(RT, &path))? {
                let data = self
                    .dw(t.members_in(&m))?
                    .into_iter()
                    .find(|d| d.name == "_data")
                    .ok_or_else(|| self.err(format!("{path}.{}: no _data", m.name)))?;
                let off = m.offset;
                let len = rd(&init.bytes, off + u64::from(s.length.off), s.length.size);
                let start = (off + u64::from(s.ascii_size)) as usize;
                let b = (start.checked_add(len as usize + 1))
                    .filter(|_| len < 1 << 20)
                    .and_then(|end| init.bytes.get(start..end));
                let value = b
                    .filter(|b| b[len as usize] == 0 && data.size == len + 1)
                    .and_then(|b| std::str::from_utf8(&b[..len as usize]).ok())
                    .ok_or_else(|| {
                        self.err(format!(
                            "{path}.{}: not a NUL-terminated ASCII string",
                            m.name
                        ))
                    })?;
                states.insert(rd(&init.bytes, off + u64::from(s.state.off), s.state.size));
                out.push((leak_str(value), self.u32_(off, &m.name)?));
            }
        }
        self.require(out.len() > 100, || {
            format!("only {} global strings", out.len())
        })?;
        out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        self.require(out.windows(2).all(|w| w[0].0 != w[1].0), || {
            "two global strings with the same value".into()
        })?;
        let [state] = states.into_iter().collect::<Vec<_>>()[..] else {
            return Err(self.err("the global strings differ in their state bits"));
        };
        Ok((out, state))
    }

    /// The `state` bits of a static ASCII string beyond kind 1, compact and
    /// ascii: each must be a one-bit field of `state`.
    fn static_bits(&self, s: &StrLayout, state: u64, notes: &mut Notes) -> Result<u32> {
        let base = (1 << s.kind_shift) | (1 << s.compact_bit) | (1 << s.ascii_bit);
        self.require(state & base == base, || {
            format!("a global string's state {state:#x} is not compact ASCII")
        })?;
        let rest = state & !base;
        let c = &self.code;
        for m in self.dw(c.members_at("PyASCIIObject", "state"))? {
            if let Some(b) = m.bits {
                let mask = (1u64.checked_shl(b.size as u32).unwrap_or(0).wrapping_sub(1))
                    .checked_shl(b.offset as u32)
                    .unwrap_or(0);
                if rest & mask != 0 {
                    self.require(b.size == 1, || {
                        format!("static strings set state.{}", m.name)
                    })?;
                    notes.static_bits.push(m.name.clone());
                }
            }
        }
        self.require(!notes.static_bits.is_empty() || rest == 0, || {
            format!("state bits {rest:#x} of no named field")
        })?;
        self.u32_(rest, "state")
    }

    /// Type objects by the Python name in their `tp_name`, and the
    /// singletons (None, True, False, Ellipsis) whose `ob_type` they are.
    fn symbols(
        &self,
        head: &HeadLayout,
        int: &IntLayout,
        rt: &RuntimeLayout,
        slices: bool,
    ) -> Result<Symbols> {
        let c = &self.code;
        let type_size = self.dw(c.sizeof("PyTypeObject"))?;
        let tp_name = self.dw(c.member_path_offset("PyTypeObject", "tp_name"))?;
        let names = &self.py.type_names;
        let [code, bytes, str_, tuple, int_, float, complex, none_t, bool_t, ellipsis_t, slice_t] =
            names.as_slice()
        else {
            return Err(self.err(format!(
                "unexpected type names from the interpreter: {names:?}"
            )));
        };
        // tp_name -> [(symbol, member data)]
        let mut types: HashMap<String, Vec<(String, usize)>> = HashMap::new();
        let mut members: Vec<ObjectData> = Vec::new();
        for name in self.dw(self.ar.member_names())? {
            if !name.ends_with(".o") {
                continue;
            }
            let bytes = self.dw(self.ar.member(&name))?;
            let obj =
                object::File::parse(bytes.bytes()).map_err(|e| self.err(format!("{name}: {e}")))?;
            use object::{Object, ObjectSymbol};
            let any = obj.symbols().any(|s| {
                s.is_global()
                    && s.is_definition()
                    && s.kind() == object::SymbolKind::Data
                    && s.size() == type_size
            });
            if !any {
                continue;
            }
            let d = self.dw(ObjectData::parse(&name, bytes.bytes()))?;
            for s in &d.syms {
                if !s.global || s.undefined || s.size != type_size {
                    continue;
                }
                let Some(sec) = s.section.as_deref() else {
                    continue;
                };
                let n = d
                    .reloc(sec, s.address + tp_name)
                    .and_then(|(t, a)| d.place(t, *a))
                    .and_then(|(ts, to)| d.c_string(&ts, to));
                if let Some(n) = n {
                    types
                        .entry(n)
                        .or_default()
                        .push((s.name.clone(), members.len()));
                }
            }
            members.push(d);
        }
        let ty = |n: &str| -> Result<(String, usize)> {
            match types.get(n).map(Vec::as_slice) {
                Some([one]) => Ok(one.clone()),
                found => Err(self.err(format!(
                    "expected one global type object with tp_name {n:?}, found {found:?}"
                ))),
            }
        };
        // Global objects of the member defining type `n` whose ob_type is it.
        let instances = |n: &str| -> Result<Vec<(String, Vec<u8>)>> {
            let (tsym, mi) = ty(n)?;
            let d = &members[mi];
            let at = d.place(&tsym, 0);
            let mut out = Vec::new();
            for s in &d.syms {
                let Some(sec) = s.section.as_deref() else {
                    continue;
                };
                if s.global && !s.undefined && s.size > 0 && !sec.starts_with(".text") {
                    let r = d.reloc(sec, s.address + u64::from(head.type_.off));
                    if r.and_then(|(t, a)| d.place(t, *a)) == at {
                        out.push((s.name.clone(), self.dw(d.variable(&s.name))?.bytes));
                    }
                }
            }
            out.sort();
            Ok(out)
        };
        let one = |n: &str| -> Result<&'static str> {
            match instances(n)?.as_slice() {
                [(s, _)] => Ok(leak_str(s)),
                v => Err(self.err(format!(
                    "expected one {n} object, found {:?}",
                    v.iter().map(|x| &x.0).collect::<Vec<_>>()
                ))),
            }
        };
        let bools = instances(bool_t)?;
        let truth = |want: u64| -> Result<&'static str> {
            let hits: Vec<&str> = bools
                .iter()
                .filter(|(_, b)| {
                    b.len() >= (int.digits + u32::from(int.digit_size)) as usize
                        && rd(b, u64::from(int.digits), int.digit_size) == want
                })
                .map(|(s, _)| s.as_str())
                .collect();
            match hits.as_slice() {
                [s] => Ok(leak_str(s)),
                v => Err(self.err(format!(
                    "expected one bool object of value {want}, found {v:?}"
                ))),
            }
        };
        let sym = |n: &str| ty(n).map(|(s, _)| leak_str(&s));
        let out = Symbols {
            code_type: sym(code)?,
            bytes_type: sym(bytes)?,
            str_type: sym(str_)?,
            tuple_type: sym(tuple)?,
            int_type: sym(int_)?,
            float_type: sym(float)?,
            complex_type: sym(complex)?,
            none: one(none_t)?,
            true_: truth(1)?,
            false_: truth(0)?,
            ellipsis: one(ellipsis_t)?,
            slice_type: if slices { Some(sym(slice_t)?) } else { None },
        };
        // The runtime's own shared objects agree.
        let init = self.dw(self.life_data.variable(rt.symbol))?;
        for (what, off, want) in [
            ("small_ints[0]", rt.small_ints, out.int_type),
            ("bytes_empty", rt.bytes_empty, out.bytes_type),
            ("tuple_empty", rt.tuple_empty, out.tuple_type),
            ("a global string", rt.global_strings[0].1, out.str_type),
        ] {
            let got = init.reloc_at(u64::from(off) + u64::from(head.type_.off));
            self.require(got == Some(want), || {
                format!("{}'s {what} has ob_type {got:?}, not {want}", rt.symbol)
            })?;
        }
        Ok(out)
    }

    /// `struct _frozen` and the module tables of frozen.o.
    fn frozen(&self) -> Result<FrozenLayout> {
        const FR: &str = "struct _frozen";
        let t = &self.frozen;
        let d = &self.frozen_data;
        let fl = |m: &str| self.field(t, FR, m);
        let (name, code, size) = (fl("name")?, fl("code")?, fl("size")?);
        // 3.13 dropped the accessor: every entry's code is its marshal bytes.
        let get_code = self.opt_field(t, FR, "get_code")?;
        let alias = self.dw(t.struct_layout("struct _module_alias"))?;
        self.require(
            alias
                .iter()
                .map(|m| (m.name.as_str(), m.offset, m.size))
                .collect::<Vec<_>>()
                == [("name", 0, 8), ("orig", 8, 8)],
            || "struct _module_alias is not {name, orig}".into(),
        )?;
        let aliases = self.dw(t.variables_of_type("*struct _module_alias"))?;
        let [aliases] = aliases.as_slice() else {
            return Err(self.err(format!(
                "frozen.o: expected one alias table pointer, found {aliases:?}"
            )));
        };
        // The table pointers in source order; the one left NULL is the
        // embedder's (PyImport_FrozenModules).
        let mut tables = Vec::new();
        let mut custom = Vec::new();
        let mut deep = Vec::new();
        for v in self.dw(t.variables_of_type("*struct _frozen"))? {
            let s = self.dw(d.variable(&v))?;
            let Some((target, addend)) = s.relocs.get(&0) else {
                self.require(s.bytes.iter().all(|&b| b == 0), || {
                    format!("{v} is not NULL")
                })?;
                custom.push(v);
                continue;
            };
            // Walk the entries up to the NULL name: deep-frozen ones (with a
            // get_code, or all without the member) keep their marshal bytes
            // or not.
            let (sec, mut e) = d
                .place(target, *addend)
                .ok_or_else(|| self.err(format!("frozen.o: {v} does not point into frozen.o")))?;
            let data = d
                .sections
                .get(&sec)
                .ok_or_else(|| self.err(format!("frozen.o: {v} points into {sec}")))?;
            while d.reloc(&sec, e + u64::from(name.off)).is_some() {
                let deep_frozen = match get_code {
                    Some(g) => d.reloc(&sec, e + u64::from(g.off)).is_some(),
                    None => true,
                };
                if deep_frozen {
                    let marshal = d.reloc(&sec, e + u64::from(code.off)).is_some();
                    let sz = rd(data, e + u64::from(size.off), size.size);
                    deep.push((marshal, marshal == (sz != 0)));
                }
                e += u64::from(self.sizeof(t, FR)?);
                self.require(e < data.len() as u64, || format!("{v}: no sentinel entry"))?;
            }
            tables.push(leak_str(&v));
        }
        let [custom] = custom.as_slice() else {
            return Err(self.err(format!(
                "frozen.o: expected one NULL table pointer, found {custom:?}"
            )));
        };
        self.require(tables.len() == 3, || {
            format!("frozen.o: {} module tables, not 3", tables.len())
        })?;
        self.require(deep.len() > 20 && deep.iter().all(|x| x.1), || {
            "frozen.o: deep-frozen entries with inconsistent code/size".into()
        })?;
        let keeps = deep[0].0;
        self.require(deep.iter().all(|x| x.0 == keeps), || {
            "frozen.o: some deep-frozen entries keep their marshal bytes, some not".into()
        })?;
        Ok(FrozenLayout {
            entry_size: self.sizeof(t, FR)?,
            name,
            code,
            size,
            is_package: fl("is_package")?,
            get_code,
            tables: leak(tables),
            aliases: leak_str(aliases),
            custom: leak_str(custom),
            keeps_marshal: keeps,
        })
    }

    /// Every shared object the table lists reads back, through the table,
    /// as the object it stands for: its value, type, reference count and
    /// (strings) hash and `state`.
    fn verify_shared(&self, l: &Layout) -> Result<()> {
        let (rt, h, s) = (&l.runtime, &l.head, &l.str_);
        let init = self.dw(self.life_data.variable(rt.symbol))?;
        let buf = &init.bytes;
        let fl = |base: u64, f: Field| rd(buf, base + u64::from(f.off), f.size);
        // Type and refcount of the object at `base`, then what else must hold.
        let object = |what: String, base: u64, ty: &str, ok: bool| {
            let t = init.reloc_at(base + u64::from(h.type_.off));
            let ok = ok && t == Some(ty) && fl(base, h.refcnt) == h.static_refcnt;
            self.require(ok, || format!("{}'s {what} does not read back", rt.symbol))
        };
        let mut ints = vec![];
        for i in 0..=(rt.small_int_neg + rt.small_int_pos) as u64 {
            ints.push((
                i,
                u64::from(rt.small_ints) + i * u64::from(rt.small_int_stride),
            ));
        }
        for (i, base) in ints {
            object(format!("small_ints[{i}]"), base, l.sym.int_type, true)?;
        }
        let bytes = |base: u64, n: u64, v: u64| {
            fl(base, h.size) == n
                && fl(base, l.bytes.shash) == u64::MAX
                && rd(buf, base + u64::from(l.bytes.sval), n as u8 + 1) == v
        };
        let be = u64::from(rt.bytes_empty);
        object("bytes_empty".into(), be, l.sym.bytes_type, bytes(be, 0, 0))?;
        let te = u64::from(rt.tuple_empty);
        let empty = fl(te, h.size) == 0;
        object("tuple_empty".into(), te, l.sym.tuple_type, empty)?;
        if let Some((off, stride)) = rt.bytes_characters {
            for c in 0..256 {
                let base = u64::from(off) + c * u64::from(stride);
                let ok = bytes(base, 1, c);
                object(format!("bytes_characters[{c}]"), base, l.sym.bytes_type, ok)?;
            }
        }
        // A static string: length, hash -1, data, NUL, state.
        let string = |base: u64, value: &[u32], ascii: bool| {
            let state = (1 << s.kind_shift)
                | (1 << s.compact_bit)
                | (u64::from(ascii) << s.ascii_bit)
                | u64::from(s.static_bits);
            let data = base + u64::from(if ascii { s.ascii_size } else { s.compact_size });
            fl(base, s.length) == value.len() as u64
                && fl(base, s.hash) == u64::MAX
                && fl(base, s.state) == state
                && (0..=value.len()).all(|i| {
                    rd(buf, data + i as u64, 1) == value.get(i).map_or(0, |&c| u64::from(c))
                })
        };
        for (arr, first) in [(rt.ascii_chars, 0), (rt.latin1_chars, 128)] {
            let Some((off, stride)) = arr else { continue };
            for i in 0..128 {
                let (base, cp) = (u64::from(off) + i * u64::from(stride), first + i as u32);
                let ok = string(base, &[cp], cp < 128);
                object(format!("U+{cp:04X}"), base, l.sym.str_type, ok)?;
            }
        }
        for (v, off) in rt.global_strings {
            let value: Vec<u32> = v.bytes().map(u32::from).collect();
            let ok = string(u64::from(*off), &value, true);
            object(
                format!("global string {v:?}"),
                u64::from(*off),
                l.sym.str_type,
                ok,
            )?;
        }
        Ok(())
    }

    fn pyc_magic(&self) -> Result<u16> {
        let m = &self.py.magic;
        if m.len() != 4 || m[2..] != *b"\r\n" {
            return Err(self.err(format!(
                "the interpreter's MAGIC_NUMBER {m:02x?} is not 2 bytes + CRLF"
            )));
        }
        Ok(u16::from_le_bytes([m[0], m[1]]))
    }
}

/// A little-endian integer of `size` bytes at `off` (0 past the end).
fn rd(buf: &[u8], off: u64, size: u8) -> u64 {
    let mut b = [0u8; 8];
    let n = usize::from(size.min(8));
    if let Some(s) = buf.get(off as usize..off as usize + n) {
        b[..n].copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}
