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
#[derive(Debug)]
pub struct Contract {
    /// What placement computes at emit time beyond the marshalled values
    /// and the fields every layout has.
    pub precompute: Precompute,
    /// Functions the object defines for the runtime.
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
#[derive(Debug)]
pub struct Precompute {
    /// Non-ASCII strings carry their UTF-8 form (`utf8`, `utf8_length`).
    pub utf8: bool,
    /// Non-ASCII strings whose kind equals the target's `sizeof(wchar_t)`
    /// point their `wstr` at their own data (3.11's generator patches this
    /// in at run time; we write it with a relocation).
    pub wstr: bool,
    /// `co_version`, where the layout has it: numbered from `first` in
    /// generation order.
    pub versions_from: u32,
    /// A 32-bit counter the object defines, one past the last `co_version`
    /// (3.12: `_Py_next_func_version`).
    pub version_counter: Option<&'static str>,
}

/// The functions a frozen object defines for the runtime (besides one
/// accessor per module).
#[derive(Debug)]
pub struct Entry {
    /// `int init(void)`: 0, or -1 with an exception set.
    pub init: &'static str,
    /// `void fini(void)`.
    pub fini: &'static str,
}

/// Public API the lazy scheme calls for frozenset constants (which it
/// turns into real frozensets; the eager scheme is CPython's and leaves
/// them as sorted tuples).
#[derive(Debug)]
pub struct Hooks {
    /// `PyObject *f(PyObject *tuple)`: a new frozenset (NULL on error).
    pub frozenset_new: &'static str,
    /// `void f(PyObject *)`: drop a reference.
    pub decref: &'static str,
}

/// A step of initialization. Its logic is written once, in
/// [`crate::stubs`]; a contract only chooses the steps and names the
/// runtime functions they call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitStep {
    /// `int hook(PyCodeObject *)` on each code object being initialized;
    /// a negative result fails the initialization (with the runtime's
    /// exception set).
    CodeHook(&'static str),
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
}

impl Contract {
    /// The runtime function initialization calls on each code object.
    pub fn code_init_hook(&self) -> Option<&'static str> {
        self.init
            .iter()
            .map(|s| match *s {
                InitStep::CodeHook(h) => h,
            })
            .next()
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
const DEEPFREEZE_ENTRY: Entry = Entry {
    init: "_Py_Deepfreeze_Init",
    fini: "_Py_Deepfreeze_Fini",
};

const API: Hooks = Hooks {
    frozenset_new: "PyFrozenSet_New",
    decref: "Py_DecRef",
};

pub static PY311: Version = Version {
    layout: &crate::layout::PY311,
    contract: &Contract {
        precompute: Precompute {
            utf8: false,
            wstr: true,
            versions_from: 1,
            version_counter: None,
        },
        entry: DEEPFREEZE_ENTRY,
        hooks: API,
        init: &[InitStep::CodeHook("_PyStaticCode_InternStrings")],
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
            versions_from: 1,
            version_counter: Some("_Py_next_func_version"),
        },
        entry: DEEPFREEZE_ENTRY,
        hooks: API,
        init: &[InitStep::CodeHook("_PyStaticCode_Init")],
        fini: &[FiniStep::CodeFini {
            hook: Some("_PyStaticCode_Fini"),
        }],
    },
};

/// Every version the tool knows, oldest first.
pub static VERSIONS: &[&Version] = &[&PY311, &PY312];

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
            (3, m) if m >= 13 => format!(
                "CPython 3.{m} is not supported yet (3.13 removed deep-freezing and the get_code \
                 member of struct _frozen); supported: {known}"
            ),
            _ => format!(
                "CPython {major}.{minor} has no deep-frozen modules (deep-freezing exists in \
                 3.11 and 3.12 only); supported: {known}"
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
