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
    /// Compare with a Rust string, code point by byte (for ASCII tables).
    pub fn cmp_ascii(&self, s: &str) -> std::cmp::Ordering {
        self.0.iter().copied().cmp(s.bytes().map(|b| b as u32))
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
    /// start, stop, step (marshal version 5, 3.14+).
    Slice([ObjId; 3]),
    Code(Box<Code>),
}

/// FxHash-style hasher: the hash-consing index sees every object of every
/// module, and SipHash's DoS resistance buys nothing for our own tables.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().unwrap()));
        }
        for &b in chunks.remainder() {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64)
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(v as u64)
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64)
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// Content hash of a constant (None for code objects, kept by identity).
fn content_hash(obj: &Obj) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = FastHasher::default();
    std::mem::discriminant(obj).hash(&mut h);
    match obj {
        Obj::None | Obj::True | Obj::False | Obj::Ellipsis => {}
        Obj::Int(v) => v.hash(&mut h),
        Obj::Float(b) => b.hash(&mut h),
        Obj::Complex(r, i) => (r, i).hash(&mut h),
        Obj::Bytes(b) => b.hash(&mut h),
        Obj::Str(s) => s.hash(&mut h),
        Obj::Tuple(t) | Obj::FrozenSet(t) => t.hash(&mut h),
        Obj::Slice(t) => t.hash(&mut h),
        Obj::Code(_) => return None,
    }
    Some(h.finish())
}

/// Equality of two constants by value (code objects never compare equal).
fn same_constant(a: &Obj, b: &Obj) -> bool {
    match (a, b) {
        (Obj::None, Obj::None)
        | (Obj::True, Obj::True)
        | (Obj::False, Obj::False)
        | (Obj::Ellipsis, Obj::Ellipsis) => true,
        (Obj::Int(x), Obj::Int(y)) => x == y,
        (Obj::Float(x), Obj::Float(y)) => x == y,
        (Obj::Complex(a, b), Obj::Complex(c, d)) => a == c && b == d,
        (Obj::Bytes(x), Obj::Bytes(y)) => x == y,
        (Obj::Str(x), Obj::Str(y)) => x == y,
        (Obj::Tuple(x), Obj::Tuple(y)) | (Obj::FrozenSet(x), Obj::FrozenSet(y)) => x == y,
        (Obj::Slice(x), Obj::Slice(y)) => x == y,
        _ => false,
    }
}

/// The children of an object, without allocating.
pub enum Children<'a> {
    Items(std::slice::Iter<'a, ObjId>),
    Code(std::array::IntoIter<ObjId, 9>),
}

impl Iterator for Children<'_> {
    type Item = ObjId;
    fn next(&mut self) -> Option<ObjId> {
        match self {
            Children::Items(i) => i.next().copied(),
            Children::Code(i) => i.next(),
        }
    }
}

/// Owner of objects that more than one module reaches.
pub const SHARED: u32 = u32::MAX;

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
    /// content hash -> the newest constant with that hash; older ones with
    /// the same hash follow through `same_hash` (no allocation per entry).
    index: FastMap<u64, ObjId>,
    /// Per node: the next older constant with the same content hash.
    same_hash: Vec<Option<ObjId>>,
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
        let Some(hash) = content_hash(&obj) else {
            return self.push(obj);
        };
        let newest = self.index.get(&hash).copied();
        let mut next = newest;
        while let Some(id) = next {
            if same_constant(&self.nodes[id.0 as usize], &obj) {
                return id;
            }
            next = self.same_hash[id.0 as usize];
        }
        let id = self.push(obj);
        self.same_hash[id.0 as usize] = newest;
        self.index.insert(hash, id);
        id
    }

    fn push(&mut self, obj: Obj) -> ObjId {
        let id = ObjId(self.nodes.len() as u32);
        self.nodes.push(obj);
        self.same_hash.push(None);
        id
    }

    /// The objects `id` points to (a code object's bytecode is inline, not
    /// an object).
    pub fn children(&self, id: ObjId) -> Children<'_> {
        match self.get(id) {
            Obj::Tuple(items) | Obj::FrozenSet(items) => Children::Items(items.iter()),
            Obj::Slice(items) => Children::Items(items.iter()),
            Obj::Code(c) => Children::Code(
                [
                    c.consts,
                    c.names,
                    c.localsplusnames,
                    c.localspluskinds,
                    c.filename,
                    c.name,
                    c.qualname,
                    c.linetable,
                    c.exceptiontable,
                ]
                .into_iter(),
            ),
            _ => Children::Items([].iter()),
        }
    }

    /// For each object, the one module whose top level reaches it, or
    /// [`SHARED`] if several do (or `SHARED` for unreachable objects).
    pub fn owners(&self) -> Vec<u32> {
        const UNSET: u32 = u32::MAX - 1;
        let n = self.nodes.len();
        let mut owner = vec![UNSET; n];
        let mut seen_by = vec![u32::MAX; n];
        for (mi, m) in self.modules.iter().enumerate() {
            let mi = mi as u32;
            let mut stack = vec![m.code];
            while let Some(id) = stack.pop() {
                let i = id.0 as usize;
                if seen_by[i] == mi {
                    continue;
                }
                seen_by[i] = mi;
                owner[i] = if owner[i] == UNSET || owner[i] == mi {
                    mi
                } else {
                    SHARED
                };
                stack.extend(self.children(id));
            }
        }
        owner
            .iter()
            .map(|&o| if o == UNSET { SHARED } else { o })
            .collect()
    }

    /// Code objects in the order CPython's generator numbers them
    /// (`co_version`): depth first through `co_consts`, children before
    /// parents, modules in order, each code object once.
    /// Also returns how many of them each module contributes: a module's
    /// code objects are contiguous in this order (code objects are never
    /// shared between modules).
    pub fn code_postorder(&self) -> (Vec<ObjId>, Vec<usize>) {
        let mut seen = vec![false; self.nodes.len()];
        let mut out = Vec::new();
        let mut counts = Vec::with_capacity(self.modules.len());
        for m in &self.modules {
            let before = out.len();
            self.postorder_from(m.code, &mut seen, &mut out);
            counts.push(out.len() - before);
        }
        (out, counts)
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
                Obj::Slice(items) => {
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
