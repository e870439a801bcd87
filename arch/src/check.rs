//! The invariants every lowering keeps, checked on its machine
//! instructions (through each instruction set's [`Effect`]s) without any
//! external tool:
//! * the stack pointer is 16-byte aligned at every call;
//! * every return or tail jump leaves the stack as it found it, with every
//!   saved register restored, and no callee-saved register is written
//!   that the function did not save first;
//! * every label is bound once, and every path reaching it agrees on the
//!   stack;
//! * every relocation lies inside its function.

use crate::ir::{Label, Program};
use crate::lower::{Backend, Conv, Effect, Stubs};
use crate::Arch;
use std::collections::BTreeMap;

/// Lower `prog` and check it; the error names the function and why.
pub fn check(arch: Arch, conv: &'static Conv, prog: &Program) -> Result<Stubs, String> {
    let out = arch.lower_with_effects(conv, prog, true);
    let bias = match arch {
        Arch::X86_64 => <crate::x86_64::X86_64 as Backend>::ENTRY_BIAS,
        Arch::Aarch64 => <crate::aarch64::Aarch64 as Backend>::ENTRY_BIAS,
    };
    for (f, effects) in out.stubs.funcs.iter().zip(&out.effects) {
        check_func(conv, bias, effects).map_err(|e| format!("{} ({}): {e}", f.name, conv.name))?;
    }
    for r in &out.stubs.relocs {
        let inside = out
            .stubs
            .funcs
            .iter()
            .any(|f| f.offset <= r.offset && r.offset + 4 <= f.offset + f.size);
        if !inside {
            return Err(format!(
                "relocation at {:#x} outside every function",
                r.offset
            ));
        }
    }
    Ok(out.stubs)
}

/// State along a path: bytes allocated below the entry stack pointer,
/// registers saved, registers restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    depth: i64,
    saved: u64,
    restored: u64,
}

fn check_func(conv: &Conv, bias: i64, insts: &[Vec<Effect>]) -> Result<(), String> {
    let mut bound: BTreeMap<Label, usize> = BTreeMap::new();
    for (i, effects) in insts.iter().enumerate() {
        for e in effects {
            if let Effect::Bind(l) = e {
                if bound.insert(*l, i).is_some() {
                    return Err(format!("label {l:?} bound twice"));
                }
            }
        }
    }
    let mut seen: Vec<Option<State>> = vec![None; insts.len() + 1];
    let mut work = vec![(
        0usize,
        State {
            depth: 0,
            saved: 0,
            restored: 0,
        },
    )];
    while let Some((start, state)) = work.pop() {
        let mut s = state;
        let mut i = start;
        loop {
            if i == insts.len() {
                return Err("runs off its end".into());
            }
            match seen[i] {
                Some(old) if old == s => break,
                Some(old) => {
                    return Err(format!(
                        "instruction {i} reached with {old:?} and with {s:?}"
                    ))
                }
                None => seen[i] = Some(s),
            }
            let mut next = true;
            for e in &insts[i] {
                match *e {
                    Effect::Sp(d) => s.depth -= d,
                    Effect::Save(r) => s.saved |= 1 << r,
                    Effect::Restore(r) => s.restored |= 1 << r,
                    Effect::Write(r) => {
                        if conv.is_callee_saved(r) && s.saved & (1 << r) == 0 {
                            return Err(format!(
                                "instruction {i} writes callee-saved register {r} before saving it"
                            ));
                        }
                    }
                    Effect::Call => {
                        if (bias + s.depth) % 16 != 0 {
                            return Err(format!(
                                "call at instruction {i} with the stack {} bytes off alignment",
                                (bias + s.depth) % 16
                            ));
                        }
                    }
                    Effect::Jump(l) | Effect::Branch(l) => {
                        let at = *bound
                            .get(&l)
                            .ok_or_else(|| format!("label {l:?} is never bound"))?;
                        work.push((at, s));
                        if matches!(e, Effect::Jump(_)) {
                            next = false;
                        }
                    }
                    Effect::Bind(_) => {}
                    Effect::Ret | Effect::TailJump => {
                        if s.depth != 0 {
                            return Err(format!(
                                "leaves at instruction {i} with {} bytes on the stack",
                                s.depth
                            ));
                        }
                        if s.saved != s.restored {
                            return Err(format!(
                                "leaves at instruction {i} with saved {:#x} but restored {:#x}",
                                s.saved, s.restored
                            ));
                        }
                        next = false;
                    }
                }
            }
            if !next {
                break;
            }
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;
    use crate::ir::{Builder, Callee, Cond, Inst, Mem, Operand, Program, Reg, Sym, Width};
    use crate::{aarch64, x86_64, Arch, CodeRelocKind, Conv};

    const CONVENTIONS: [(Arch, &Conv); 3] = [
        (Arch::X86_64, &x86_64::SYSV),
        (Arch::X86_64, &x86_64::WIN64),
        (Arch::Aarch64, &aarch64::AAPCS64),
    ];

    /// The shapes CPython 3.13's contract will need, written in the IR
    /// alone: a wrapper that looks its first argument up in a table and
    /// either returns through a local function or tail-calls the real
    /// function with its arguments untouched; a two-argument hook call
    /// with a pointer to a runtime field and a pointer to a pointer; a
    /// 64-bit counter raised at an external symbol plus an offset;
    /// runtime-state fields cleared.
    fn next_version_shapes() -> Program {
        let (cur, end, data) = (Reg::Saved(0), Reg::Saved(1), Reg::Saved(2));
        let (t0, t1) = (Reg::Temp(0), Reg::Temp(1));
        let mut init = Builder::new("init_module", false);
        init.addr(data, Sym::Data(0))
            .addr(cur, Sym::Rodata(0))
            .addr(end, Sym::Rodata(64));
        let top = init.here();
        let done = init.label();
        init.branch(Width::W64, cur, Cond::GeU, Operand::Reg(end), done)
            .load(Width::W32, t0, Mem::at(cur, 0))
            .addr(Reg::Arg(0), Sym::Extern("_PyRuntime"))
            .add(Reg::Arg(0), Reg::Arg(0), Operand::Imm(0x1234))
            .add(Reg::Arg(1), data, Operand::Reg(t0))
            .call(Callee::Extern("_PyUnicode_InternStatic"))
            .add(cur, cur, Operand::Imm(4))
            .jump(top)
            .bind(done)
            .addr(t0, Sym::Extern("_PyRuntime"))
            .push(Inst::AddMem(Width::W64, Mem::at(t0, 0x5000), 3))
            .load(Width::W64, t1, Mem::at(t0, 0x5008))
            .add(t1, t1, Operand::Imm(7))
            .store(Width::W64, Mem::at(t0, 0x5008), Operand::Reg(t1))
            .store(Width::W64, Mem::at(data, 144), Operand::Imm(0))
            .return_int(0);
        let mut wrap = Builder::new("__wrap_PyMarshal_ReadObjectFromString", true);
        let (hit, miss) = (wrap.label(), wrap.label());
        wrap.addr(data, Sym::Data(0))
            .push(Inst::Sub(t0, Reg::Arg(0), data))
            .addr(cur, Sym::Rodata(0))
            .addr(end, Sym::Rodata(32));
        let top = wrap.here();
        wrap.branch(Width::W64, cur, Cond::GeU, Operand::Reg(end), miss)
            .load(Width::W32, t1, Mem::at(cur, 0))
            .branch(Width::W64, t1, Cond::Eq, Operand::Reg(t0), hit)
            .add(cur, cur, Operand::Imm(4))
            .jump(top)
            .bind(hit)
            .load(Width::W32, Reg::Arg(0), Mem::at(cur, 32))
            .call(Callee::Local(0))
            .branch(Width::W32, Reg::Ret, Cond::LtS, Operand::Imm(0), miss)
            .load(Width::W32, t0, Mem::at(cur, 64))
            .add(Reg::Ret, data, Operand::Reg(t0))
            .push(Inst::Return)
            .bind(miss)
            .push(Inst::TailCall(Callee::Extern(
                "__real_PyMarshal_ReadObjectFromString",
            )));
        Program {
            funcs: vec![init.finish(), wrap.finish()],
        }
    }

    #[test]
    fn next_versions_shapes_lower_everywhere() {
        let p = next_version_shapes();
        for (arch, conv) in CONVENTIONS {
            let stubs = check(arch, conv, &p).unwrap_or_else(|e| panic!("{e}"));
            let tail = stubs.relocs.iter().any(|r| {
                r.target == Sym::Extern("__real_PyMarshal_ReadObjectFromString")
                    && matches!(
                        r.kind,
                        CodeRelocKind::X86Branch32 | CodeRelocKind::A64Jump26
                    )
            });
            assert!(tail, "{}: no tail call", conv.name);
        }
    }

    /// The checker refuses what it is there to refuse.
    #[test]
    fn checker_catches_broken_programs() {
        // An unbound label.
        let mut b = Builder::new("f", true);
        let l = b.label();
        b.jump(l);
        let p = Program {
            funcs: vec![b.finish()],
        };
        for (arch, conv) in CONVENTIONS {
            let e = std::panic::catch_unwind(|| check(arch, conv, &p));
            assert!(e.is_err() || e.unwrap().is_err(), "{}", conv.name);
        }
    }
}
