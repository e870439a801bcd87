//! Machine-code stubs per architecture, behind one interface.
//!
//! The stubs are the functions a deep-frozen object defines besides its
//! data: one accessor per module (`_Py_get_<mod>_toplevel`, returning the
//! module's code object), and `_Py_Deepfreeze_Init` / `_Py_Deepfreeze_Fini`,
//! which walk a table of code-object offsets and call the runtime's
//! per-code-object init or fini function on each.
//!
//! Each architecture lowers a [`StubSpec`] to bytes plus neutral
//! [`CodeReloc`]s; the object writer maps those to the relocation types of
//! the output format.

pub mod aarch64;
pub mod x86_64;

/// What a code relocation refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sym {
    /// An offset in the data section (the frozen objects).
    Data(u64),
    /// An offset in the read-only section (the table of code objects).
    Table(u64),
    /// An external function or object.
    Extern(&'static str),
}

/// Relocation kinds the stubs use, independent of the object format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeRelocKind {
    /// x86_64: 32-bit PC-relative displacement (RIP-relative operand).
    X86PcRel32,
    /// x86_64: 32-bit PC-relative call target, through the PLT if needed.
    X86Call32,
    /// AArch64 ADRP: the target's 4 KiB page, PC-relative, 21 bits.
    A64AdrPage21,
    /// AArch64 ADD: the low 12 bits of the target's address.
    A64AddLo12,
    /// AArch64 BL: 26-bit PC-relative call, through the PLT if needed.
    A64Call26,
}

#[derive(Clone, Copy, Debug)]
pub struct CodeReloc {
    /// Offset of the relocated field in the text section.
    pub offset: u64,
    pub kind: CodeRelocKind,
    pub target: Sym,
    /// Addend as the format's relocation wants it (for x86 PC-relative
    /// fields, minus the distance from the field to the end of the
    /// instruction).
    pub addend: i64,
}

/// A function defined in the text section.
#[derive(Clone, Debug)]
pub struct Func {
    pub name: String,
    /// Visible to the rest of the program (else local to the object).
    pub global: bool,
    pub offset: u64,
    pub size: u64,
    /// What the prologue did, in order, with the offset (from the
    /// function's start) just past each instruction: for unwind tables.
    /// Empty for leaf functions that leave the stack alone.
    pub unwind: Vec<(u32, UnwindOp)>,
    /// Offset of the (single) epilogue, for formats that describe it.
    pub epilog: Option<u32>,
}

/// One step of a prologue, as unwinders need to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwindOp {
    /// x86_64: push of a register (by its encoding number).
    Push(u8),
    /// x86_64: `sub $n, %rsp`.
    Alloc(u32),
    /// AArch64: `stp x29, x30, [sp, #-n]!`.
    SaveFpLr(u32),
    /// AArch64: `mov x29, sp` (not undone by the epilogue).
    SetFp,
    /// AArch64: `stp x<r>, x<r+1>, [sp, #off]`.
    SavePair(u8, u32),
}

/// Assembled stubs.
#[derive(Default, Debug)]
pub struct Stubs {
    pub code: Vec<u8>,
    pub relocs: Vec<CodeReloc>,
    pub funcs: Vec<Func>,
    /// Alignment the text section needs.
    pub align: u64,
}

/// Bookkeeping both assemblers share: the output, and the current
/// function's prologue steps and epilogue start (for unwind tables).
struct Emitter {
    out: Stubs,
    unwind: Vec<(u64, UnwindOp)>,
    epilog: Option<u64>,
}

impl Emitter {
    fn new(align: u64) -> Emitter {
        Emitter {
            out: Stubs {
                align,
                ..Stubs::default()
            },
            unwind: Vec::new(),
            epilog: None,
        }
    }
    fn pos(&self) -> u64 {
        self.out.code.len() as u64
    }
    /// A global function from `start` to here.
    fn func(&mut self, name: &str, start: u64) {
        self.push_func(name, start, true);
    }
    /// A function local to the object, from `start` to here.
    fn local_func(&mut self, name: &str, start: u64) {
        self.push_func(name, start, false);
    }
    fn push_func(&mut self, name: &str, start: u64, global: bool) {
        let size = self.pos() - start;
        let rel = |p: u64| (p - start) as u32;
        let unwind = std::mem::take(&mut self.unwind)
            .into_iter()
            .map(|(p, op)| (rel(p), op))
            .collect();
        let epilog = self.epilog.take().map(rel);
        self.out.funcs.push(Func {
            name: name.to_string(),
            global,
            offset: start,
            size,
            unwind,
            epilog,
        });
    }
    /// Record a prologue step that ends here.
    fn unwind_op(&mut self, op: UnwindOp) {
        let p = self.pos();
        self.unwind.push((p, op));
    }
}

/// Calling convention of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    SysV,
    Win64,
}

/// A function that calls `callee` on every entry of the code table.
#[derive(Clone, Debug)]
pub struct TableWalk {
    /// The function's symbol; consecutive walks with the same name form
    /// one function that walks several tables in turn.
    pub name: &'static str,
    /// Which table of [`StubSpec::tables`] to walk.
    pub table: usize,
    /// Only entries [start, start + count) (else the whole table).
    pub range: Option<(u64, u64)>,
    pub callee: &'static str,
    /// Stop and return -1 when `callee` returns a negative int; else the
    /// function returns 0 (Init). Without it the function returns nothing.
    pub check_result: bool,
}

/// Everything the stubs need to know.
#[derive(Clone, Debug)]
pub struct StubSpec {
    pub abi: Abi,
    /// (accessor symbol, data offset of the module's code object).
    pub accessors: Vec<(String, u64)>,
    /// Accessors add one to the object's 64-bit reference count at this
    /// offset (`None`: immortal objects, returned as they are).
    pub incref: Option<u32>,
    /// Lengths of the 32-bit tables, laid out one after another in the
    /// read-only section (table 0: data offsets of the code objects;
    /// table 1: of the strings; table 2, lazy scheme: per module the first
    /// index into table 0 and the number of its code objects).
    pub tables: Vec<u64>,
    pub scheme: Scheme,
}

/// When the runtime's per-code-object init runs.
#[derive(Clone, Debug)]
pub enum Scheme {
    /// CPython's: `_Py_Deepfreeze_Init` and `_Py_Deepfreeze_Fini` walk the
    /// tables (one function per distinct walk name).
    Eager { walks: Vec<TableWalk> },
    /// Per module, on first use: accessor i initializes module i's code
    /// objects (table 0, range from table 2) once and sets its flag; Init
    /// does nothing; Fini finalizes the modules whose flag is set, clears
    /// the flags, then runs `fini_walks`.
    Lazy(Lazy),
}

#[derive(Clone, Debug)]
pub struct Lazy {
    pub init_name: &'static str,
    pub fini_name: &'static str,
    pub code_init: &'static str,
    pub code_fini: &'static str,
    /// Data offset of the flag bytes: module i is initialized while
    /// `flags + i` is set, and its pointers are fixed up once
    /// `flags + n + i` is (n modules, accessor order).
    pub flags: u64,
    /// Data offset of the table of external symbols' addresses that
    /// external fixups index.
    pub extern_table: u64,
    /// Walks run by Fini after the modules (3.11: the shared strings'
    /// deallocs).
    pub fini_walks: Vec<TableWalk>,
    /// Called by Fini on each string a module owns (table 1, range from
    /// the module table), for every module whose pointers were fixed up.
    pub str_fini: Option<&'static str>,
    /// Fini restores each code object's bytecode (at `code_adaptive`) from
    /// its pristine copy (table [`PRISTINE_TABLE`]: offset from the start of
    /// the read-only section, length) and rewrites the `fixed` fields
    /// (offset, size, value); only when one of the `runtime_state` pointer
    /// fields is set does it call `code_fini` first.
    pub code_adaptive: u32,
    pub fixed: Vec<(u32, u8, u64)>,
    pub runtime_state: Vec<u32>,
    /// Makes a frozenset from a tuple (new reference, NULL on error), and
    /// drops a reference: for the frozenset constants.
    pub frozenset_new: &'static str,
    pub decref: &'static str,
}

/// The table of [`StubSpec::tables`] with, per module, sixteen 32-bit
/// fields (64 bytes): first code-table index and count, first
/// internal-fixup index and count, first external-fixup pair and count,
/// first frozenset pair and count, first string index and count, padding.
pub const MODULE_TABLE: usize = 2;
/// Internal fixups: data offsets of fields to which to add the data address.
pub const FIX_TABLE: usize = 3;
/// External fixups: (field offset, index into the extern address table).
pub const XFIX_TABLE: usize = 4;
/// Frozenset constants: (field offset, offset of the tuple of its items).
pub const FROZENSET_TABLE: usize = 5;
/// Per code object (parallel to table 0): its pristine bytecode's offset
/// in the read-only section, and length.
pub const PRISTINE_TABLE: usize = 6;

/// Consecutive walks with the same name: one function each.
pub fn walk_groups(walks: &[TableWalk]) -> impl Iterator<Item = &[TableWalk]> {
    walks.chunk_by(|a, b| a.name == b.name)
}

impl TableWalk {
    /// Byte offsets [start, end) of the entries walked in the read-only
    /// section.
    pub fn bounds(&self, spec: &StubSpec) -> (u64, u64) {
        let base = spec.table_start(self.table);
        let (first, n) = self.range.unwrap_or((0, spec.tables[self.table]));
        (base + 4 * first, base + 4 * (first + n))
    }
}

impl StubSpec {
    /// Byte offset of table `t` in the read-only section.
    pub fn table_start(&self, t: usize) -> u64 {
        4 * self.tables[..t].iter().sum::<u64>()
    }
}

/// The architectures we generate code for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn assemble(self, spec: &StubSpec) -> Stubs {
        match self {
            Arch::X86_64 => x86_64::assemble(spec),
            Arch::Aarch64 => aarch64::assemble(spec),
        }
    }
}
