//! pyfreeze-obj's machine code, independent of the rest of the tool.
//!
//! A program is written once in a small neutral instruction list
//! ([`ir`]: register roles, loads and stores, address-of, arithmetic,
//! compare-and-branch, calls); each instruction set lowers it ([`x86_64`],
//! [`aarch64`]) with its calling conventions as tables ([`Conv`]), its
//! encodings and its Windows unwind data. The shared driver ([`lower`])
//! handles labels, branch relaxation and calls between functions; the
//! checker ([`check`]) proves what every lowering must keep (stack
//! alignment at calls, callee-saved registers restored, labels bound,
//! relocations inside their functions) without any external tool.

pub mod aarch64;
pub mod check;
pub mod ir;
pub mod lower;
pub mod x86_64;

pub use lower::{CodeReloc, CodeRelocKind, Conv, FuncInfo, Stubs, WinUnwind};

/// The instruction sets we generate code for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The calling convention of this instruction set on a target (only
    /// x86_64 has one of its own on Windows).
    pub fn convention(self, windows: bool) -> &'static Conv {
        match (self, windows) {
            (Arch::X86_64, false) => &x86_64::SYSV,
            (Arch::X86_64, true) => &x86_64::WIN64,
            (Arch::Aarch64, _) => &aarch64::AAPCS64,
        }
    }

    /// Lower `prog` with convention `conv` (one of this instruction set's).
    pub fn lower(self, conv: &'static Conv, prog: &ir::Program) -> Stubs {
        self.lower_with_effects(conv, prog, false).stubs
    }

    pub(crate) fn lower_with_effects(
        self,
        conv: &'static Conv,
        prog: &ir::Program,
        effects: bool,
    ) -> lower::Output {
        match self {
            Arch::X86_64 => lower::lower(&x86_64::X86_64, conv, prog, effects),
            Arch::Aarch64 => lower::lower(&aarch64::Aarch64, conv, prog, effects),
        }
    }
}
