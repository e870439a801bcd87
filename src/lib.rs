//! pyfreeze-obj: CPython's deep-frozen objects written straight into
//! relocatable object files.
//!
//! Data flows one way:
//! inputs ([`input`]) -> marshal reader ([`marshal`]) -> constant graph
//! ([`graph`]) -> per-version layout ([`layout`]) -> placement ([`place`]) ->
//! object writer ([`objfile`]); the read-only tables the stubs walk
//! ([`rotables`]), and the stub program ([`stubs`]) written once and lowered
//! per instruction set by the `pyfreeze-obj-arch` crate (`arch/`, [`arch`]).

pub mod dwarf;
pub mod emit;
pub mod error;
pub mod frozen;
pub mod genlayout;
pub mod graph;
pub mod input;
pub mod layout;
pub mod linkcheck;
pub mod marshal;
pub mod objfile;
pub mod output;
pub mod place;
pub mod relink;
pub mod rotables;
pub mod stubs;
pub mod tables;
pub mod target;
pub mod version;

pub use pyfreeze_obj_arch as arch;
