//! Per-CPython-version layout facts: field offsets and sizes, flag bits,
//! opcode numbers, the runtime's shared objects and the symbols the frozen
//! object must reference or define.
//!
//! These are data, one table per version (`py312.rs`, ...), written by
//! `pyfreeze-obj gen-layout` ([`crate::genlayout`]) from a libpython
//! archive with debug info, its headers and its interpreter;
//! `tests/layout_dwarf.rs` checks that the committed tables are what the
//! generator writes for pyenv's builds. Code elsewhere reads the tables; it
//! never asks "which version is this?".

mod py311;
mod py312;
mod py313;
/// Debian sid's 3.14.10 (x86_64 Linux); no version contract uses it yet.
pub mod py314;
/// Debian sid's 3.15.2 (x86_64 Linux); no version contract uses it yet.
pub mod py315;

pub use py311::LAYOUT as PY311;
pub use py312::LAYOUT as PY312;
pub use py313::LAYOUT as PY313;
pub use py314::LAYOUT as PY314;
pub use py315::LAYOUT as PY315;

/// A field of a C struct: byte offset and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub off: u32,
    pub size: u8,
}

pub const fn f(off: u32, size: u8) -> Field {
    Field { off, size }
}

/// An [`ArchField`].
pub const fn af(field: Field, shift: &'static [(crate::arch::Arch, u32)]) -> ArchField {
    ArchField { field, shift }
}

/// A [`Release::Block`].
pub const fn block(decref: &'static [u32], free: &'static [u32]) -> Release {
    Release::Block { decref, free }
}

/// `PyObject` / `PyVarObject` header.
#[derive(Clone, Debug)]
pub struct HeadLayout {
    pub refcnt: Field,
    pub type_: Field,
    /// `ob_size` of a `PyVarObject`.
    pub size: Field,
    /// What every static object's `refcnt` word holds: its reference count
    /// and (3.14+) the `ob_flags` that share the word (statically
    /// allocated, immortal).
    pub static_refcnt: u64,
    /// Static objects are immortal: accessors hand them out without
    /// touching the reference count.
    pub immortal: bool,
}

/// `PyCodeObject`.
#[derive(Clone, Debug)]
pub struct CodeLayout {
    /// Offset of `co_code_adaptive`, where the bytecode starts.
    pub code_adaptive: u32,
    pub consts: Field,
    pub names: Field,
    pub exceptiontable: Field,
    pub flags: Field,
    pub argcount: Field,
    pub posonlyargcount: Field,
    pub kwonlyargcount: Field,
    pub stacksize: Field,
    pub firstlineno: Field,
    pub nlocalsplus: Field,
    pub nlocals: Field,
    pub ncellvars: Field,
    pub nfreevars: Field,
    pub localsplusnames: Field,
    pub localspluskinds: Field,
    pub filename: Field,
    pub name: Field,
    pub qualname: Field,
    pub linetable: Field,
    /// `co_framesize` = stacksize + nlocalsplus + `frame_specials_size`.
    pub framesize: Option<Field>,
    pub frame_specials_size: u32,
    /// `co_version`: numbered from 1 in generation order.
    pub version: Option<Field>,
    /// `_co_firsttraceable`: index (in code units) of the first RESUME
    /// that starts tracing ([`CodeLayout::first_traceable`]).
    pub firsttraceable: Option<Field>,
    /// RESUMEs that do not start tracing: those whose `oparg & mask ==
    /// value` (3.15: a generator expression's first RESUME,
    /// `RESUME_AT_GEN_EXPR_START` under `RESUME_OPARG_LOCATION_MASK`).
    pub firsttraceable_skip: Option<(u8, u8)>,
    /// Number of plain cell variables (cells that are not arguments).
    pub nplaincellvars: Option<Field>,
    /// Fields every code object gets a fixed value in, at emit time and
    /// again when the code is finalized (3.11 `co_warmup`; 3.14+
    /// `_co_unique_id`, which only free-threaded builds use).
    pub fixed: &'static [(Field, u64)],
    /// Pointers the runtime fills in while the code runs (cached objects,
    /// extra data, weak references, monitoring data). While all are NULL,
    /// finalizing a code object amounts to restoring its bytecode and the
    /// `fixed` fields; otherwise the runtime's per-code fini must run (or,
    /// without one, each is released as `release` says).
    pub runtime_state: &'static [Field],
    /// How each of `runtime_state` is released (parallel to it), as the
    /// runtime's code dealloc does.
    pub release: &'static [Release],
    /// Members that are not pointers and that the runtime changes from 0
    /// while the code runs (3.12+ `_co_instrumentation_version`).
    pub runtime_scalars: &'static [Field],
    /// What the runtime's code constructor writes into the bytecode's cache
    /// entries (3.13+), where the build's counters can be written at emit
    /// time.
    pub quicken: Option<Quicken>,
    pub opcode_resume: u8,
    pub co_fast_local: u8,
    pub co_fast_cell: u8,
    pub co_fast_free: u8,
}

impl CodeLayout {
    /// What the runtime's constructor stores in `_co_firsttraceable` for
    /// bytecode `code` (2-byte units): the index of the first RESUME not
    /// skipped by `firsttraceable_skip`, 0 if none.
    pub fn first_traceable(&self, code: &[u8]) -> usize {
        code.chunks(2)
            .position(|u| {
                u[0] == self.opcode_resume
                    && self
                        .firsttraceable_skip
                        .is_none_or(|(mask, v)| u.get(1).is_none_or(|a| a & mask != v))
            })
            .unwrap_or(0)
    }
}

/// How the runtime releases a pointer member of a code object it filled
/// in (what its code dealloc does with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The object's weak reference list (`tp_weaklistoffset`): the
    /// runtime's weak reference hook clears it.
    WeakRefs,
    /// An object reference: dropped.
    Object,
    /// A heap block (`PyMem_Malloc`): each object pointer at a `decref`
    /// offset dropped, each heap pointer at a `free` offset freed, then the
    /// block itself freed.
    Block {
        decref: &'static [u32],
        free: &'static [u32],
    },
    /// Filled in only by machinery this build lacks (3.13's tier-2
    /// executors): always NULL.
    Unused,
    /// Released by this runtime function, called with the code object
    /// while the member is not NULL; it leaves the member NULL (3.14+
    /// tier-2 builds: `_PyCode_Clear_Executors` detaches each executor and
    /// frees the array, as the code dealloc does).
    Call(&'static str),
}

/// `_PyCode_Quicken`'s writes, as data: for each instruction with cache
/// entries (after deoptimizing its opcode), the first cache entry gets the
/// opcode's counter, or `warmup`.
#[derive(Clone, Debug)]
pub struct Quicken {
    /// `_PyOpcode_Caches`: (opcode, number of cache entries), nonzero ones.
    pub caches: &'static [(u8, u8)],
    /// `_PyOpcode_Deopt`: (opcode, base opcode) where they differ.
    pub deopt: &'static [(u8, u8)],
    /// (opcode, first cache entry) for opcodes with their own initial value.
    pub counters: &'static [(u8, u16)],
    /// The first cache entry of every other instruction with caches.
    pub warmup: u16,
    /// Opargs the constructor rewrites (3.15 `GET_ITER`): (opcode,
    /// `co_flags` mask, new oparg when `co_flags & mask != 0`, new oparg
    /// otherwise), applied to a nonzero oparg.
    pub opargs: &'static [(u8, u32, u8, u8)],
}

impl Quicken {
    /// `code` (raw bytecode, 2-byte units, of a code object with
    /// `co_flags`) with the cache entries and opargs the runtime's
    /// constructor writes.
    pub fn apply(&self, code: &mut [u8], co_flags: u32) {
        let mut caches = [0u8; 256];
        let mut deopt: [u8; 256] = std::array::from_fn(|i| i as u8);
        for &(op, n) in self.caches {
            caches[op as usize] = n;
        }
        for &(op, base) in self.deopt {
            deopt[op as usize] = base;
        }
        let units = code.len() / 2;
        let mut i = 0;
        while i < units {
            let op = deopt[code[2 * i] as usize];
            if code[2 * i + 1] != 0 {
                if let Some(&(_, mask, yes, no)) = self.opargs.iter().find(|r| r.0 == op) {
                    code[2 * i + 1] = if co_flags & mask != 0 { yes } else { no };
                }
            }
            let n = caches[op as usize] as usize;
            if n > 0 && i + 1 < units {
                let v = (self.counters.iter())
                    .find(|c| c.0 == op)
                    .map_or(self.warmup, |c| c.1);
                code[2 * i + 2..2 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
            i += 1 + n;
        }
    }
}

/// A member whose offset grows on some architectures (each glibc
/// `pthread_mutex_t` before it is larger on aarch64 than on x86_64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchField {
    pub field: Field,
    pub shift: &'static [(crate::arch::Arch, u32)],
}

impl ArchField {
    /// The member on `arch`.
    pub fn on(&self, arch: crate::arch::Arch) -> Field {
        let grow = (self.shift.iter())
            .find(|(a, _)| *a == arch)
            .map_or(0, |&(_, s)| s);
        Field {
            off: self.field.off + grow,
            size: self.field.size,
        }
    }
}

/// Where the runtime keeps what hooks of the object read: the main
/// interpreter, its counters and configuration.
#[derive(Clone, Debug)]
pub struct InterpLayout {
    /// The main interpreter's `PyInterpreterState` inside the runtime
    /// variable (`_PyRuntime._main_interpreter`; size 0: a struct).
    pub main: ArchField,
    /// `PyThreadState.interp`.
    pub tstate_interp: ArchField,
    /// `PyInterpreterState.func_state.next_version`: the next code
    /// object's `co_version` (3.12+).
    pub next_func_version: Option<ArchField>,
    /// The value `next_func_version` starts at in the runtime's static
    /// initializer: the first valid `co_version` (1 in 3.12 and 3.13, 2
    /// from 3.14 on: `FUNC_VERSION_FIRST_VALID`); 0 without a counter.
    pub first_code_version: u32,
    /// `int` members of `PyInterpreterState` that are nonzero when code
    /// objects are built as marshal data says (`config.code_debug_ranges`:
    /// without it, the constructor drops column positions).
    pub requires: &'static [ArchField],
    /// Members of `PyInterpreterState` that hold these values when the
    /// runtime's code constructor quickens bytecode as the emitted
    /// bytecode is and leaves code objects as the teardown expects them
    /// (the tier-2 optimizer off: `jit`; 3.15's `opt_config`, which
    /// environment variables change).
    pub expects: &'static [(ArchField, u32)],
    /// `PyInterpreterState.cached_objects.interned_strings`: the
    /// interpreter's dict of interned strings (3.13+).
    pub interned_dict: Option<ArchField>,
}

/// `PyASCIIObject` / `PyCompactUnicodeObject`.
#[derive(Clone, Debug)]
pub struct StrLayout {
    pub length: Field,
    pub hash: Field,
    pub state: Field,
    /// Size of `PyASCIIObject` (where an ASCII string's data starts).
    pub ascii_size: u32,
    /// Size of `PyCompactUnicodeObject` (where other strings' data starts).
    pub compact_size: u32,
    pub utf8_length: Field,
    pub utf8: Field,
    /// Bit positions inside `state`.
    pub kind_shift: u32,
    pub compact_bit: u32,
    pub ascii_bit: u32,
    /// Further state bits every static string gets
    /// (3.12 `statically_allocated`, 3.11 `ready`).
    pub static_bits: u32,
    /// The bits of `state` that say whether and how the string is
    /// interned (`state.interned`).
    pub interned_mask: u32,
    /// 3.11's `wstr` pointer and `wstr_length` (see
    /// [`crate::version::Precompute::wstr`]).
    pub wstr: Option<(Field, Field)>,
}

/// `PyBytesObject`.
#[derive(Clone, Debug)]
pub struct BytesLayout {
    pub shash: Field,
    pub sval: u32,
}

/// How an int's sign and digit count are stored.
#[derive(Clone, Debug)]
pub enum IntSize {
    /// 3.12+: `lv_tag` = ndigits << 3 | (0 positive, 1 zero, 2 negative).
    /// Bit 2 is never set for our ints: 3.14+ marks the runtime's own
    /// small ints with it (`_PyLong_IsSmallInt`), which ours are not.
    LvTag(Field),
    /// 3.11: `ob_size` = sign * ndigits.
    SignedObSize,
}

/// `PyLongObject`.
#[derive(Clone, Debug)]
pub struct IntLayout {
    pub size: IntSize,
    pub digits: u32,
    pub digit_size: u8,
    /// Smallest size the struct takes (one digit even for zero).
    pub min_size: u32,
}

/// Floats and complex numbers: where the doubles go.
#[derive(Clone, Debug)]
pub struct FloatLayout {
    pub fval: u32,
    pub float_size: u32,
    pub cval: u32,
    pub complex_size: u32,
}

/// `PyTupleObject`, preceded by a GC header.
#[derive(Clone, Debug)]
pub struct TupleLayout {
    pub gc_head_size: u32,
    pub items: u32,
    /// 3.14+ `ob_hash`, the cached hash (-1: not computed yet).
    pub hash: Option<Field>,
}

/// `PySliceObject` (marshal version 5+ has slice constants).
#[derive(Clone, Debug)]
pub struct SliceLayout {
    pub size: u32,
    pub start: Field,
    pub stop: Field,
    pub step: Field,
}

/// Objects the runtime shares, as offsets inside `_PyRuntime`.
#[derive(Clone, Debug)]
pub struct RuntimeLayout {
    pub symbol: &'static str,
    /// `_PyLong_SMALL_INTS[0]`, which is the int `-small_int_neg`.
    pub small_ints: u32,
    pub small_int_stride: u32,
    pub small_int_neg: i64,
    pub small_int_pos: i64,
    pub bytes_empty: u32,
    /// One-byte bytes objects (`bytes_characters[256]`), if the generator
    /// uses them: (offset of element 0, stride).
    pub bytes_characters: Option<(u32, u32)>,
    pub tuple_empty: u32,
    /// One-character strings U+0000..U+007F (`strings.ascii[128]`).
    pub ascii_chars: Option<(u32, u32)>,
    /// One-character strings U+0080..U+00FF (`strings.latin1[128]`).
    pub latin1_chars: Option<(u32, u32)>,
    /// The global string table (`_Py_STR`, `_Py_ID`): value -> offset,
    /// sorted by value.
    pub global_strings: &'static [(&'static str, u32)],
    /// Architectures on which every offset above is larger by this much
    /// (3.11: members before the shared objects embed a pthread mutex,
    /// 40 bytes on x86_64 Linux and 48 on aarch64 Linux, twice).
    pub arch_shift: &'static [(crate::arch::Arch, u32)],
    /// The platforms whose builds these offsets are known (and tested) for:
    /// members before the shared objects (NSIG, pthread types, ...) differ
    /// in size elsewhere.
    pub known_on: &'static [crate::target::Os],
}

/// Symbols of the runtime's types and singletons that the frozen objects
/// point at.
#[derive(Clone, Debug)]
pub struct Symbols {
    pub code_type: &'static str,
    pub bytes_type: &'static str,
    pub str_type: &'static str,
    pub tuple_type: &'static str,
    pub int_type: &'static str,
    pub float_type: &'static str,
    pub complex_type: &'static str,
    pub none: &'static str,
    pub true_: &'static str,
    pub false_: &'static str,
    pub ellipsis: &'static str,
    /// `slice` (where marshal data can hold slices: 3.14+).
    pub slice_type: Option<&'static str>,
}

/// `struct _frozen`, an entry of the module tables in `frozen.o`.
#[derive(Clone, Debug)]
pub struct FrozenLayout {
    pub entry_size: u32,
    pub name: Field,
    pub code: Field,
    pub size: Field,
    pub is_package: Field,
    /// The accessor of a deep-frozen module (3.11, 3.12; 3.13 has none).
    pub get_code: Option<Field>,
    /// Global pointers to the bootstrap, stdlib and test tables, in order.
    pub tables: &'static [&'static str],
    /// Global pointer to the alias table: {alias name, original name} pairs.
    pub aliases: &'static str,
    /// The embedder's custom table pointer (NULL in CPython's own build).
    pub custom: &'static str,
    /// Entries of deep-frozen modules keep their marshal bytes (3.12) or
    /// not (3.11: code NULL, size 0).
    pub keeps_marshal: bool,
}

/// Everything about one CPython version (for 64-bit targets).
#[derive(Clone, Debug)]
pub struct Layout {
    pub version: (u8, u8),
    /// The release the table was generated from (`PY_VERSION`).
    pub release: &'static str,
    /// The `.pyc` magic number (first two bytes, little endian).
    pub pyc_magic: u16,
    pub ptr_size: u8,
    pub head: HeadLayout,
    pub code: CodeLayout,
    pub str_: StrLayout,
    pub bytes: BytesLayout,
    pub int: IntLayout,
    pub float: FloatLayout,
    pub tuple: TupleLayout,
    /// Slice constants (marshal version 5+: 3.14+), else `None`.
    pub slice: Option<SliceLayout>,
    pub runtime: RuntimeLayout,
    pub sym: Symbols,
    pub frozen: FrozenLayout,
    /// Where the runtime keeps its interpreters' state.
    pub interp: InterpLayout,
}

impl Layout {
    /// How much the runtime's shared objects move on `arch`.
    pub fn runtime_shift(&self, arch: crate::arch::Arch) -> u32 {
        self.runtime
            .arch_shift
            .iter()
            .find(|(a, _)| *a == arch)
            .map_or(0, |&(_, s)| s)
    }

    /// Offset inside `_PyRuntime` of the global-table string `s`.
    ///
    /// CPython's generator matches strings against the table as they are
    /// spelled in the C source, so an entry spelled with an escape (3.11 and
    /// 3.12: only `"\n"`) never matches; neither does it here, to stay
    /// byte-equal with gcc's object (both are the same immortal string at
    /// run time).
    pub fn global_string(&self, s: &crate::graph::Str) -> Option<u32> {
        let mut buf = [0u8; GLOBAL_STRING_MAX];
        let key = global_key(s, &mut buf)?;
        let t = self.runtime.global_strings;
        t.binary_search_by(|(v, _)| v.as_bytes().cmp(key))
            .ok()
            .map(|i| t[i].1)
    }

    /// [`Layout::global_string`] as a hash index, for many lookups.
    pub fn global_strings(&self) -> GlobalStrings {
        GlobalStrings(
            (self.runtime.global_strings.iter())
                .map(|&(v, off)| (v.as_bytes(), off))
                .collect(),
        )
    }
}

/// Longest string in a global string table (see [`Layout::global_string`]).
const GLOBAL_STRING_MAX: usize = 64;

/// The bytes to look `s` up by in a global string table, or `None` if it
/// cannot be there. Every entry is printable ASCII of at most
/// [`GLOBAL_STRING_MAX`] bytes (tested), so bytes are compared, not code
/// points.
fn global_key<'b>(s: &crate::graph::Str, buf: &'b mut [u8; GLOBAL_STRING_MAX]) -> Option<&'b [u8]> {
    let key = buf.get_mut(..s.0.len())?;
    for (b, &c) in key.iter_mut().zip(&s.0) {
        if !(0x20..0x80).contains(&c) || c == '"' as u32 || c == '\\' as u32 {
            return None;
        }
        *b = c as u8;
    }
    Some(key)
}

/// A version's global string table, hashed (see [`Layout::global_strings`]).
pub struct GlobalStrings(crate::graph::FastMap<&'static [u8], u32>);

impl GlobalStrings {
    /// Offset inside `_PyRuntime` of the global-table string `s`.
    pub fn get(&self, s: &crate::graph::Str) -> Option<u32> {
        let mut buf = [0u8; GLOBAL_STRING_MAX];
        self.0.get(global_key(s, &mut buf)?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`Layout::global_string`] assumes of the tables: sorted by
    /// bytes, ASCII, and no entry longer than its key buffer.
    #[test]
    fn global_string_tables_are_sorted_short_ascii() {
        for v in crate::version::VERSIONS {
            let l = v.layout;
            let t = l.runtime.global_strings;
            let index = l.global_strings();
            assert!(t.len() > 100);
            assert!(t.windows(2).all(|w| w[0].0.as_bytes() < w[1].0.as_bytes()));
            for (v, _) in t {
                assert!(v.is_ascii() && v.len() <= GLOBAL_STRING_MAX, "{v:?}");
            }
            // Lookups find every entry spelled without escapes, and only those.
            for &(v, off) in t {
                let s = crate::graph::Str(v.chars().map(|c| c as u32).collect());
                let plain = !v.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
                assert_eq!(l.global_string(&s), plain.then_some(off), "{v:?}");
                assert_eq!(index.get(&s), plain.then_some(off), "{v:?}");
            }
            let long = crate::graph::Str(vec!['a' as u32; GLOBAL_STRING_MAX + 1]);
            assert_eq!(l.global_string(&long), None);
            assert_eq!(index.get(&long), None);
            let other = crate::graph::Str(
                "surely not a global string"
                    .chars()
                    .map(|c| c as u32)
                    .collect(),
            );
            assert_eq!((l.global_string(&other), index.get(&other)), (None, None));
        }
    }
}
