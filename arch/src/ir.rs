//! The neutral instruction list the stub program is written in.
//!
//! Registers are roles, not machine registers: each instruction set maps
//! them through the calling convention's table ([`crate::Conv`]). Values
//! are 64-bit; narrower loads zero-extend, narrower stores truncate.
//!
//! The rules a program follows (checked by [`crate::check`]):
//! * [`Reg::Arg`] holds a parameter at a function's entry, and a call's
//!   argument from where it is set up to the [`Inst::Call`]; [`Reg::Ret`]
//!   holds a call's result after it, and the function's before
//!   [`Inst::Return`]. `Ret` and `Arg(0)` may be one register.
//! * A call (and [`Inst::Copy`]) clobbers every `Arg`, `Ret` and `Temp`;
//!   only [`Reg::Saved`] survives it.
//! * A `Temp` may share its register with a high-numbered `Arg` (the
//!   tables list first the registers no argument uses): set a call's
//!   arguments after the last use of the temporaries before it.

/// A register role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reg {
    /// The n-th integer argument register.
    Arg(u8),
    /// The integer return register.
    Ret,
    /// Callee-saved register n: survives calls; a function that uses it
    /// saves and restores it.
    Saved(u8),
    /// Scratch register n: does not survive calls.
    Temp(u8),
}

/// Access width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    W8,
    W16,
    W32,
    W64,
}

impl Width {
    pub fn bytes(self) -> u32 {
        match self {
            Width::W8 => 1,
            Width::W16 => 2,
            Width::W32 => 4,
            Width::W64 => 8,
        }
    }
    /// log2 of [`Width::bytes`].
    pub fn log2(self) -> u8 {
        match self {
            Width::W8 => 0,
            Width::W16 => 1,
            Width::W32 => 2,
            Width::W64 => 3,
        }
    }
    /// Whether a move or compare of this width is 64-bit (they are 32 or
    /// 64 bits wide).
    pub fn is_64(self) -> bool {
        match self {
            Width::W64 => true,
            Width::W32 => false,
            _ => panic!("a {self:?} move or compare: they are 32 or 64 bits wide"),
        }
    }
    /// The width of a `size`-byte field (1, 2, 4 or 8).
    pub fn of_size(size: u8) -> Option<Width> {
        match size {
            1 => Some(Width::W8),
            2 => Some(Width::W16),
            4 => Some(Width::W32),
            8 => Some(Width::W64),
            _ => None,
        }
    }
}

/// A symbol whose address code takes (PC-relative).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sym {
    /// An offset in the object's data section.
    Data(u64),
    /// An offset in the object's read-only section.
    Rodata(u64),
    /// An external function or object.
    Extern(&'static str),
}

/// A memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mem {
    /// `base + (index << shift) + disp`.
    Reg {
        base: Reg,
        index: Option<(Reg, u8)>,
        disp: i32,
    },
    /// The symbol's own place.
    Sym(Sym),
}

impl Mem {
    /// `base + disp`.
    pub fn at(base: Reg, disp: i32) -> Mem {
        Mem::Reg {
            base,
            index: None,
            disp,
        }
    }
    /// `base + (index << shift) + disp`.
    pub fn indexed(base: Reg, index: Reg, shift: u8, disp: i32) -> Mem {
        Mem::Reg {
            base,
            index: Some((index, shift)),
            disp,
        }
    }
}

/// A register or an immediate (which must fit 32 bits, sign-extended,
/// where an instruction set takes no more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Reg(Reg),
    Imm(i32),
}

/// A comparison of `a` with `b` (instruction sets may rely on this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Eq,
    Ne,
    /// Unsigned `a < b`.
    LtU,
    /// Unsigned `a >= b`.
    GeU,
    /// Signed `a < b`.
    LtS,
    /// Signed `a >= b`.
    GeS,
}

/// A label inside one function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(pub u32);

/// What a call reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callee {
    Extern(&'static str),
    /// A function of the same program, by index.
    Local(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inst {
    /// `dst = &sym`.
    AddrOf(Reg, Sym),
    /// `dst = imm` (32 bits: zero-extended).
    MovImm(Width, Reg, i64),
    /// `dst = src` (32 bits: zero-extended).
    Mov(Width, Reg, Reg),
    /// `dst = *mem`, zero-extended.
    Load(Width, Reg, Mem),
    /// `*mem = value`, truncated.
    Store(Width, Mem, Operand),
    /// `dst = a + b`.
    Add(Reg, Reg, Operand),
    /// `dst = a - b`.
    Sub(Reg, Reg, Reg),
    /// `dst = a + (b << shift)`.
    AddShl(Reg, Reg, Reg, u8),
    /// `dst = src << shift`.
    Shl(Reg, Reg, u8),
    /// `*mem += imm`.
    AddMem(Width, Mem, i32),
    /// `if a cond b (compared as `width` integers): goto to`.
    Branch {
        width: Width,
        cond: Cond,
        a: Reg,
        b: Operand,
        to: Label,
    },
    Jump(Label),
    /// Place a label here.
    Bind(Label),
    /// Call with the arguments in `Arg(0..)`; the result is in `Ret`.
    Call(Callee),
    /// Leave the function through `callee` (the frame torn down first),
    /// with the arguments in `Arg(0..)`: its result is this function's.
    TailCall(Callee),
    /// Return `Ret`.
    Return,
    /// Copy `len` bytes from `src` to `dst`; clobbers the three registers
    /// and what a call clobbers.
    Copy {
        dst: Reg,
        src: Reg,
        len: Reg,
    },
}

/// One function.
#[derive(Clone, Debug)]
pub struct Func {
    pub name: String,
    /// Visible to the rest of the program (else local to the object).
    pub global: bool,
    pub body: Vec<Inst>,
    /// Labels used: `Label(0..labels)`.
    pub labels: u32,
}

impl Func {
    /// The callee-saved roles the body uses: `Saved(0..n)` (a function
    /// saves a prefix of the table).
    pub fn saved_roles(&self) -> u8 {
        let mut n = 0;
        let mut see = |r: &Reg| {
            if let Reg::Saved(k) = *r {
                n = n.max(k + 1);
            }
        };
        for i in &self.body {
            i.regs(&mut see);
        }
        n
    }
    /// Whether the body calls anything (a tail call is not a call).
    pub fn calls(&self) -> bool {
        self.body
            .iter()
            .any(|i| matches!(i, Inst::Call(_) | Inst::Copy { .. }))
    }
}

impl Inst {
    /// Every register role the instruction names.
    pub fn regs(&self, f: &mut impl FnMut(&Reg)) {
        let mem = |m: &Mem, f: &mut dyn FnMut(&Reg)| {
            if let Mem::Reg { base, index, .. } = m {
                f(base);
                if let Some((i, _)) = index {
                    f(i);
                }
            }
        };
        let op = |o: &Operand, f: &mut dyn FnMut(&Reg)| {
            if let Operand::Reg(r) = o {
                f(r)
            }
        };
        match self {
            Inst::AddrOf(d, _) | Inst::MovImm(_, d, _) => f(d),
            Inst::Mov(_, d, s) | Inst::Shl(d, s, _) => {
                f(d);
                f(s)
            }
            Inst::Load(_, d, m) => {
                f(d);
                mem(m, f)
            }
            Inst::Store(_, m, v) => {
                mem(m, f);
                op(v, f)
            }
            Inst::Add(d, a, b) => {
                f(d);
                f(a);
                op(b, f)
            }
            Inst::Sub(d, a, b) | Inst::AddShl(d, a, b, _) => {
                f(d);
                f(a);
                f(b)
            }
            Inst::AddMem(_, m, _) => mem(m, f),
            Inst::Branch { a, b, .. } => {
                f(a);
                op(b, f)
            }
            Inst::Copy { dst, src, len } => {
                f(dst);
                f(src);
                f(len)
            }
            Inst::Jump(_) | Inst::Bind(_) | Inst::Call(_) | Inst::TailCall(_) | Inst::Return => {}
        }
    }
}

/// The whole program: functions laid out in this order.
#[derive(Clone, Debug, Default)]
pub struct Program {
    pub funcs: Vec<Func>,
}

/// Writes one function.
pub struct Builder {
    func: Func,
}

impl Builder {
    pub fn new(name: impl Into<String>, global: bool) -> Builder {
        Builder {
            func: Func {
                name: name.into(),
                global,
                body: Vec::new(),
                labels: 0,
            },
        }
    }
    /// A new, unbound label.
    pub fn label(&mut self) -> Label {
        self.func.labels += 1;
        Label(self.func.labels - 1)
    }
    pub fn push(&mut self, i: Inst) -> &mut Self {
        self.func.body.push(i);
        self
    }
    pub fn bind(&mut self, l: Label) -> &mut Self {
        self.push(Inst::Bind(l))
    }
    /// A label bound here.
    pub fn here(&mut self) -> Label {
        let l = self.label();
        self.bind(l);
        l
    }
    pub fn addr(&mut self, dst: Reg, s: Sym) -> &mut Self {
        self.push(Inst::AddrOf(dst, s))
    }
    pub fn load(&mut self, w: Width, dst: Reg, m: Mem) -> &mut Self {
        self.push(Inst::Load(w, dst, m))
    }
    pub fn store(&mut self, w: Width, m: Mem, v: Operand) -> &mut Self {
        self.push(Inst::Store(w, m, v))
    }
    pub fn add(&mut self, dst: Reg, a: Reg, b: Operand) -> &mut Self {
        self.push(Inst::Add(dst, a, b))
    }
    pub fn branch(&mut self, width: Width, a: Reg, cond: Cond, b: Operand, to: Label) -> &mut Self {
        self.push(Inst::Branch {
            width,
            cond,
            a,
            b,
            to,
        })
    }
    pub fn jump(&mut self, l: Label) -> &mut Self {
        self.push(Inst::Jump(l))
    }
    pub fn call(&mut self, c: Callee) -> &mut Self {
        self.push(Inst::Call(c))
    }
    /// `Ret = v` as a 32-bit int, and return.
    pub fn return_int(&mut self, v: i32) -> &mut Self {
        self.push(Inst::MovImm(Width::W32, Reg::Ret, v as u32 as i64))
            .push(Inst::Return)
    }
    pub fn finish(self) -> Func {
        self.func
    }
}
