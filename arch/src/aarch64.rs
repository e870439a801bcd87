//! AArch64 (AAPCS64; Windows on ARM64 uses it too, with its own unwind
//! data): ADRP + ADD pairs for addresses and BL for calls, so the code
//! links into PIE, non-PIE executables and shared libraries. x16 and x17
//! (IP0, IP1) are this lowering's own scratch registers and belong to no
//! role. Every instruction is 4 bytes.

use crate::ir::{Callee, Cond, Func, Inst, Label, Mem, Operand, Sym, Width};
use crate::lower::{Backend, CodeRelocKind, Control, Conv, Effect, Lowered, Sink, WinUnwind};
use crate::Arch;

const FP: u8 = 29;
const LR: u8 = 30;
/// Stack pointer or zero register, by instruction.
const SP: u8 = 31;
const ZR: u8 = 31;
/// Scratch for addresses, and for values.
const IP0: u8 = 16;
const IP1: u8 = 17;

/// AAPCS64.
pub static AAPCS64: Conv = Conv {
    name: "AAPCS64",
    arch: Arch::Aarch64,
    args: &[0, 1, 2, 3, 4, 5, 6, 7],
    ret: 0,
    saved: &[19, 20, 21, 22, 23, 24, 25, 26, 27, 28],
    temps: &[9, 10, 11, 12, 13, 14, 15],
    shadow: 0,
};

/// The condition field of B.cond for each [`Cond`] (in its order: eq, ne,
/// lo, hs, lt, ge).
const COND_CODES: [u32; 6] = [0, 1, 3, 2, 11, 10];

/// A machine instruction. `sf`: 64-bit (else 32-bit) operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum M {
    Bind(Label),
    /// `adrp rd, sym`
    Adrp {
        rd: u8,
        sym: Sym,
    },
    /// `add rd, rd, :lo12:sym`
    AddLo12 {
        rd: u8,
        sym: Sym,
    },
    /// `movz`, `movk`, `movn` of a 16-bit chunk at `16 * hw`.
    MovZ {
        sf: bool,
        rd: u8,
        imm: u16,
        hw: u8,
    },
    MovK {
        sf: bool,
        rd: u8,
        imm: u16,
        hw: u8,
    },
    MovN {
        sf: bool,
        rd: u8,
        imm: u16,
        hw: u8,
    },
    /// `mov rd, rm` (ORR with the zero register).
    Mov {
        sf: bool,
        rd: u8,
        rm: u8,
    },
    /// `add`/`sub`(`s`) `rd, rn, #imm` (rn may be sp; `cmp` is `subs`
    /// into the zero register).
    AddImm {
        sf: bool,
        sub: bool,
        flags: bool,
        rd: u8,
        rn: u8,
        imm: u16,
    },
    /// `add`/`sub`(`s`) `rd, rn, rm, lsl #shift`.
    AddReg {
        sf: bool,
        sub: bool,
        flags: bool,
        rd: u8,
        rn: u8,
        rm: u8,
        shift: u8,
    },
    /// `lsl rd, rn, #n` (64-bit).
    Lsl {
        rd: u8,
        rn: u8,
        n: u8,
    },
    /// `ldr`/`str` `rt, [rn, #off]` (unsigned offset, a multiple of the
    /// width).
    Ldr {
        w: Width,
        rt: u8,
        rn: u8,
        off: u32,
    },
    Str {
        w: Width,
        rt: u8,
        rn: u8,
        off: u32,
    },
    /// `ldr`/`str` `rt, [rn, rm{, lsl #log2(width)}]`.
    LdrReg {
        w: Width,
        rt: u8,
        rn: u8,
        rm: u8,
        scaled: bool,
    },
    StrReg {
        w: Width,
        rt: u8,
        rn: u8,
        rm: u8,
        scaled: bool,
    },
    /// `ldr`/`str` `rt, [rn], #imm` (post-index).
    LdrPost {
        w: Width,
        rt: u8,
        rn: u8,
        imm: i16,
    },
    StrPost {
        w: Width,
        rt: u8,
        rn: u8,
        imm: i16,
    },
    /// `stp rt, rt2, [sp, #-n]!`
    PushPair {
        rt: u8,
        rt2: u8,
        n: u32,
    },
    /// `ldp rt, rt2, [sp], #n`
    PopPair {
        rt: u8,
        rt2: u8,
        n: u32,
    },
    /// `stp`/`ldp` `rt, rt2, [sp, #off]`
    SavePair {
        rt: u8,
        rt2: u8,
        off: u32,
    },
    RestorePair {
        rt: u8,
        rt2: u8,
        off: u32,
    },
    /// `mov x29, sp`
    SetFp,
    B(Label),
    BCond(Cond, Label),
    /// `cbz`/`cbnz`
    Cbz {
        sf: bool,
        nz: bool,
        rt: u8,
        to: Label,
    },
    /// `tbz`/`tbnz`
    Tbz {
        nz: bool,
        rt: u8,
        bit: u8,
        to: Label,
    },
    Bl(Callee),
    /// `b` to a function (a tail call).
    BFunc(Callee),
    Ret,
}

fn size_bits(w: Width) -> u32 {
    (w.log2() as u32) << 30
}

/// The instruction word(s) of one instruction.
pub fn encode(m: &M, s: &mut Sink) {
    let r = |x: u8| x as u32;
    let sf = |b: bool| (b as u32) << 31;
    let word = match *m {
        M::Bind(l) => {
            s.bind(l);
            return;
        }
        M::Adrp { rd, sym } => {
            s.reloc(CodeRelocKind::A64AdrPage21, sym, 0);
            0x9000_0000 | r(rd)
        }
        M::AddLo12 { rd, sym } => {
            s.reloc(CodeRelocKind::A64AddLo12, sym, 0);
            0x9100_0000 | r(rd) << 5 | r(rd)
        }
        M::MovZ { sf: b, rd, imm, hw } => {
            sf(b) | 0x5280_0000 | r(hw) << 21 | (imm as u32) << 5 | r(rd)
        }
        M::MovK { sf: b, rd, imm, hw } => {
            sf(b) | 0x7280_0000 | r(hw) << 21 | (imm as u32) << 5 | r(rd)
        }
        M::MovN { sf: b, rd, imm, hw } => {
            sf(b) | 0x1280_0000 | r(hw) << 21 | (imm as u32) << 5 | r(rd)
        }
        M::Mov { sf: b, rd, rm } => sf(b) | 0x2a00_03e0 | r(rm) << 16 | r(rd),
        M::AddImm {
            sf: b,
            sub,
            flags,
            rd,
            rn,
            imm,
        } => {
            assert!(imm < 4096, "add immediate {imm}");
            sf(b)
                | 0x1100_0000
                | (sub as u32) << 30
                | (flags as u32) << 29
                | (imm as u32) << 10
                | r(rn) << 5
                | r(rd)
        }
        M::AddReg {
            sf: b,
            sub,
            flags,
            rd,
            rn,
            rm,
            shift,
        } => {
            sf(b)
                | 0x0b00_0000
                | (sub as u32) << 30
                | (flags as u32) << 29
                | r(rm) << 16
                | (shift as u32) << 10
                | r(rn) << 5
                | r(rd)
        }
        M::Lsl { rd, rn, n } => {
            let (immr, imms) = ((64 - n as u32) % 64, 63 - n as u32);
            0xd340_0000 | immr << 16 | imms << 10 | r(rn) << 5 | r(rd)
        }
        M::Ldr { w, rt, rn, off } | M::Str { w, rt, rn, off } => {
            let load = matches!(m, M::Ldr { .. });
            let scaled = off / w.bytes();
            assert!(off % w.bytes() == 0 && scaled < 4096, "offset {off}");
            size_bits(w) | 0x3900_0000 | (load as u32) << 22 | scaled << 10 | r(rn) << 5 | r(rt)
        }
        M::LdrReg {
            w,
            rt,
            rn,
            rm,
            scaled,
        }
        | M::StrReg {
            w,
            rt,
            rn,
            rm,
            scaled,
        } => {
            let load = matches!(m, M::LdrReg { .. });
            size_bits(w)
                | 0x3820_6800
                | (load as u32) << 22
                | r(rm) << 16
                | (scaled as u32) << 12
                | r(rn) << 5
                | r(rt)
        }
        M::LdrPost { w, rt, rn, imm } | M::StrPost { w, rt, rn, imm } => {
            let load = matches!(m, M::LdrPost { .. });
            size_bits(w)
                | 0x3800_0400
                | (load as u32) << 22
                | ((imm as u32) & 0x1ff) << 12
                | r(rn) << 5
                | r(rt)
        }
        M::PushPair { rt, rt2, n } => pair(0xa980_0000, rt, rt2, -(n as i32)),
        M::PopPair { rt, rt2, n } => pair(0xa8c0_0000, rt, rt2, n as i32),
        M::SavePair { rt, rt2, off } => pair(0xa900_0000, rt, rt2, off as i32),
        M::RestorePair { rt, rt2, off } => pair(0xa940_0000, rt, rt2, off as i32),
        M::SetFp => 0x9100_03fd,
        M::B(l) => {
            s.fixup(l, FIX_IMM26);
            0x1400_0000
        }
        M::BCond(cc, l) => {
            s.fixup(l, FIX_IMM19);
            0x5400_0000 | COND_CODES[cc as usize]
        }
        M::Cbz { sf: b, nz, rt, to } => {
            s.fixup(to, FIX_IMM19);
            sf(b) | 0x3400_0000 | (nz as u32) << 24 | r(rt)
        }
        M::Tbz { nz, rt, bit, to } => {
            s.fixup(to, FIX_IMM14);
            (bit as u32 >> 5) << 31
                | 0x3600_0000
                | (nz as u32) << 24
                | (bit as u32 & 31) << 19
                | r(rt)
        }
        M::Bl(c) | M::BFunc(c) => {
            let (op, kind) = match m {
                M::Bl(_) => (0x9400_0000, CodeRelocKind::A64Call26),
                _ => (0x1400_0000, CodeRelocKind::A64Jump26),
            };
            match c {
                Callee::Extern(name) => s.reloc(kind, Sym::Extern(name), 0),
                Callee::Local(f) => s.call_fixup(f, FIX_IMM26),
            }
            op
        }
        M::Ret => 0xd65f_03c0,
    };
    s.bytes(&word.to_le_bytes());
}

/// A 64-bit register pair access relative to sp.
fn pair(op: u32, rt: u8, rt2: u8, off: i32) -> u32 {
    assert!(
        off % 8 == 0 && (-512..=504).contains(&off),
        "pair offset {off}"
    );
    op | (((off / 8) as u32) & 0x7f) << 15 | (rt2 as u32) << 10 | (SP as u32) << 5 | rt as u32
}

/// Fixup kinds: the branch's offset field.
const FIX_IMM26: u8 = 0;
const FIX_IMM19: u8 = 1;
const FIX_IMM14: u8 = 2;

pub struct Aarch64;

/// A memory operand resolved to one of the load/store forms.
enum Addr {
    Imm(u8, u32),
    Reg(u8, u8, bool),
}

/// Instruction selection for one instruction.
struct Lowering<'a> {
    conv: &'static Conv,
    out: &'a mut Vec<M>,
    next_label: &'a mut u32,
}

/// Callee-saved registers in the frame (in pairs), and its size.
pub struct Frame {
    saved: Vec<u8>,
    size: u32,
}

impl Lowering<'_> {
    fn label(&mut self) -> Label {
        *self.next_label += 1;
        Label(*self.next_label - 1)
    }
    fn mov_imm(&mut self, sf: bool, rd: u8, v: u64) {
        let chunks = if sf { 4 } else { 2 };
        let v = if sf { v } else { v & 0xffff_ffff };
        let mask = if sf { u64::MAX } else { 0xffff_ffff };
        let chunk = |x: u64, i: u8| (x >> (16 * i)) as u16;
        // One instruction when all chunks but one are 0 (movz) or all ones
        // (movn).
        for (inv, zero) in [(false, 0u16), (true, 0xffff)] {
            let nonmatching: Vec<u8> = (0..chunks).filter(|&i| chunk(v, i) != zero).collect();
            if nonmatching.len() <= 1 {
                let hw = nonmatching.first().copied().unwrap_or(0);
                let imm = chunk(v, hw);
                self.out.push(if inv {
                    M::MovN {
                        sf,
                        rd,
                        imm: !imm,
                        hw,
                    }
                } else {
                    M::MovZ { sf, rd, imm, hw }
                });
                return;
            }
        }
        let _ = mask;
        let mut first = true;
        for hw in 0..chunks {
            let imm = chunk(v, hw);
            if imm == 0 {
                continue;
            }
            self.out.push(if first {
                M::MovZ { sf, rd, imm, hw }
            } else {
                M::MovK { sf, rd, imm, hw }
            });
            first = false;
        }
    }
    /// `rd = rn + imm` (64-bit), through IP1 when the immediate does not
    /// fit 12 bits.
    fn add_imm(&mut self, rd: u8, rn: u8, imm: i64) {
        if let Ok(u) = u16::try_from(imm.unsigned_abs()) {
            if u < 4096 {
                if imm == 0 && rd == rn {
                    return;
                }
                self.out.push(M::AddImm {
                    sf: true,
                    sub: imm < 0,
                    flags: false,
                    rd,
                    rn,
                    imm: u,
                });
                return;
            }
        }
        self.mov_imm(true, IP1, imm as u64);
        self.out.push(M::AddReg {
            sf: true,
            sub: false,
            flags: false,
            rd,
            rn,
            rm: IP1,
            shift: 0,
        });
    }
    /// Resolve a memory operand (address arithmetic in IP0).
    fn mem(&mut self, m: Mem, w: Width) -> Addr {
        let (base, index, disp) = match m {
            Mem::Sym(sym) => {
                self.out.push(M::Adrp { rd: IP0, sym });
                self.out.push(M::AddLo12 { rd: IP0, sym });
                return Addr::Imm(IP0, 0);
            }
            Mem::Reg { base, index, disp } => (
                self.conv.reg(base),
                index.map(|(i, s)| (self.conv.reg(i), s)),
                disp,
            ),
        };
        let base = match index {
            Some((i, sh)) if disp == 0 && (sh == 0 || sh == w.log2()) => {
                return Addr::Reg(base, i, sh != 0)
            }
            Some((i, sh)) => {
                self.out.push(M::AddReg {
                    sf: true,
                    sub: false,
                    flags: false,
                    rd: IP0,
                    rn: base,
                    rm: i,
                    shift: sh,
                });
                IP0
            }
            None => base,
        };
        let size = w.bytes() as i32;
        if disp >= 0 && disp % size == 0 && disp / size < 4096 {
            Addr::Imm(base, disp as u32)
        } else {
            self.add_imm(IP0, base, disp as i64);
            Addr::Imm(IP0, 0)
        }
    }
    fn load(&mut self, w: Width, rt: u8, a: Addr) {
        self.out.push(match a {
            Addr::Imm(rn, off) => M::Ldr { w, rt, rn, off },
            Addr::Reg(rn, rm, scaled) => M::LdrReg {
                w,
                rt,
                rn,
                rm,
                scaled,
            },
        })
    }
    fn store(&mut self, w: Width, rt: u8, a: Addr) {
        self.out.push(match a {
            Addr::Imm(rn, off) => M::Str { w, rt, rn, off },
            Addr::Reg(rn, rm, scaled) => M::StrReg {
                w,
                rt,
                rn,
                rm,
                scaled,
            },
        })
    }
    fn inst(&mut self, i: &Inst) {
        let sf = Width::is_64;
        match *i {
            Inst::AddrOf(d, sym) => {
                let rd = self.conv.reg(d);
                self.out.push(M::Adrp { rd, sym });
                self.out.push(M::AddLo12 { rd, sym });
            }
            Inst::MovImm(w, d, v) => {
                let rd = self.conv.reg(d);
                self.mov_imm(w == Width::W64, rd, v as u64)
            }
            Inst::Mov(w, d, s) => {
                let (rd, rm) = (self.conv.reg(d), self.conv.reg(s));
                if rd != rm || !sf(w) {
                    self.out.push(M::Mov { sf: sf(w), rd, rm })
                }
            }
            Inst::Load(w, d, m) => {
                let a = self.mem(m, w);
                let rt = self.conv.reg(d);
                self.load(w, rt, a)
            }
            Inst::Store(w, m, v) => {
                let a = self.mem(m, w);
                let rt = match v {
                    Operand::Reg(r) => self.conv.reg(r),
                    Operand::Imm(0) => ZR,
                    Operand::Imm(k) => {
                        self.mov_imm(w == Width::W64, IP1, k as i64 as u64);
                        IP1
                    }
                };
                self.store(w, rt, a)
            }
            Inst::Add(d, a, b) => {
                let (rd, rn) = (self.conv.reg(d), self.conv.reg(a));
                match b {
                    Operand::Reg(b) => {
                        let rm = self.conv.reg(b);
                        self.out.push(M::AddReg {
                            sf: true,
                            sub: false,
                            flags: false,
                            rd,
                            rn,
                            rm,
                            shift: 0,
                        })
                    }
                    Operand::Imm(k) => self.add_imm(rd, rn, k as i64),
                }
            }
            Inst::Sub(d, a, b) | Inst::AddShl(d, a, b, _) => {
                let (rd, rn, rm) = (self.conv.reg(d), self.conv.reg(a), self.conv.reg(b));
                let (sub, shift) = match *i {
                    Inst::AddShl(.., sh) => (false, sh),
                    _ => (true, 0),
                };
                self.out.push(M::AddReg {
                    sf: true,
                    sub,
                    flags: false,
                    rd,
                    rn,
                    rm,
                    shift,
                })
            }
            Inst::Shl(d, s, n) => {
                let (rd, rn) = (self.conv.reg(d), self.conv.reg(s));
                self.out.push(M::Lsl { rd, rn, n })
            }
            Inst::AddMem(w, m, imm) => {
                let a = self.mem(m, w);
                let (ld, st) = match &a {
                    Addr::Imm(rn, off) => (
                        M::Ldr {
                            w,
                            rt: IP1,
                            rn: *rn,
                            off: *off,
                        },
                        M::Str {
                            w,
                            rt: IP1,
                            rn: *rn,
                            off: *off,
                        },
                    ),
                    Addr::Reg(rn, rm, scaled) => (
                        M::LdrReg {
                            w,
                            rt: IP1,
                            rn: *rn,
                            rm: *rm,
                            scaled: *scaled,
                        },
                        M::StrReg {
                            w,
                            rt: IP1,
                            rn: *rn,
                            rm: *rm,
                            scaled: *scaled,
                        },
                    ),
                };
                self.out.push(ld);
                assert!(imm.unsigned_abs() < 4096, "memory increment {imm}");
                self.out.push(M::AddImm {
                    sf: w == Width::W64,
                    sub: imm < 0,
                    flags: false,
                    rd: IP1,
                    rn: IP1,
                    imm: imm.unsigned_abs() as u16,
                });
                self.out.push(st);
            }
            Inst::Branch {
                width,
                cond,
                a,
                b,
                to,
            } => {
                let (sf, rt) = (sf(width), self.conv.reg(a));
                if b == Operand::Imm(0) {
                    let bit = if sf { 63 } else { 31 };
                    match cond {
                        Cond::Eq | Cond::Ne => {
                            self.out.push(M::Cbz {
                                sf,
                                nz: cond == Cond::Ne,
                                rt,
                                to,
                            });
                            return;
                        }
                        Cond::LtS | Cond::GeS => {
                            self.out.push(M::Tbz {
                                nz: cond == Cond::LtS,
                                rt,
                                bit,
                                to,
                            });
                            return;
                        }
                        _ => {}
                    }
                }
                match b {
                    Operand::Reg(b) => {
                        let rm = self.conv.reg(b);
                        self.out.push(M::AddReg {
                            sf,
                            sub: true,
                            flags: true,
                            rd: ZR,
                            rn: rt,
                            rm,
                            shift: 0,
                        })
                    }
                    Operand::Imm(k) if k.unsigned_abs() < 4096 => self.out.push(M::AddImm {
                        sf,
                        sub: k >= 0,
                        flags: true,
                        rd: ZR,
                        rn: rt,
                        imm: k.unsigned_abs() as u16,
                    }),
                    Operand::Imm(k) => {
                        self.mov_imm(sf, IP1, k as i64 as u64);
                        self.out.push(M::AddReg {
                            sf,
                            sub: true,
                            flags: true,
                            rd: ZR,
                            rn: rt,
                            rm: IP1,
                            shift: 0,
                        })
                    }
                }
                self.out.push(M::BCond(cond, to))
            }
            Inst::Jump(l) => self.out.push(M::B(l)),
            Inst::Bind(l) => self.out.push(M::Bind(l)),
            Inst::Call(c) => self.out.push(M::Bl(c)),
            Inst::Return | Inst::TailCall(_) => unreachable!("the driver lowers returns"),
            Inst::Copy { dst, src, len } => {
                let (dst, src, len) = (self.conv.reg(dst), self.conv.reg(src), self.conv.reg(len));
                let (top, end) = (self.label(), self.label());
                self.out.push(M::Cbz {
                    sf: true,
                    nz: false,
                    rt: len,
                    to: end,
                });
                self.out.push(M::Bind(top));
                for m in [
                    M::LdrPost {
                        w: Width::W8,
                        rt: IP1,
                        rn: src,
                        imm: 1,
                    },
                    M::StrPost {
                        w: Width::W8,
                        rt: IP1,
                        rn: dst,
                        imm: 1,
                    },
                    M::AddImm {
                        sf: true,
                        sub: true,
                        flags: true,
                        rd: len,
                        rn: len,
                        imm: 1,
                    },
                    M::BCond(Cond::Ne, top),
                    M::Bind(end),
                ] {
                    self.out.push(m);
                }
            }
        }
    }
}

impl Backend for Aarch64 {
    type M = M;
    type Frame = Frame;
    const PAD: &'static [u8] = &[0x1f, 0x20, 0x03, 0xd5];
    const ARCH: Arch = Arch::Aarch64;
    const ENTRY_BIAS: i64 = 0;

    fn frame(&self, f: &Func, conv: &'static Conv) -> Option<Frame> {
        // Callee-saved registers go in pairs (an odd count saves one more).
        let n = f.saved_roles() as usize;
        let saved = conv.saved[..(n + n % 2).min(conv.saved.len())].to_vec();
        // A frame record (x29, x30) for any function that calls or saves,
        // as Apple's ABI requires.
        let size = 16 + 8 * saved.len() as u32;
        (f.calls() || !saved.is_empty()).then_some(Frame { saved, size })
    }

    fn prologue(&self, fr: &Frame, out: &mut Vec<M>) {
        out.push(M::PushPair {
            rt: FP,
            rt2: LR,
            n: fr.size,
        });
        out.push(M::SetFp);
        for (k, p) in fr.saved.chunks_exact(2).enumerate() {
            out.push(M::SavePair {
                rt: p[0],
                rt2: p[1],
                off: 16 + 16 * k as u32,
            });
        }
    }

    fn teardown(&self, fr: &Frame, out: &mut Vec<M>) {
        for (k, p) in fr.saved.chunks_exact(2).enumerate().rev() {
            out.push(M::RestorePair {
                rt: p[0],
                rt2: p[1],
                off: 16 + 16 * k as u32,
            });
        }
        out.push(M::PopPair {
            rt: FP,
            rt2: LR,
            n: fr.size,
        });
    }

    fn control(&self, c: Control) -> M {
        match c {
            Control::Bind(l) => M::Bind(l),
            Control::Jump(l) => M::B(l),
            Control::Ret => M::Ret,
            Control::Tail(c) => M::BFunc(c),
        }
    }

    fn inst(&self, i: &Inst, conv: &'static Conv, labels: &mut u32, out: &mut Vec<M>) {
        Lowering {
            conv,
            out,
            next_label: labels,
        }
        .inst(i)
    }

    fn encode(&self, m: &M, s: &mut Sink) {
        encode(m, s)
    }

    fn patch(&self, code: &mut [u8], at: u64, kind: u8, target: u64) -> bool {
        let delta = (target as i64 - at as i64) / 4;
        let (bits, shift) = match kind {
            FIX_IMM26 => (26, 0),
            FIX_IMM19 => (19, 5),
            _ => (14, 5),
        };
        if delta < -(1 << (bits - 1)) || delta >= 1 << (bits - 1) {
            return false;
        }
        let at = at as usize;
        let mut w = u32::from_le_bytes(code[at..at + 4].try_into().expect("4 bytes"));
        let mask = ((1u32 << bits) - 1) << shift;
        w = (w & !mask) | (((delta as u32) << shift) & mask);
        code[at..at + 4].copy_from_slice(&w.to_le_bytes());
        true
    }

    fn relax(&self, _m: &mut M) -> bool {
        false
    }

    fn effects(&self, m: &M, out: &mut Vec<Effect>) {
        match *m {
            M::Bind(l) => out.push(Effect::Bind(l)),
            M::PushPair { rt, rt2, n } => {
                out.extend([Effect::Save(rt), Effect::Save(rt2), Effect::Sp(-(n as i64))])
            }
            M::PopPair { rt, rt2, n } => out.extend([
                Effect::Restore(rt),
                Effect::Restore(rt2),
                Effect::Sp(n as i64),
            ]),
            M::SavePair { rt, rt2, .. } => out.extend([Effect::Save(rt), Effect::Save(rt2)]),
            M::RestorePair { rt, rt2, .. } => {
                out.extend([Effect::Restore(rt), Effect::Restore(rt2)])
            }
            M::SetFp => out.push(Effect::Write(FP)),
            M::Adrp { rd, .. }
            | M::AddLo12 { rd, .. }
            | M::MovZ { rd, .. }
            | M::MovK { rd, .. }
            | M::MovN { rd, .. }
            | M::Mov { rd, .. }
            | M::Lsl { rd, .. }
            | M::AddImm { rd, .. }
            | M::AddReg { rd, .. } => {
                if rd != ZR {
                    out.push(Effect::Write(rd))
                }
            }
            M::Ldr { rt, .. } | M::LdrReg { rt, .. } => out.push(Effect::Write(rt)),
            M::LdrPost { rt, rn, .. } => out.extend([Effect::Write(rt), Effect::Write(rn)]),
            M::StrPost { rn, .. } => out.push(Effect::Write(rn)),
            M::Str { .. } | M::StrReg { .. } => {}
            M::B(l) => out.push(Effect::Jump(l)),
            M::BCond(_, l) | M::Cbz { to: l, .. } | M::Tbz { to: l, .. } => {
                out.push(Effect::Branch(l))
            }
            M::Bl(_) => out.push(Effect::Call),
            M::BFunc(_) => out.push(Effect::TailJump),
            M::Ret => out.push(Effect::Ret),
        }
    }

    fn unwind(&self, l: &Lowered<M>, _ends: &[u64], size: u64) -> Option<WinUnwind> {
        if l.prologue == 0 {
            return None;
        }
        Some(WinUnwind {
            xdata: unwind_info(&l.insts[..l.prologue], l.epilogue, &l.insts, size),
            pdata_end: false,
        })
    }
}

/// ARM64 .xdata: header, one epilogue scope, then the unwind codes: the
/// prologue's steps in reverse (save_regp, set_fp, save_fplr_x, end), and
/// the epilogue's (the same without set_fp: it restores sp by its loads).
fn unwind_info(prologue: &[M], epilogue: Option<usize>, all: &[M], size: u64) -> Vec<u8> {
    let code = |m: &M, out: &mut Vec<u8>| match *m {
        M::SavePair { rt, rt2, off } => {
            assert_eq!(rt2, rt + 1, "save_regp saves consecutive registers");
            let v: u16 = (0b110010 << 10) | ((rt as u16 - 19) << 6) | (off / 8) as u16;
            out.extend(v.to_be_bytes());
        }
        M::PushPair { rt: FP, rt2: LR, n } => out.push(0x80 | (n / 8 - 1) as u8),
        M::SetFp => out.push(0xe1),
        _ => unreachable!("not a prologue step: {m:?}"),
    };
    let mut codes: Vec<u8> = Vec::new();
    for m in prologue.iter().rev() {
        code(m, &mut codes);
    }
    codes.push(0xe4); // end
    let epilog_index = codes.len() as u32;
    for m in prologue.iter().rev().filter(|m| **m != M::SetFp) {
        code(m, &mut codes);
    }
    codes.push(0xe4); // end
    while !codes.len().is_multiple_of(4) {
        codes.push(0xe3); // nop
    }
    // The epilogue's offset: 4 bytes per instruction before it (labels
    // take none).
    let epilog_at = epilogue.map_or(0, |e| {
        all[..e].iter().filter(|m| !matches!(m, M::Bind(_))).count() as u32
    });
    let words = (codes.len() / 4) as u32;
    let header = (size / 4) as u32 | (1 << 22) | (words << 27);
    let scope = epilog_at | (epilog_index << 22);
    let mut out = header.to_le_bytes().to_vec();
    out.extend(scope.to_le_bytes());
    out.extend(codes);
    out
}

/// Every instruction form, against the words GNU as and llvm-mc give for
/// the assembler text beside it.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::encode_alone;

    fn words(ms: &[M], labels: u32) -> (Vec<u32>, Vec<crate::CodeReloc>) {
        let (code, relocs) = encode_alone(&Aarch64, ms, labels);
        let w = code
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (w, relocs)
    }

    #[test]
    fn register_and_memory_forms() {
        let add = |sf, sub, flags, rd, rn, imm| M::AddImm {
            sf,
            sub,
            flags,
            rd,
            rn,
            imm,
        };
        let addr = |sf, sub, flags, rd, rn, rm, shift| M::AddReg {
            sf,
            sub,
            flags,
            rd,
            rn,
            rm,
            shift,
        };
        let cases: Vec<(M, &str, u32)> = vec![
            (
                M::MovZ {
                    sf: false,
                    rd: 0,
                    imm: 0,
                    hw: 0,
                },
                "mov w0, #0",
                0x5280_0000,
            ),
            (
                M::MovN {
                    sf: false,
                    rd: 0,
                    imm: 0,
                    hw: 0,
                },
                "mov w0, #-1",
                0x1280_0000,
            ),
            (
                M::MovZ {
                    sf: true,
                    rd: 17,
                    imm: 0x1234,
                    hw: 1,
                },
                "movz x17, #0x1234, lsl #16",
                0xd2a2_4691,
            ),
            (
                M::MovK {
                    sf: false,
                    rd: 12,
                    imm: 1,
                    hw: 1,
                },
                "movk w12, #1, lsl #16",
                0x72a0_002c,
            ),
            (
                M::MovN {
                    sf: true,
                    rd: 9,
                    imm: 0,
                    hw: 0,
                },
                "movn x9, #0",
                0x9280_0009,
            ),
            (
                M::Mov {
                    sf: true,
                    rd: 0,
                    rm: 11,
                },
                "mov x0, x11",
                0xaa0b_03e0,
            ),
            (
                M::Mov {
                    sf: false,
                    rd: 22,
                    rm: 0,
                },
                "mov w22, w0",
                0x2a00_03f6,
            ),
            (
                add(true, false, false, 19, 19, 4),
                "add x19, x19, #4",
                0x9100_1273,
            ),
            (
                add(true, true, false, 0, 1, 8),
                "sub x0, x1, #8",
                0xd100_2020,
            ),
            (add(true, true, true, ZR, 19, 5), "cmp x19, #5", 0xf100_167f),
            (add(false, false, true, ZR, 0, 1), "cmn w0, #1", 0x3100_041f),
            (
                add(true, true, true, 11, 11, 1),
                "subs x11, x11, #1",
                0xf100_056b,
            ),
            (
                addr(true, false, false, 0, 21, 0, 0),
                "add x0, x21, x0",
                0x8b00_02a0,
            ),
            (
                addr(true, false, false, 19, 19, 10, 2),
                "add x19, x19, x10, lsl #2",
                0x8b0a_0a73,
            ),
            (
                addr(true, true, false, 0, 1, 2, 0),
                "sub x0, x1, x2",
                0xcb02_0020,
            ),
            (
                addr(true, true, true, ZR, 19, 20, 0),
                "cmp x19, x20",
                0xeb14_027f,
            ),
            (
                addr(false, true, true, ZR, 22, 9, 0),
                "cmp w22, w9",
                0x6b09_02df,
            ),
            (
                M::Lsl {
                    rd: 11,
                    rn: 22,
                    n: 6,
                },
                "lsl x11, x22, #6",
                0xd37a_e6cb,
            ),
            (
                M::Ldr {
                    w: Width::W64,
                    rt: 9,
                    rn: 0,
                    off: 144,
                },
                "ldr x9, [x0, #144]",
                0xf940_4809,
            ),
            (
                M::Ldr {
                    w: Width::W32,
                    rt: 9,
                    rn: 23,
                    off: 0,
                },
                "ldr w9, [x23]",
                0xb940_02e9,
            ),
            (
                M::Ldr {
                    w: Width::W16,
                    rt: 1,
                    rn: 2,
                    off: 52,
                },
                "ldrh w1, [x2, #52]",
                0x7940_6841,
            ),
            (
                M::Ldr {
                    w: Width::W8,
                    rt: 10,
                    rn: 16,
                    off: 23,
                },
                "ldrb w10, [x16, #23]",
                0x3940_5e0a,
            ),
            (
                M::Str {
                    w: Width::W64,
                    rt: 17,
                    rn: 16,
                    off: 0,
                },
                "str x17, [x16]",
                0xf900_0211,
            ),
            (
                M::Str {
                    w: Width::W16,
                    rt: 17,
                    rn: 0,
                    off: 52,
                },
                "strh w17, [x0, #52]",
                0x7900_6811,
            ),
            (
                M::Str {
                    w: Width::W8,
                    rt: ZR,
                    rn: 9,
                    off: 0,
                },
                "strb wzr, [x9]",
                0x3900_013f,
            ),
            (
                M::LdrReg {
                    w: Width::W64,
                    rt: 11,
                    rn: 21,
                    rm: 9,
                    scaled: false,
                },
                "ldr x11, [x21, x9]",
                0xf869_6aab,
            ),
            (
                M::LdrReg {
                    w: Width::W64,
                    rt: 16,
                    rn: 12,
                    rm: 16,
                    scaled: true,
                },
                "ldr x16, [x12, x16, lsl #3]",
                0xf870_7990,
            ),
            (
                M::LdrReg {
                    w: Width::W8,
                    rt: 10,
                    rn: 9,
                    rm: 22,
                    scaled: false,
                },
                "ldrb w10, [x9, x22]",
                0x3876_692a,
            ),
            (
                M::StrReg {
                    w: Width::W8,
                    rt: ZR,
                    rn: 9,
                    rm: 22,
                    scaled: false,
                },
                "strb wzr, [x9, x22]",
                0x3836_693f,
            ),
            (
                M::StrReg {
                    w: Width::W64,
                    rt: 16,
                    rn: 21,
                    rm: 15,
                    scaled: false,
                },
                "str x16, [x21, x15]",
                0xf82f_6ab0,
            ),
            (
                M::LdrReg {
                    w: Width::W32,
                    rt: 1,
                    rn: 2,
                    rm: 3,
                    scaled: true,
                },
                "ldr w1, [x2, x3, lsl #2]",
                0xb863_7841,
            ),
            (
                M::LdrPost {
                    w: Width::W8,
                    rt: 17,
                    rn: 10,
                    imm: 1,
                },
                "ldrb w17, [x10], #1",
                0x3840_1551,
            ),
            (
                M::StrPost {
                    w: Width::W8,
                    rt: 17,
                    rn: 9,
                    imm: 1,
                },
                "strb w17, [x9], #1",
                0x3800_1531,
            ),
            (
                M::LdrPost {
                    w: Width::W32,
                    rt: 0,
                    rn: 19,
                    imm: 4,
                },
                "ldr w0, [x19], #4",
                0xb840_4660,
            ),
            (
                M::PushPair {
                    rt: FP,
                    rt2: LR,
                    n: 48,
                },
                "stp x29, x30, [sp, #-48]!",
                0xa9bd_7bfd,
            ),
            (
                M::PopPair {
                    rt: FP,
                    rt2: LR,
                    n: 48,
                },
                "ldp x29, x30, [sp], #48",
                0xa8c3_7bfd,
            ),
            (
                M::SavePair {
                    rt: 19,
                    rt2: 20,
                    off: 16,
                },
                "stp x19, x20, [sp, #16]",
                0xa901_53f3,
            ),
            (
                M::RestorePair {
                    rt: 21,
                    rt2: 22,
                    off: 32,
                },
                "ldp x21, x22, [sp, #32]",
                0xa942_5bf5,
            ),
            (M::SetFp, "mov x29, sp", 0x9100_03fd),
            (M::Ret, "ret", 0xd65f_03c0),
        ];
        for (m, text, want) in cases {
            assert_eq!(words(&[m], 0).0, [want], "{text}: {:#010x}", want);
        }
    }

    #[test]
    fn relocated_forms() {
        let s = Sym::Rodata(0x10);
        let (w, r) = words(
            &[M::Adrp { rd: 21, sym: s }, M::AddLo12 { rd: 21, sym: s }],
            0,
        );
        // adrp x21, sym; add x21, x21, :lo12:sym
        assert_eq!(w, [0x9000_0015, 0x9100_02b5]);
        let kinds: Vec<_> = r
            .iter()
            .map(|r| (r.offset, r.kind, r.target, r.addend))
            .collect();
        assert_eq!(
            kinds,
            [
                (0, CodeRelocKind::A64AdrPage21, s, 0),
                (4, CodeRelocKind::A64AddLo12, s, 0)
            ]
        );
        // bl f; b f
        let (w, r) = words(
            &[M::Bl(Callee::Extern("f")), M::BFunc(Callee::Extern("f"))],
            0,
        );
        assert_eq!(w, [0x9400_0000, 0x1400_0000]);
        assert_eq!(r[0].kind, CodeRelocKind::A64Call26);
        assert_eq!((r[1].offset, r[1].kind), (4, CodeRelocKind::A64Jump26));
    }

    #[test]
    fn branches() {
        let l = Label(0);
        let cases: Vec<(Vec<M>, &str, Vec<u32>)> = vec![
            (
                vec![M::BCond(Cond::GeU, l), M::Ret, M::Bind(l)],
                "b.hs .+8; ret",
                vec![0x5400_0042, 0xd65f_03c0],
            ),
            (
                vec![
                    M::Tbz {
                        nz: true,
                        rt: 0,
                        bit: 31,
                        to: l,
                    },
                    M::Bind(l),
                ],
                "tbnz w0, #31, .+4",
                vec![0x37f8_0020],
            ),
            (
                vec![
                    M::Tbz {
                        nz: false,
                        rt: 0,
                        bit: 63,
                        to: l,
                    },
                    M::Ret,
                    M::Bind(l),
                ],
                "tbz x0, #63, .+8; ret",
                vec![0xb6f8_0040, 0xd65f_03c0],
            ),
            (
                vec![
                    M::Cbz {
                        sf: true,
                        nz: false,
                        rt: 11,
                        to: l,
                    },
                    M::Ret,
                    M::Bind(l),
                ],
                "cbz x11, .+8; ret",
                vec![0xb400_004b, 0xd65f_03c0],
            ),
            (
                vec![
                    M::Cbz {
                        sf: false,
                        nz: true,
                        rt: 9,
                        to: l,
                    },
                    M::Ret,
                    M::Ret,
                    M::Bind(l),
                ],
                "cbnz w9, .+12; ret; ret",
                vec![0x3500_0069, 0xd65f_03c0, 0xd65f_03c0],
            ),
            (vec![M::Bind(l), M::B(l)], "b .", vec![0x1400_0000]),
            (
                vec![M::Ret, M::Bind(l), M::B(l)],
                "ret; 1: b 1b",
                vec![0xd65f_03c0, 0x1400_0000],
            ),
            (
                vec![M::Bind(l), M::Ret, M::B(l)],
                "1: ret; b 1b",
                vec![0xd65f_03c0, 0x17ff_ffff],
            ),
        ];
        for (ms, text, want) in cases {
            assert_eq!(words(&ms, 1).0, want, "{text}");
        }
    }

    #[test]
    fn unwind_info_of_a_prologue() {
        // stp x29, x30, [sp, #-48]!; mov x29, sp; stp x19, x20, [sp, #16];
        // stp x21, x22, [sp, #32]; ... epilogue at instruction 10; 16 in all.
        let prologue = [
            M::PushPair {
                rt: FP,
                rt2: LR,
                n: 48,
            },
            M::SetFp,
            M::SavePair {
                rt: 19,
                rt2: 20,
                off: 16,
            },
            M::SavePair {
                rt: 21,
                rt2: 22,
                off: 32,
            },
        ];
        let mut all = prologue.to_vec();
        all.extend(std::iter::repeat_n(M::Ret, 6));
        let x = unwind_info(&prologue, Some(10), &all, 64);
        // header: 16 words of code, one epilogue scope, 4 words of codes
        assert_eq!(&x[..4], &(16u32 | 1 << 22 | 4 << 27).to_le_bytes());
        // scope: the epilogue at word 10, its codes from byte 7
        assert_eq!(&x[4..8], &(10u32 | 7 << 22).to_le_bytes());
        assert_eq!(
            &x[8..],
            [
                0xc8, 0x84, 0xc8, 0x02, 0xe1, 0x85,
                0xe4, // save_regp x21 #32, x19 #16, set_fp, save_fplr_x 48, end
                0xc8, 0x84, 0xc8, 0x02, 0x85, 0xe4, // the epilogue's
                0xe3, 0xe3, 0xe3 // nops to a whole word
            ]
        );
    }
}
