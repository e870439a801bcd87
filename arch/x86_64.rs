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
    /// Emit a near jump (opcode bytes + rel32) with a placeholder.
    fn jump32(&mut self, opcode: &[u8]) -> usize {
        self.bytes(opcode);
        self.bytes(&[0; 4]);
        self.out.code.len() - 4
    }
    fn patch32(&mut self, at: usize, target: u64) {
        let rel = (target as i64 - (at as i64 + 4)) as i32;
        self.out.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
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

/// One function that runs, for each walk in turn:
/// `for (p = table; p < table + n; p++) { r = callee(data + *p); if (check && r < 0) return -1; }`
/// and returns 0.
fn table_walks(a: &mut Asm, spec: &StubSpec, walks: &[TableWalk]) {
    // Callee-saved in both conventions: rbx (cursor), rbp (end), r12 (data).
    a.bytes(&[0x53, 0x55, 0x41, 0x54]); // push rbx; push rbp; push r12
    if spec.abi == Abi::Win64 {
        a.bytes(&[0x48, 0x83, 0xec, 0x20]); // sub $32, %rsp (shadow space)
    }
    a.bytes(&[0x4c, 0x8d, 0x25]); // lea data(%rip), %r12
    a.rip32(Sym::Data(0), 0);
    let mut to_fail = Vec::new();
    for w in walks {
        let start: u64 = 4 * spec.tables[..w.table].iter().sum::<u64>();
        let end = start + 4 * spec.tables[w.table];
        a.bytes(&[0x48, 0x8d, 0x1d]); // lea table(%rip), %rbx
        a.rip32(Sym::Table(start), 0);
        a.bytes(&[0x48, 0x8d, 0x2d]); // lea table_end(%rip), %rbp
        a.rip32(Sym::Table(end), 0);
        let top = a.pos();
        a.bytes(&[0x48, 0x39, 0xeb]); // cmp %rbp, %rbx
        let to_next = a.jump8(0x73); // jae next
        match spec.abi {
            Abi::SysV => a.bytes(&[0x8b, 0x3b, 0x4c, 0x01, 0xe7]), // mov (%rbx),%edi; add %r12,%rdi
            Abi::Win64 => a.bytes(&[0x8b, 0x0b, 0x4c, 0x01, 0xe1]), // mov (%rbx),%ecx; add %r12,%rcx
        }
        a.call(w.callee);
        a.bytes(&[0x48, 0x83, 0xc3, 0x04]); // add $4, %rbx
        if w.check_result {
            a.bytes(&[0x85, 0xc0]); // test %eax, %eax
            to_fail.push(a.jump32(&[0x0f, 0x88])); // js fail
        }
        let back = a.jump8(0xeb); // jmp top
        a.patch8(back, top);
        let next = a.pos();
        a.patch8(to_next, next);
    }
    a.bytes(&[0x31, 0xc0]); // xor %eax, %eax
    let to_out = (!to_fail.is_empty()).then(|| a.jump8(0xeb)); // jmp out
    if !to_fail.is_empty() {
        let fail = a.pos();
        for j in to_fail {
            a.patch32(j, fail);
        }
        a.bytes(&[0xb8, 0xff, 0xff, 0xff, 0xff]); // mov $-1, %eax
    }
    if let Some(j) = to_out {
        let out = a.pos();
        a.patch8(j, out);
    }
    if spec.abi == Abi::Win64 {
        a.bytes(&[0x48, 0x83, 0xc4, 0x20]); // add $32, %rsp
    }
    a.bytes(&[0x41, 0x5c, 0x5d, 0x5b, 0xc3]); // pop r12; pop rbp; pop rbx; ret
}
