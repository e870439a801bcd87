//! x86_64 stubs: RIP-relative addressing only and calls through the PLT, so
//! the object links into PIE, non-PIE executables and shared libraries.

use super::{Abi, CodeReloc, CodeRelocKind, Func, StubSpec, Stubs, Sym, TableWalk};

struct Asm {
    out: Stubs,
}

impl Asm {
    fn bytes(&mut self, b: &[u8]) {
        self.out.code.extend_from_slice(b);
    }
    fn pos(&self) -> u64 {
        self.out.code.len() as u64
    }
    /// A RIP-relative 32-bit field; `tail` = bytes of the instruction that
    /// follow the field.
    fn rip32(&mut self, target: Sym, tail: i64) {
        let offset = self.pos();
        self.out.relocs.push(CodeReloc {
            offset,
            kind: CodeRelocKind::X86PcRel32,
            target,
            addend: -4 - tail,
        });
        self.bytes(&[0; 4]);
    }
    fn call(&mut self, callee: &'static str) {
        self.bytes(&[0xe8]);
        let offset = self.pos();
        self.out.relocs.push(CodeReloc {
            offset,
            kind: CodeRelocKind::X86Call32,
            target: Sym::Extern(callee),
            addend: -4,
        });
        self.bytes(&[0; 4]);
    }
    /// Emit a short jump opcode with a placeholder; returns where to patch.
    fn jump8(&mut self, opcode: u8) -> usize {
        self.bytes(&[opcode, 0]);
        self.out.code.len() - 1
    }
    fn patch8(&mut self, at: usize, target: u64) {
        let rel = target as i64 - (at as i64 + 1);
        self.out.code[at] = i8::try_from(rel).expect("short jump in range") as u8;
    }
    fn align(&mut self, a: u64) {
        while self.pos() % a != 0 {
            self.bytes(&[0xcc]);
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
        if let Some(refcnt) = spec.incref {
            // addq $1, refcnt(%rip)
            a.bytes(&[0x48, 0x83, 0x05]);
            a.rip32(Sym::Data(code + refcnt as u64), 1);
            a.bytes(&[0x01]);
        }
        // lea code(%rip), %rax ; ret
        a.bytes(&[0x48, 0x8d, 0x05]);
        a.rip32(Sym::Data(*code), 0);
        a.bytes(&[0xc3]);
        a.func(name, start);
    }
    for w in &spec.walks {
        a.align(16);
        let start = a.pos();
        table_walk(&mut a, spec, w);
        a.func(w.name, start);
    }
    a.out
}

/// for (p = table; p < table + n; p++) { r = callee(data + *p); if (r < 0) return -1; }
fn table_walk(a: &mut Asm, spec: &StubSpec, w: &TableWalk) {
    // Callee-saved in both conventions: rbx (cursor), rbp (end), r12 (data).
    a.bytes(&[0x53, 0x55, 0x41, 0x54]); // push rbx; push rbp; push r12
    if spec.abi == Abi::Win64 {
        a.bytes(&[0x48, 0x83, 0xec, 0x20]); // sub $32, %rsp (shadow space)
    }
    a.bytes(&[0x48, 0x8d, 0x1d]); // lea table(%rip), %rbx
    a.rip32(Sym::Table(0), 0);
    a.bytes(&[0x48, 0x8d, 0x2d]); // lea table+4n(%rip), %rbp
    a.rip32(Sym::Table(4 * spec.table_len), 0);
    a.bytes(&[0x4c, 0x8d, 0x25]); // lea data(%rip), %r12
    a.rip32(Sym::Data(0), 0);
    let top = a.pos();
    a.bytes(&[0x48, 0x39, 0xeb]); // cmp %rbp, %rbx
    let to_done = a.jump8(0x73); // jae done
    match spec.abi {
        Abi::SysV => a.bytes(&[0x8b, 0x3b, 0x4c, 0x01, 0xe7]), // mov (%rbx),%edi; add %r12,%rdi
        Abi::Win64 => a.bytes(&[0x8b, 0x0b, 0x4c, 0x01, 0xe1]), // mov (%rbx),%ecx; add %r12,%rcx
    }
    a.call(w.callee);
    a.bytes(&[0x48, 0x83, 0xc3, 0x04]); // add $4, %rbx
    let to_out;
    if w.check_result {
        a.bytes(&[0x85, 0xc0]); // test %eax, %eax
        let back = a.jump8(0x79); // jns top
        a.patch8(back, top);
        a.bytes(&[0xb8, 0xff, 0xff, 0xff, 0xff]); // mov $-1, %eax
        to_out = Some(a.jump8(0xeb)); // jmp out
    } else {
        let back = a.jump8(0xeb); // jmp top
        a.patch8(back, top);
        to_out = None;
    }
    let done = a.pos();
    a.patch8(to_done, done);
    a.bytes(&[0x31, 0xc0]); // xor %eax, %eax
    if let Some(j) = to_out {
        let out = a.pos();
        a.patch8(j, out);
    }
    if spec.abi == Abi::Win64 {
        a.bytes(&[0x48, 0x83, 0xc4, 0x20]); // add $32, %rsp
    }
    a.bytes(&[0x41, 0x5c, 0x5d, 0x5b, 0xc3]); // pop r12; pop rbp; pop rbx; ret
}
