//! What every instruction set shares: the calling-convention table, the
//! output, and the driver that lowers a [`Program`] function by function
//! (labels, branch relaxation, calls between functions, alignment).
//!
//! Each instruction set supplies a [`Backend`]: its machine instructions,
//! their encodings, its prologue and epilogue, and its unwind data.

use crate::ir::{Func, Inst, Label, Program, Reg};
use crate::Arch;

/// A calling convention, as a table of register numbers (the instruction
/// set's own numbering).
#[derive(Debug, PartialEq, Eq)]
pub struct Conv {
    pub name: &'static str,
    pub arch: Arch,
    /// Integer argument registers, in order.
    pub args: &'static [u8],
    /// Integer return register.
    pub ret: u8,
    /// Callee-saved registers [`Reg::Saved`] maps to, in order.
    pub saved: &'static [u8],
    /// Caller-saved registers [`Reg::Temp`] maps to, in order: first those
    /// no argument uses, never the return register.
    pub temps: &'static [u8],
    /// Bytes a caller reserves above the return address for the callee
    /// (Windows x64's home area for four register arguments).
    pub shadow: u32,
}

impl Conv {
    /// The machine register of a role.
    pub fn reg(&self, r: Reg) -> u8 {
        let pick = |t: &[u8], n: u8, what: &str| -> u8 {
            *t.get(n as usize)
                .unwrap_or_else(|| panic!("{}: no {what} register {n}", self.name))
        };
        match r {
            Reg::Arg(n) => pick(self.args, n, "argument"),
            Reg::Ret => self.ret,
            Reg::Saved(n) => pick(self.saved, n, "callee-saved"),
            Reg::Temp(n) => pick(self.temps, n, "scratch"),
        }
    }
    /// Whether a call leaves `r` as it was.
    pub fn is_callee_saved(&self, r: u8) -> bool {
        self.saved.contains(&r)
    }
}

/// Relocation kinds of the code, independent of the object format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeRelocKind {
    /// x86_64: 32-bit PC-relative displacement (RIP-relative operand).
    X86PcRel32,
    /// x86_64: 32-bit PC-relative call or jump target, through the PLT if
    /// needed.
    X86Branch32,
    /// AArch64 ADRP: the target's 4 KiB page, PC-relative, 21 bits.
    A64AdrPage21,
    /// AArch64 ADD: the low 12 bits of the target's address.
    A64AddLo12,
    /// AArch64 BL: 26-bit PC-relative call, through the PLT if needed.
    A64Call26,
    /// AArch64 B: 26-bit PC-relative jump (a tail call).
    A64Jump26,
}

impl CodeRelocKind {
    /// A call or jump to a function (its symbol is a function's).
    pub fn is_branch(self) -> bool {
        matches!(
            self,
            CodeRelocKind::X86Branch32 | CodeRelocKind::A64Call26 | CodeRelocKind::A64Jump26
        )
    }
}

#[derive(Clone, Copy, Debug)]
pub struct CodeReloc {
    /// Offset of the relocated field in the text section.
    pub offset: u64,
    pub kind: CodeRelocKind,
    pub target: crate::ir::Sym,
    /// Addend as the format's relocation wants it (x86 PC-relative fields:
    /// minus the distance from the field to the end of the instruction).
    pub addend: i64,
}

/// Windows unwind data of one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WinUnwind {
    /// The `.xdata` record.
    pub xdata: Vec<u8>,
    /// Its `.pdata` entry names the function's end too (x64's
    /// RUNTIME_FUNCTION; ARM64's has start and unwind data only).
    pub pdata_end: bool,
}

/// A function in the text section.
#[derive(Clone, Debug)]
pub struct FuncInfo {
    pub name: String,
    pub global: bool,
    pub offset: u64,
    pub size: u64,
    /// For functions with a frame.
    pub unwind: Option<WinUnwind>,
}

/// The lowered program.
#[derive(Default, Debug)]
pub struct Stubs {
    pub code: Vec<u8>,
    pub relocs: Vec<CodeReloc>,
    pub funcs: Vec<FuncInfo>,
    /// Alignment the text section needs.
    pub align: u64,
}

/// Where code and relocations go while a function is encoded.
#[derive(Default)]
pub struct Sink {
    pub code: Vec<u8>,
    pub relocs: Vec<CodeReloc>,
    labels: Vec<Option<u64>>,
    /// (instruction index, offset of the instruction, label, kind)
    fixups: Vec<(usize, u64, Label, u8)>,
    /// (offset of the instruction, function, kind)
    calls: Vec<(u64, usize, u8)>,
    inst: usize,
}

impl Sink {
    pub fn pos(&self) -> u64 {
        self.code.len() as u64
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.code.extend_from_slice(b);
    }
    pub fn reloc(&mut self, kind: CodeRelocKind, target: crate::ir::Sym, addend: i64) {
        let offset = self.pos();
        self.relocs.push(CodeReloc {
            offset,
            kind,
            target,
            addend,
        });
    }
    pub fn bind(&mut self, l: Label) {
        let at = self.pos();
        let slot = &mut self.labels[l.0 as usize];
        assert!(slot.is_none(), "label {l:?} bound twice");
        *slot = Some(at);
    }
    /// The instruction starting here refers to `l`; `kind` tells the
    /// backend's [`Backend::patch`] how.
    pub fn fixup(&mut self, l: Label, kind: u8) {
        let at = self.pos();
        self.fixups.push((self.inst, at, l, kind));
    }
    /// The instruction starting here refers to function `f`.
    pub fn call_fixup(&mut self, f: usize, kind: u8) {
        let at = self.pos();
        self.calls.push((at, f, kind));
    }
}

/// A function lowered to machine instructions.
pub struct Lowered<M> {
    pub insts: Vec<M>,
    /// How many of `insts` are the prologue.
    pub prologue: usize,
    /// Index of the epilogue's first instruction, if the function has a
    /// frame.
    pub epilogue: Option<usize>,
    /// Labels used: the function's own, then the backend's.
    pub labels: u32,
}

/// What a machine instruction does, as the invariant checker needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The stack pointer moves by this many bytes (negative: allocates).
    Sp(i64),
    /// Saves this register for the caller.
    Save(u8),
    /// Restores a saved register.
    Restore(u8),
    /// Writes this register.
    Write(u8),
    Call,
    Jump(Label),
    /// A conditional branch.
    Branch(Label),
    Bind(Label),
    Ret,
    /// Leaves the function through a jump to another.
    TailJump,
}

/// Control flow the driver places: labels, jumps, returns.
#[derive(Clone, Copy, Debug)]
pub enum Control {
    Bind(Label),
    Jump(Label),
    Ret,
    /// Jump to a function (a tail call).
    Tail(crate::ir::Callee),
}

/// One instruction set.
pub trait Backend {
    type M: Clone + std::fmt::Debug;
    /// What a function's prologue sets up.
    type Frame;
    const ARCH: Arch;
    /// Bytes filling alignment gaps.
    const PAD: &'static [u8];
    /// How far the stack pointer sits below a 16-byte boundary at entry
    /// (x86's pushed return address).
    const ENTRY_BIAS: i64;
    /// The frame `f` needs under `conv`; `None` for a function that calls
    /// nothing and saves nothing.
    fn frame(&self, f: &Func, conv: &'static Conv) -> Option<Self::Frame>;
    fn prologue(&self, fr: &Self::Frame, out: &mut Vec<Self::M>);
    /// Undo the prologue, up to (not including) the return.
    fn teardown(&self, fr: &Self::Frame, out: &mut Vec<Self::M>);
    fn control(&self, c: Control) -> Self::M;
    /// Lower one instruction other than [`Inst::Return`] and
    /// [`Inst::TailCall`]; labels of its own come from `labels`.
    fn inst(&self, i: &Inst, conv: &'static Conv, labels: &mut u32, out: &mut Vec<Self::M>);
    fn encode(&self, m: &Self::M, s: &mut Sink);
    /// Point the PC-relative field of `kind` in the instruction at `at` to
    /// `target` (both offsets in `code`); false when out of reach.
    fn patch(&self, code: &mut [u8], at: u64, kind: u8, target: u64) -> bool;
    /// Make a branch reach farther; false if it cannot.
    fn relax(&self, m: &mut Self::M) -> bool;
    fn effects(&self, m: &Self::M, out: &mut Vec<Effect>);
    /// Windows unwind data: `ends[i]` is where instruction `i` ends.
    fn unwind(&self, l: &Lowered<Self::M>, ends: &[u64], size: u64) -> Option<WinUnwind>;
}

/// One function in machine instructions: the prologue, the body with
/// every return a jump to the one epilogue at the end (or falling into
/// it), a tail call tearing the frame down before it jumps.
fn lower_func<B: Backend>(b: &B, f: &Func, conv: &'static Conv) -> Lowered<B::M> {
    assert_eq!(
        conv.arch,
        B::ARCH,
        "{} is no {:?} convention",
        conv.name,
        B::ARCH
    );
    let frame = b.frame(f, conv);
    let mut out = Vec::new();
    if let Some(fr) = &frame {
        b.prologue(fr, &mut out);
    }
    let prologue = out.len();
    let epilogue = Label(f.labels);
    let mut labels = f.labels + 1;
    let mut returns = false;
    for (k, i) in f.body.iter().enumerate() {
        match (i, &frame) {
            (Inst::Return, None) => out.push(b.control(Control::Ret)),
            (Inst::Return, Some(_)) => {
                returns = true;
                if k + 1 < f.body.len() {
                    out.push(b.control(Control::Jump(epilogue)));
                }
            }
            (Inst::TailCall(c), fr) => {
                if let Some(fr) = fr {
                    b.teardown(fr, &mut out);
                }
                out.push(b.control(Control::Tail(*c)));
            }
            _ => b.inst(i, conv, &mut labels, &mut out),
        }
    }
    let mut at = None;
    if let (true, Some(fr)) = (returns, &frame) {
        out.push(b.control(Control::Bind(epilogue)));
        at = Some(out.len());
        b.teardown(fr, &mut out);
        out.push(b.control(Control::Ret));
    }
    Lowered {
        insts: out,
        prologue,
        epilogue: at,
        labels,
    }
}

/// The lowered program, with each function's machine instructions and
/// their effects when asked for them (for [`crate::check`]).
pub(crate) struct Output {
    pub stubs: Stubs,
    /// Per function: per instruction, its effects.
    pub effects: Vec<Vec<Vec<Effect>>>,
}

pub(crate) fn lower<B: Backend>(
    b: &B,
    conv: &'static Conv,
    prog: &Program,
    with_effects: bool,
) -> Output {
    let mut out = Stubs {
        align: 16,
        ..Stubs::default()
    };
    let mut effects = Vec::new();
    let mut calls = Vec::new();
    for f in &prog.funcs {
        while !out.code.len().is_multiple_of(16) {
            out.code.extend_from_slice(B::PAD);
        }
        let start = out.code.len() as u64;
        let mut l = lower_func(b, f, conv);
        let s = loop {
            let mut s = Sink {
                labels: vec![None; l.labels as usize],
                ..Sink::default()
            };
            let mut ends = Vec::with_capacity(l.insts.len());
            for (i, m) in l.insts.iter().enumerate() {
                s.inst = i;
                b.encode(m, &mut s);
                ends.push(s.pos());
            }
            let mut relaxed = false;
            for &(i, at, label, kind) in &s.fixups.clone() {
                let target = s.labels[label.0 as usize]
                    .unwrap_or_else(|| panic!("{}: label {label:?} is never bound", f.name));
                if !b.patch(&mut s.code, at, kind, target) {
                    assert!(
                        b.relax(&mut l.insts[i]),
                        "{}: a branch out of reach",
                        f.name
                    );
                    relaxed = true;
                }
            }
            if !relaxed {
                break (s, ends);
            }
        };
        let (s, ends) = s;
        let size = s.code.len() as u64;
        let unwind = b.unwind(&l, &ends, size);
        out.code.extend_from_slice(&s.code);
        out.relocs.extend(s.relocs.into_iter().map(|mut r| {
            r.offset += start;
            r
        }));
        calls.extend(s.calls.iter().map(|&(at, f, kind)| (at + start, f, kind)));
        out.funcs.push(FuncInfo {
            name: f.name.clone(),
            global: f.global,
            offset: start,
            size,
            unwind,
        });
        if with_effects {
            effects.push(
                l.insts
                    .iter()
                    .map(|m| {
                        let mut v = Vec::new();
                        b.effects(m, &mut v);
                        v
                    })
                    .collect(),
            );
        }
    }
    for (at, f, kind) in calls {
        let target = out.funcs[f].offset;
        assert!(
            b.patch(&mut out.code, at, kind, target),
            "call out of reach"
        );
    }
    Output {
        stubs: out,
        effects,
    }
}

/// Sequence the moves `dst[i] <- src[i]` (registers, all `dst` distinct)
/// so that none overwrites a source still to be read, breaking cycles
/// through `scratch`.
pub fn parallel_move(moves: &[(u8, u8)], scratch: u8) -> Vec<(u8, u8)> {
    let mut todo: Vec<(u8, u8)> = moves.iter().copied().filter(|(d, s)| d != s).collect();
    let mut out = Vec::new();
    while !todo.is_empty() {
        // A move whose destination no pending move reads can go now.
        if let Some(i) = (0..todo.len()).find(|&i| !todo.iter().any(|m| m.1 == todo[i].0)) {
            out.push(todo.remove(i));
            continue;
        }
        // Only cycles left: park one source in the scratch register.
        let (d, s) = todo[0];
        out.push((scratch, s));
        todo[0] = (d, scratch);
    }
    out
}

/// Encode `insts` alone (labels `0..labels` bound among them), for the
/// encoding tests of each instruction set.
#[cfg(test)]
pub(crate) fn encode_alone<B: Backend>(
    b: &B,
    insts: &[B::M],
    labels: u32,
) -> (Vec<u8>, Vec<CodeReloc>) {
    let mut s = Sink {
        labels: vec![None; labels as usize],
        ..Sink::default()
    };
    for (i, m) in insts.iter().enumerate() {
        s.inst = i;
        b.encode(m, &mut s);
    }
    for (_, at, l, kind) in s.fixups.clone() {
        let target = s.labels[l.0 as usize].expect("label bound");
        assert!(b.patch(&mut s.code, at, kind, target), "in reach");
    }
    (s.code, s.relocs)
}

#[cfg(test)]
mod tests {
    use super::parallel_move;

    fn run(moves: &[(u8, u8)]) -> [u8; 16] {
        let mut regs: [u8; 16] = std::array::from_fn(|i| i as u8);
        for (d, s) in parallel_move(moves, 15) {
            regs[d as usize] = regs[s as usize];
        }
        regs
    }

    #[test]
    fn parallel_moves_read_every_source_first() {
        // a chain, a swap, a three-cycle
        for moves in [
            &[(1, 2), (2, 3)][..],
            &[(1, 2), (2, 1)],
            &[(1, 2), (2, 3), (3, 1), (5, 5)],
        ] {
            let regs = run(moves);
            for &(d, s) in moves {
                assert_eq!(regs[d as usize], s, "{moves:?}");
            }
        }
    }
}
