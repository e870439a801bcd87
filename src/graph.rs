//! The constant graph: every object reachable from the frozen modules'
//! top-level code objects, with sharing.
//!
//! Immutable constants are hash-consed (two equal strings, tuples, ints ...
//! become one node), as CPython's own generator caches by value; code
//! objects are kept by identity. Nodes are stored in an arena and refer to
//! each other by [`ObjId`], so the graph is acyclic by construction: a node
//! can only refer to nodes created before it.

use std::collections::HashMap;

/// Index of a node in [`Graph::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjId(pub u32);

/// An arbitrary-precision integer as sign and magnitude in base 2**30
/// (CPython's digit size on every 64-bit target), least significant first,
/// no trailing zero digits. Zero has no digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BigInt {
    pub negative: bool,
    pub digits: Vec<u32>,
}

pub const DIGIT_BITS: u32 = 30;

impl BigInt {
    pub fn from_i64(v: i64) -> BigInt {
        let negative = v < 0;
        let mut m = v.unsigned_abs();
        let mut digits = Vec::new();
        while m != 0 {
            digits.push((m & ((1 << DIGIT_BITS) - 1)) as u32);
            m >>= DIGIT_BITS;
        }
        BigInt { negative, digits }
    }

    /// The value if it fits in an i64.
    pub fn to_i64(&self) -> Option<i64> {
        if self.digits.len() > 3 {
            return None;
        }
        let mut m: u128 = 0;
        for d in self.digits.iter().rev() {
            m = (m << DIGIT_BITS) | *d as u128;
        }
        if self.negative {
            (m <= 1u128 << 63).then(|| (-(m as i128)) as i64)
        } else {
            i64::try_from(m).ok()
        }
    }
}

/// A code object as marshal (format 4, CPython 3.11/3.12) stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Code {
    pub argcount: i32,
    pub posonlyargcount: i32,
    pub kwonlyargcount: i32,
    pub stacksize: i32,
    pub flags: i32,
    /// Raw (unquickened) bytecode.
    pub code: Vec<u8>,
    pub consts: ObjId,
    pub names: ObjId,
    pub localsplusnames: ObjId,
    pub localspluskinds: ObjId,
    pub filename: ObjId,
    pub name: ObjId,
    pub qualname: ObjId,
    pub firstlineno: i32,
    pub linetable: ObjId,
    pub exceptiontable: ObjId,
}

/// A string as code points (lone surrogates are legal in Python strings).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Str(pub Vec<u32>);

impl Str {
    pub fn max_char(&self) -> u32 {
        self.0.iter().copied().max().unwrap_or(0)
    }
    pub fn is_ascii(&self) -> bool {
        self.max_char() < 0x80
    }
    /// The string as Rust text, when it is ASCII (the only strings that the
    /// runtime's global string table can hold).
    pub fn as_ascii(&self) -> Option<String> {
        self.is_ascii()
            .then(|| self.0.iter().map(|&c| c as u8 as char).collect())
    }
    /// UTF-8 as CPython's "surrogatepass" would give it (lone surrogates
    /// encoded as three bytes), which is what marshal stores.
    pub fn to_utf8(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len());
        for &c in &self.0 {
            match c {
                0..=0x7f => out.push(c as u8),
                0x80..=0x7ff => out.extend([0xc0 | (c >> 6) as u8, 0x80 | (c & 0x3f) as u8]),
                0x800..=0xffff => out.extend([
                    0xe0 | (c >> 12) as u8,
                    0x80 | ((c >> 6) & 0x3f) as u8,
                    0x80 | (c & 0x3f) as u8,
                ]),
                _ => out.extend([
                    0xf0 | (c >> 18) as u8,
                    0x80 | ((c >> 12) & 0x3f) as u8,
                    0x80 | ((c >> 6) & 0x3f) as u8,
                    0x80 | (c & 0x3f) as u8,
                ]),
            }
        }
        out
    }
}

#[derive(Clone, Debug)]
pub enum Obj {
    None,
    True,
    False,
    Ellipsis,
    Int(BigInt),
    /// Stored as bits so that -0.0 and NaN payloads survive hash-consing.
    Float(u64),
    Complex(u64, u64),
    Bytes(Vec<u8>),
    Str(Str),
    Tuple(Vec<ObjId>),
    /// Items in marshal order; the layout decides how to present them.
    FrozenSet(Vec<ObjId>),
    Code(Box<Code>),
}

/// Hash-consing key: everything but code objects, compared by value.
#[derive(PartialEq, Eq, Hash)]
enum Key {
    Singleton(u8),
    Int(BigInt),
    Float(u64),
    Complex(u64, u64),
    Bytes(Vec<u8>),
    Str(Str),
    Tuple(Vec<ObjId>),
    FrozenSet(Vec<ObjId>),
}

/// A frozen module: its name and its top-level code object.
#[derive(Clone, Debug)]
pub struct Module {
    pub name: String,
    /// The accessor function's symbol (`_Py_get_<mangled>_toplevel`).
    pub accessor: String,
    pub code: ObjId,
}

#[derive(Default)]
pub struct Graph {
    pub nodes: Vec<Obj>,
    index: HashMap<Key, ObjId>,
    pub modules: Vec<Module>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    pub fn get(&self, id: ObjId) -> &Obj {
        &self.nodes[id.0 as usize]
    }

    /// Add an object, returning the existing node for an equal constant.
    pub fn add(&mut self, obj: Obj) -> ObjId {
        let key = match &obj {
            Obj::None => Key::Singleton(0),
            Obj::True => Key::Singleton(1),
            Obj::False => Key::Singleton(2),
            Obj::Ellipsis => Key::Singleton(3),
            Obj::Int(v) => Key::Int(v.clone()),
            Obj::Float(b) => Key::Float(*b),
            Obj::Complex(r, i) => Key::Complex(*r, *i),
            Obj::Bytes(b) => Key::Bytes(b.clone()),
            Obj::Str(s) => Key::Str(s.clone()),
            Obj::Tuple(t) => Key::Tuple(t.clone()),
            Obj::FrozenSet(t) => Key::FrozenSet(t.clone()),
            Obj::Code(_) => return self.push(obj),
        };
        if let Some(&id) = self.index.get(&key) {
            return id;
        }
        let id = self.push(obj);
        self.index.insert(key, id);
        id
    }

    fn push(&mut self, obj: Obj) -> ObjId {
        let id = ObjId(self.nodes.len() as u32);
        self.nodes.push(obj);
        id
    }

    /// Code objects in the order CPython's generator numbers them
    /// (`co_version`): depth first through `co_consts`, children before
    /// parents, modules in order, each code object once.
    pub fn code_postorder(&self) -> Vec<ObjId> {
        let mut seen = vec![false; self.nodes.len()];
        let mut out = Vec::new();
        for m in &self.modules {
            self.postorder_from(m.code, &mut seen, &mut out);
        }
        out
    }

    fn postorder_from(&self, root: ObjId, seen: &mut [bool], out: &mut Vec<ObjId>) {
        // Explicit stack: (node, children already pushed?)
        let mut stack = vec![(root, false)];
        while let Some((id, expanded)) = stack.pop() {
            if expanded {
                out.push(id);
                continue;
            }
            if seen[id.0 as usize] {
                continue;
            }
            match self.get(id) {
                Obj::Code(c) => {
                    seen[id.0 as usize] = true;
                    stack.push((id, true));
                    stack.push((c.consts, false));
                }
                Obj::Tuple(items) | Obj::FrozenSet(items) => {
                    seen[id.0 as usize] = true;
                    for &it in items.iter().rev() {
                        stack.push((it, false));
                    }
                }
                _ => {}
            }
        }
    }
}
