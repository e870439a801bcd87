//! pyfreeze-obj: CPython's deep-frozen objects written straight into
//! relocatable object files.
//!
//! Data flows one way:
//! inputs ([`input`]) -> marshal reader ([`marshal`]) -> constant graph
//! ([`graph`]) -> per-version layout ([`layout`]) -> placement ([`place`]) ->
//! object writer ([`objfile`]), with machine-code stubs from `arch/`.

pub mod emit;
pub mod error;
pub mod frozen;
pub mod graph;
pub mod input;
pub mod layout;
pub mod marshal;
pub mod objfile;
pub mod output;
pub mod place;
pub mod relink;
pub mod tables;
pub mod target;
pub mod version;

pub use target::arch;
