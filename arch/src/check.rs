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
