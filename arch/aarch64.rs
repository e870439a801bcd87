//! AArch64 stubs (AAPCS64): ADRP + ADD page/offset pairs for addresses and
//! BL for calls, so the object links into PIE, non-PIE executables and
//! shared libraries; every instruction is 4 bytes.

use super::{
    CodeReloc, CodeRelocKind, Emitter, Lazy, Scheme, StubSpec, Stubs, Sym, TableWalk, UnwindOp,
    FIX_TABLE, FROZENSET_TABLE, MODULE_TABLE, PRISTINE_TABLE, XFIX_TABLE,
};

const RET: u32 = 0xd65f_03c0;

struct Asm {
    e: Emitter,
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
            0x14 | 0x94 => (delta as u32) & 0x03ff_ffff, // B, BL
            0x54 | 0x34 | 0x35 | 0xb4 | 0xb5 => ((delta as u32) & 0x7_ffff) << 5, // B.cond, CBZ, CBNZ
            _ => ((delta as u32) & 0x3fff) << 5,                                  // TBZ, TBNZ
        };
        self.out.code[at..at + 4].copy_from_slice(&w.to_le_bytes());
    }
    fn align(&mut self, a: u64) {
        while !self.pos().is_multiple_of(a) {
            self.ins(0xd503_201f); // nop
        }
    }
}

pub fn assemble(spec: &StubSpec) -> Stubs {
    let mut a = Asm {
        e: Emitter::new(16),
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
                a.prologue();
                a.address(21, Sym::Data(0)); // x21 = data
                let mut to_fail = Vec::new();
                table_walks(&mut a, spec, group, &mut to_fail);
                a.return_status(to_fail);
                a.func(group[0].name, start);
            }
        }
        Scheme::Lazy(lazy) => assemble_lazy(&mut a, spec, lazy),
    }
    a.e.out
}

/// Return the code object in x0, after incrementing its refcount if asked.
fn accessor_tail(a: &mut Asm, spec: &StubSpec, code: u64) {
    a.address(0, Sym::Data(code));
    if let Some(refcnt) = spec.incref {
        let imm = refcnt / 8;
        a.ins(0xf940_0001 | (imm << 10)); // ldr x1, [x0, #refcnt]
        a.ins(0x9100_0421); // add x1, x1, #1
        a.ins(0xf900_0001 | (imm << 10)); // str x1, [x0, #refcnt]
    }
    a.ins(RET);
}

impl Asm {
    /// Frame: x29, x30, x19..x22 saved (48 bytes).
    /// Frame: x29, x30, x19..x24 saved (64 bytes). The epilogue undoes it
    /// step by step in reverse, as Windows' unwind codes require.
    fn prologue(&mut self) {
        self.ins(0xa9bc_7bfd); // stp x29, x30, [sp, #-64]!
        self.unwind_op(UnwindOp::SaveFpLr(64));
        self.ins(0x9100_03fd); // mov x29, sp (a frame record, as Apple's ABI requires)
        self.unwind_op(UnwindOp::SetFp);
        self.ins(0xa901_53f3); // stp x19, x20, [sp, #16]
        self.unwind_op(UnwindOp::SavePair(19, 16));
        self.ins(0xa902_5bf5); // stp x21, x22, [sp, #32]
        self.unwind_op(UnwindOp::SavePair(21, 32));
        self.ins(0xa903_63f7); // stp x23, x24, [sp, #48]
        self.unwind_op(UnwindOp::SavePair(23, 48));
    }
    fn epilogue(&mut self) {
        self.epilog = Some(self.pos());
        self.ins(0xa943_63f7); // ldp x23, x24, [sp, #48]
        self.ins(0xa942_5bf5); // ldp x21, x22, [sp, #32]
        self.ins(0xa941_53f3); // ldp x19, x20, [sp, #16]
        self.ins(0xa8c4_7bfd); // ldp x29, x30, [sp], #64
        self.ins(RET);
    }
    /// Call `callee` on data + each entry of [x19, x20) (x21 = data).
    fn walk_loop(&mut self, callee: &'static str, check: bool, to_fail: &mut Vec<usize>) {
        let top = self.pos();
        self.ins(0xeb14_027f); // cmp x19, x20
        let to_next = self.branch(0x5400_0002); // b.hs next
        self.ins(0xb840_4660); // ldr w0, [x19], #4
        self.ins(0x8b00_02a0); // add x0, x21, x0
        self.call(callee);
        if check {
            to_fail.push(self.branch(0x37f8_0000)); // tbnz w0, #31, fail
        }
        let back = self.branch(0x1400_0000); // b top
        self.patch(back, top);
        let next = self.pos();
        self.patch(to_next, next);
    }
    /// x9 <- module w22's entry in the module table (64 bytes each).
    fn module_entry(&mut self, spec: &StubSpec) {
        self.address(9, Sym::Table(spec.table_start(MODULE_TABLE)));
        self.ins(0x8b16_1929); // add x9, x9, x22, lsl #6
    }
    /// x19, x20 <- module w22's frozenset entries (x21 = data).
    fn frozenset_range(&mut self, spec: &StubSpec) {
        self.module_entry(spec);
        self.ins(0x2943_2d2a); // ldp w10, w11, [x9, #24]
        self.address(19, Sym::Table(spec.table_start(FROZENSET_TABLE)));
        self.ins(0x8b0a_0e73); // add x19, x19, x10, lsl #3
        self.ins(0x8b0b_0e74); // add x20, x19, x11, lsl #3
    }
    /// Put a real frozenset, made from its tuple, into each of module
    /// w22's frozenset fields that still holds the tuple.
    fn make_frozensets(&mut self, spec: &StubSpec, lazy: &Lazy, to_fail: &mut Vec<usize>) {
        self.frozenset_range(spec);
        let top = self.pos();
        self.ins(0xeb14_027f); // cmp x19, x20
        let to_done = self.branch(0x5400_0002); // b.hs done
        self.ins(0x2940_2a69); // ldp w9, w10, [x19]
        self.ins(0x8b0a_02a0); // add x0, x21, x10
        self.ins(0xf869_6aab); // ldr x11, [x21, x9]
        self.ins(0xeb00_017f); // cmp x11, x0
        let to_next = self.branch(0x5400_0001); // b.ne next
        self.call(lazy.frozenset_new);
        to_fail.push(self.branch(0xb400_0000)); // cbz x0, fail
        self.ins(0xb940_0269); // ldr w9, [x19]
        self.ins(0xf829_6aa0); // str x0, [x21, x9]
        let next = self.pos();
        self.patch(to_next, next);
        self.ins(0x9100_2273); // add x19, x19, #8
        let back = self.branch(0x1400_0000);
        self.patch(back, top);
        let done = self.pos();
        self.patch(to_done, done);
    }
    /// Put the tuples back into module w22's frozenset fields and drop the
    /// frozensets.
    fn drop_frozensets(&mut self, spec: &StubSpec, lazy: &Lazy) {
        self.frozenset_range(spec);
        let top = self.pos();
        self.ins(0xeb14_027f); // cmp x19, x20
        let to_done = self.branch(0x5400_0002); // b.hs done
        self.ins(0x2940_2a69); // ldp w9, w10, [x19]
        self.ins(0x8b0a_02ab); // add x11, x21, x10
        self.ins(0xf869_6aa0); // ldr x0, [x21, x9]
        self.ins(0xeb0b_001f); // cmp x0, x11
        let to_next = self.branch(0x5400_0000); // b.eq next
        self.ins(0xf829_6aab); // str x11, [x21, x9]
        self.call(lazy.decref);
        let next = self.pos();
        self.patch(to_next, next);
        self.ins(0x9100_2273); // add x19, x19, #8
        let back = self.branch(0x1400_0000);
        self.patch(back, top);
        let done = self.pos();
        self.patch(to_done, done);
    }
    /// x19, x20 <- the range of module w22's code objects in table 0;
    /// x10 = index of the first.
    fn module_range(&mut self, spec: &StubSpec) {
        self.module_entry(spec);
        self.ins(0x2940_2d2a); // ldp w10, w11, [x9]
        self.address(19, Sym::Table(spec.table_start(0)));
        self.ins(0x8b0a_0a73); // add x19, x19, x10, lsl #2
        self.ins(0x8b0b_0a74); // add x20, x19, x11, lsl #2
    }
    /// Apply module w22's fixups (x21 = data) unless done before in this
    /// process; then set its "fixed up" flag.
    fn fixups(&mut self, spec: &StubSpec, lazy: &Lazy) {
        let n = spec.accessors.len() as u32;
        self.address(9, Sym::Data(lazy.flags));
        self.ins(0x5280_000c | ((n & 0xffff) << 5)); // movz w12, #n
        self.ins(0x72a0_000c | ((n >> 16) << 5)); // movk w12, #n >> 16, lsl #16
        self.ins(0x8b0c_0129); // add x9, x9, x12
        self.ins(0x3876_692a); // ldrb w10, [x9, x22]
        let to_done = self.branch(0x3500_000a); // cbnz w10, done
        self.ins(0x5280_002a); // mov w10, #1
        self.ins(0x3836_692a); // strb w10, [x9, x22]
        self.module_entry(spec);
        // Internal: *(u64 *)(data + off) += data.
        self.ins(0x2941_2d2a); // ldp w10, w11, [x9, #8]
        self.address(13, Sym::Table(spec.table_start(FIX_TABLE)));
        self.ins(0x8b0a_09ad); // add x13, x13, x10, lsl #2
        self.ins(0x8b0b_09ae); // add x14, x13, x11, lsl #2
        let top = self.pos();
        self.ins(0xeb0e_01bf); // cmp x13, x14
        let to_ext = self.branch(0x5400_0002); // b.hs ext
        self.ins(0xb840_45af); // ldr w15, [x13], #4
        self.ins(0xf86f_6ab0); // ldr x16, [x21, x15]
        self.ins(0x8b15_0210); // add x16, x16, x21
        self.ins(0xf82f_6ab0); // str x16, [x21, x15]
        let back = self.branch(0x1400_0000);
        self.patch(back, top);
        let ext = self.pos();
        self.patch(to_ext, ext);
        // External: *(u64 *)(data + off) += externs[i].
        self.ins(0x2942_2d2a); // ldp w10, w11, [x9, #16]
        self.address(13, Sym::Table(spec.table_start(XFIX_TABLE)));
        self.ins(0x8b0a_0dad); // add x13, x13, x10, lsl #3
        self.ins(0x8b0b_0dae); // add x14, x13, x11, lsl #3
        self.address(12, Sym::Data(lazy.extern_table));
        let top = self.pos();
        self.ins(0xeb0e_01bf); // cmp x13, x14
        let to_end = self.branch(0x5400_0002); // b.hs done
        self.ins(0x28c1_41af); // ldp w15, w16, [x13], #8
        self.ins(0xf870_7990); // ldr x16, [x12, x16, lsl #3]
        self.ins(0xf86f_6ab1); // ldr x17, [x21, x15]
        self.ins(0x8b10_0231); // add x17, x17, x16
        self.ins(0xf82f_6ab1); // str x17, [x21, x15]
        let back = self.branch(0x1400_0000);
        self.patch(back, top);
        let done = self.pos();
        self.patch(to_end, done);
        self.patch(to_done, done);
    }
    /// Return 0, or -1 through the failure branches; then the epilogue.
    fn return_status(&mut self, to_fail: Vec<usize>) {
        self.ins(0x5280_0000); // mov w0, #0
        if !to_fail.is_empty() {
            let to_out = self.branch(0x1400_0000); // b out
            let fail = self.pos();
            for j in to_fail {
                self.patch(j, fail);
            }
            self.ins(0x1280_0000); // mov w0, #-1
            let out = self.pos();
            self.patch(to_out, out);
        }
        self.epilogue();
    }
}

/// The body of several walks in turn (x21 = data already).
fn table_walks(a: &mut Asm, spec: &StubSpec, walks: &[TableWalk], to_fail: &mut Vec<usize>) {
    for w in walks {
        let (start, end) = w.bounds(spec);
        a.address(19, Sym::Table(start)); // x19 = cursor
        a.address(20, Sym::Table(end)); // x20 = end
        a.walk_loop(w.callee, w.check_result, to_fail);
    }
}

/// `movz w9, #lo; movk w9, #hi, lsl #16`
fn mov_w9(a: &mut Asm, v: u32) {
    a.ins(0x5280_0009 | ((v & 0xffff) << 5));
    a.ins(0x72a0_0009 | ((v >> 16) << 5));
}

fn assemble_lazy(a: &mut Asm, spec: &StubSpec, lazy: &Lazy) {
    // int init_module(unsigned i): init module i's code objects, set its flag.
    a.align(16);
    let helper = a.pos();
    a.prologue();
    a.ins(0x2a00_03f6); // mov w22, w0
    a.address(21, Sym::Data(0));
    a.fixups(spec, lazy);
    let mut to_fail = Vec::new();
    a.make_frozensets(spec, lazy, &mut to_fail);
    a.module_range(spec);
    a.walk_loop(lazy.code_init, true, &mut to_fail);
    a.address(9, Sym::Data(lazy.flags));
    a.ins(0x5280_002a); // mov w10, #1
    a.ins(0x3836_692a); // strb w10, [x9, x22]
    a.return_status(to_fail);
    a.local_func("pyfreeze_init_module", helper);

    for (i, (name, code)) in spec.accessors.iter().enumerate() {
        a.align(16);
        let start = a.pos();
        a.address(9, Sym::Data(lazy.flags + i as u64));
        a.ins(0x3940_0129); // ldrb w9, [x9]
        let to_ready = a.branch(0x3500_0009); // cbnz w9, ready
        a.ins(0xa9bf_7bfd); // stp x29, x30, [sp, #-16]!
        a.ins(0x9100_03fd); // mov x29, sp
        a.ins(0x5280_0000 | ((i as u32 & 0xffff) << 5)); // mov w0, #i (low half)
        a.ins(0x72a0_0000 | ((i as u32 >> 16) << 5)); // movk w0, #i >> 16, lsl #16
        let bl = a.branch(0x9400_0000); // bl init_module
        a.patch(bl, helper);
        a.ins(0xa8c1_7bfd); // ldp x29, x30, [sp], #16
        let to_fail = a.branch(0x37f8_0000); // tbnz w0, #31, fail
        let ready = a.pos();
        a.patch(to_ready, ready);
        accessor_tail(a, spec, *code);
        let fail = a.pos();
        a.patch(to_fail, fail);
        a.ins(0xd280_0000); // mov x0, #0 (NULL, exception set)
        a.ins(RET);
        a.func(name, start);
    }

    // Init: nothing to do up front.
    a.align(16);
    let start = a.pos();
    a.ins(0x5280_0000); // mov w0, #0
    a.ins(RET);
    a.func(lazy.init_name, start);

    // Fini: finalize initialized modules, clear their flags, then the walks.
    a.align(16);
    let start = a.pos();
    a.prologue();
    a.address(21, Sym::Data(0));
    a.ins(0x5280_0016); // mov w22, #0
    let mloop = a.pos();
    mov_w9(a, spec.accessors.len() as u32);
    a.ins(0x6b09_02df); // cmp w22, w9
    let to_done = a.branch(0x5400_0002); // b.hs done
    let n = spec.accessors.len() as u32;
    a.address(9, Sym::Data(lazy.flags));
    a.ins(0x5280_000c | ((n & 0xffff) << 5)); // movz w12, #n
    a.ins(0x72a0_000c | ((n >> 16) << 5)); // movk w12, #n >> 16, lsl #16
    a.ins(0x8b0c_012c); // add x12, x9, x12
    a.ins(0x3876_698a); // ldrb w10, [x12, x22]: never fixed up?
    let to_next = a.branch(0x3400_000a); // cbz w10, next
    a.ins(0x3876_692a); // ldrb w10, [x9, x22]: not initialized?
    let to_strings = a.branch(0x3400_000a); // cbz w10, strings
    a.ins(0x3836_693f); // strb wzr, [x9, x22]
    a.drop_frozensets(spec, lazy);
    a.module_range(spec);
    restore_loop(a, spec, lazy);
    let strings = a.pos();
    a.patch(to_strings, strings);
    if let Some(str_fini) = lazy.str_fini {
        a.module_entry(spec);
        a.ins(0x2944_2d2a); // ldp w10, w11, [x9, #32]
        a.address(19, Sym::Table(spec.table_start(1)));
        a.ins(0x8b0a_0a73); // add x19, x19, x10, lsl #2
        a.ins(0x8b0b_0a74); // add x20, x19, x11, lsl #2
        a.walk_loop(str_fini, false, &mut Vec::new());
    }
    let next = a.pos();
    a.patch(to_next, next);
    a.ins(0x1100_06d6); // add w22, w22, #1
    let back = a.branch(0x1400_0000); // b mloop
    a.patch(back, mloop);
    let done = a.pos();
    a.patch(to_done, done);
    let mut to_fail = Vec::new();
    table_walks(a, spec, &lazy.fini_walks, &mut to_fail);
    a.return_status(to_fail);
    a.func(lazy.fini_name, start);
}

/// Finalize the code objects [x19, x20) of table 0 (x10 = index of the
/// first): restore the pristine bytecode and fixed fields, calling the
/// runtime's fini first only where it left state behind.
fn restore_loop(a: &mut Asm, spec: &StubSpec, lazy: &Lazy) {
    a.address(23, Sym::Table(spec.table_start(PRISTINE_TABLE)));
    a.ins(0x8b0a_0ef7); // add x23, x23, x10, lsl #3
    let top = a.pos();
    a.ins(0xeb14_027f); // cmp x19, x20
    let to_next = a.branch(0x5400_0002); // b.hs next
    a.ins(0xb940_0269); // ldr w9, [x19]
    a.ins(0x8b09_02a0); // add x0, x21, x9
    let mut to_full = Vec::new();
    for &off in &lazy.runtime_state {
        a.ins(0xf940_000a | ((off / 8) << 10)); // ldr x10, [x0, #off]
        to_full.push(a.branch(0xb500_000a)); // cbnz x10, full
    }
    let to_copy = a.branch(0x1400_0000); // b copy
    let full = a.pos();
    for j in to_full {
        a.patch(j, full);
    }
    a.call(lazy.code_fini);
    a.ins(0xb940_0269); // ldr w9, [x19]
    a.ins(0x8b09_02a0); // add x0, x21, x9
    let copy = a.pos();
    a.patch(to_copy, copy);
    for &(off, size, value) in &lazy.fixed {
        a.ins(0x5280_000a | (((value as u32) & 0xffff) << 5)); // movz w10, #v
        match size {
            2 => a.ins(0x7900_000a | ((off / 2) << 10)), // strh w10, [x0, #off]
            4 => {
                a.ins(0x72a0_000a | ((((value as u32) >> 16) & 0xffff) << 5)); // movk w10, #v >> 16, lsl #16
                a.ins(0xb900_000a | ((off / 4) << 10)) // str w10, [x0, #off]
            }
            _ => unreachable!("fixed code fields are 2 or 4 bytes"),
        }
    }
    a.ins(0x2940_2eea); // ldp w10, w11, [x23]
    a.address(12, Sym::Table(0));
    a.ins(0x8b0a_018c); // add x12, x12, x10
    a.ins(0x9100_000d | (lazy.code_adaptive << 10)); // add x13, x0, #code_adaptive
    let to_end = a.branch(0x3400_000b); // cbz w11, end
    let copy_top = a.pos();
    a.ins(0x7840_258e); // ldrh w14, [x12], #2
    a.ins(0x7800_25ae); // strh w14, [x13], #2
    a.ins(0x7100_096b); // subs w11, w11, #2
    let again = a.branch(0x5400_0001); // b.ne copy_top
    a.patch(again, copy_top);
    let end = a.pos();
    a.patch(to_end, end);
    a.ins(0x9100_1273); // add x19, x19, #4
    a.ins(0x9100_22f7); // add x23, x23, #8
    let back = a.branch(0x1400_0000); // b top
    a.patch(back, top);
    let next = a.pos();
    a.patch(to_next, next);
}
