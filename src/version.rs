//! A CPython version, as one value: its layout (facts, [`crate::layout`])
//! and its contract (behaviour, [`Contract`]).
//!
//! The contract says how a frozen object cooperates with that version's
//! runtime: which symbols it defines for the runtime to call, which runtime
//! hooks its initialization and teardown call, which of a fixed set of
//! shared steps run, and what placement computes at emit time. The logic of
//! every step is written once (placement in [`crate::place`], the stub
//! program in [`crate::stubs`]); a version's contract only chooses.
//!
//! Adding a CPython version: its table file in `src/layout/` (written by
//! `pyfreeze-obj gen-layout`), a contract here chosen from the shared steps,
//! and a row in the test matrix (`tests/support`).

use crate::error::{Error, Result};
use crate::layout::Layout;

/// One CPython version.
#[derive(Debug)]
pub struct Version {
    pub layout: &'static Layout,
    pub contract: &'static Contract,
}

/// How the frozen object cooperates with a version's runtime.
#[derive(Clone, Copy, Debug)]
pub struct Contract {
    /// What placement computes at emit time beyond the marshalled values
    /// and the fields every layout has.
    pub precompute: Precompute,
    /// How the runtime reaches the object's functions.
    pub entry: Entry,
    /// Public API the lazy scheme's own machinery calls.
    pub hooks: Hooks,
    /// Run when code objects are initialized (all of them in Init under
    /// the eager scheme, a module's on its first use under the lazy one),
    /// in order.
    pub init: &'static [InitStep],
    /// Run at teardown, in order.
    pub fini: &'static [FiniStep],
}

/// Emit-time work that differs between versions.
#[derive(Clone, Copy, Debug)]
pub struct Precompute {
    /// Non-ASCII strings carry their UTF-8 form (`utf8`, `utf8_length`).
    pub utf8: bool,
    /// Non-ASCII strings whose kind equals the target's `sizeof(wchar_t)`
    /// point their `wstr` at their own data (3.11's generator patches this
    /// in at run time; we write it with a relocation).
    pub wstr: bool,
    /// `co_version`, where the layout has it: numbered from this in
    /// generation order (`None`: 0, for [`InitStep::Versions`]).
    pub versions_from: Option<u32>,
    /// A 32-bit counter the object defines, one past the last `co_version`
    /// (3.12: `_Py_next_func_version`).
    pub version_counter: Option<&'static str>,
    /// `co_stacksize` is at least this (3.13's constructor makes 0 a 1).
    pub min_stacksize: i32,
    /// Bytecode is written quickened, as the runtime's constructor would
    /// ([`crate::layout::CodeLayout::quicken`]).
    pub quicken: bool,
}

/// How the runtime reaches a frozen object (besides its one accessor per
/// module).
#[derive(Clone, Copy, Debug)]
pub enum Entry {
    /// The runtime calls the object's `int init(void)` (0, or -1 with an
    /// exception set) and `void fini(void)`: CPython's eager scheme runs
    /// the init steps there, the lazy one on each module's first use.
    Called {
        init: &'static str,
        fini: &'static str,
    },
    /// The runtime calls nothing of the object: the link redirects its
    /// calls of runtime functions to the object's wrappers (GNU ld's and
    /// lld's `--wrap=F`: a call of `F` from another object reaches
    /// `__wrap_F`, which reaches the runtime's as `__real_F`). Lazy scheme
    /// only.
    Wrapped(Wraps),
}

/// A runtime function `F` the link wraps (`--wrap=F`), with the two names
/// that gives it: `__wrap_F`, which the object defines, and `__real_F`, the
/// runtime's, which the object calls. Written with [`wrapped!`], which
/// spells both from `F`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wrapped {
    /// `F`.
    pub name: &'static str,
    /// `__wrap_F`.
    pub wrap: &'static str,
    /// `__real_F`.
    pub real: &'static str,
}

/// The [`Wrapped`] function named by a string literal.
macro_rules! wrapped {
    ($f:literal) => {
        Wrapped {
            name: $f,
            wrap: concat!("__wrap_", $f),
            real: concat!("__real_", $f),
        }
    };
}

/// The runtime functions an [`Entry::Wrapped`] object wraps, and what it
/// calls to decide.
#[derive(Clone, Copy, Debug)]
pub struct Wraps {
    /// `PyObject *F(const char *data, Py_ssize_t size)`, through which the
    /// runtime loads every frozen module: for the marshal bytes of one of
    /// the object's module tables, called by the main interpreter with a
    /// thread state and every [`crate::layout::InterpLayout::requires`]
    /// set, the module's static code object (initialized on first use);
    /// anything else goes to the runtime's.
    pub load: Wrapped,
    /// `void F(PyInterpreterState *)`, called as an interpreter's code
    /// objects are finalized (before its interned strings are emptied):
    /// for the main interpreter, the fini steps (then the runtime's).
    pub code_fini: Wrapped,
    /// `PyThreadState *F(void)`: the current thread state, or NULL.
    pub tstate: &'static str,
}

impl Entry {
    /// The object's `init` function the runtime calls, if it calls one.
    pub fn init(&self) -> Option<&'static str> {
        match *self {
            Entry::Called { init, .. } => Some(init),
            Entry::Wrapped(_) => None,
        }
    }
    /// The object's `fini` function the runtime calls, if it calls one.
    pub fn fini(&self) -> Option<&'static str> {
        match *self {
            Entry::Called { fini, .. } => Some(fini),
            Entry::Wrapped(_) => None,
        }
    }
    /// Whether CPython's eager scheme exists (the runtime calls `init`).
    pub fn has_eager(&self) -> bool {
        matches!(self, Entry::Called { .. })
    }
    /// The runtime functions wrapped, in [`Wraps`] order.
    pub fn wrappers(&self) -> Vec<Wrapped> {
        match self {
            Entry::Called { .. } => Vec::new(),
            Entry::Wrapped(w) => vec![w.load, w.code_fini],
        }
    }
    /// The names of [`Entry::wrappers`].
    pub fn wrapped(&self) -> Vec<&'static str> {
        self.wrappers().iter().map(|w| w.name).collect()
    }
    /// What the interpreter's link needs for the object (the `--wrap`
    /// options, in the C compiler driver's spelling), or nothing.
    pub fn link_flags(&self) -> Vec<String> {
        let w = self.wrapped();
        if w.is_empty() {
            return Vec::new();
        }
        let opts: Vec<String> = w.iter().map(|f| format!("--wrap={f}")).collect();
        vec![format!("-Wl,{}", opts.join(","))]
    }
}

/// Public API the lazy scheme calls: for frozenset constants (which it
/// turns into real frozensets; the eager scheme is CPython's and leaves
/// them as sorted tuples), and to release what the runtime hung on code
/// objects when no runtime function does it.
#[derive(Clone, Copy, Debug)]
pub struct Hooks {
    /// `PyObject *f(PyObject *tuple)`: a new frozenset (NULL on error).
    pub frozenset_new: &'static str,
    /// `void f(PyObject *)`: drop a reference (NULL allowed).
    pub decref: &'static str,
    /// `void f(void *)`: free a `PyMem_Malloc` block (NULL allowed).
    pub free: &'static str,
    /// `void f(PyObject *)`: clear the weak references to an object that
    /// lives on (no callbacks: it does not die).
    pub clear_weakrefs: &'static str,
}

/// A step of initialization. Its logic is written once, in
/// [`crate::stubs`]; a contract only chooses the steps and names the
/// runtime functions they call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitStep {
    /// Lazy scheme: each frozenset constant made a real frozenset from the
    /// tuple standing for it (the eager scheme leaves the tuples).
    Frozensets,
    /// `int hook(PyCodeObject *)` on each code object being initialized;
    /// a negative result fails the initialization (with the runtime's
    /// exception set).
    CodeHook(&'static str),
    /// `void f(PyInterpreterState *, PyObject **)` on each string field
    /// the runtime's code constructor interns: `immortal` for names
    /// (`co_names`, `co_localsplusnames`), `mortal` for identifier-like
    /// constants and `co_filename`, `co_name`, `co_qualname`. The field
    /// takes the interned string (the teardown puts ours back).
    Intern {
        immortal: &'static str,
        mortal: &'static str,
    },
    /// Each code object's `co_version` taken from the interpreter's
    /// counter, as its constructor does (unique among live code objects).
    Versions,
}

/// A step of teardown (see [`InitStep`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FiniStep {
    /// Return each initialized code object to its emitted state. Under
    /// the eager scheme with a hook: `void hook(PyCodeObject *)` on each
    /// (what CPython's own Fini does). Otherwise the object restores its
    /// pristine bytecode and the layout's fixed fields itself; where one
    /// of the layout's runtime-state fields is set, `hook` runs first
    /// (without a hook, those fields are cleared).
    CodeFini { hook: Option<&'static str> },
    /// `void hook(PyObject *)` on each string object we emit whose
    /// pointers are valid, after the code objects.
    StrHook(&'static str),
    /// Each field [`InitStep::Intern`] interned holds our string again
    /// (the interned one it held dropped).
    InternRestore,
    /// Each of our strings that the interpreter's interned dict holds
    /// ([`crate::layout::InterpLayout::interned_dict`]) taken out of it
    /// (`int del(PyObject *dict, PyObject *key)`, a failure cleared with
    /// `void clear(void)`), its interned state cleared and its header
    /// the static one again. For runtimes whose teardown of the dict
    /// would take static strings for mortal ones (3.14+: refcount 2, then
    /// the dict cleared, then the string's dealloc; an abort in debug
    /// builds); it runs as code objects are finalized, before that.
    LeaveInterned {
        del: &'static str,
        clear: &'static str,
    },
}

impl Contract {
    /// The runtime function initialization calls on each code object.
    pub fn code_init_hook(&self) -> Option<&'static str> {
        self.init.iter().find_map(|s| match *s {
            InitStep::CodeHook(h) => Some(h),
            _ => None,
        })
    }
    /// The runtime function teardown calls on code objects.
    pub fn code_fini_hook(&self) -> Option<&'static str> {
        self.fini.iter().find_map(|s| match *s {
            FiniStep::CodeFini { hook } => hook,
            _ => None,
        })
    }
    /// The runtime function teardown calls on string objects.
    pub fn str_fini_hook(&self) -> Option<&'static str> {
        self.fini.iter().find_map(|s| match *s {
            FiniStep::StrHook(h) => Some(h),
            _ => None,
        })
    }
}

/// 3.11 and 3.12: the runtime calls `_Py_Deepfreeze_Init` and `_Fini`,
/// which hand each code object to `_PyStaticCode_Init` and `_Fini`.
const DEEPFREEZE_ENTRY: Entry = Entry::Called {
    init: "_Py_Deepfreeze_Init",
    fini: "_Py_Deepfreeze_Fini",
};

const API: Hooks = Hooks {
    frozenset_new: "PyFrozenSet_New",
    decref: "Py_DecRef",
    free: "PyMem_Free",
    // 3.13+ (3.11 and 3.12 release through their runtime's code fini);
    // `PyObject_ClearWeakRefs` wants a dying object (reference count 0).
    clear_weakrefs: "PyUnstable_Object_ClearWeakRefsNoCallbacks",
};

pub static PY311: Version = Version {
    layout: &crate::layout::PY311,
    contract: &Contract {
        precompute: Precompute {
            utf8: false,
            wstr: true,
            versions_from: Some(1),
            version_counter: None,
            min_stacksize: 0,
            quicken: false,
        },
        entry: DEEPFREEZE_ENTRY,
        hooks: API,
        init: &[
            InitStep::Frozensets,
            InitStep::CodeHook("_PyStaticCode_InternStrings"),
        ],
        fini: &[
            FiniStep::CodeFini {
                hook: Some("_PyStaticCode_Dealloc"),
            },
            FiniStep::StrHook("_PyStaticUnicode_Dealloc"),
        ],
    },
};

pub static PY312: Version = Version {
    layout: &crate::layout::PY312,
    contract: &Contract {
        precompute: Precompute {
            utf8: true,
            wstr: false,
            versions_from: Some(1),
            version_counter: Some("_Py_next_func_version"),
            min_stacksize: 0,
            quicken: false,
        },
        entry: DEEPFREEZE_ENTRY,
        hooks: API,
        init: &[
            InitStep::Frozensets,
            InitStep::CodeHook("_PyStaticCode_Init"),
        ],
        fini: &[FiniStep::CodeFini {
            hook: Some("_PyStaticCode_Fini"),
        }],
    },
};

/// 3.13: no deep-freezing in the runtime. Every frozen module is loaded
/// through `PyMarshal_ReadObjectFromString`, which the link wraps; static
/// code objects are complete at emit time (quickened, derived fields) but
/// for what needs the running interpreter, done on a module's first use:
/// interning as the code constructor does (into the interpreter's interned
/// dict: our strings are immortal, so emptying it frees none of them and
/// resets their interned state; the hash secret is set once per process,
/// so their cached hashes stay valid), and `co_version`s from the
/// interpreter's counter. The teardown undoes the rest as the
/// interpreter's code objects are finalized.
pub static PY313: Version = Version {
    layout: &crate::layout::PY313,
    contract: &WRAPPED,
};

/// 3.13 and later: see [`PY313`].
const WRAPPED: Contract = Contract {
    precompute: Precompute {
        utf8: true,
        wstr: false,
        versions_from: None,
        version_counter: None,
        min_stacksize: 1,
        quicken: true,
    },
    entry: Entry::Wrapped(Wraps {
        load: wrapped!("PyMarshal_ReadObjectFromString"),
        code_fini: wrapped!("_PyCode_Fini"),
        tstate: "PyThreadState_GetUnchecked",
    }),
    hooks: API,
    init: &[
        InitStep::Intern {
            immortal: "_PyUnicode_InternImmortal",
            mortal: "_PyUnicode_InternMortal",
        },
        InitStep::Frozensets,
        InitStep::Versions,
    ],
    fini: &[FiniStep::InternRestore, FiniStep::CodeFini { hook: None }],
};

/// 3.14 and later: as [`WRAPPED`], but the teardown of the interpreter's
/// interned dict (right after the code objects' in 3.14 and 3.15) takes
/// every string in it for a heap one: our strings leave it first.
const WRAPPED_STATIC_STRS: Contract = Contract {
    fini: &[
        FiniStep::InternRestore,
        FiniStep::CodeFini { hook: None },
        FiniStep::LeaveInterned {
            del: "PyDict_DelItem",
            clear: "PyErr_Clear",
        },
    ],
    ..WRAPPED
};

/// 3.14: as 3.13 (wrapped loads, steps at first use, the same teardown),
/// with slice constants and tuple hashes as layout facts, and
/// [`FiniStep::LeaveInterned`] last: its finalization would take our
/// strings in the interned dict for heap ones.
pub static PY314: Version = Version {
    layout: &crate::layout::PY314,
    contract: &WRAPPED_STATIC_STRS,
};

/// 3.15: as 3.14; its constructor's quickening reads the interpreter's
/// optimizer settings, which the layout lists
/// ([`crate::layout::InterpLayout::expects`]) for the load wrapper to check.
pub static PY315: Version = Version {
    layout: &crate::layout::PY315,
    contract: &WRAPPED_STATIC_STRS,
};

/// Every version the tool knows, oldest first.
pub static VERSIONS: &[&Version] = &[&PY311, &PY312, &PY313, &PY314, &PY315];

impl Version {
    /// The version `major.minor`, or an error explaining why there is none.
    pub fn get(major: u8, minor: u8) -> Result<&'static Version> {
        if let Some(v) = VERSIONS.iter().find(|v| v.layout.version == (major, minor)) {
            return Ok(v);
        }
        let known = VERSIONS
            .iter()
            .map(|v| format!("{}.{}", v.layout.version.0, v.layout.version.1))
            .collect::<Vec<_>>()
            .join(", ");
        Err(Error::msg(match (major, minor) {
            (3, m) if m >= 14 => format!(
                "CPython 3.{m} is not supported yet (no layout table and contract for it: \
                 `pyfreeze-obj gen-layout` writes the table from a build with debug info); \
                 supported: {known}"
            ),
            _ => format!(
                "CPython {major}.{minor} has no frozen code objects this tool writes (3.11 \
                 and later only); supported: {known}"
            ),
        }))
    }

    /// Parse "3.12" and look the version up.
    pub fn parse(s: &str) -> Result<&'static Version> {
        let bad = || {
            Error::msg(format!(
                "invalid --python version '{s}': expected MAJOR.MINOR, e.g. 3.12"
            ))
        };
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        let major: u8 = a.parse().map_err(|_| bad())?;
        let minor: u8 = b.parse().map_err(|_| bad())?;
        Version::get(major, minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every wrapped function's two symbols are the ones `--wrap` makes of
    /// its name.
    #[test]
    fn wrapper_symbols_are_what_the_link_makes() {
        let mut seen = 0;
        for v in VERSIONS {
            for w in v.contract.entry.wrappers() {
                assert_eq!(w.wrap, format!("__wrap_{}", w.name));
                assert_eq!(w.real, format!("__real_{}", w.name));
                seen += 1;
            }
        }
        assert!(seen > 0, "no version wraps a function");
    }
}
