//! x86_64: RIP-relative addressing only and calls through the PLT, so the
//! code links into PIE, non-PIE executables and shared libraries. The
//! System V and Windows x64 calling conventions are tables; `r11` is
//! this lowering's own scratch register and belongs to no role.

use crate::ir::{Callee, Cond, Func, Inst, Label, Mem, Operand, Sym, Width};
use crate::lower::{
    parallel_move, Backend, CodeRelocKind, Control, Conv, Effect, Lowered, Sink, WinUnwind,
};
use crate::Arch;

const RAX: u8 = 0;
const RCX: u8 = 1;
const RDX: u8 = 2;
const RBX: u8 = 3;
const RSP: u8 = 4;
const RBP: u8 = 5;
const RSI: u8 = 6;
const RDI: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const R10: u8 = 10;
const R11: u8 = 11;
const R12: u8 = 12;
const R13: u8 = 13;
const R14: u8 = 14;
const R15: u8 = 15;

/// The lowering's own scratch register.
const SCRATCH: u8 = R11;

/// System V AMD64 (Linux, macOS).
pub static SYSV: Conv = Conv {
    name: "System V x86_64",
    arch: Arch::X86_64,
    args: &[RDI, RSI, RDX, RCX, R8, R9],
    ret: RAX,
    saved: &[RBX, RBP, R12, R13, R14, R15],
    temps: &[R10, R9, R8, RCX, RDX, RSI],
    shadow: 0,
};

/// Windows x64: four register arguments with a 32-byte home area above
/// the return address; rdi and rsi are callee-saved.
pub static WIN64: Conv = Conv {
    name: "Windows x64",
    arch: Arch::X86_64,
    args: &[RCX, RDX, R8, R9],
    ret: RAX,
    saved: &[RBX, RBP, R12, R13, R14, R15, RDI, RSI],
    temps: &[R10, R9, R8, RDX],
    shadow: 32,
};

/// A memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XMem {
    /// `sym(%rip)`.
    Rip(Sym),
    /// `disp(base, index, 1 << scale)`.
    Base {
        base: u8,
        index: Option<(u8, u8)>,
        disp: i32,
    },
}

/// Two-operand arithmetic: the opcode of the register form and the
/// ModRM extension of the immediate forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alu {
    Add,
    Sub,
    Cmp,
    /// Register form only.
    Test,
}

impl Alu {
    fn rr_opcode(self) -> u8 {
        match self {
            Alu::Add => 0x01,
            Alu::Sub => 0x29,
            Alu::Cmp => 0x39,
            Alu::Test => 0x85,
        }
    }
    fn ext(self) -> u8 {
        match self {
            Alu::Add => 0,
            Alu::Sub => 5,
            Alu::Cmp => 7,
            Alu::Test => unreachable!("test has no imm8 form here"),
        }
    }
    fn writes(self) -> bool {
        matches!(self, Alu::Add | Alu::Sub)
    }
}

/// Condition codes (the low nibble of Jcc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cc {
    B = 2,
    Ae = 3,
    E = 4,
    Ne = 5,
    S = 8,
    Ns = 9,
    L = 12,
    Ge = 13,
}

/// A machine instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum M {
    Bind(Label),
    Push(u8),
    Pop(u8),
    /// `sub $n, %rsp`
    AllocStack(u32),
    /// `add $n, %rsp`
    FreeStack(u32),
    Ret,
    /// `mov src, dst` (32 bits zero-extend).
    Mov {
        w64: bool,
        dst: u8,
        src: u8,
    },
    /// `mov $imm, dst32` (zero-extends).
    MovImm32 {
        dst: u8,
        imm: u32,
    },
    /// `mov $imm, dst64` (sign-extended 32-bit immediate).
    MovImmSx {
        dst: u8,
        imm: i32,
    },
    /// `movabs $imm, dst`.
    MovAbs {
        dst: u8,
        imm: u64,
    },
    /// `xor dst32, dst32`.
    Zero {
        dst: u8,
    },
    Lea {
        dst: u8,
        mem: XMem,
    },
    /// Loads zero-extend (`movzbl`, `movzwl`, `movl`, `movq`).
    Load {
        w: Width,
        dst: u8,
        mem: XMem,
    },
    Store {
        w: Width,
        mem: XMem,
        src: u8,
    },
    StoreImm {
        w: Width,
        mem: XMem,
        imm: i32,
    },
    /// `op src, dst`: dst = dst op src.
    Alu {
        op: Alu,
        w64: bool,
        dst: u8,
        src: u8,
    },
    AluImm {
        op: Alu,
        w64: bool,
        dst: u8,
        imm: i32,
    },
    AluMemImm {
        op: Alu,
        w64: bool,
        mem: XMem,
        imm: i32,
    },
    /// `shl $n, dst64`.
    Shl {
        dst: u8,
        n: u8,
    },
    /// `rep movsb`.
    RepMovsb,
    Jcc {
        cc: Cc,
        to: Label,
        long: bool,
    },
    Jmp {
        to: Label,
        long: bool,
    },
    Call(Callee),
    /// `jmp` to a function (a tail call).
    JmpFunc(Callee),
}

/// Fixup kinds: where the PC-relative field sits, and its size.
const FIX_REL8_AT1: u8 = 0;
const FIX_REL32_AT1: u8 = 1;
const FIX_REL32_AT2: u8 = 2;

fn rex(w: bool, r: u8, x: u8, b: u8) -> u8 {
    0x40 | (w as u8) << 3 | (r >> 3) << 2 | (x >> 3) << 1 | (b >> 3)
}

/// REX prefix if needed: for W, an extended register, or (`byte_reg`) a
/// byte access to spl, bpl, sil or dil.
fn opt_rex(s: &mut Sink, w: bool, r: u8, mem_or_rm: RmRegs, byte_reg: bool) {
    let (x, b) = match mem_or_rm {
        RmRegs::Reg(b) => (0, b),
        RmRegs::Mem(XMem::Rip(_)) => (0, 0),
        RmRegs::Mem(XMem::Base { base, index, .. }) => (index.map_or(0, |i| i.0), base),
    };
    let v = rex(w, r, x, b);
    if v != 0x40 || (byte_reg && (4..8).contains(&r)) {
        s.bytes(&[v]);
    }
}

#[derive(Clone, Copy)]
enum RmRegs {
    Reg(u8),
    Mem(XMem),
}

/// ModRM (+ SIB, displacement) for `reg` and memory operand `m`; `tail`:
/// bytes of the instruction after the displacement (immediate).
fn modrm_mem(s: &mut Sink, reg: u8, m: XMem, tail: i64) {
    let reg = (reg & 7) << 3;
    match m {
        XMem::Rip(sym) => {
            s.bytes(&[reg | 5]);
            s.reloc(CodeRelocKind::X86PcRel32, sym, -4 - tail);
            s.bytes(&[0; 4]);
        }
        XMem::Base { base, index, disp } => {
            let md = if disp == 0 && base & 7 != RBP {
                0
            } else if i8::try_from(disp).is_ok() {
                1
            } else {
                2
            };
            if index.is_some() || base & 7 == RSP {
                // Index 100 (rsp) in a SIB byte means none.
                assert!(
                    index.is_none_or(|(i, _)| i != RSP),
                    "rsp cannot be an index"
                );
                let (i, scale) = index.unwrap_or((RSP, 0));
                s.bytes(&[md << 6 | reg | 4, scale << 6 | (i & 7) << 3 | (base & 7)]);
            } else {
                s.bytes(&[md << 6 | reg | (base & 7)]);
            }
            match md {
                0 => {}
                1 => s.bytes(&[disp as i8 as u8]),
                _ => s.bytes(&disp.to_le_bytes()),
            }
        }
    }
}

fn modrm_rr(s: &mut Sink, reg: u8, rm: u8) {
    s.bytes(&[0xc0 | (reg & 7) << 3 | (rm & 7)]);
}

pub struct X86_64;

/// Instruction selection for one instruction.
struct Lowering<'a> {
    conv: &'static Conv,
    out: &'a mut Vec<M>,
}

/// Registers pushed, in order, and bytes allocated below them.
pub struct Frame {
    pushed: Vec<u8>,
    alloc: u32,
}

impl Lowering<'_> {
    fn mem(&self, m: Mem) -> XMem {
        match m {
            Mem::Sym(s) => XMem::Rip(s),
            Mem::Reg { base, index, disp } => {
                let index = index.map(|(i, sh)| {
                    assert!(sh <= 3, "x86 scales an index by 1, 2, 4 or 8");
                    (self.conv.reg(i), sh)
                });
                XMem::Base {
                    base: self.conv.reg(base),
                    index,
                    disp,
                }
            }
        }
    }
    fn mov(&mut self, dst: u8, src: u8) {
        if dst != src {
            self.out.push(M::Mov {
                w64: true,
                dst,
                src,
            });
        }
    }
    fn mov_imm(&mut self, w: Width, dst: u8, v: i64) {
        let v = match w {
            Width::W64 => v,
            _ => v as u32 as i64,
        };
        self.out.push(if v == 0 {
            M::Zero { dst }
        } else if let Ok(u) = u32::try_from(v) {
            M::MovImm32 { dst, imm: u }
        } else if let Ok(i) = i32::try_from(v) {
            M::MovImmSx { dst, imm: i }
        } else {
            M::MovAbs { dst, imm: v as u64 }
        });
    }
    fn inst(&mut self, i: &Inst) {
        let w64 = Width::is_64;
        match *i {
            Inst::AddrOf(d, s) => {
                let dst = self.conv.reg(d);
                self.out.push(M::Lea {
                    dst,
                    mem: XMem::Rip(s),
                })
            }
            Inst::MovImm(w, d, v) => {
                let dst = self.conv.reg(d);
                self.mov_imm(w, dst, v)
            }
            Inst::Mov(w, d, s) => {
                let (dst, src) = (self.conv.reg(d), self.conv.reg(s));
                if w64(w) {
                    self.mov(dst, src)
                } else {
                    self.out.push(M::Mov {
                        w64: false,
                        dst,
                        src,
                    })
                }
            }
            Inst::Load(w, d, m) => self.out.push(M::Load {
                w,
                dst: self.conv.reg(d),
                mem: self.mem(m),
            }),
            Inst::Store(w, m, v) => {
                let mem = self.mem(m);
                self.out.push(match v {
                    Operand::Reg(r) => M::Store {
                        w,
                        mem,
                        src: self.conv.reg(r),
                    },
                    Operand::Imm(imm) => M::StoreImm { w, mem, imm },
                })
            }
            Inst::Add(d, a, b) => {
                let (dst, a) = (self.conv.reg(d), self.conv.reg(a));
                match b {
                    Operand::Reg(b) => {
                        let b = self.conv.reg(b);
                        if dst == a || dst == b {
                            let src = if dst == a { b } else { a };
                            self.out.push(M::Alu {
                                op: Alu::Add,
                                w64: true,
                                dst,
                                src,
                            })
                        } else {
                            self.out.push(M::Lea {
                                dst,
                                mem: XMem::Base {
                                    base: a,
                                    index: Some((b, 0)),
                                    disp: 0,
                                },
                            })
                        }
                    }
                    Operand::Imm(0) => self.mov(dst, a),
                    Operand::Imm(imm) if dst == a => self.out.push(M::AluImm {
                        op: Alu::Add,
                        w64: true,
                        dst,
                        imm,
                    }),
                    Operand::Imm(disp) => self.out.push(M::Lea {
                        dst,
                        mem: XMem::Base {
                            base: a,
                            index: None,
                            disp,
                        },
                    }),
                }
            }
            Inst::Sub(d, a, b) => {
                let (dst, a, mut b) = (self.conv.reg(d), self.conv.reg(a), self.conv.reg(b));
                if dst == b && dst != a {
                    self.mov(SCRATCH, b);
                    b = SCRATCH;
                }
                self.mov(dst, a);
                self.out.push(M::Alu {
                    op: Alu::Sub,
                    w64: true,
                    dst,
                    src: b,
                })
            }
            Inst::AddShl(d, a, b, sh) => {
                let (dst, a, b) = (self.conv.reg(d), self.conv.reg(a), self.conv.reg(b));
                if sh <= 3 {
                    self.out.push(M::Lea {
                        dst,
                        mem: XMem::Base {
                            base: a,
                            index: Some((b, sh)),
                            disp: 0,
                        },
                    })
                } else {
                    let t = if dst == a { SCRATCH } else { dst };
                    self.mov(t, b);
                    self.out.push(M::Shl { dst: t, n: sh });
                    let src = if t == dst { a } else { t };
                    self.out.push(M::Alu {
                        op: Alu::Add,
                        w64: true,
                        dst,
                        src,
                    })
                }
            }
            Inst::Shl(d, s, n) => {
                let (dst, src) = (self.conv.reg(d), self.conv.reg(s));
                self.mov(dst, src);
                self.out.push(M::Shl { dst, n })
            }
            Inst::AddMem(w, m, imm) => {
                let mem = self.mem(m);
                self.out.push(M::AluMemImm {
                    op: Alu::Add,
                    w64: w64(w),
                    mem,
                    imm,
                })
            }
            Inst::Branch {
                width,
                cond,
                a,
                b,
                to,
            } => {
                let (w64, a) = (w64(width), self.conv.reg(a));
                let zero_test = b == Operand::Imm(0)
                    && matches!(cond, Cond::Eq | Cond::Ne | Cond::LtS | Cond::GeS);
                let cc = if zero_test {
                    self.out.push(M::Alu {
                        op: Alu::Test,
                        w64,
                        dst: a,
                        src: a,
                    });
                    match cond {
                        Cond::Eq => Cc::E,
                        Cond::Ne => Cc::Ne,
                        Cond::LtS => Cc::S,
                        _ => Cc::Ns,
                    }
                } else {
                    self.out.push(match b {
                        Operand::Reg(b) => M::Alu {
                            op: Alu::Cmp,
                            w64,
                            dst: a,
                            src: self.conv.reg(b),
                        },
                        Operand::Imm(imm) => M::AluImm {
                            op: Alu::Cmp,
                            w64,
                            dst: a,
                            imm,
                        },
                    });
                    match cond {
                        Cond::Eq => Cc::E,
                        Cond::Ne => Cc::Ne,
                        Cond::LtU => Cc::B,
                        Cond::GeU => Cc::Ae,
                        Cond::LtS => Cc::L,
                        Cond::GeS => Cc::Ge,
                    }
                };
                self.out.push(M::Jcc {
                    cc,
                    to,
                    long: false,
                })
            }
            Inst::Jump(to) => self.out.push(M::Jmp { to, long: false }),
            Inst::Bind(l) => self.out.push(M::Bind(l)),
            Inst::Call(c) => self.out.push(M::Call(c)),
            Inst::Return | Inst::TailCall(_) => unreachable!("the driver lowers returns"),
            Inst::Copy { dst, src, len } => {
                let moves = [
                    (RDI, self.conv.reg(dst)),
                    (RSI, self.conv.reg(src)),
                    (RCX, self.conv.reg(len)),
                ];
                for (d, s) in parallel_move(&moves, SCRATCH) {
                    self.mov(d, s);
                }
                self.out.push(M::RepMovsb)
            }
        }
    }
}

impl Backend for X86_64 {
    type M = M;
    type Frame = Frame;
    const PAD: &'static [u8] = &[0xcc];
    const ARCH: Arch = Arch::X86_64;
    const ENTRY_BIAS: i64 = 8;

    fn frame(&self, f: &Func, conv: &'static Conv) -> Option<Frame> {
        let roles = &conv.saved[..f.saved_roles() as usize];
        let copies = f.body.iter().any(|i| matches!(i, Inst::Copy { .. }));
        // Registers to save: the roles', and those `rep movsb` needs where
        // the convention has them callee-saved (Windows: rdi, rsi).
        let pushed: Vec<u8> = (conv.saved.iter().copied())
            .filter(|r| roles.contains(r) || (copies && [RDI, RSI, RCX].contains(r)))
            .collect();
        // At entry rsp = 8 mod 16; calls need it 16-byte aligned, with the
        // convention's home area above the return address.
        let alloc = if f.calls() {
            (8 + 8 * pushed.len() as u32) % 16 + conv.shadow
        } else {
            0
        };
        (!pushed.is_empty() || alloc > 0).then_some(Frame { pushed, alloc })
    }

    fn prologue(&self, fr: &Frame, out: &mut Vec<M>) {
        out.extend(fr.pushed.iter().map(|&r| M::Push(r)));
        if fr.alloc > 0 {
            out.push(M::AllocStack(fr.alloc));
        }
    }

    fn teardown(&self, fr: &Frame, out: &mut Vec<M>) {
        if fr.alloc > 0 {
            out.push(M::FreeStack(fr.alloc));
        }
        out.extend(fr.pushed.iter().rev().map(|&r| M::Pop(r)));
    }

    fn control(&self, c: Control) -> M {
        match c {
            Control::Bind(l) => M::Bind(l),
            Control::Jump(to) => M::Jmp { to, long: false },
            Control::Ret => M::Ret,
            Control::Tail(c) => M::JmpFunc(c),
        }
    }

    fn inst(&self, i: &Inst, conv: &'static Conv, _labels: &mut u32, out: &mut Vec<M>) {
        Lowering { conv, out }.inst(i)
    }

    fn encode(&self, m: &M, s: &mut Sink) {
        encode(m, s)
    }

    fn patch(&self, code: &mut [u8], at: u64, kind: u8, target: u64) -> bool {
        let (field, size) = match kind {
            FIX_REL8_AT1 => (at + 1, 1),
            FIX_REL32_AT1 => (at + 1, 4),
            _ => (at + 2, 4),
        };
        let rel = target as i64 - (field + size) as i64;
        let f = field as usize;
        if size == 1 {
            let Ok(v) = i8::try_from(rel) else {
                return false;
            };
            code[f] = v as u8;
        } else {
            let Ok(v) = i32::try_from(rel) else {
                return false;
            };
            code[f..f + 4].copy_from_slice(&v.to_le_bytes());
        }
        true
    }

    fn relax(&self, m: &mut M) -> bool {
        match m {
            M::Jcc { long, .. } | M::Jmp { long, .. } if !*long => {
                *long = true;
                true
            }
            _ => false,
        }
    }

    fn effects(&self, m: &M, out: &mut Vec<Effect>) {
        match *m {
            M::Bind(l) => out.push(Effect::Bind(l)),
            M::Push(r) => out.extend([Effect::Save(r), Effect::Sp(-8)]),
            M::Pop(r) => out.extend([Effect::Restore(r), Effect::Sp(8)]),
            M::AllocStack(n) => out.push(Effect::Sp(-(n as i64))),
            M::FreeStack(n) => out.push(Effect::Sp(n as i64)),
            M::Ret => out.push(Effect::Ret),
            M::Mov { dst, .. }
            | M::MovImm32 { dst, .. }
            | M::MovImmSx { dst, .. }
            | M::MovAbs { dst, .. }
            | M::Zero { dst }
            | M::Lea { dst, .. }
            | M::Load { dst, .. }
            | M::Shl { dst, .. } => out.push(Effect::Write(dst)),
            M::Alu { op, dst, .. } | M::AluImm { op, dst, .. } if op.writes() => {
                out.push(Effect::Write(dst))
            }
            M::Alu { .. } | M::AluImm { .. } | M::AluMemImm { .. } => {}
            M::Store { .. } | M::StoreImm { .. } => {}
            M::Jcc { to, .. } => out.push(Effect::Branch(to)),
            M::Jmp { to, .. } => out.push(Effect::Jump(to)),
            M::Call(_) => out.push(Effect::Call),
            M::JmpFunc(_) => out.push(Effect::TailJump),
            M::RepMovsb => out.extend([RDI, RSI, RCX].map(Effect::Write)),
        }
    }

    fn unwind(&self, l: &Lowered<M>, ends: &[u64], _size: u64) -> Option<WinUnwind> {
        if l.prologue == 0 {
            return None;
        }
        Some(WinUnwind {
            xdata: unwind_info(&l.insts[..l.prologue], &ends[..l.prologue]),
            pdata_end: true,
        })
    }
}

/// x64 UNWIND_INFO for a prologue of pushes and one stack allocation:
/// version 1, the prologue's size, and its steps undone in reverse order
/// (UWOP_PUSH_NONVOL, UWOP_ALLOC_SMALL or UWOP_ALLOC_LARGE).
fn unwind_info(prologue: &[M], ends: &[u64]) -> Vec<u8> {
    let mut codes: Vec<u8> = Vec::new();
    for (m, &end) in prologue.iter().zip(ends).rev() {
        match *m {
            M::Push(r) => codes.extend([end as u8, r << 4]),
            M::AllocStack(n) if n <= 128 => {
                codes.extend([end as u8, (((n - 8) / 8) as u8) << 4 | 2])
            }
            M::AllocStack(n) => {
                codes.extend([end as u8, 1]);
                codes.extend(((n / 8) as u16).to_le_bytes());
            }
            _ => unreachable!("not a prologue step: {m:?}"),
        }
    }
    let count = codes.len() / 2;
    if count % 2 == 1 {
        codes.extend([0, 0]);
    }
    let prolog = ends.last().copied().unwrap_or(0) as u8;
    let mut out = vec![1, prolog, count as u8, 0];
    out.extend(codes);
    out
}

/// The bytes of one instruction.
pub fn encode(m: &M, s: &mut Sink) {
    match *m {
        M::Bind(l) => s.bind(l),
        M::Push(r) => {
            opt_rex(s, false, 0, RmRegs::Reg(r), false);
            s.bytes(&[0x50 + (r & 7)]);
        }
        M::Pop(r) => {
            opt_rex(s, false, 0, RmRegs::Reg(r), false);
            s.bytes(&[0x58 + (r & 7)]);
        }
        M::AllocStack(n) | M::FreeStack(n) => {
            let ext = if matches!(m, M::AllocStack(_)) { 5 } else { 0 };
            alu_imm(s, ext, true, RSP, n as i32);
        }
        M::Ret => s.bytes(&[0xc3]),
        M::Mov { w64, dst, src } => {
            opt_rex(s, w64, src, RmRegs::Reg(dst), false);
            s.bytes(&[0x89]);
            modrm_rr(s, src, dst);
        }
        M::MovImm32 { dst, imm } => {
            opt_rex(s, false, 0, RmRegs::Reg(dst), false);
            s.bytes(&[0xb8 + (dst & 7)]);
            s.bytes(&imm.to_le_bytes());
        }
        M::MovImmSx { dst, imm } => {
            opt_rex(s, true, 0, RmRegs::Reg(dst), false);
            s.bytes(&[0xc7]);
            modrm_rr(s, 0, dst);
            s.bytes(&imm.to_le_bytes());
        }
        M::MovAbs { dst, imm } => {
            opt_rex(s, true, 0, RmRegs::Reg(dst), false);
            s.bytes(&[0xb8 + (dst & 7)]);
            s.bytes(&imm.to_le_bytes());
        }
        M::Zero { dst } => {
            opt_rex(s, false, dst, RmRegs::Reg(dst), false);
            s.bytes(&[0x31]);
            modrm_rr(s, dst, dst);
        }
        M::Lea { dst, mem } => {
            opt_rex(s, true, dst, RmRegs::Mem(mem), false);
            s.bytes(&[0x8d]);
            modrm_mem(s, dst, mem, 0);
        }
        M::Load { w, dst, mem } => {
            opt_rex(s, w == Width::W64, dst, RmRegs::Mem(mem), false);
            s.bytes(match w {
                Width::W8 => &[0x0f, 0xb6],
                Width::W16 => &[0x0f, 0xb7],
                _ => &[0x8b],
            });
            modrm_mem(s, dst, mem, 0);
        }
        M::Store { w, mem, src } => {
            if w == Width::W16 {
                s.bytes(&[0x66]);
            }
            opt_rex(s, w == Width::W64, src, RmRegs::Mem(mem), w == Width::W8);
            s.bytes(&[if w == Width::W8 { 0x88 } else { 0x89 }]);
            modrm_mem(s, src, mem, 0);
        }
        M::StoreImm { w, mem, imm } => {
            if w == Width::W16 {
                s.bytes(&[0x66]);
            }
            opt_rex(s, w == Width::W64, 0, RmRegs::Mem(mem), false);
            s.bytes(&[if w == Width::W8 { 0xc6 } else { 0xc7 }]);
            let n = w.bytes().min(4);
            modrm_mem(s, 0, mem, n as i64);
            s.bytes(&imm.to_le_bytes()[..n as usize]);
        }
        M::Alu { op, w64, dst, src } => {
            opt_rex(s, w64, src, RmRegs::Reg(dst), false);
            s.bytes(&[op.rr_opcode()]);
            modrm_rr(s, src, dst);
        }
        M::AluImm { op, w64, dst, imm } => alu_imm(s, op.ext(), w64, dst, imm),
        M::AluMemImm { op, w64, mem, imm } => {
            opt_rex(s, w64, 0, RmRegs::Mem(mem), false);
            if let Ok(b) = i8::try_from(imm) {
                s.bytes(&[0x83]);
                modrm_mem(s, op.ext(), mem, 1);
                s.bytes(&[b as u8]);
            } else {
                s.bytes(&[0x81]);
                modrm_mem(s, op.ext(), mem, 4);
                s.bytes(&imm.to_le_bytes());
            }
        }
        M::Shl { dst, n } => {
            opt_rex(s, true, 0, RmRegs::Reg(dst), false);
            s.bytes(&[0xc1]);
            modrm_rr(s, 4, dst);
            s.bytes(&[n]);
        }
        M::Jcc { cc, to, long } => {
            if long {
                s.fixup(to, FIX_REL32_AT2);
                s.bytes(&[0x0f, 0x80 + cc as u8, 0, 0, 0, 0]);
            } else {
                s.fixup(to, FIX_REL8_AT1);
                s.bytes(&[0x70 + cc as u8, 0]);
            }
        }
        M::Jmp { to, long } => {
            if long {
                s.fixup(to, FIX_REL32_AT1);
                s.bytes(&[0xe9, 0, 0, 0, 0]);
            } else {
                s.fixup(to, FIX_REL8_AT1);
                s.bytes(&[0xeb, 0]);
            }
        }
        M::Call(c) | M::JmpFunc(c) => {
            let op = if matches!(m, M::Call(_)) { 0xe8 } else { 0xe9 };
            match c {
                Callee::Extern(name) => {
                    s.bytes(&[op]);
                    s.reloc(CodeRelocKind::X86Branch32, Sym::Extern(name), -4);
                }
                Callee::Local(f) => {
                    s.call_fixup(f, FIX_REL32_AT1);
                    s.bytes(&[op]);
                }
            }
            s.bytes(&[0; 4]);
        }
        M::RepMovsb => s.bytes(&[0xf3, 0xa4]),
    }
}

/// `op $imm, reg` (imm8 form when it fits).
fn alu_imm(s: &mut Sink, ext: u8, w64: bool, dst: u8, imm: i32) {
    opt_rex(s, w64, 0, RmRegs::Reg(dst), false);
    if let Ok(b) = i8::try_from(imm) {
        s.bytes(&[0x83]);
        modrm_rr(s, ext, dst);
        s.bytes(&[b as u8]);
    } else {
        s.bytes(&[0x81]);
        modrm_rr(s, ext, dst);
        s.bytes(&imm.to_le_bytes());
    }
}

/// Every instruction form, against the bytes GNU as and llvm-mc give for
/// the assembler text beside it.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::encode_alone;

    fn base(base: u8, index: Option<(u8, u8)>, disp: i32) -> XMem {
        XMem::Base { base, index, disp }
    }

    fn bytes(m: M) -> Vec<u8> {
        encode_alone(&X86_64, &[m], 0).0
    }

    #[test]
    fn register_and_memory_forms() {
        let w = |w64| w64;
        let cases: Vec<(M, &str, &[u8])> = vec![
            (M::Push(RBX), "pushq %rbx", &[0x53]),
            (M::Push(R12), "pushq %r12", &[0x41, 0x54]),
            (M::Pop(R14), "popq %r14", &[0x41, 0x5e]),
            (M::AllocStack(8), "subq $8, %rsp", &[0x48, 0x83, 0xec, 0x08]),
            (
                M::AllocStack(40),
                "subq $40, %rsp",
                &[0x48, 0x83, 0xec, 0x28],
            ),
            (
                M::FreeStack(200),
                "addq $200, %rsp",
                &[0x48, 0x81, 0xc4, 0xc8, 0, 0, 0],
            ),
            (M::Ret, "retq", &[0xc3]),
            (
                M::Mov {
                    w64: w(true),
                    dst: RDI,
                    src: R13,
                },
                "movq %r13, %rdi",
                &[0x4c, 0x89, 0xef],
            ),
            (
                M::Mov {
                    w64: w(false),
                    dst: R13,
                    src: RDI,
                },
                "movl %edi, %r13d",
                &[0x41, 0x89, 0xfd],
            ),
            (
                M::MovImm32 { dst: R9, imm: 7 },
                "movl $7, %r9d",
                &[0x41, 0xb9, 7, 0, 0, 0],
            ),
            (
                M::MovImmSx { dst: RAX, imm: -1 },
                "movq $-1, %rax",
                &[0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff],
            ),
            (
                M::MovAbs {
                    dst: R10,
                    imm: 0x1_2345_6789,
                },
                "movabsq $0x123456789, %r10",
                &[0x49, 0xba, 0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0],
            ),
            (M::Zero { dst: RAX }, "xorl %eax, %eax", &[0x31, 0xc0]),
            (
                M::Zero { dst: R10 },
                "xorl %r10d, %r10d",
                &[0x45, 0x31, 0xd2],
            ),
            (
                M::Lea {
                    dst: RBX,
                    mem: base(RBX, Some((R10, 2)), 0),
                },
                "leaq (%rbx,%r10,4), %rbx",
                &[0x4a, 0x8d, 0x1c, 0x93],
            ),
            (
                M::Lea {
                    dst: RDI,
                    mem: base(R12, None, 8),
                },
                "leaq 8(%r12), %rdi",
                &[0x49, 0x8d, 0x7c, 0x24, 0x08],
            ),
            (
                M::Lea {
                    dst: RCX,
                    mem: base(R13, Some((RAX, 0)), 0),
                },
                "leaq (%r13,%rax), %rcx",
                &[0x49, 0x8d, 0x4c, 0x05, 0x00],
            ),
            (
                M::Lea {
                    dst: RDX,
                    mem: base(RSP, None, 0),
                },
                "leaq (%rsp), %rdx",
                &[0x48, 0x8d, 0x14, 0x24],
            ),
            (
                M::Load {
                    w: Width::W8,
                    dst: R9,
                    mem: base(R10, Some((R13, 0)), 23),
                },
                "movzbl 23(%r10,%r13), %r9d",
                &[0x47, 0x0f, 0xb6, 0x4c, 0x2a, 0x17],
            ),
            (
                M::Load {
                    w: Width::W16,
                    dst: RAX,
                    mem: base(RBP, None, 0),
                },
                "movzwl (%rbp), %eax",
                &[0x0f, 0xb7, 0x45, 0x00],
            ),
            (
                M::Load {
                    w: Width::W32,
                    dst: RDI,
                    mem: base(RBX, None, 0),
                },
                "movl (%rbx), %edi",
                &[0x8b, 0x3b],
            ),
            (
                M::Load {
                    w: Width::W64,
                    dst: R9,
                    mem: base(R12, Some((R10, 0)), 0),
                },
                "movq (%r12,%r10), %r9",
                &[0x4f, 0x8b, 0x0c, 0x14],
            ),
            (
                M::Load {
                    w: Width::W64,
                    dst: R9,
                    mem: base(R14, Some((R9, 3)), 0),
                },
                "movq (%r14,%r9,8), %r9",
                &[0x4f, 0x8b, 0x0c, 0xce],
            ),
            (
                M::Store {
                    w: Width::W8,
                    mem: base(RAX, None, 0),
                    src: RSI,
                },
                "movb %sil, (%rax)",
                &[0x40, 0x88, 0x30],
            ),
            (
                M::Store {
                    w: Width::W8,
                    mem: base(RCX, None, 0),
                    src: RAX,
                },
                "movb %al, (%rcx)",
                &[0x88, 0x01],
            ),
            (
                M::Store {
                    w: Width::W16,
                    mem: base(RDI, None, 52),
                    src: RAX,
                },
                "movw %ax, 52(%rdi)",
                &[0x66, 0x89, 0x47, 0x34],
            ),
            (
                M::Store {
                    w: Width::W32,
                    mem: base(R13, None, 0),
                    src: RCX,
                },
                "movl %ecx, (%r13)",
                &[0x41, 0x89, 0x4d, 0x00],
            ),
            (
                M::Store {
                    w: Width::W64,
                    mem: base(R12, Some((R10, 0)), 0),
                    src: R9,
                },
                "movq %r9, (%r12,%r10)",
                &[0x4f, 0x89, 0x0c, 0x14],
            ),
            (
                M::StoreImm {
                    w: Width::W8,
                    mem: base(R10, Some((R13, 0)), 23),
                    imm: 1,
                },
                "movb $1, 23(%r10,%r13)",
                &[0x43, 0xc6, 0x44, 0x2a, 0x17, 0x01],
            ),
            (
                M::StoreImm {
                    w: Width::W16,
                    mem: base(RDI, None, 52),
                    imm: -8,
                },
                "movw $-8, 52(%rdi)",
                &[0x66, 0xc7, 0x47, 0x34, 0xf8, 0xff],
            ),
            (
                M::StoreImm {
                    w: Width::W32,
                    mem: base(RAX, None, 0),
                    imm: 5,
                },
                "movl $5, (%rax)",
                &[0xc7, 0x00, 5, 0, 0, 0],
            ),
            (
                M::StoreImm {
                    w: Width::W64,
                    mem: base(RDI, None, 144),
                    imm: 0,
                },
                "movq $0, 144(%rdi)",
                &[0x48, 0xc7, 0x87, 0x90, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                M::Alu {
                    op: Alu::Add,
                    w64: true,
                    dst: RDI,
                    src: R12,
                },
                "addq %r12, %rdi",
                &[0x4c, 0x01, 0xe7],
            ),
            (
                M::Alu {
                    op: Alu::Sub,
                    w64: true,
                    dst: RAX,
                    src: RCX,
                },
                "subq %rcx, %rax",
                &[0x48, 0x29, 0xc8],
            ),
            (
                M::Alu {
                    op: Alu::Cmp,
                    w64: true,
                    dst: RBX,
                    src: RBP,
                },
                "cmpq %rbp, %rbx",
                &[0x48, 0x39, 0xeb],
            ),
            (
                M::Alu {
                    op: Alu::Test,
                    w64: false,
                    dst: RAX,
                    src: RAX,
                },
                "testl %eax, %eax",
                &[0x85, 0xc0],
            ),
            (
                M::Alu {
                    op: Alu::Test,
                    w64: true,
                    dst: R9,
                    src: R9,
                },
                "testq %r9, %r9",
                &[0x4d, 0x85, 0xc9],
            ),
            (
                M::AluImm {
                    op: Alu::Add,
                    w64: true,
                    dst: RBX,
                    imm: 4,
                },
                "addq $4, %rbx",
                &[0x48, 0x83, 0xc3, 0x04],
            ),
            (
                M::AluImm {
                    op: Alu::Cmp,
                    w64: false,
                    dst: R13,
                    imm: 23,
                },
                "cmpl $23, %r13d",
                &[0x41, 0x83, 0xfd, 0x17],
            ),
            (
                M::AluImm {
                    op: Alu::Cmp,
                    w64: true,
                    dst: RBX,
                    imm: 1000,
                },
                "cmpq $1000, %rbx",
                &[0x48, 0x81, 0xfb, 0xe8, 0x03, 0, 0],
            ),
            (
                M::AluMemImm {
                    op: Alu::Add,
                    w64: true,
                    mem: base(RAX, None, 8),
                    imm: 1,
                },
                "addq $1, 8(%rax)",
                &[0x48, 0x83, 0x40, 0x08, 0x01],
            ),
            (
                M::AluMemImm {
                    op: Alu::Add,
                    w64: false,
                    mem: base(RBX, None, 300),
                    imm: -1,
                },
                "addl $-1, 300(%rbx)",
                &[0x83, 0x83, 0x2c, 0x01, 0, 0, 0xff],
            ),
            (
                M::Shl { dst: R11, n: 6 },
                "shlq $6, %r11",
                &[0x49, 0xc1, 0xe3, 0x06],
            ),
            (M::RepMovsb, "rep movsb", &[0xf3, 0xa4]),
        ];
        for (m, text, want) in cases {
            assert_eq!(bytes(m), want, "{text}");
        }
    }

    /// RIP-relative operands and calls: the field, and the relocation on
    /// it whose addend reaches back from the end of the instruction.
    #[test]
    fn relocated_forms() {
        let s = Sym::Data(0x40);
        let cases: Vec<(M, &str, &[u8], CodeRelocKind, i64)> = vec![
            (
                M::Lea {
                    dst: R12,
                    mem: XMem::Rip(s),
                },
                "leaq sym(%rip), %r12",
                &[0x4c, 0x8d, 0x25],
                CodeRelocKind::X86PcRel32,
                -4,
            ),
            (
                M::AluMemImm {
                    op: Alu::Add,
                    w64: true,
                    mem: XMem::Rip(s),
                    imm: 1,
                },
                "addq $1, sym(%rip)",
                &[0x48, 0x83, 0x05],
                CodeRelocKind::X86PcRel32,
                -5,
            ),
            (
                M::Load {
                    w: Width::W8,
                    dst: R10,
                    mem: XMem::Rip(s),
                },
                "movzbl sym(%rip), %r10d",
                &[0x44, 0x0f, 0xb6, 0x15],
                CodeRelocKind::X86PcRel32,
                -4,
            ),
            (
                M::Call(Callee::Extern("f")),
                "callq f",
                &[0xe8],
                CodeRelocKind::X86Branch32,
                -4,
            ),
            (
                M::JmpFunc(Callee::Extern("f")),
                "jmp f",
                &[0xe9],
                CodeRelocKind::X86Branch32,
                -4,
            ),
        ];
        for (m, text, head, kind, addend) in cases {
            let (code, relocs) = encode_alone(&X86_64, std::slice::from_ref(&m), 0);
            assert_eq!(&code[..head.len()], head, "{text}");
            let tail = code.len() - head.len() - 4;
            assert_eq!(&code[head.len()..head.len() + 4], [0; 4], "{text}");
            assert_eq!(relocs.len(), 1, "{text}");
            let r = relocs[0];
            assert_eq!(
                (r.offset, r.kind, r.addend),
                (head.len() as u64, kind, addend),
                "{text}"
            );
            assert_eq!(addend, -4 - tail as i64, "{text}");
        }
    }

    /// Branches to labels, short and long (relaxed).
    #[test]
    fn branches() {
        let l = Label(0);
        let cases: Vec<(Vec<M>, &str, &[u8])> = vec![
            (
                vec![
                    M::Jcc {
                        cc: Cc::Ae,
                        to: l,
                        long: false,
                    },
                    M::Ret,
                    M::Bind(l),
                ],
                "jae 1f; retq; 1:",
                &[0x73, 0x01, 0xc3],
            ),
            (
                vec![
                    M::Bind(l),
                    M::Jcc {
                        cc: Cc::S,
                        to: l,
                        long: false,
                    },
                ],
                "1: js 1b",
                &[0x78, 0xfe],
            ),
            (
                vec![
                    M::Jcc {
                        cc: Cc::S,
                        to: l,
                        long: true,
                    },
                    M::Bind(l),
                ],
                "js 1f (rel32); 1:",
                &[0x0f, 0x88, 0, 0, 0, 0],
            ),
            (
                vec![M::Bind(l), M::Jmp { to: l, long: false }],
                "1: jmp 1b",
                &[0xeb, 0xfe],
            ),
            (
                vec![M::Bind(l), M::Jmp { to: l, long: true }],
                "1: jmp 1b (rel32)",
                &[0xe9, 0xfb, 0xff, 0xff, 0xff],
            ),
        ];
        for (ms, text, want) in cases {
            assert_eq!(encode_alone(&X86_64, &ms, 1).0, want, "{text}");
        }
    }

    #[test]
    fn unwind_info_of_a_prologue() {
        // push rbx; push rbp; push r12; sub $32, %rsp (Windows x64 Init)
        let prologue = [M::Push(RBX), M::Push(RBP), M::Push(R12), M::AllocStack(32)];
        let ends = [1, 2, 4, 8];
        assert_eq!(
            unwind_info(&prologue, &ends),
            [1, 8, 4, 0, 8, 0x32, 4, 0xc0, 2, 0x50, 1, 0x30]
        );
    }
}
