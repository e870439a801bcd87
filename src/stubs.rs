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
//!   of its accessor (applying its fixups once per process, then the init
//!   steps over its code objects) and sets its flag. With an entry the
//!   runtime calls, the init entry does nothing and the fini entry undoes
//!   the init steps for every module whose flag is set, then runs the
//!   string steps over the shared strings.
//! * Wrapped entry (lazy only): the load wrapper hands out a module's code
//!   object for its marshal bytes (initializing it on first use), the code
//!   teardown wrapper is the fini entry's work for the main interpreter;
//!   each reaches the runtime's function (`__real_F`) otherwise.
//!
//! Adding a step: a variant in [`crate::version`], its logic here (one
//! function writing instructions), and its place in a contract. Nothing
//! per instruction set.

use crate::arch::ir::{
    Builder, Callee, Cond, Func, Inst, Label, Mem, Operand, Program, Reg, Sym, Width,
};
use crate::arch::Arch;
use crate::layout::{Layout, Release};
use crate::place::Accessor;
use crate::rotables::{ModuleRecord, RoTables, Span, Table};
use crate::version::{Contract, Entry, FiniStep, InitStep, Version, Wraps};

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
/// A heap block being released.
const BLOCK: Reg = Reg::Saved(5);
const T0: Reg = Reg::Temp(0);
const T1: Reg = Reg::Temp(1);
const T2: Reg = Reg::Temp(2);
const ARG0: Reg = Reg::Arg(0);
const ARG1: Reg = Reg::Arg(1);
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

/// Data the program reads beyond the tables, where the contract needs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slots {
    /// Data offset of the pointer to the main interpreter's state.
    pub main_interp: u64,
    /// Data offsets `[start, end)` spanning every marshal blob of the
    /// module tables (empty: none).
    pub blobs: (u64, u64),
}

/// Whether the program restores pristine bytecode (so the read-only
/// section must carry it).
pub fn needs_pristine(contract: &Contract, scheme: Scheme) -> bool {
    contract.fini.iter().any(|s| match (s, scheme) {
        (FiniStep::CodeFini { hook: Some(_) }, Scheme::Eager) => false,
        (FiniStep::CodeFini { .. }, _) => true,
        (FiniStep::StrHook(_) | FiniStep::InternRestore | FiniStep::LeaveInterned { .. }, _) => {
            false
        }
    })
}

/// Whether the contract's steps read the main interpreter (so the data
/// must hold a pointer to it, [`Slots::main_interp`]).
pub fn needs_main_interp(contract: &Contract) -> bool {
    matches!(contract.entry, Entry::Wrapped(_))
        || (contract.init.iter()).any(|s| matches!(s, InitStep::Intern { .. } | InitStep::Versions))
}

/// The whole program, for `arch` (where the runtime's structures differ
/// by architecture).
pub fn program(
    version: &Version,
    accessors: &[Accessor],
    tables: &RoTables,
    scheme: Scheme,
    slots: Slots,
    arch: Arch,
) -> Program {
    let p = Writer {
        c: version.contract,
        l: version.layout,
        t: tables,
        modules: accessors.len() as u32,
        slots,
        arch,
    };
    let mut funcs = Vec::new();
    match (scheme, &p.c.entry) {
        (Scheme::Eager, Entry::Called { init, fini }) => {
            for a in accessors {
                let mut b = Builder::new(&a.symbol, true);
                p.return_code(&mut b, a.code);
                funcs.push(b.finish());
            }
            funcs.push(p.eager_init(init));
            funcs.push(p.eager_fini(fini));
        }
        (
            Scheme::Lazy {
                flags,
                extern_table,
            },
            entry,
        ) => {
            // Function 0: the helper the accessors call.
            funcs.push(p.init_module(flags, extern_table));
            for (i, a) in accessors.iter().enumerate() {
                funcs.push(p.lazy_accessor(&a.symbol, a.code, flags + i as u64, i as u32));
            }
            match entry {
                Entry::Called { init, fini } => {
                    let mut b = Builder::new(*init, true);
                    b.return_int(0);
                    funcs.push(b.finish());
                    let mut b = Builder::new(*fini, true);
                    p.lazy_fini(&mut b, flags);
                    b.return_int(0);
                    funcs.push(b.finish());
                }
                Entry::Wrapped(w) => {
                    funcs.push(p.load_wrapper(w, flags));
                    funcs.push(p.code_fini_wrapper(w, flags));
                }
            }
        }
        (Scheme::Eager, Entry::Wrapped(_)) => {
            unreachable!("a wrapped entry has no eager scheme (emit chooses the lazy one)")
        }
    }
    Program { funcs }
}

/// Which entries of a table a step runs over.
#[derive(Clone, Copy)]
enum Sel {
    /// All of them (eager scheme, teardown of strings).
    All,
    /// Module `MODULE`'s span (lazy scheme).
    Module,
}

struct Writer<'a> {
    c: &'static Contract,
    l: &'static Layout,
    t: &'a RoTables,
    modules: u32,
    slots: Slots,
    arch: Arch,
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

    /// `CUR, END` = the entries of `span`'s table that `sel` selects.
    fn select(&self, b: &mut Builder, sel: Sel, span: Span) {
        match sel {
            Sel::All => self.range(b, self.t.start(span.table), self.t.end(span.table)),
            Sel::Module => {
                self.record(b);
                self.span(b, span);
            }
        }
    }

    /// `reg` = the main interpreter's state.
    fn main_interp(&self, b: &mut Builder, reg: Reg) {
        b.load(Width::W64, reg, Mem::Sym(Sym::Data(self.slots.main_interp)));
    }

    /// `reg` = the code object `CUR` points at (`DATA` + its entry).
    fn code_at_cur(&self, b: &mut Builder, reg: Reg) {
        b.load(Width::W32, reg, Mem::at(CUR, 0))
            .add(reg, DATA, Operand::Reg(reg));
    }

    /// Call `hook(data + entry)` on each 32-bit entry of `[CUR, END)`;
    /// with `fail`, a negative `int` result jumps there.
    fn walk(&self, b: &mut Builder, hook: &'static str, fail: Option<Label>) {
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
    fn return_status(&self, b: &mut Builder, fail: Label) {
        b.return_int(0).bind(fail).return_int(-1);
    }

    /// The contract's init steps over what `sel` selects (`DATA` set;
    /// lazy: `MODULE` too).
    fn init_steps(&self, b: &mut Builder, sel: Sel, fail: Label) {
        for step in self.c.init {
            match *step {
                // The eager scheme leaves the tuples (CPython's).
                InitStep::Frozensets => {
                    if let Sel::Module = sel {
                        self.make_frozensets(b, fail);
                    }
                }
                InitStep::CodeHook(hook) => {
                    self.select(b, sel, ModuleRecord::CODES);
                    self.walk(b, hook, Some(fail));
                }
                InitStep::Intern { immortal, mortal } => {
                    self.intern(b, sel, ModuleRecord::INTERN_IMMORTAL, immortal);
                    self.intern(b, sel, ModuleRecord::INTERN_MORTAL, mortal);
                }
                InitStep::Versions => self.versions(b, sel),
            }
        }
    }

    /// `f(interp, data + field)` on each intern entry of `span`.
    fn intern(&self, b: &mut Builder, sel: Sel, span: Span, f: &'static str) {
        self.select(b, sel, span);
        let top = b.here();
        let done = b.label();
        b.branch(Width::W64, CUR, Cond::GeU, Operand::Reg(END), done)
            .load(Width::W32, ARG1, Mem::at(CUR, 0))
            .add(ARG1, DATA, Operand::Reg(ARG1));
        self.main_interp(b, ARG0);
        b.call(Callee::Extern(f))
            .add(CUR, CUR, Operand::Imm(8))
            .jump(top)
            .bind(done);
    }

    /// Each selected code object's `co_version` from the interpreter's
    /// counter, which moves past them (a counter at 0 stays there: the
    /// runtime's "versions exhausted").
    fn versions(&self, b: &mut Builder, sel: Sel) {
        let (Some(next), Some(ver)) = (self.l.interp.next_func_version, self.l.code.version) else {
            return;
        };
        let next = next.on(self.arch);
        self.select(b, sel, ModuleRecord::CODES);
        self.main_interp(b, AUX);
        let counter = Mem::at(AUX, next.off as i32);
        b.load(Width::W32, T1, counter);
        let top = b.here();
        let (done, same) = (b.label(), b.label());
        b.branch(Width::W64, CUR, Cond::GeU, Operand::Reg(END), done);
        self.code_at_cur(b, T0);
        b.store(Width::W32, Mem::at(T0, ver.off as i32), Operand::Reg(T1))
            .branch(Width::W32, T1, Cond::Eq, Operand::Imm(0), same)
            .add(T1, T1, Operand::Imm(1))
            .bind(same)
            .add(CUR, CUR, Operand::Imm(4))
            .jump(top)
            .bind(done)
            .store(Width::W32, counter, Operand::Reg(T1));
    }

    fn eager_init(&self, name: &'static str) -> Func {
        let mut b = Builder::new(name, true);
        let fail = b.label();
        b.addr(DATA, Sym::Data(0));
        self.init_steps(&mut b, Sel::All, fail);
        self.return_status(&mut b, fail);
        b.finish()
    }

    fn eager_fini(&self, name: &'static str) -> Func {
        let mut b = Builder::new(name, true);
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
                FiniStep::InternRestore => self.intern_restore(&mut b, Sel::All),
                FiniStep::LeaveInterned { del, clear } => self.leave_interned(&mut b, del, clear),
            }
        }
        b.return_int(0);
        b.finish()
    }

    /// `int init_module(unsigned i)`: module i's fixups (once per
    /// process) and init steps; then its flag.
    fn init_module(&self, flags: u64, extern_table: u64) -> Func {
        let mut b = Builder::new("pyfreeze_init_module", false);
        let fail = b.label();
        b.push(Inst::Mov(Width::W32, MODULE, ARG0))
            .addr(DATA, Sym::Data(0));
        self.fixups(&mut b, flags, extern_table);
        self.init_steps(&mut b, Sel::Module, fail);
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
    fn each_frozenset(&self, b: &mut Builder, body: impl Fn(&mut Builder, Label)) {
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
    fn make_frozensets(&self, b: &mut Builder, fail: Label) {
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

    /// The lazy teardown: for every module whose fixups ran, its strings'
    /// steps, and if it is initialized, its flag cleared, its frozensets
    /// dropped and its code objects' steps; then the shared strings'
    /// steps.
    fn lazy_fini(&self, b: &mut Builder, flags: u64) {
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
        self.drop_frozensets(b);
        for step in self.c.fini {
            match *step {
                FiniStep::CodeFini { hook } => {
                    self.record(b);
                    self.span(b, ModuleRecord::CODES);
                    b.addr(AUX, Sym::Rodata(self.t.start(Table::Pristine)))
                        .push(Inst::AddShl(AUX, AUX, T0, Table::Pristine.entry_shift()));
                    self.restore_codes(b, hook);
                }
                FiniStep::InternRestore => self.intern_restore(b, Sel::Module),
                FiniStep::StrHook(_) | FiniStep::LeaveInterned { .. } => {}
            }
        }
        b.bind(strings);
        for step in self.c.fini {
            if let FiniStep::StrHook(hook) = *step {
                self.record(b);
                self.span(b, ModuleRecord::STRS);
                self.walk(b, hook, None);
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
                self.range(b, start, end);
                self.walk(b, hook, None);
            }
        }
        for step in self.c.fini {
            if let FiniStep::LeaveInterned { del, clear } = *step {
                self.leave_interned(b, del, clear);
            }
        }
    }

    /// [`FiniStep::LeaveInterned`] over all our strings (`DATA` set):
    /// those only an initialized module's interning can have made
    /// interned, and only their own bytes are read.
    fn leave_interned(&self, b: &mut Builder, del: &'static str, clear: &'static str) {
        let Some(dict) = self.l.interp.interned_dict else {
            return;
        };
        let (dict, sl, head) = (dict.on(self.arch), &self.l.str_, &self.l.head);
        // `state.interned` is the low bits of the state word: shifted to
        // the top of a register, nothing else of the state is left.
        let mask = sl.interned_mask;
        assert!(
            mask != 0 && mask & (mask + 1) == 0,
            "state.interned is not the low bits of the state"
        );
        let shift = (64 - mask.count_ones()) as u8;
        let state = Mem::at(T0, sl.state.off as i32);
        self.range(b, self.t.start(Table::Strs), self.t.end(Table::Strs));
        let top = b.here();
        let (next, cleared, lower, done) = (b.label(), b.label(), b.label(), b.label());
        b.branch(Width::W64, CUR, Cond::GeU, Operand::Reg(END), done);
        self.code_at_cur(b, T0);
        b.load(width(sl.state.size), T1, state)
            .push(Inst::Shl(T1, T1, shift))
            .branch(Width::W64, T1, Cond::Eq, Operand::Imm(0), next);
        self.main_interp(b, ARG0);
        b.load(Width::W64, ARG0, Mem::at(ARG0, dict.off as i32))
            .push(Inst::Mov(Width::W64, ARG1, T0))
            .call(Callee::Extern(del))
            .branch(Width::W32, RET, Cond::GeS, Operand::Imm(0), cleared)
            .call(Callee::Extern(clear))
            .bind(cleared);
        // state -= 1 while its interned bits are nonzero (no borrow
        // reaches the bits above them).
        self.code_at_cur(b, T0);
        b.load(width(sl.state.size), T1, state)
            .bind(lower)
            .add(T1, T1, Operand::Imm(-1))
            .push(Inst::Shl(T2, T1, shift))
            .branch(Width::W64, T2, Cond::Ne, Operand::Imm(0), lower)
            .store(width(sl.state.size), state, Operand::Reg(T1))
            .push(Inst::MovImm(Width::W64, T1, head.static_refcnt as i64))
            .store(
                width(head.refcnt.size),
                Mem::at(T0, head.refcnt.off as i32),
                Operand::Reg(T1),
            )
            .bind(next)
            .add(CUR, CUR, Operand::Imm(4))
            .jump(top)
            .bind(done);
    }

    /// Each interned field of what `sel` selects holds our string again;
    /// the string it held instead is dropped.
    fn intern_restore(&self, b: &mut Builder, sel: Sel) {
        let decref = self.c.hooks.decref;
        for span in [ModuleRecord::INTERN_IMMORTAL, ModuleRecord::INTERN_MORTAL] {
            self.select(b, sel, span);
            let top = b.here();
            let (next, done) = (b.label(), b.label());
            b.branch(Width::W64, CUR, Cond::GeU, Operand::Reg(END), done)
                .load(Width::W32, T0, Mem::at(CUR, 0))
                .add(T0, DATA, Operand::Reg(T0))
                .load(Width::W32, T1, Mem::at(CUR, 4))
                .add(T1, DATA, Operand::Reg(T1))
                .load(Width::W64, ARG0, Mem::at(T0, 0))
                .branch(Width::W64, ARG0, Cond::Eq, Operand::Reg(T1), next)
                .store(Width::W64, Mem::at(T0, 0), Operand::Reg(T1))
                .call(Callee::Extern(decref))
                .bind(next)
                .add(CUR, CUR, Operand::Imm(8))
                .jump(top)
                .bind(done);
        }
    }

    /// `PyObject *load(data, size)`: the static code object of the module
    /// whose marshal bytes `data` are, for the main interpreter (see
    /// [`Wraps::load`]); anything else is the runtime's.
    fn load_wrapper(&self, w: &Wraps, flags: u64) -> Func {
        let (name, real) = (w.load.wrap, w.load.real);
        let mut b = Builder::new(name, true);
        let (real_l, ready, fail) = (b.label(), b.label(), b.label());
        let arch = self.arch;
        b.push(Inst::Mov(Width::W64, CUR, ARG0))
            .push(Inst::Mov(Width::W64, END, ARG1))
            .call(Callee::Extern(w.tstate))
            .branch(Width::W64, RET, Cond::Eq, Operand::Imm(0), real_l);
        let interp = self.l.interp.tstate_interp.on(arch);
        b.load(Width::W64, T0, Mem::at(RET, interp.off as i32));
        self.main_interp(&mut b, T1);
        b.branch(Width::W64, T0, Cond::Ne, Operand::Reg(T1), real_l);
        for r in self.l.interp.requires {
            let f = r.on(arch);
            b.load(width(f.size), T2, Mem::at(T1, f.off as i32)).branch(
                Width::W32,
                T2,
                Cond::Eq,
                Operand::Imm(0),
                real_l,
            );
        }
        for &(e, value) in self.l.interp.expects {
            let f = e.on(arch);
            b.load(width(f.size), T2, Mem::at(T1, f.off as i32)).branch(
                Width::W64,
                T2,
                Cond::Ne,
                Operand::Imm(value as i32),
                real_l,
            );
        }
        let (lo, hi) = self.slots.blobs;
        b.addr(DATA, Sym::Data(0))
            .addr(T0, Sym::Data(lo))
            .branch(Width::W64, CUR, Cond::LtU, Operand::Reg(T0), real_l)
            .addr(T0, Sym::Data(hi))
            .branch(Width::W64, CUR, Cond::GeU, Operand::Reg(T0), real_l)
            // T1 = the bytes' data offset, in [lo, hi).
            .push(Inst::Sub(T1, CUR, DATA));
        self.find_blob(&mut b, T1, real_l);
        // Our bytes only from their very start, at their size.
        b.load(Width::W32, T0, Mem::at(AUX, 0))
            .branch(Width::W64, T0, Cond::Ne, Operand::Reg(T1), real_l)
            .load(Width::W32, T0, Mem::at(AUX, 4))
            .branch(Width::W64, T0, Cond::Ne, Operand::Reg(END), real_l)
            .load(Width::W32, MODULE, Mem::at(AUX, 8))
            .addr(T0, Sym::Data(flags))
            .load(Width::W8, T1, Mem::indexed(T0, MODULE, 0, 0))
            .branch(Width::W32, T1, Cond::Ne, Operand::Imm(0), ready)
            .push(Inst::Mov(Width::W32, ARG0, MODULE))
            .call(Callee::Local(0))
            .branch(Width::W32, RET, Cond::LtS, Operand::Imm(0), fail)
            .bind(ready)
            .load(Width::W32, T0, Mem::at(AUX, 12))
            .add(RET, DATA, Operand::Reg(T0))
            .push(Inst::Return)
            // NULL, with the exception set.
            .bind(fail)
            .push(Inst::MovImm(Width::W64, RET, 0))
            .push(Inst::Return)
            .bind(real_l)
            .push(Inst::Mov(Width::W64, ARG0, CUR))
            .push(Inst::Mov(Width::W64, ARG1, END))
            .push(Inst::TailCall(Callee::Extern(real)));
        b.finish()
    }

    /// `AUX` = the last entry of [`Table::Blobs`] (sorted by data offset,
    /// [`RoTables::build`]) whose bytes start at or before data offset
    /// `key` (which is at least the first one's, [`Slots::blobs`]); none
    /// (an empty table) jumps to `none`. A binary search unrolled over the
    /// table's size, with no bound to check at run time: `n` entries, `m`
    /// the largest power of two at most `n`; the first probe (at `n - m`,
    /// where `n > m`) leaves `m` candidates inside the table, each later
    /// one halves them.
    fn find_blob(&self, b: &mut Builder, key: Reg, none: Label) {
        let n = self.t.len(Table::Blobs);
        if n == 0 {
            b.jump(none);
            return;
        }
        let m = 1u64 << (63 - n.leading_zeros());
        b.addr(AUX, Sym::Rodata(self.t.start(Table::Blobs)));
        let steps = (n > m).then_some(n - m).into_iter();
        for step in steps.chain((0..m.trailing_zeros()).rev().map(|k| 1 << k)) {
            let disp = i32::try_from(step * Table::Blobs.entry_size() as u64)
                .expect("the blob table fits the 4 GiB read-only section");
            let later = b.label();
            b.load(Width::W32, T0, Mem::at(AUX, disp))
                .branch(Width::W64, key, Cond::LtU, Operand::Reg(T0), later)
                .add(AUX, AUX, Operand::Imm(disp))
                .bind(later);
        }
    }

    /// `void code_fini(PyInterpreterState *)`: for the main interpreter,
    /// the lazy teardown of the code objects; then the runtime's.
    fn code_fini_wrapper(&self, w: &Wraps, flags: u64) -> Func {
        let (name, real) = (w.code_fini.wrap, w.code_fini.real);
        let mut b = Builder::new(name, true);
        let real_l = b.label();
        self.main_interp(&mut b, T0);
        b.branch(Width::W64, ARG0, Cond::Ne, Operand::Reg(T0), real_l);
        self.lazy_fini(&mut b, flags);
        self.main_interp(&mut b, ARG0);
        b.bind(real_l).push(Inst::TailCall(Callee::Extern(real)));
        b.finish()
    }

    /// Each code object of `[CUR, END)` (`AUX` = its pristine entry) back
    /// to its emitted state: where the runtime left state behind, `hook`
    /// first (or, without one, that state released as the layout says);
    /// the fixed fields; the pristine bytecode.
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
                for (f, r) in code.runtime_state.iter().zip(code.release) {
                    self.release(b, *f, *r);
                }
                for f in code.runtime_scalars {
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

    /// Release runtime-state field `f` of the code object `CUR` points at
    /// as `r` says, leaving it NULL; `ARG0` = the code object before and
    /// after.
    fn release(&self, b: &mut Builder, f: crate::layout::Field, r: Release) {
        let h = &self.c.hooks;
        let at = Mem::at(ARG0, f.off as i32);
        if r == Release::Unused {
            return;
        }
        let skip = b.label();
        match r {
            Release::Unused => {}
            Release::WeakRefs => {
                b.load(Width::W64, T0, at)
                    .branch(Width::W64, T0, Cond::Eq, Operand::Imm(0), skip)
                    .call(Callee::Extern(h.clear_weakrefs));
            }
            // The runtime's function, with the code object (in ARG0).
            Release::Call(func) => {
                b.load(Width::W64, T0, at)
                    .branch(Width::W64, T0, Cond::Eq, Operand::Imm(0), skip)
                    .call(Callee::Extern(func));
            }
            Release::Object => {
                b.load(Width::W64, T0, at)
                    .branch(Width::W64, T0, Cond::Eq, Operand::Imm(0), skip)
                    .store(Width::W64, at, Operand::Imm(0))
                    .push(Inst::Mov(Width::W64, ARG0, T0))
                    .call(Callee::Extern(h.decref));
            }
            Release::Block { decref, free } => {
                b.load(Width::W64, BLOCK, at)
                    .branch(Width::W64, BLOCK, Cond::Eq, Operand::Imm(0), skip)
                    .store(Width::W64, at, Operand::Imm(0));
                for (offs, hook) in [(decref, h.decref), (free, h.free)] {
                    for &o in offs {
                        b.load(Width::W64, ARG0, Mem::at(BLOCK, o as i32))
                            .call(Callee::Extern(hook));
                    }
                }
                b.push(Inst::Mov(Width::W64, ARG0, BLOCK))
                    .call(Callee::Extern(h.free));
            }
        }
        self.code_at_cur(b, ARG0);
        b.bind(skip);
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
    use crate::arch::{aarch64, check::check, x86_64, Conv};
    use crate::place::{Blob, Fixups, Image, Interns};
    use crate::version::{PY311, PY312, PY313, PY314, PY315};

    /// Three modules: code objects, strings (one shared), fixups of both
    /// kinds, a frozenset, pristine bytecode, interned fields, blobs.
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
        img.interns = vec![
            Interns {
                immortal: vec![(48, 1024)],
                mortal: vec![(112, 1088)],
            },
            Interns::default(),
            Interns {
                immortal: vec![],
                mortal: vec![(624, 1152)],
            },
        ];
        img.blobs = vec![
            Blob {
                data: 3200,
                size: 64,
                module: 0,
            },
            Blob {
                data: 3264,
                size: 32,
                module: 2,
            },
        ];
        img
    }

    const SLOTS: Slots = Slots {
        main_interp: 3400,
        blobs: (3200, 3296),
    };

    const CONVENTIONS: [(Arch, &Conv); 3] = [
        (Arch::X86_64, &x86_64::SYSV),
        (Arch::X86_64, &x86_64::WIN64),
        (Arch::Aarch64, &aarch64::AAPCS64),
    ];

    const LAZY: Scheme = Scheme::Lazy {
        flags: 3584,
        extern_table: 3072,
    };

    /// A contract whose code teardown has no runtime hook (the object
    /// releases the runtime-state fields itself), under both schemes.
    fn hookless(v: &'static Version) -> &'static Version {
        let c = v.contract;
        let contract = Box::leak(Box::new(Contract {
            fini: &[FiniStep::CodeFini { hook: None }],
            ..*c
        }));
        Box::leak(Box::new(Version {
            layout: v.layout,
            contract,
        }))
    }

    /// 3.13's layout with the facts 3.14+ contracts read (made-up
    /// offsets), under the 3.14+ contract.
    fn static_strs() -> &'static Version {
        use crate::layout::{af, f};
        let mut l = PY313.layout.clone();
        l.interp.interned_dict = Some(af(f(9000, 8), &[(Arch::Aarch64, 16)]));
        l.interp.expects = Box::leak(Box::new([
            (af(f(9100, 2), &[(Arch::Aarch64, 16)]), 2000),
            (af(f(9106, 1), &[(Arch::Aarch64, 16)]), 1),
        ]));
        Box::leak(Box::new(Version {
            layout: Box::leak(Box::new(l)),
            contract: crate::version::PY314.contract,
        }))
    }

    /// The schemes a version's objects come in.
    fn schemes(v: &Version) -> Vec<Scheme> {
        if v.contract.entry.has_eager() {
            vec![Scheme::Eager, LAZY]
        } else {
            vec![LAZY]
        }
    }

    /// The functions the runtime reaches.
    fn entry_points(v: &Version) -> Vec<String> {
        match &v.contract.entry {
            Entry::Called { init, fini } => vec![init.to_string(), fini.to_string()],
            Entry::Wrapped(_) => (v.contract.entry.wrappers().iter())
                .map(|f| f.wrap.to_string())
                .collect(),
        }
    }

    /// The whole program, for every version, scheme and convention,
    /// lowers with the stack aligned at every call, every callee-saved
    /// register restored, every label bound and every relocation inside
    /// its function; it defines the contract's entry points and one
    /// accessor per module.
    #[test]
    fn every_program_keeps_the_invariants() {
        let img = image();
        for v in [
            &PY311,
            &PY312,
            &PY313,
            hookless(&PY311),
            hookless(&PY312),
            static_strs(),
            &PY314,
            &PY315,
        ] {
            for scheme in schemes(v) {
                let pristine =
                    needs_pristine(v.contract, scheme).then_some(v.layout.code.code_adaptive);
                let t = RoTables::build(&img, pristine).unwrap();
                for (arch, conv) in CONVENTIONS {
                    let p = program(v, &img.accessors, &t, scheme, SLOTS, arch);
                    let what = format!("{:?} {scheme:?} {}", v.layout.version, conv.name);
                    let stubs = check(arch, conv, &p).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let names: Vec<&str> = stubs.funcs.iter().map(|f| f.name.as_str()).collect();
                    for want in entry_points(v)
                        .into_iter()
                        .chain(img.accessors.iter().map(|a| a.symbol.clone()))
                    {
                        assert!(
                            names.contains(&want.as_str()),
                            "{what}: no {want} in {names:?}"
                        );
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

    /// The blob search, run over the read-only bytes (the few instructions
    /// it writes, interpreted here): for tables of 1 to 40 entries, and
    /// every data offset from before the first blob to past the last, it
    /// stops at the last entry whose bytes start at or before the offset
    /// (the first when none does), as a scan of the entries finds, after at
    /// most 1 + log2(n) loads.
    #[test]
    fn find_blob_is_a_binary_search() {
        for n in 1..=40u64 {
            let mut img = image();
            img.blobs = (0..n)
                .map(|i| Blob {
                    data: 100 + 24 * i + i * i,
                    size: 20 + i,
                    module: (i % 3) as u32,
                })
                .collect();
            let t = RoTables::build(&img, None).unwrap();
            let w = Writer {
                c: PY313.contract,
                l: PY313.layout,
                t: &t,
                modules: 3,
                slots: SLOTS,
                arch: Arch::X86_64,
            };
            let mut b = Builder::new("find", false);
            let none = b.label();
            w.find_blob(&mut b, T1, none);
            b.bind(none);
            let f = b.finish();
            let loads = (f.body.iter())
                .filter(|i| matches!(i, Inst::Load(..)))
                .count();
            assert!(loads as u32 <= 1 + n.ilog2(), "{n} entries: {loads} loads");
            let bytes = t.bytes();
            let last = img.blobs.last().unwrap();
            for key in 90..last.data + last.size + 8 {
                let want = img.blobs.iter().rposition(|b| b.data <= key).unwrap_or(0);
                let aux = run_find(&f, &bytes, key);
                assert_eq!(
                    aux,
                    t.start(Table::Blobs) + 16 * want as u64,
                    "{n} entries, key {key}"
                );
            }
        }
        // An empty table: straight to `none`.
        let t = RoTables::build(&image_without_blobs(), None).unwrap();
        let w = Writer {
            c: PY313.contract,
            l: PY313.layout,
            t: &t,
            modules: 3,
            slots: Slots::default(),
            arch: Arch::X86_64,
        };
        let mut b = Builder::new("find", false);
        let none = b.label();
        w.find_blob(&mut b, T1, none);
        assert_eq!(b.finish().body, [Inst::Jump(none)]);
    }

    fn image_without_blobs() -> Image {
        Image {
            blobs: Vec::new(),
            ..image()
        }
    }

    /// `AUX` after running `f` (address-of the read-only section, 32-bit
    /// loads at base + displacement, additions of immediates, unsigned
    /// compares) with `T1 = key`; the section is at address 0.
    fn run_find(f: &Func, rodata: &[u8], key: u64) -> u64 {
        use std::collections::HashMap;
        let at = |l: Label| (f.body.iter()).position(|i| *i == Inst::Bind(l)).unwrap();
        let mut r: HashMap<Reg, u64> = HashMap::from([(T1, key)]);
        let mut pc = 0;
        while pc < f.body.len() {
            match f.body[pc] {
                Inst::AddrOf(d, Sym::Rodata(o)) => {
                    r.insert(d, o);
                }
                Inst::Load(
                    Width::W32,
                    d,
                    Mem::Reg {
                        base,
                        index: None,
                        disp,
                    },
                ) => {
                    let a = (r[&base] as i64 + disp as i64) as usize;
                    let v = u32::from_le_bytes(rodata[a..a + 4].try_into().unwrap());
                    r.insert(d, v as u64);
                }
                Inst::Add(d, a, Operand::Imm(k)) => {
                    r.insert(d, (r[&a] as i64 + k as i64) as u64);
                }
                Inst::Branch {
                    width: Width::W64,
                    cond: Cond::LtU,
                    a,
                    b: Operand::Reg(b),
                    to,
                } => {
                    if r[&a] < r[&b] {
                        pc = at(to);
                    }
                }
                Inst::Bind(_) => {}
                ref i => panic!("the search wrote {i:?}"),
            }
            pc += 1;
        }
        r[&AUX]
    }

    /// Each contract's steps reach the runtime functions they name.
    #[test]
    fn hooks_are_called() {
        let img = image();
        for v in [&PY311, &PY312, &PY313, static_strs(), &PY314, &PY315] {
            let t = RoTables::build(&img, Some(v.layout.code.code_adaptive)).unwrap();
            for scheme in schemes(v) {
                let p = program(v, &img.accessors, &t, scheme, SLOTS, Arch::X86_64);
                let stubs = Arch::X86_64.lower(&x86_64::SYSV, &p);
                let called: Vec<&str> = (stubs.relocs.iter())
                    .filter_map(|r| match r.target {
                        Sym::Extern(n) => Some(n),
                        _ => None,
                    })
                    .collect();
                let c = v.contract;
                let mut want: Vec<&str> =
                    [c.code_init_hook(), c.code_fini_hook(), c.str_fini_hook()]
                        .into_iter()
                        .flatten()
                        .collect();
                for step in c.init {
                    if let InitStep::Intern { immortal, mortal } = step {
                        want.extend([*immortal, *mortal]);
                    }
                }
                if let Entry::Wrapped(w) = &c.entry {
                    want.push(w.tstate);
                    want.extend(c.entry.wrappers().iter().map(|f| f.real));
                }
                for step in c.fini {
                    if let FiniStep::LeaveInterned { del, clear } = step {
                        want.extend([*del, *clear]);
                    }
                }
                if c.fini.contains(&FiniStep::CodeFini { hook: None }) {
                    want.extend([c.hooks.free, c.hooks.clear_weakrefs, c.hooks.decref]);
                }
                for h in want {
                    assert!(called.contains(&h), "{scheme:?}: {h} is never called");
                }
                let lazy = matches!(scheme, Scheme::Lazy { .. });
                assert_eq!(called.contains(&c.hooks.frozenset_new), lazy);
            }
        }
    }
}
