//! AArch64 stubs (AAPCS64): ADRP + ADD page/offset pairs for addresses and
//! BL for calls, so the object links into PIE, non-PIE executables and
//! shared libraries; every instruction is 4 bytes.

use super::{CodeReloc, CodeRelocKind, Func, StubSpec, Stubs, Sym, TableWalk};

const RET: u32 = 0xd65f_03c0;

struct Asm {
    out: Stubs,
}

impl Asm {
    fn pos(&self) -> u64 {
        self.out.code.len() as u64
    }
    fn ins(&mut self, word: u32) {
        self.out.code.extend_from_slice(&word.to_le_bytes());
    }
    fn reloc(&mut self, kind: CodeRelocKind, target: Sym) {
        let offset = self.pos();
        self.out.relocs.push(CodeReloc {
            offset,
            kind,
            target,
            addend: 0,
        });
    }
    /// `adrp xd, target; add xd, xd, :lo12:target`
    fn address(&mut self, rd: u32, target: Sym) {
        self.reloc(CodeRelocKind::A64AdrPage21, target);
        self.ins(0x9000_0000 | rd);
        self.reloc(CodeRelocKind::A64AddLo12, target);
        self.ins(0x9100_0000 | (rd << 5) | rd);
    }
    fn call(&mut self, callee: &'static str) {
        self.reloc(CodeRelocKind::A64Call26, Sym::Extern(callee));
        self.ins(0x9400_0000);
    }
    /// Placeholder for a branch patched later; returns its index.
    fn branch(&mut self, word: u32) -> usize {
        self.ins(word);
        self.out.code.len() - 4
    }
    /// Patch the PC-relative field of a B (imm26), B.cond (imm19) or TBNZ
    /// (imm14) at `at` to reach `target`.
    fn patch(&mut self, at: usize, target: u64) {
        let delta = (target as i64 - at as i64) / 4;
        let mut w = u32::from_le_bytes(self.out.code[at..at + 4].try_into().unwrap());
        w |= match w >> 24 {
            0x14 => (delta as u32) & 0x03ff_ffff,
            0x54 => ((delta as u32) & 0x7_ffff) << 5,
            _ => ((delta as u32) & 0x3fff) << 5, // TBNZ
        };
        self.out.code[at..at + 4].copy_from_slice(&w.to_le_bytes());
    }
    fn align(&mut self, a: u64) {
        while self.pos() % a != 0 {
            self.ins(0xd503_201f); // nop
        }
    }
    fn func(&mut self, name: &str, start: u64) {
        let size = self.pos() - start;
        self.out.funcs.push(Func {
            name: name.to_string(),
            offset: start,
            size,
        });
    }
}

pub fn assemble(spec: &StubSpec) -> Stubs {
    let mut a = Asm {
        out: Stubs {
            align: 16,
            ..Stubs::default()
        },
    };
    for (name, code) in &spec.accessors {
        a.align(16);
        let start = a.pos();
        a.address(0, Sym::Data(*code));
        if let Some(refcnt) = spec.incref {
            let imm = refcnt / 8;
            a.ins(0xf940_0001 | (imm << 10)); // ldr x1, [x0, #refcnt]
            a.ins(0x9100_0421); // add x1, x1, #1
            a.ins(0xf900_0001 | (imm << 10)); // str x1, [x0, #refcnt]
        }
        a.ins(RET);
        a.func(name, start);
    }
    let mut i = 0;
    while i < spec.walks.len() {
        let name = spec.walks[i].name;
        let n = spec.walks[i..]
            .iter()
            .take_while(|w| w.name == name)
            .count();
        a.align(16);
        let start = a.pos();
        table_walks(&mut a, spec, &spec.walks[i..i + n]);
        a.func(name, start);
        i += n;
    }
    a.out
}

/// See the x86_64 version: for each walk, call `callee(data + entry)` for
/// every entry of its table; with `check_result`, a negative result makes
/// the function return -1. Returns 0.
fn table_walks(a: &mut Asm, spec: &StubSpec, walks: &[TableWalk]) {
    a.ins(0xa9bd_7bfd); // stp x29, x30, [sp, #-48]!
    a.ins(0x9100_03fd); // mov x29, sp
    a.ins(0xa901_53f3); // stp x19, x20, [sp, #16]
    a.ins(0xf900_13f5); // str x21, [sp, #32]
    a.address(21, Sym::Data(0)); // x21 = data
    let mut to_fail = Vec::new();
    for w in walks {
        let start: u64 = 4 * spec.tables[..w.table].iter().sum::<u64>();
        let end = start + 4 * spec.tables[w.table];
        a.address(19, Sym::Table(start)); // x19 = cursor
        a.address(20, Sym::Table(end)); // x20 = end
        let top = a.pos();
        a.ins(0xeb14_027f); // cmp x19, x20
        let to_next = a.branch(0x5400_0002); // b.hs next
        a.ins(0xb840_4660); // ldr w0, [x19], #4
        a.ins(0x8b00_02a0); // add x0, x21, x0
        a.call(w.callee);
        if w.check_result {
            to_fail.push(a.branch(0x37f8_0000)); // tbnz w0, #31, fail
        }
        let back = a.branch(0x1400_0000); // b top
        a.patch(back, top);
        let next = a.pos();
        a.patch(to_next, next);
    }
    a.ins(0x5280_0000); // mov w0, #0
    if !to_fail.is_empty() {
        let to_out = a.branch(0x1400_0000); // b out
        let fail = a.pos();
        for j in to_fail {
            a.patch(j, fail);
        }
        a.ins(0x1280_0000); // mov w0, #-1
        let out = a.pos();
        a.patch(to_out, out);
    }
    a.ins(0xf940_13f5); // ldr x21, [sp, #32]
    a.ins(0xa941_53f3); // ldp x19, x20, [sp, #16]
    a.ins(0xa8c3_7bfd); // ldp x29, x30, [sp], #48
    a.ins(RET);
}
