//! The frozen-module model that inputs produce and outputs consume: how a
//! module's accessor is named, and the module tables of `frozen.o`
//! (bootstrap, stdlib, test, aliases) as entries.

/// The accessor symbol for a module name (`a.b` -> `_Py_get_a_b_toplevel`).
pub fn accessor_symbol(module: &str) -> String {
    format!("_Py_get_{}_toplevel", module.replace('.', "_"))
}

/// The stdlib table's index in [`Tables::tables`] (and in
/// [`crate::layout::FrozenLayout::tables`]).
pub const STDLIB: usize = 1;

/// One entry of a module table (`struct _frozen`).
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// Marshal bytes and their offset in the archive (None: no code kept).
    pub code: Option<(Vec<u8>, u64)>,
    pub is_package: bool,
    /// The accessor symbol (`get_code`), for deep-frozen modules.
    pub get_code: Option<String>,
}

/// The module tables of a `frozen.o`: bootstrap, stdlib, test (in the
/// order of [`crate::layout::FrozenLayout::tables`]), and the aliases
/// (alias, original; the original may be NULL).
#[derive(Debug, Clone)]
pub struct Tables {
    pub tables: Vec<Vec<Entry>>,
    pub aliases: Vec<(String, Option<String>)>,
}
