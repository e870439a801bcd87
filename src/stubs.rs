//! The stub program: every function the object defines besides its data,
//! written once in the neutral instruction list of [`crate::arch::ir`]
//! from a version's contract ([`crate::version::Contract`]) and the
//! scheme, then lowered by each instruction set.
//!
//! * One accessor per module (`_Py_get_<mod>_toplevel`): the module's code
//!   object (a new reference where objects are not immortal).
//! * Eager scheme (CPython's): the contract's entry points run its init
//!   steps over every code object, and its fini steps.
//! * Lazy scheme: a local helper initializes module `i` on the first call
//!   of its accessor (applying its fixups once per process, making its
//!   frozensets, then the init steps over its code objects) and sets its
//!   flag; the init entry does nothing; the fini entry undoes this for
//!   every module whose flag is set, then runs the string steps over the
//!   shared strings.
//!
//! Adding a step: a variant in [`crate::version`], its logic here (one
//! function writing instructions), and its place in a contract. Nothing
//! per instruction set.

use crate::arch::ir::{Builder, Callee, Cond, Func, Inst, Mem, Operand, Program, Reg, Sym, Width};
use crate::layout::Layout;
use crate::place::Accessor;
use crate::rotables::{ModuleRecord, RoTables, Span, Table};
use crate::version::{Contract, FiniStep, InitStep, Version};

/// Register roles, by job.
/// A cursor into a table, and its end.
const CUR: Reg = Reg::Saved(0);
const END: Reg = Reg::Saved(1);
/// The data section's address.
const DATA: Reg = Reg::Saved(2);
/// The module's index (lazy scheme).
const MODULE: Reg = Reg::Saved(3);
/// The module's record, or a second cursor.
const AUX: Reg = Reg::Saved(4);
const T0: Reg = Reg::Temp(0);
const T1: Reg = Reg::Temp(1);
const T2: Reg = Reg::Temp(2);
const ARG0: Reg = Reg::Arg(0);
const RET: Reg = Reg::Ret;

/// When the contract's init steps run.
#[derive(Clone, Copy, Debug)]
pub enum Scheme {
    /// All at once, in the init entry point (CPython's).
    Eager,
    /// Per module on its first use.
    Lazy {
        /// Data offset of the flag bytes: module `i` is initialized while
        /// `flags + i` is set, and its fixups have run once `flags + n + i`
        /// is (`n` modules).
        flags: u64,
        /// Data offset of the table of external symbols' addresses that
        /// [`Table::ExternFixups`] index.
        extern_table: u64,
    },
}

/// Whether the program restores pristine bytecode (so the read-only
/// section must carry it).
pub fn needs_pristine(contract: &Contract, scheme: Scheme) -> bool {
    contract.fini.iter().any(|s| match (s, scheme) {
        (FiniStep::CodeFini { hook: Some(_) }, Scheme::Eager) => false,
        (FiniStep::CodeFini { .. }, _) => true,
        (FiniStep::StrHook(_), _) => false,
    })
}

/// The whole stub program.
pub fn program(
    version: &Version,
    accessors: &[Accessor],
    tables: &RoTables,
    scheme: Scheme,
) -> Program {
    let p = Writer {
        c: version.contract,
        l: version.layout,
        t: tables,
        modules: accessors.len() as u32,
    };
    let mut funcs = Vec::new();
    match scheme {
        Scheme::Eager => {
            for a in accessors {
                let mut b = Builder::new(&a.symbol, true);
                p.return_code(&mut b, a.code);
                funcs.push(b.finish());
            }
            funcs.push(p.eager_init());
            funcs.push(p.eager_fini());
        }
        Scheme::Lazy {
            flags,
            extern_table,
        } => {
            // Function 0: the helper the accessors call.
            funcs.push(p.init_module(flags, extern_table));
            for (i, a) in accessors.iter().enumerate() {
                funcs.push(p.lazy_accessor(&a.symbol, a.code, flags + i as u64, i as u32));
            }
            let mut init = Builder::new(p.c.entry.init, true);
            init.return_int(0);
            funcs.push(init.finish());
            funcs.push(p.lazy_fini(flags));
        }
    }
    Program { funcs }
}

struct Writer<'a> {
    c: &'static Contract,
    l: &'static Layout,
    t: &'a RoTables,
    modules: u32,
}

impl Writer<'_> {
    /// Return the code object at `code`, with a new reference where
    /// objects are not immortal.
    fn return_code(&self, b: &mut Builder, code: u64) {
        if !self.l.head.immortal {
            let refcnt = Sym::Data(code + self.l.head.refcnt.off as u64);
            b.push(Inst::AddMem(Width::W64, Mem::Sym(refcnt), 1));
        }
        b.addr(RET, Sym::Data(code));
        b.push(Inst::Return);
    }

    /// `CUR, END` = the bytes `[start, end)` of the read-only section.
    fn range(&self, b: &mut Builder, start: u64, end: u64) {
        b.addr(CUR, Sym::Rodata(start)).addr(END, Sym::Rodata(end));
    }

    /// `AUX` = module `MODULE`'s record.
    fn record(&self, b: &mut Builder) {
        b.addr(AUX, Sym::Rodata(self.t.start(Table::Modules)))
            .push(Inst::AddShl(AUX, AUX, MODULE, ModuleRecord::SHIFT));
    }

    /// `CUR, END` = the entries of the record's `span` (`AUX` = record);
    /// `T0` = the index of the first.
    fn span(&self, b: &mut Builder, span: Span) {
        let shift = span.table.entry_shift();
        b.load(Width::W32, T0, Mem::at(AUX, span.at as i32))
            .load(Width::W32, T1, Mem::at(AUX, span.count_at() as i32))
            .addr(CUR, Sym::Rodata(self.t.start(span.table)))
            .push(Inst::AddShl(CUR, CUR, T0, shift))
            .push(Inst::AddShl(END, CUR, T1, shift));
    }

    /// Call `hook(data + entry)` on each 32-bit entry of `[CUR, END)`;
    /// with `fail`, a negative `int` result jumps there.
    fn walk(&self, b: &mut Builder, hook: &'static str, fail: Option<crate::arch::ir::Label>) {
        let top = b.here();
        let next = b.label();
        b.branch(Width::W64, CUR, Cond::GeU, Operand::Reg(END), next)
            .load(Width::W32, ARG0, Mem::at(CUR, 0))
            .add(ARG0, DATA, Operand::Reg(ARG0))
            .call(Callee::Extern(hook))
            .add(CUR, CUR, Operand::Imm(4));
        if let Some(fail) = fail {
            b.branch(Width::W32, RET, Cond::LtS, Operand::Imm(0), fail);
        }
        b.jump(top).bind(next);
    }

    /// Return 0; `fail` returns -1.
    fn return_status(&self, b: &mut Builder, fail: crate::arch::ir::Label) {
        b.return_int(0).bind(fail).return_int(-1);
    }

    fn eager_init(&self) -> Func {
        let mut b = Builder::new(self.c.entry.init, true);
        let fail = b.label();
        b.addr(DATA, Sym::Data(0));
        for step in self.c.init {
            match *step {
                InitStep::CodeHook(hook) => {
                    self.range(&mut b, self.t.start(Table::Codes), self.t.end(Table::Codes));
                    self.walk(&mut b, hook, Some(fail));
                }
            }
        }
        self.return_status(&mut b, fail);
        b.finish()
    }

    fn eager_fini(&self) -> Func {
        let mut b = Builder::new(self.c.entry.fini, true);
        b.addr(DATA, Sym::Data(0));
        for step in self.c.fini {
            match *step {
                FiniStep::CodeFini { hook: Some(hook) } => {
                    self.range(&mut b, self.t.start(Table::Codes), self.t.end(Table::Codes));
                    self.walk(&mut b, hook, None);
                }
                FiniStep::CodeFini { hook: None } => {
                    self.range(&mut b, self.t.start(Table::Codes), self.t.end(Table::Codes));
                    b.addr(AUX, Sym::Rodata(self.t.start(Table::Pristine)));
                    self.restore_codes(&mut b, None);
                }
                FiniStep::StrHook(hook) => {
                    self.range(&mut b, self.t.start(Table::Strs), self.t.end(Table::Strs));
                    self.walk(&mut b, hook, None);
                }
            }
        }
        b.return_int(0);
        b.finish()
    }

    /// `int init_module(unsigned i)`: module i's fixups (once per
    /// process), frozensets and init steps; then its flag.
    fn init_module(&self, flags: u64, extern_table: u64) -> Func {
        let mut b = Builder::new("pyfreeze_init_module", false);
        let fail = b.label();
        b.push(Inst::Mov(Width::W32, MODULE, ARG0))
            .addr(DATA, Sym::Data(0));
        self.fixups(&mut b, flags, extern_table);
        self.make_frozensets(&mut b, fail);
        for step in self.c.init {
            match *step {
                InitStep::CodeHook(hook) => {
                    self.record(&mut b);
                    self.span(&mut b, ModuleRecord::CODES);
                    self.walk(&mut b, hook, Some(fail));
                }
            }
        }
        b.addr(T0, Sym::Data(flags)).store(
            Width::W8,
            Mem::indexed(T0, MODULE, 0, 0),
            Operand::Imm(1),
        );
        self.return_status(&mut b, fail);
        b.finish()
    }

    /// The module's pointers made addresses, unless done before in this
    /// process (its second flag).
    fn fixups(&self, b: &mut Builder, flags: u64, extern_table: u64) {
        let done = b.label();
        let fixed_flag = Mem::indexed(T0, MODULE, 0, self.modules as i32);
        b.addr(T0, Sym::Data(flags))
            .load(Width::W8, T1, fixed_flag)
            .branch(Width::W32, T1, Cond::Ne, Operand::Imm(0), done)
            .store(Width::W8, fixed_flag, Operand::Imm(1));
        self.record(b);
        // Internal: *(u64 *)(data + off) += data.
        self.span(b, ModuleRecord::FIXUPS);
        let top = b.here();
        let external = b.label();
        b.branch(Width::W64, CUR, Cond::GeU, Operand::Reg(END), external)
            .load(Width::W32, T0, Mem::at(CUR, 0))
            .load(Width::W64, T1, Mem::indexed(DATA, T0, 0, 0))
            .add(T1, T1, Operand::Reg(DATA))
            .store(Width::W64, Mem::indexed(DATA, T0, 0, 0), Operand::Reg(T1))
            .add(CUR, CUR, Operand::Imm(4))
            .jump(top)
            .bind(external);
        // External: *(u64 *)(data + off) += externs[i].
        self.span(b, ModuleRecord::EXTERN_FIXUPS);
        b.addr(AUX, Sym::Data(extern_table));
        let top = b.here();
        b.branch(Width::W64, CUR, Cond::GeU, Operand::Reg(END), done)
            .load(Width::W32, T0, Mem::at(CUR, 0))
            .load(Width::W32, T1, Mem::at(CUR, 4))
            .load(Width::W64, T1, Mem::indexed(AUX, T1, 3, 0))
            .load(Width::W64, T2, Mem::indexed(DATA, T0, 0, 0))
            .add(T2, T2, Operand::Reg(T1))
            .store(Width::W64, Mem::indexed(DATA, T0, 0, 0), Operand::Reg(T2))
            .add(CUR, CUR, Operand::Imm(8))
            .jump(top)
            .bind(done);
    }

    /// `CUR, END` = the module's frozenset entries; then for each, `T0` =
    /// field offset, `T1` = the tuple's address, `T2` = what the field
    /// holds, and `body` runs (it may jump to `next`).
    fn each_frozenset(&self, b: &mut Builder, body: impl Fn(&mut Builder, crate::arch::ir::Label)) {
        self.record(b);
        self.span(b, ModuleRecord::FROZENSETS);
        let top = b.here();
        let (next, done) = (b.label(), b.label());
        b.branch(Width::W64, CUR, Cond::GeU, Operand::Reg(END), done)
            .load(Width::W32, T0, Mem::at(CUR, 0))
            .load(Width::W32, T1, Mem::at(CUR, 4))
            .add(T1, DATA, Operand::Reg(T1))
            .load(Width::W64, T2, Mem::indexed(DATA, T0, 0, 0));
        body(b, next);
        b.bind(next)
            .add(CUR, CUR, Operand::Imm(8))
            .jump(top)
            .bind(done);
    }

    /// A real frozenset, made from its tuple, in each of the module's
    /// frozenset fields that still holds the tuple.
    fn make_frozensets(&self, b: &mut Builder, fail: crate::arch::ir::Label) {
        let new = self.c.hooks.frozenset_new;
        self.each_frozenset(b, |b, next| {
            b.branch(Width::W64, T2, Cond::Ne, Operand::Reg(T1), next)
                .push(Inst::Mov(Width::W64, ARG0, T1))
                .call(Callee::Extern(new))
                .branch(Width::W64, RET, Cond::Eq, Operand::Imm(0), fail)
                .load(Width::W32, T0, Mem::at(CUR, 0))
                .store(Width::W64, Mem::indexed(DATA, T0, 0, 0), Operand::Reg(RET));
        });
    }

    /// The tuples back in the module's frozenset fields, the frozensets
    /// dropped.
    fn drop_frozensets(&self, b: &mut Builder) {
        let decref = self.c.hooks.decref;
        self.each_frozenset(b, |b, next| {
            b.branch(Width::W64, T2, Cond::Eq, Operand::Reg(T1), next)
                .store(Width::W64, Mem::indexed(DATA, T0, 0, 0), Operand::Reg(T1))
                .push(Inst::Mov(Width::W64, ARG0, T2))
                .call(Callee::Extern(decref));
        });
    }

    /// The accessor of module `i`: initialize it on first use.
    fn lazy_accessor(&self, name: &str, code: u64, flag: u64, i: u32) -> Func {
        let mut b = Builder::new(name, true);
        let (ready, fail) = (b.label(), b.label());
        b.load(Width::W8, T0, Mem::Sym(Sym::Data(flag)))
            .branch(Width::W32, T0, Cond::Ne, Operand::Imm(0), ready)
            .push(Inst::MovImm(Width::W32, ARG0, i as i64))
            .call(Callee::Local(0))
            .branch(Width::W32, RET, Cond::LtS, Operand::Imm(0), fail)
            .bind(ready);
        self.return_code(&mut b, code);
        // NULL, with the exception set.
        b.bind(fail)
            .push(Inst::MovImm(Width::W64, RET, 0))
            .push(Inst::Return);
        b.finish()
    }

    /// Fini: for every module whose fixups ran, its strings' steps, and
    /// if it is initialized, its flag cleared, its frozensets dropped and
    /// its code objects' steps; then the shared strings' steps.
    fn lazy_fini(&self, flags: u64) -> Func {
        let mut b = Builder::new(self.c.entry.fini, true);
        b.addr(DATA, Sym::Data(0))
            .push(Inst::MovImm(Width::W32, MODULE, 0));
        let top = b.here();
        let (strings, next, done) = (b.label(), b.label(), b.label());
        b.branch(
            Width::W32,
            MODULE,
            Cond::GeU,
            Operand::Imm(self.modules as i32),
            done,
        )
        .addr(T0, Sym::Data(flags))
        .load(
            Width::W8,
            T1,
            Mem::indexed(T0, MODULE, 0, self.modules as i32),
        )
        .branch(Width::W32, T1, Cond::Eq, Operand::Imm(0), next)
        .load(Width::W8, T1, Mem::indexed(T0, MODULE, 0, 0))
        .branch(Width::W32, T1, Cond::Eq, Operand::Imm(0), strings)
        .store(Width::W8, Mem::indexed(T0, MODULE, 0, 0), Operand::Imm(0));
        self.drop_frozensets(&mut b);
        for step in self.c.fini {
            if let FiniStep::CodeFini { hook } = *step {
                self.record(&mut b);
                self.span(&mut b, ModuleRecord::CODES);
                b.addr(AUX, Sym::Rodata(self.t.start(Table::Pristine)))
                    .push(Inst::AddShl(AUX, AUX, T0, Table::Pristine.entry_shift()));
                self.restore_codes(&mut b, hook);
            }
        }
        b.bind(strings);
        for step in self.c.fini {
            if let FiniStep::StrHook(hook) = *step {
                self.record(&mut b);
                self.span(&mut b, ModuleRecord::STRS);
                self.walk(&mut b, hook, None);
            }
        }
        b.bind(next)
            .add(MODULE, MODULE, Operand::Imm(1))
            .jump(top)
            .bind(done);
        for step in self.c.fini {
            if let FiniStep::StrHook(hook) = *step {
                // Strings owned by no single module always have valid
                // pointers.
                let (start, end) = self.t.shared_strs();
                self.range(&mut b, start, end);
                self.walk(&mut b, hook, None);
            }
        }
        b.return_int(0);
        b.finish()
    }

    /// Each code object of `[CUR, END)` (`AUX` = its pristine entry) back
    /// to its emitted state: where the runtime left state behind, `hook`
    /// first (or, without one, that state cleared); the fixed fields; the
    /// pristine bytecode.
    fn restore_codes(&self, b: &mut Builder, hook: Option<&'static str>) {
        let code = &self.l.code;
        let top = b.here();
        let next = b.label();
        b.branch(Width::W64, CUR, Cond::GeU, Operand::Reg(END), next)
            .load(Width::W32, ARG0, Mem::at(CUR, 0))
            .add(ARG0, DATA, Operand::Reg(ARG0));
        match hook {
            Some(hook) => {
                let (full, copy) = (b.label(), b.label());
                for f in code.runtime_state {
                    b.load(width(f.size), T0, Mem::at(ARG0, f.off as i32))
                        .branch(width(f.size).max32(), T0, Cond::Ne, Operand::Imm(0), full);
                }
                b.jump(copy)
                    .bind(full)
                    .call(Callee::Extern(hook))
                    .load(Width::W32, ARG0, Mem::at(CUR, 0))
                    .add(ARG0, DATA, Operand::Reg(ARG0))
                    .bind(copy);
            }
            None => {
                for f in code.runtime_state {
                    b.store(width(f.size), Mem::at(ARG0, f.off as i32), Operand::Imm(0));
                }
            }
        }
        for &(f, value) in code.fixed {
            let w = width(f.size);
            match i32::try_from(value as i64) {
                Ok(v) if w != Width::W64 || v as i64 as u64 == value => {
                    b.store(w, Mem::at(ARG0, f.off as i32), Operand::Imm(v));
                }
                _ if w != Width::W64 => {
                    b.store(
                        w,
                        Mem::at(ARG0, f.off as i32),
                        Operand::Imm(value as u32 as i32),
                    );
                }
                _ => {
                    b.push(Inst::MovImm(Width::W64, T0, value as i64)).store(
                        w,
                        Mem::at(ARG0, f.off as i32),
                        Operand::Reg(T0),
                    );
                }
            }
        }
        b.add(T0, ARG0, Operand::Imm(code.code_adaptive as i32))
            .addr(T1, Sym::Rodata(0))
            .load(Width::W32, T2, Mem::at(AUX, 0))
            .add(T1, T1, Operand::Reg(T2))
            .load(Width::W32, T2, Mem::at(AUX, 4))
            .push(Inst::Copy {
                dst: T0,
                src: T1,
                len: T2,
            })
            .add(CUR, CUR, Operand::Imm(4))
            .add(AUX, AUX, Operand::Imm(Table::Pristine.entry_size() as i32))
            .jump(top)
            .bind(next);
    }
}

fn width(size: u8) -> Width {
    Width::of_size(size).expect("layout fields are 1, 2, 4 or 8 bytes")
}

trait Max32 {
    fn max32(self) -> Width;
}

impl Max32 for Width {
    /// Compares are 32 or 64 bits wide.
    fn max32(self) -> Width {
        if self == Width::W64 {
            Width::W64
        } else {
            Width::W32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{aarch64, check::check, x86_64, Arch, Conv};
    use crate::place::{Fixups, Image};
    use crate::version::{PY311, PY312};

    /// Three modules: code objects, strings (one shared), fixups of both
    /// kinds, a frozenset, pristine bytecode.
    fn image() -> Image {
        let mut img = Image {
            data: vec![0; 4096],
            codes: vec![0, 256, 512, 768],
            code_lens: vec![4, 4, 6, 2],
            strs: vec![1024, 1088, 1152],
            str_owners: vec![0, crate::graph::SHARED, 2],
            module_codes: vec![2, 1, 1],
            ..Image::default()
        };
        img.accessors = ["a", "b", "c"]
            .iter()
            .zip([0, 512, 768])
            .map(|(m, code)| Accessor {
                symbol: crate::frozen::accessor_symbol(m),
                code,
            })
            .collect();
        img.fixups = Some(Fixups {
            internal: vec![vec![8, 16], vec![], vec![520]],
            external: vec![vec![(24, 0)], vec![(32, 1)], vec![]],
            frozensets: vec![vec![(40, 2048)], vec![], vec![(40, 2048)]],
            externs: vec!["PyCode_Type", "_PyRuntime"],
            extern_table: 3072,
        });
        img
    }

    const CONVENTIONS: [(Arch, &Conv); 3] = [
        (Arch::X86_64, &x86_64::SYSV),
        (Arch::X86_64, &x86_64::WIN64),
        (Arch::Aarch64, &aarch64::AAPCS64),
    ];

    /// A contract whose code teardown has no runtime hook (the object
    /// clears the runtime-state fields itself), under both schemes.
    fn hookless(v: &'static Version) -> &'static Version {
        let c = v.contract;
        let contract = Box::leak(Box::new(Contract {
            precompute: crate::version::Precompute { ..c.precompute },
            entry: crate::version::Entry { ..c.entry },
            hooks: crate::version::Hooks { ..c.hooks },
            init: c.init,
            fini: &[FiniStep::CodeFini { hook: None }],
        }));
        Box::leak(Box::new(Version {
            layout: v.layout,
            contract,
        }))
    }

    /// The whole program, for every version, scheme and convention,
    /// lowers with the stack aligned at every call, every callee-saved
    /// register restored, every label bound and every relocation inside
    /// its function; it defines the contract's entry points and one
    /// accessor per module.
    #[test]
    fn every_program_keeps_the_invariants() {
        let img = image();
        let lazy = Scheme::Lazy {
            flags: 3584,
            extern_table: 3072,
        };
        for v in [&PY311, &PY312, hookless(&PY311), hookless(&PY312)] {
            for scheme in [Scheme::Eager, lazy] {
                let pristine =
                    needs_pristine(v.contract, scheme).then_some(v.layout.code.code_adaptive);
                let t = RoTables::build(&img, pristine).unwrap();
                let p = program(v, &img.accessors, &t, scheme);
                for (arch, conv) in CONVENTIONS {
                    let what = format!("{:?} {scheme:?} {}", v.layout.version, conv.name);
                    let stubs = check(arch, conv, &p).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let names: Vec<&str> = stubs.funcs.iter().map(|f| f.name.as_str()).collect();
                    for want in [v.contract.entry.init, v.contract.entry.fini]
                        .into_iter()
                        .chain(img.accessors.iter().map(|a| a.symbol.as_str()))
                    {
                        assert!(names.contains(&want), "{what}: no {want} in {names:?}");
                    }
                    for f in &stubs.funcs {
                        // Windows needs unwind data for every function
                        // that calls.
                        let calls = p.funcs.iter().find(|g| g.name == f.name).unwrap().calls();
                        assert!(
                            !calls || f.unwind.is_some(),
                            "{what}: {} has no unwind data",
                            f.name
                        );
                    }
                }
            }
        }
    }

    /// Each contract's steps reach the runtime functions they name.
    #[test]
    fn hooks_are_called() {
        let img = image();
        for v in [&PY311, &PY312] {
            let t = RoTables::build(&img, Some(v.layout.code.code_adaptive)).unwrap();
            for scheme in [
                Scheme::Eager,
                Scheme::Lazy {
                    flags: 3584,
                    extern_table: 3072,
                },
            ] {
                let p = program(v, &img.accessors, &t, scheme);
                let stubs = Arch::X86_64.lower(&x86_64::SYSV, &p);
                let called: Vec<&str> = (stubs.relocs.iter())
                    .filter_map(|r| match r.target {
                        Sym::Extern(n) => Some(n),
                        _ => None,
                    })
                    .collect();
                let c = v.contract;
                for h in [c.code_init_hook(), c.code_fini_hook(), c.str_fini_hook()]
                    .into_iter()
                    .flatten()
                {
                    assert!(called.contains(&h), "{scheme:?}: {h} is never called");
                }
                let lazy = matches!(scheme, Scheme::Lazy { .. });
                assert_eq!(called.contains(&c.hooks.frozenset_new), lazy);
            }
        }
    }
}
