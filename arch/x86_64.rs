//! x86_64 stubs: RIP-relative addressing only and calls through the PLT, so
//! the object links into PIE, non-PIE executables and shared libraries.
//! System V and Windows x64 calling conventions.

use super::{
    Abi, CodeReloc, CodeRelocKind, Emitter, Lazy, Scheme, StubSpec, Stubs, Sym, TableWalk,
    UnwindOp, FIX_TABLE, FROZENSET_TABLE, MODULE_TABLE, PRISTINE_TABLE, XFIX_TABLE,
};

struct Asm {
    e: Emitter,
    abi: Abi,
}

impl std::ops::Deref for Asm {
    type Target = Emitter;
    fn deref(&self) -> &Emitter {
        &self.e
    }
}

impl std::ops::DerefMut for Asm {
    fn deref_mut(&mut self) -> &mut Emitter {
        &mut self.e
    }
}

impl Asm {
    fn bytes(&mut self, b: &[u8]) {
        self.out.code.extend_from_slice(b);
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
    /// `lea target(%rip), reg` for reg = rax, rbx, rbp (REX.W) or r12.
    fn lea(&mut self, reg: Reg, target: Sym) {
        let (rex, modrm) = match reg {
            Reg::Rax => (0x48, 0x05),
            Reg::Rbx => (0x48, 0x1d),
            Reg::Rbp => (0x48, 0x2d),
            Reg::R12 => (0x4c, 0x25),
        };
        self.bytes(&[rex, 0x8d, modrm]);
        self.rip32(target, 0);
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
    /// A call to a function earlier in this section (no relocation).
    fn call_local(&mut self, target: u64) {
        let rel = target as i64 - (self.pos() as i64 + 5);
        self.bytes(&[0xe8]);
        self.bytes(&(rel as i32).to_le_bytes());
    }
    /// Short jump with a placeholder; returns where to patch.
    fn jump8(&mut self, opcode: u8) -> usize {
        self.bytes(&[opcode, 0]);
        self.out.code.len() - 1
    }
    fn patch8(&mut self, at: usize, target: u64) {
        let rel = target as i64 - (at as i64 + 1);
        self.out.code[at] = i8::try_from(rel).expect("short jump in range") as u8;
    }
    /// Near jump (opcode bytes + rel32) with a placeholder.
    fn jump32(&mut self, opcode: &[u8]) -> usize {
        self.bytes(opcode);
        self.bytes(&[0; 4]);
        self.out.code.len() - 4
    }
    fn patch32(&mut self, at: usize, target: u64) {
        let rel = (target as i64 - (at as i64 + 4)) as i32;
        self.out.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
    }
    fn here(&mut self, jumps8: &[usize]) {
        let p = self.pos();
        for &j in jumps8 {
            self.patch8(j, p);
        }
    }
    fn align(&mut self, a: u64) {
        while !self.pos().is_multiple_of(a) {
            self.bytes(&[0xcc]);
        }
    }

    // Prologue and epilogue saving rbx, rbp, r12 (+ r13, r14 with `more`),
    // leaving the stack 16-byte aligned for calls (and shadow space on
    // Windows).
    fn frame_size(&self, pushes: usize) -> u8 {
        // At entry rsp = 8 mod 16; after `pushes` pushes, pad to 16.
        let pad = if (8 + 8 * pushes).is_multiple_of(16) {
            0
        } else {
            8
        };
        let shadow = if self.abi == Abi::Win64 { 32 } else { 0 };
        (pad + shadow) as u8
    }
    /// Registers pushed: rbx, rbp, r12, and with `more` r13, r14 (and on
    /// Windows rdi, rsi, which are callee-saved there).
    fn pushes(&self, more: bool) -> usize {
        match (more, self.abi) {
            (false, _) => 3,
            (true, Abi::SysV) => 5,
            (true, Abi::Win64) => 7,
        }
    }
    fn prologue(&mut self, more: bool) {
        let push = |a: &mut Asm, code: &[u8], reg: u8| {
            a.bytes(code);
            a.unwind_op(UnwindOp::Push(reg));
        };
        push(self, &[0x53], 3); // push rbx
        push(self, &[0x55], 5); // push rbp
        push(self, &[0x41, 0x54], 12); // push r12
        if more {
            push(self, &[0x41, 0x55], 13); // push r13
            push(self, &[0x41, 0x56], 14); // push r14
            if self.abi == Abi::Win64 {
                push(self, &[0x57], 7); // push rdi
                push(self, &[0x56], 6); // push rsi
            }
        }
        let f = self.frame_size(self.pushes(more));
        if f != 0 {
            self.bytes(&[0x48, 0x83, 0xec, f]); // sub $f, %rsp
            self.unwind_op(UnwindOp::Alloc(f as u32));
        }
    }
    fn epilogue(&mut self, more: bool) {
        self.epilog = Some(self.pos());
        let f = self.frame_size(self.pushes(more));
        if f != 0 {
            self.bytes(&[0x48, 0x83, 0xc4, f]); // add $f, %rsp
        }
        if more && self.abi == Abi::Win64 {
            self.bytes(&[0x5e, 0x5f]); // pop rsi; pop rdi
        }
        if more {
            self.bytes(&[0x41, 0x5e, 0x41, 0x5d]); // pop r14; pop r13
        }
        self.bytes(&[0x41, 0x5c, 0x5d, 0x5b, 0xc3]); // pop r12; pop rbp; pop rbx; ret
    }
    /// First argument register <- the object at data + *(u32 *)rbx.
    fn arg_from_cursor(&mut self) {
        match self.abi {
            Abi::SysV => self.bytes(&[0x8b, 0x3b, 0x4c, 0x01, 0xe7]), // mov (%rbx),%edi; add %r12,%rdi
            Abi::Win64 => self.bytes(&[0x8b, 0x0b, 0x4c, 0x01, 0xe1]), // mov (%rbx),%ecx; add %r12,%rcx
        }
    }
    /// The loop over [rbx, rbp): call `callee` on each object (r12 = data).
    /// With `check`, a negative result jumps to a failure exit: the rel32
    /// fields to patch are pushed on `to_fail`.
    fn walk_loop(&mut self, callee: &'static str, check: bool, to_fail: &mut Vec<usize>) {
        let top = self.pos();
        self.bytes(&[0x48, 0x39, 0xeb]); // cmp %rbp, %rbx
        let to_next = self.jump8(0x73); // jae next
        self.arg_from_cursor();
        self.call(callee);
        self.bytes(&[0x48, 0x83, 0xc3, 0x04]); // add $4, %rbx
        if check {
            self.bytes(&[0x85, 0xc0]); // test %eax, %eax
            to_fail.push(self.jump32(&[0x0f, 0x88])); // js fail
        }
        let back = self.jump8(0xeb); // jmp top
        self.patch8(back, top);
        self.here(&[to_next]);
    }
    /// rax <- module r13's entry in the module table (64 bytes each).
    fn module_entry(&mut self, spec: &StubSpec) {
        self.lea(Reg::Rax, Sym::Table(spec.table_start(MODULE_TABLE)));
        self.bytes(&[0x4c, 0x89, 0xe9]); // mov %r13, %rcx
        self.bytes(&[0x48, 0xc1, 0xe1, 0x06]); // shl $6, %rcx
        self.bytes(&[0x48, 0x01, 0xc8]); // add %rcx, %rax
    }
    /// rbx, rbp <- module r13's frozenset entries (r12 = data).
    fn frozenset_range(&mut self, spec: &StubSpec) {
        self.module_entry(spec);
        self.bytes(&[0x8b, 0x48, 0x18]); // mov 24(%rax), %ecx
        self.bytes(&[0x8b, 0x50, 0x1c]); // mov 28(%rax), %edx
        self.lea(Reg::Rbx, Sym::Table(spec.table_start(FROZENSET_TABLE)));
        self.bytes(&[0x48, 0x8d, 0x1c, 0xcb]); // lea (%rbx,%rcx,8), %rbx
        self.bytes(&[0x48, 0x8d, 0x2c, 0xd3]); // lea (%rbx,%rdx,8), %rbp
    }
    /// Put a real frozenset, made from its tuple, into each of module
    /// r13's frozenset fields that still holds the tuple.
    fn make_frozensets(&mut self, spec: &StubSpec, lazy: &Lazy, to_fail: &mut Vec<usize>) {
        self.frozenset_range(spec);
        let top = self.pos();
        self.bytes(&[0x48, 0x39, 0xeb]); // cmp %rbp, %rbx
        let to_done = self.jump32(&[0x0f, 0x83]); // jae done
        self.bytes(&[0x8b, 0x03]); // mov (%rbx), %eax
        self.bytes(&[0x8b, 0x4b, 0x04]); // mov 4(%rbx), %ecx
        self.bytes(&[0x49, 0x8d, 0x3c, 0x0c]); // lea (%r12,%rcx), %rdi
        self.bytes(&[0x49, 0x39, 0x3c, 0x04]); // cmp %rdi, (%r12,%rax)
        let to_next = self.jump8(0x75); // jne next
        if self.abi == Abi::Win64 {
            self.bytes(&[0x48, 0x89, 0xf9]); // mov %rdi, %rcx
        }
        self.call(lazy.frozenset_new);
        self.bytes(&[0x48, 0x85, 0xc0]); // test %rax, %rax
        to_fail.push(self.jump32(&[0x0f, 0x84])); // jz fail
        self.bytes(&[0x8b, 0x0b]); // mov (%rbx), %ecx
        self.bytes(&[0x49, 0x89, 0x04, 0x0c]); // mov %rax, (%r12,%rcx)
        self.here(&[to_next]);
        self.bytes(&[0x48, 0x83, 0xc3, 0x08]); // add $8, %rbx
        let back = self.jump32(&[0xe9]);
        self.patch32(back, top);
        let done = self.pos();
        self.patch32(to_done, done);
    }
    /// Put the tuples back into module r13's frozenset fields and drop the
    /// frozensets.
    fn drop_frozensets(&mut self, spec: &StubSpec, lazy: &Lazy) {
        self.frozenset_range(spec);
        let top = self.pos();
        self.bytes(&[0x48, 0x39, 0xeb]); // cmp %rbp, %rbx
        let to_done = self.jump32(&[0x0f, 0x83]); // jae done
        self.bytes(&[0x8b, 0x03]); // mov (%rbx), %eax
        self.bytes(&[0x8b, 0x4b, 0x04]); // mov 4(%rbx), %ecx
        self.bytes(&[0x49, 0x8d, 0x14, 0x0c]); // lea (%r12,%rcx), %rdx
        self.bytes(&[0x49, 0x8b, 0x3c, 0x04]); // mov (%r12,%rax), %rdi
        self.bytes(&[0x48, 0x39, 0xd7]); // cmp %rdx, %rdi
        let to_next = self.jump8(0x74); // je next
        self.bytes(&[0x49, 0x89, 0x14, 0x04]); // mov %rdx, (%r12,%rax)
        if self.abi == Abi::Win64 {
            self.bytes(&[0x48, 0x89, 0xf9]); // mov %rdi, %rcx
        }
        self.call(lazy.decref);
        self.here(&[to_next]);
        self.bytes(&[0x48, 0x83, 0xc3, 0x08]); // add $8, %rbx
        let back = self.jump32(&[0xe9]);
        self.patch32(back, top);
        let done = self.pos();
        self.patch32(to_done, done);
    }
    /// rbx, rbp <- the range of module r13's code objects in table 0.
    fn module_range(&mut self, spec: &StubSpec) {
        self.module_entry(spec);
        self.bytes(&[0x8b, 0x08]); // mov (%rax), %ecx
        self.bytes(&[0x8b, 0x50, 0x04]); // mov 4(%rax), %edx
        self.lea(Reg::Rbx, Sym::Table(spec.table_start(0)));
        self.bytes(&[0x48, 0x8d, 0x1c, 0x8b]); // lea (%rbx,%rcx,4), %rbx
        self.bytes(&[0x48, 0x8d, 0x2c, 0x93]); // lea (%rbx,%rdx,4), %rbp
    }
    /// Apply module r13's fixups (r12 = data) unless done before in this
    /// process; then set its "fixed up" flag.
    fn fixups(&mut self, spec: &StubSpec, lazy: &Lazy) {
        let n = spec.accessors.len() as u32;
        self.lea(Reg::Rax, Sym::Data(lazy.flags));
        self.bytes(&[0x42, 0x80, 0xbc, 0x28]); // cmpb $0, n(%rax,%r13)
        self.bytes(&n.to_le_bytes());
        self.bytes(&[0x00]);
        let to_done = self.jump32(&[0x0f, 0x85]); // jne done
        self.bytes(&[0x42, 0xc6, 0x84, 0x28]); // movb $1, n(%rax,%r13)
        self.bytes(&n.to_le_bytes());
        self.bytes(&[0x01]);
        self.module_entry(spec);
        self.bytes(&[0x49, 0x89, 0xc6]); // mov %rax, %r14
                                         // Internal: *(u64 *)(data + off) += data.
        self.bytes(&[0x8b, 0x48, 0x08]); // mov 8(%rax), %ecx
        self.bytes(&[0x8b, 0x50, 0x0c]); // mov 12(%rax), %edx
        self.lea(Reg::Rbx, Sym::Table(spec.table_start(FIX_TABLE)));
        self.bytes(&[0x48, 0x8d, 0x1c, 0x8b]); // lea (%rbx,%rcx,4), %rbx
        self.bytes(&[0x48, 0x8d, 0x2c, 0x93]); // lea (%rbx,%rdx,4), %rbp
        let top = self.pos();
        self.bytes(&[0x48, 0x39, 0xeb]); // cmp %rbp, %rbx
        let to_ext = self.jump8(0x73); // jae ext
        self.bytes(&[0x8b, 0x03]); // mov (%rbx), %eax
        self.bytes(&[0x4d, 0x01, 0x24, 0x04]); // add %r12, (%r12,%rax)
        self.bytes(&[0x48, 0x83, 0xc3, 0x04]); // add $4, %rbx
        let back = self.jump8(0xeb);
        self.patch8(back, top);
        self.here(&[to_ext]);
        // External: *(u64 *)(data + off) += externs[i].
        self.bytes(&[0x41, 0x8b, 0x4e, 0x10]); // mov 16(%r14), %ecx
        self.bytes(&[0x41, 0x8b, 0x56, 0x14]); // mov 20(%r14), %edx
        self.lea(Reg::Rbx, Sym::Table(spec.table_start(XFIX_TABLE)));
        self.bytes(&[0x48, 0x8d, 0x1c, 0xcb]); // lea (%rbx,%rcx,8), %rbx
        self.bytes(&[0x48, 0x8d, 0x2c, 0xd3]); // lea (%rbx,%rdx,8), %rbp
        self.bytes(&[0x4c, 0x8d, 0x35]); // lea externs(%rip), %r14
        self.rip32(Sym::Data(lazy.extern_table), 0);
        let top = self.pos();
        self.bytes(&[0x48, 0x39, 0xeb]); // cmp %rbp, %rbx
        let to_done2 = self.jump8(0x73); // jae done
        self.bytes(&[0x8b, 0x03]); // mov (%rbx), %eax
        self.bytes(&[0x8b, 0x4b, 0x04]); // mov 4(%rbx), %ecx
        self.bytes(&[0x49, 0x8b, 0x14, 0xce]); // mov (%r14,%rcx,8), %rdx
        self.bytes(&[0x49, 0x01, 0x14, 0x04]); // add %rdx, (%r12,%rax)
        self.bytes(&[0x48, 0x83, 0xc3, 0x08]); // add $8, %rbx
        let back = self.jump8(0xeb);
        self.patch8(back, top);
        self.here(&[to_done2]);
        let done = self.pos();
        self.patch32(to_done, done);
    }
    /// Return 0, or -1 through the failure jumps.
    fn return_status(&mut self, to_fail: Vec<usize>, more: bool) {
        self.bytes(&[0x31, 0xc0]); // xor %eax, %eax
        if !to_fail.is_empty() {
            let to_out = self.jump8(0xeb); // jmp out
            let fail = self.pos();
            for j in to_fail {
                self.patch32(j, fail);
            }
            self.bytes(&[0xb8, 0xff, 0xff, 0xff, 0xff]); // mov $-1, %eax
            self.here(&[to_out]);
        }
        self.epilogue(more);
    }
}

#[derive(Clone, Copy)]
enum Reg {
    Rax,
    Rbx,
    Rbp,
    R12,
}

pub fn assemble(spec: &StubSpec) -> Stubs {
    let mut a = Asm {
        e: Emitter::new(16),
        abi: spec.abi,
    };
    match &spec.scheme {
        Scheme::Eager { walks } => {
            for (name, code) in &spec.accessors {
                a.align(16);
                let start = a.pos();
                accessor_tail(&mut a, spec, *code);
                a.func(name, start);
            }
            for group in super::walk_groups(walks) {
                a.align(16);
                let start = a.pos();
                a.prologue(false);
                a.lea(Reg::R12, Sym::Data(0));
                let mut to_fail = Vec::new();
                table_walks(&mut a, spec, group, &mut to_fail);
                a.return_status(to_fail, false);
                a.func(group[0].name, start);
            }
        }
        Scheme::Lazy(lazy) => assemble_lazy(&mut a, spec, lazy),
    }
    a.e.out
}

/// Optionally increment the refcount, then return the code object.
fn accessor_tail(a: &mut Asm, spec: &StubSpec, code: u64) {
    if let Some(refcnt) = spec.incref {
        a.bytes(&[0x48, 0x83, 0x05]); // addq $1, refcnt(%rip)
        a.rip32(Sym::Data(code + refcnt as u64), 1);
        a.bytes(&[0x01]);
    }
    a.lea(Reg::Rax, Sym::Data(code));
    a.bytes(&[0xc3]);
}

/// The body of several walks in turn (r12 = data already).
fn table_walks(a: &mut Asm, spec: &StubSpec, walks: &[TableWalk], to_fail: &mut Vec<usize>) {
    for w in walks {
        let (start, end) = w.bounds(spec);
        a.lea(Reg::Rbx, Sym::Table(start));
        a.lea(Reg::Rbp, Sym::Table(end));
        a.walk_loop(w.callee, w.check_result, to_fail);
    }
}

fn assemble_lazy(a: &mut Asm, spec: &StubSpec, lazy: &Lazy) {
    // int init_module(unsigned i): init module i's code objects, set its flag.
    a.align(16);
    let helper = a.pos();
    a.prologue(true);
    match a.abi {
        Abi::SysV => a.bytes(&[0x41, 0x89, 0xfd]), // mov %edi, %r13d
        Abi::Win64 => a.bytes(&[0x41, 0x89, 0xcd]), // mov %ecx, %r13d
    }
    a.lea(Reg::R12, Sym::Data(0));
    a.fixups(spec, lazy);
    let mut to_fail = Vec::new();
    a.make_frozensets(spec, lazy, &mut to_fail);
    a.module_range(spec);
    a.walk_loop(lazy.code_init, true, &mut to_fail);
    a.lea(Reg::Rax, Sym::Data(lazy.flags));
    a.bytes(&[0x42, 0xc6, 0x04, 0x28, 0x01]); // movb $1, (%rax,%r13)
    a.return_status(to_fail, true);
    a.local_func("pyfreeze_init_module", helper);

    for (i, (name, code)) in spec.accessors.iter().enumerate() {
        a.align(16);
        let start = a.pos();
        a.bytes(&[0x80, 0x3d]); // cmpb $0, flag(%rip)
        a.rip32(Sym::Data(lazy.flags + i as u64), 1);
        a.bytes(&[0x00]);
        let to_ready = a.jump8(0x75); // jne ready
        match a.abi {
            Abi::SysV => a.bytes(&[0xbf]),  // mov $i, %edi
            Abi::Win64 => a.bytes(&[0xb9]), // mov $i, %ecx
        }
        a.bytes(&(i as u32).to_le_bytes());
        let f = if a.abi == Abi::Win64 { 40 } else { 8 };
        a.bytes(&[0x48, 0x83, 0xec, f]); // sub $f, %rsp
        a.call_local(helper);
        a.bytes(&[0x48, 0x83, 0xc4, f]); // add $f, %rsp
        a.bytes(&[0x85, 0xc0]); // test %eax, %eax
        let to_fail = a.jump8(0x78); // js fail
        a.here(&[to_ready]);
        accessor_tail(a, spec, *code);
        a.here(&[to_fail]);
        a.bytes(&[0x31, 0xc0, 0xc3]); // xor %eax, %eax; ret (NULL, exception set)
        a.func(name, start);
    }

    // Init: nothing to do up front.
    a.align(16);
    let start = a.pos();
    a.bytes(&[0x31, 0xc0, 0xc3]); // xor %eax, %eax; ret
    a.func(lazy.init_name, start);

    // Fini: finalize initialized modules, clear their flags, then the walks.
    a.align(16);
    let start = a.pos();
    a.prologue(true);
    a.lea(Reg::R12, Sym::Data(0));
    a.bytes(&[0x45, 0x31, 0xed]); // xor %r13d, %r13d
    let mloop = a.pos();
    a.bytes(&[0x41, 0x81, 0xfd]); // cmp $n, %r13d
    a.bytes(&(spec.accessors.len() as u32).to_le_bytes());
    let to_done = a.jump32(&[0x0f, 0x83]); // jae done
    let n = spec.accessors.len() as u32;
    a.lea(Reg::Rax, Sym::Data(lazy.flags));
    a.bytes(&[0x42, 0x80, 0xbc, 0x28]); // cmpb $0, n(%rax,%r13): never fixed up?
    a.bytes(&n.to_le_bytes());
    a.bytes(&[0x00]);
    let to_next = a.jump32(&[0x0f, 0x84]); // je next
    a.bytes(&[0x42, 0x80, 0x3c, 0x28, 0x00]); // cmpb $0, (%rax,%r13): not initialized?
    let to_strings = a.jump32(&[0x0f, 0x84]); // je strings
    a.bytes(&[0x42, 0xc6, 0x04, 0x28, 0x00]); // movb $0, (%rax,%r13)
    a.drop_frozensets(spec, lazy);
    a.module_range(spec);
    restore_loop(a, spec, lazy);
    let strings = a.pos();
    a.patch32(to_strings, strings);
    if let Some(str_fini) = lazy.str_fini {
        a.module_entry(spec);
        a.bytes(&[0x8b, 0x48, 0x20]); // mov 32(%rax), %ecx
        a.bytes(&[0x8b, 0x50, 0x24]); // mov 36(%rax), %edx
        a.lea(Reg::Rbx, Sym::Table(spec.table_start(1)));
        a.bytes(&[0x48, 0x8d, 0x1c, 0x8b]); // lea (%rbx,%rcx,4), %rbx
        a.bytes(&[0x48, 0x8d, 0x2c, 0x93]); // lea (%rbx,%rdx,4), %rbp
        a.walk_loop(str_fini, false, &mut Vec::new());
    }
    let next = a.pos();
    a.patch32(to_next, next);
    a.bytes(&[0x41, 0xff, 0xc5]); // inc %r13d
    let back = a.jump32(&[0xe9]); // jmp mloop
    a.patch32(back, mloop);
    let done = a.pos();
    a.patch32(to_done, done);
    let mut to_fail = Vec::new();
    table_walks(a, spec, &lazy.fini_walks, &mut to_fail);
    a.return_status(to_fail, true);
    a.func(lazy.fini_name, start);
}

/// Finalize the code objects [rbx, rbp) of table 0 (rcx = index of the
/// first): restore the pristine bytecode and fixed fields, calling the
/// runtime's fini first only where it left state behind.
fn restore_loop(a: &mut Asm, spec: &StubSpec, lazy: &Lazy) {
    a.lea(Reg::Rax, Sym::Table(spec.table_start(PRISTINE_TABLE)));
    a.bytes(&[0x4c, 0x8d, 0x34, 0xc8]); // lea (%rax,%rcx,8), %r14
    let top = a.pos();
    a.bytes(&[0x48, 0x39, 0xeb]); // cmp %rbp, %rbx
    let to_next = a.jump32(&[0x0f, 0x83]); // jae next
    a.bytes(&[0x8b, 0x3b, 0x4c, 0x01, 0xe7]); // mov (%rbx),%edi; add %r12,%rdi
    let mut to_full = Vec::new();
    for &off in &lazy.runtime_state {
        a.bytes(&[0x48, 0x83, 0xbf]); // cmpq $0, off(%rdi)
        a.bytes(&off.to_le_bytes());
        a.bytes(&[0x00]);
        to_full.push(a.jump32(&[0x0f, 0x85])); // jne full
    }
    let to_copy = a.jump8(0xeb); // jmp copy
    let full = a.pos();
    for j in to_full {
        a.patch32(j, full);
    }
    if a.abi == Abi::Win64 {
        a.bytes(&[0x48, 0x89, 0xf9]); // mov %rdi, %rcx
    }
    a.call(lazy.code_fini);
    a.bytes(&[0x8b, 0x3b, 0x4c, 0x01, 0xe7]); // mov (%rbx),%edi; add %r12,%rdi
    a.here(&[to_copy]);
    for &(off, size, value) in &lazy.fixed {
        match size {
            2 => {
                a.bytes(&[0x66, 0xc7, 0x87]); // movw $v, off(%rdi)
                a.bytes(&off.to_le_bytes());
                a.bytes(&(value as u16).to_le_bytes());
            }
            4 => {
                a.bytes(&[0xc7, 0x87]); // movl $v, off(%rdi)
                a.bytes(&off.to_le_bytes());
                a.bytes(&(value as u32).to_le_bytes());
            }
            _ => unreachable!("fixed code fields are 2 or 4 bytes"),
        }
    }
    a.bytes(&[0x41, 0x8b, 0x36]); // mov (%r14), %esi
    a.bytes(&[0x41, 0x8b, 0x4e, 0x04]); // mov 4(%r14), %ecx
    a.lea(Reg::Rax, Sym::Table(0));
    a.bytes(&[0x48, 0x01, 0xc6]); // add %rax, %rsi
    a.bytes(&[0x48, 0x81, 0xc7]); // add $code_adaptive, %rdi
    a.bytes(&lazy.code_adaptive.to_le_bytes());
    a.bytes(&[0xf3, 0xa4]); // rep movsb
    a.bytes(&[0x48, 0x83, 0xc3, 0x04]); // add $4, %rbx
    a.bytes(&[0x49, 0x83, 0xc6, 0x08]); // add $8, %r14
    let back = a.jump32(&[0xe9]); // jmp top
    a.patch32(back, top);
    let next = a.pos();
    a.patch32(to_next, next);
}
