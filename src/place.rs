//! Placement: lay every object of the constant graph out byte for byte as
//! the version's C structs would be, in one data section, with a pointer
//! relocation for every field that points somewhere.
//!
//! One `emit_*` function per object type, each with one job, in the manner
//! of CPython's own generator. The result, an [`Image`], is independent of
//! the object-file format and of the architecture.

use crate::error::{Error, Result};
use crate::graph::{BigInt, Code, Graph, Obj, ObjId, Str};
use crate::layout::{Field, IntSize, Layout};
use crate::version::{InitStep, Precompute, Version};
use std::cmp::Ordering;

/// What a pointer in the data refers to (16 bytes: there is one for each
/// of tens of thousands of relocations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// An offset inside our own data section.
    Data(u64),
    /// An external symbol ([`Image::externs`]) plus an offset (e.g.
    /// `_PyRuntime`+small int).
    Extern(ExternId, u32),
    /// The accessor function of module i (for the module tables).
    Accessor(u32),
}

// Kept small: there are tens of thousands of these.
const _: () = assert!(std::mem::size_of::<Target>() == 16 && std::mem::size_of::<Reloc>() == 32);

/// Index of an external symbol in [`Image::externs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExternId(pub u32);

/// A pointer-sized absolute relocation at `offset` in the data section.
#[derive(Clone, Copy, Debug)]
pub struct Reloc {
    pub offset: u64,
    pub target: Target,
    /// The module whose objects alone hold this pointer, or
    /// [`crate::graph::SHARED`] (lazy initialization relocates a module's
    /// own pointers itself, on its first use).
    pub owner: u32,
}

/// A module table entry's marshal bytes, which stand for the module's code
/// object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Data offset of the bytes.
    pub data: u64,
    pub size: u64,
    /// The module (accessor index).
    pub module: u32,
}

/// One frozen module's accessor.
#[derive(Clone, Debug)]
pub struct Accessor {
    /// `_Py_get_<mangled>_toplevel`.
    pub symbol: String,
    /// Offset of the module's top-level code object in the data section.
    pub code: u64,
}

/// The placed objects, ready for an object writer.
#[derive(Debug, Default)]
pub struct Image {
    pub data: Vec<u8>,
    pub relocs: Vec<Reloc>,
    /// Data offsets of every code object, in the order Init visits them.
    pub codes: Vec<u64>,
    /// Bytecode length of each of `codes`.
    pub code_lens: Vec<u32>,
    /// Data offsets of every string object we emitted (not the runtime's).
    pub strs: Vec<u64>,
    /// Owner module of each of `strs` (or SHARED).
    pub str_owners: Vec<u32>,
    /// How many of `codes` belong to each module, in module order (they
    /// are contiguous).
    pub module_codes: Vec<usize>,
    pub accessors: Vec<Accessor>,
    /// One past the last `co_version` handed out.
    pub next_func_version: u32,
    /// Global data symbols: (name, data offset, size).
    pub symbols: Vec<(&'static str, u64, u64)>,
    /// With lazy initialization, the pointers it relocates itself.
    pub fixups: Option<Fixups>,
    /// Data offsets of the tuples standing for frozenset constants.
    pub frozenset_tuples: Vec<u64>,
    /// The external symbols [`Target::Extern`] names, each once.
    pub externs: Vec<&'static str>,
    /// The module tables' marshal bytes, in table order.
    pub blobs: Vec<Blob>,
    /// Per module, the string fields its first use interns.
    pub interns: Vec<Interns>,
    /// Data offset of a pointer to the main interpreter's state (for
    /// wrapped entries).
    pub main_interp: Option<u64>,
}

/// The string fields a module's code objects intern, as (data offset of
/// the field, data offset of the string it holds), sorted; each field once.
#[derive(Debug, Default, Clone)]
pub struct Interns {
    /// Names: made immortal.
    pub immortal: Vec<(u32, u32)>,
    /// Identifier-like constants, file name, name, qualified name.
    pub mortal: Vec<(u32, u32)>,
}

/// Pointers that lazy initialization relocates itself, per module.
#[derive(Debug, Default, Clone)]
pub struct Fixups {
    /// Data offsets of fields holding a data offset: add the data address.
    pub internal: Vec<Vec<u32>>,
    /// (data offset of a field holding an addend, index into `externs`):
    /// add that symbol's address.
    pub external: Vec<Vec<(u32, u32)>>,
    /// The external symbols, and the data offset of the table of their
    /// addresses (relocated by the loader, like the shared objects).
    pub externs: Vec<&'static str>,
    pub extern_table: u64,
    /// Per module, (field offset, data offset of a frozenset constant's
    /// tuple): module init puts a real frozenset made from the tuple into
    /// the field, Fini puts the tuple back. Fields of shared objects are
    /// listed for every module (whichever runs first does the work).
    pub frozensets: Vec<Vec<(u32, u32)>>,
}

impl Image {
    /// Lazy initialization: turn every pointer that only one module's
    /// objects hold into a fixup that module's first use applies, leaving
    /// the loader only the shared objects (and the tables) to relocate.
    pub fn defer_relocations(&mut self) {
        let n = self.module_codes.len();
        let mut f = Fixups {
            internal: vec![Vec::new(); n],
            external: vec![Vec::new(); n],
            ..Fixups::default()
        };
        f.frozensets = vec![Vec::new(); n];
        let mut tuples = self.frozenset_tuples.clone();
        tuples.sort_unstable();
        for r in &self.relocs {
            if let Target::Data(t) = r.target {
                if tuples.binary_search(&t).is_ok() {
                    let e = (r.offset as u32, t as u32);
                    match r.owner {
                        crate::graph::SHARED => f.frozensets.iter_mut().for_each(|v| v.push(e)),
                        m => f.frozensets[m as usize].push(e),
                    }
                }
            }
        }
        let mut kept = Vec::with_capacity(self.relocs.len());
        for r in std::mem::take(&mut self.relocs) {
            let (m, value) = match (r.owner, r.target) {
                (crate::graph::SHARED, _) | (_, Target::Accessor(_)) => {
                    kept.push(r);
                    continue;
                }
                (m, Target::Data(off)) => {
                    f.internal[m as usize].push(r.offset as u32);
                    (m, off)
                }
                (m, Target::Extern(id, addend)) => {
                    let name = self.externs[id.0 as usize];
                    let idx = match f.externs.iter().position(|&e| e == name) {
                        Some(i) => i,
                        None => {
                            f.externs.push(name);
                            f.externs.len() - 1
                        }
                    };
                    f.external[m as usize].push((r.offset as u32, idx as u32));
                    (m, addend as u64)
                }
            };
            let _ = m;
            let at = r.offset as usize;
            self.data[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        self.relocs = kept;
        f.extern_table = self.alloc(8 * f.externs.len() as u64);
        for (i, &name) in f.externs.iter().enumerate() {
            let target = self.extern_target(name, 0);
            self.relocs.push(Reloc {
                offset: f.extern_table + 8 * i as u64,
                target,
                owner: crate::graph::SHARED,
            });
        }
        self.fixups = Some(f);
    }

    /// Strings owned by no single module: how many (they end table 1).
    pub fn shared_strs(&self) -> u64 {
        self.str_owners
            .iter()
            .filter(|&&o| o == crate::graph::SHARED)
            .count() as u64
    }

    /// A pointer to external symbol `name` plus `addend`.
    pub fn extern_target(&mut self, name: &'static str, addend: u32) -> Target {
        // A dozen names, nearly always the same &'static str: compare the
        // pointers first, the text only if none matches.
        let known = (self.externs.iter())
            .position(|&e| std::ptr::eq(e, name))
            .or_else(|| self.externs.iter().position(|&e| e == name));
        let i = known.unwrap_or_else(|| {
            self.externs.push(name);
            self.externs.len() - 1
        });
        Target::Extern(ExternId(i as u32), addend)
    }

    /// Append `size` zeroed bytes, aligned to a pointer; returns their offset.
    pub fn alloc(&mut self, size: u64) -> u64 {
        let off = (self.data.len() as u64).div_ceil(ALIGN) * ALIGN;
        let end = (off + size).div_ceil(ALIGN) * ALIGN;
        self.data.resize(end as usize, 0);
        off
    }

    /// Append two zeroed flag bytes per module (initialized: `at + i`;
    /// fixed up: `at + n + i`); returns their data offset.
    pub fn add_module_flags(&mut self) -> u64 {
        self.alloc(2 * self.module_codes.len() as u64)
    }
}

/// Data alignment of every object (pointer alignment).
const ALIGN: u64 = 8;

/// Where an object lives once placed.
#[derive(Clone, Copy, Debug)]
enum Place {
    Unplaced,
    /// Not needed as an object (e.g. a bytecode string inlined in its code).
    Skip,
    At(Target),
}

struct Placer<'a> {
    graph: &'a Graph,
    l: &'static Layout,
    /// What the version computes at emit time.
    pre: &'static Precompute,
    /// `sizeof(wchar_t)` on the target.
    wchar_size: u64,
    /// Added to every offset into the runtime's shared objects.
    rt_shift: u32,
    img: Image,
    place: Vec<Place>,
    /// co_version of each code object.
    version: Vec<u32>,
    /// Owner module of each object, and of the one being emitted.
    owners: Vec<u32>,
    owner: u32,
    /// The runtime's global strings, by value.
    globals: crate::layout::GlobalStrings,
    scratch: Vec<Target>,
}

/// Lay out the whole graph for a target whose `wchar_t` has `wchar_size`
/// bytes.
/// With `by_module`, each relocation also records which module alone holds
/// it (for the lazy scheme's own fixups); otherwise all count as shared.
pub fn place(
    graph: &Graph,
    v: &'static Version,
    wchar_size: u8,
    rt_shift: u32,
    by_module: bool,
) -> Result<Image> {
    let (l, pre) = (v.layout, &v.contract.precompute);
    let n = graph.nodes.len();
    let mut p = Placer {
        graph,
        l,
        pre,
        wchar_size: wchar_size as u64,
        rt_shift,
        img: Image::default(),
        place: vec![Place::Skip; n],
        version: vec![0; n],
        owners: if by_module {
            graph.owners()
        } else {
            vec![crate::graph::SHARED; n]
        },
        owner: crate::graph::SHARED,
        globals: l.global_strings(),
        scratch: Vec::new(),
    };
    p.mark_reachable();
    let (order, per_module) = graph.code_postorder();
    p.img.module_codes = per_module;
    if let Some(from) = pre.versions_from {
        for (i, id) in order.iter().enumerate() {
            p.version[id.0 as usize] = from + i as u32;
        }
        p.img.next_func_version = from + order.len() as u32;
    }
    // Children always have smaller ids than their parents (the arena is
    // built bottom-up), so one pass in id order finds every child placed.
    for i in 0..n {
        if let Place::Unplaced = p.place[i] {
            p.owner = p.owners[i];
            let t = p.emit(ObjId(i as u32))?;
            p.place[i] = Place::At(t);
        }
    }
    p.owner = crate::graph::SHARED;
    if v.contract
        .init
        .iter()
        .any(|s| matches!(s, InitStep::Intern { .. }))
    {
        p.img.interns = p.intern_slots(&order);
    }
    for id in order {
        if let Place::At(Target::Data(off)) = p.place[id.0 as usize] {
            if let Obj::Code(c) = graph.get(id) {
                p.img.code_lens.push(c.code.len() as u32);
            }
            p.img.codes.push(off);
        }
    }
    if let Some(name) = pre.version_counter {
        let at = p.img.alloc(4);
        p.put(
            at,
            Field { off: 0, size: 4 },
            p.img.next_func_version as u64,
        );
        p.img.symbols.push((name, at, 4));
    }
    for m in &graph.modules {
        let Place::At(Target::Data(code)) = p.place[m.code.0 as usize] else {
            return Err(Error::msg(format!(
                "module {}: top-level object is not a code object",
                m.name
            )));
        };
        p.img.accessors.push(Accessor {
            symbol: m.accessor.clone(),
            code,
        });
    }
    Ok(p.img)
}

impl Placer<'_> {
    fn mark_reachable(&mut self) {
        let mut stack: Vec<ObjId> = self.graph.modules.iter().map(|m| m.code).collect();
        while let Some(id) = stack.pop() {
            let slot = &mut self.place[id.0 as usize];
            if !matches!(slot, Place::Skip) {
                continue;
            }
            *slot = Place::Unplaced;
            stack.extend(self.graph.children(id));
        }
    }

    fn target(&self, id: ObjId) -> Target {
        match self.place[id.0 as usize] {
            Place::At(t) => t,
            _ => unreachable!("object {} used before it was placed", id.0),
        }
    }

    fn emit(&mut self, id: ObjId) -> Result<Target> {
        let l = self.l;
        Ok(match self.graph.get(id) {
            Obj::None => self.img.extern_target(l.sym.none, 0),
            Obj::True => self.img.extern_target(l.sym.true_, 0),
            Obj::False => self.img.extern_target(l.sym.false_, 0),
            Obj::Ellipsis => self.img.extern_target(l.sym.ellipsis, 0),
            Obj::Int(v) => self.emit_int(v),
            Obj::Float(bits) => self.emit_float(*bits),
            Obj::Complex(re, im) => self.emit_complex(*re, *im),
            Obj::Bytes(b) => self.emit_bytes(b),
            Obj::Str(s) => self.emit_str(s),
            Obj::Tuple(items) => {
                // One buffer for every tuple's item targets.
                let mut targets = std::mem::take(&mut self.scratch);
                targets.clear();
                targets.extend(items.iter().map(|&i| self.target(i)));
                let t = self.emit_tuple(&targets);
                self.scratch = targets;
                t
            }
            Obj::FrozenSet(items) => self.emit_frozenset(items),
            Obj::Slice(items) => self.emit_slice(items)?,
            Obj::Code(c) => self.emit_code(id, c),
        })
    }

    // --- low-level writing -------------------------------------------------

    fn alloc(&mut self, size: u64) -> u64 {
        self.img.alloc(size)
    }

    fn put(&mut self, obj: u64, f: Field, v: u64) {
        let at = (obj + f.off as u64) as usize;
        let n = f.size as usize;
        self.img.data[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
    }

    fn put_bytes(&mut self, at: u64, b: &[u8]) {
        let at = at as usize;
        self.img.data[at..at + b.len()].copy_from_slice(b);
    }

    fn ptr(&mut self, obj: u64, f: Field, t: Target) {
        self.img.relocs.push(Reloc {
            owner: self.owner,
            offset: obj + f.off as u64,
            target: t,
        });
    }

    /// `PyObject` header with the given type.
    fn head(&mut self, obj: u64, ty: &'static str) {
        let h = &self.l.head;
        self.put(obj, h.refcnt, h.static_refcnt);
        let t = self.img.extern_target(ty, 0);
        self.ptr(obj, h.type_, t);
    }

    /// `PyVarObject` header.
    fn var_head(&mut self, obj: u64, ty: &'static str, size: u64) {
        self.head(obj, ty);
        self.put(obj, self.l.head.size, size);
    }

    fn runtime(&mut self, off: u32) -> Target {
        self.img
            .extern_target(self.l.runtime.symbol, off + self.rt_shift)
    }

    // --- one function per type ---------------------------------------------

    fn emit_int(&mut self, v: &BigInt) -> Target {
        let (l, rt) = (self.l, &self.l.runtime);
        if let Some(i) = v.to_i64() {
            if (-rt.small_int_neg..=rt.small_int_pos).contains(&i) {
                let idx = (i + rt.small_int_neg) as u32;
                return self.runtime(rt.small_ints + idx * rt.small_int_stride);
            }
        }
        let il = &l.int;
        let n = v.digits.len() as u64;
        let size = (il.digits as u64 + il.digit_size as u64 * n.max(1)).max(il.min_size as u64);
        let obj = self.alloc(size);
        match il.size {
            IntSize::LvTag(f) => {
                self.head(obj, l.sym.int_type);
                let sign = if n == 0 {
                    1
                } else if v.negative {
                    2
                } else {
                    0
                };
                // Bit 2 stays clear: 3.14+ sets it only on the runtime's
                // own small ints (and small ints are never emitted here).
                self.put(obj, f, (n << 3) | sign);
            }
            IntSize::SignedObSize => {
                let size = if v.negative {
                    (n as i64).wrapping_neg() as u64
                } else {
                    n
                };
                self.var_head(obj, l.sym.int_type, size);
            }
        }
        for (i, d) in v.digits.iter().enumerate() {
            let at = obj + il.digits as u64 + i as u64 * il.digit_size as u64;
            self.put_bytes(at, &d.to_le_bytes()[..il.digit_size as usize]);
        }
        Target::Data(obj)
    }

    fn emit_float(&mut self, bits: u64) -> Target {
        let fl = &self.l.float;
        let obj = self.alloc(fl.float_size as u64);
        self.head(obj, self.l.sym.float_type);
        self.put_bytes(obj + fl.fval as u64, &bits.to_le_bytes());
        Target::Data(obj)
    }

    fn emit_complex(&mut self, re: u64, im: u64) -> Target {
        let fl = &self.l.float;
        let obj = self.alloc(fl.complex_size as u64);
        self.head(obj, self.l.sym.complex_type);
        self.put_bytes(obj + fl.cval as u64, &re.to_le_bytes());
        self.put_bytes(obj + fl.cval as u64 + 8, &im.to_le_bytes());
        Target::Data(obj)
    }

    fn emit_bytes(&mut self, b: &[u8]) -> Target {
        let rt = &self.l.runtime;
        if b.is_empty() {
            return self.runtime(rt.bytes_empty);
        }
        if let (1, Some((base, stride))) = (b.len(), rt.bytes_characters) {
            return self.runtime(base + b[0] as u32 * stride);
        }
        let bl = &self.l.bytes;
        let obj = self.alloc(bl.sval as u64 + b.len() as u64 + 1);
        self.var_head(obj, self.l.sym.bytes_type, b.len() as u64);
        self.put(obj, bl.shash, u64::MAX);
        self.put_bytes(obj + bl.sval as u64, b);
        Target::Data(obj)
    }

    fn emit_str(&mut self, s: &Str) -> Target {
        let (l, rt) = (self.l, &self.l.runtime);
        if let Some(off) = self.globals.get(s) {
            return self.runtime(off);
        }
        if let [c] = s.0[..] {
            match (c, rt.ascii_chars, rt.latin1_chars) {
                (0..=0x7f, Some((base, stride)), _) => return self.runtime(base + c * stride),
                (0x80..=0xff, _, Some((base, stride))) => {
                    return self.runtime(base + (c - 0x80) * stride)
                }
                _ => {}
            }
        }
        let sl = &l.str_;
        let max = s.max_char();
        let ascii = max < 0x80;
        let kind: u64 = match max {
            0..=0xff => 1,
            0x100..=0xffff => 2,
            _ => 4,
        };
        let len = s.0.len() as u64;
        let data_off = if ascii {
            sl.ascii_size
        } else {
            sl.compact_size
        } as u64;
        let obj = self.alloc(data_off + (len + 1) * kind);
        self.head(obj, l.sym.str_type);
        self.put(obj, sl.length, len);
        self.put(obj, sl.hash, u64::MAX);
        let state = (kind << sl.kind_shift)
            | (1 << sl.compact_bit)
            | ((ascii as u64) << sl.ascii_bit)
            | sl.static_bits as u64;
        self.put(obj, sl.state, state);
        let at = obj + data_off;
        let chars = &mut self.img.data[at as usize..(at + len * kind) as usize];
        match kind {
            1 => chars.iter_mut().zip(&s.0).for_each(|(b, &c)| *b = c as u8),
            2 => chars
                .chunks_exact_mut(2)
                .zip(&s.0)
                .for_each(|(b, &c)| b.copy_from_slice(&(c as u16).to_le_bytes())),
            _ => chars
                .chunks_exact_mut(4)
                .zip(&s.0)
                .for_each(|(b, &c)| b.copy_from_slice(&c.to_le_bytes())),
        }
        let wide = self.pre.wstr && !ascii && kind == self.wchar_size;
        if let (Some((wstr, wstr_len)), true) = (sl.wstr, wide) {
            self.ptr(obj, wstr, Target::Data(at));
            self.put(obj, wstr_len, len);
        }
        self.img.strs.push(obj);
        self.img.str_owners.push(self.owner);
        // The UTF-8 cache is only valid for strings UTF-8 can encode: with a
        // lone surrogate it stays empty and the runtime refuses to encode,
        // as for any such string.
        let surrogates = s.0.iter().any(|&c| (0xd800..0xe000).contains(&c));
        if !ascii && self.pre.utf8 && !surrogates {
            let utf8 = s.to_utf8();
            self.put(obj, sl.utf8_length, utf8.len() as u64);
            let buf = self.alloc(utf8.len() as u64 + 1);
            self.put_bytes(buf, &utf8);
            self.ptr(obj, sl.utf8, Target::Data(buf));
        }
        Target::Data(obj)
    }

    fn emit_tuple(&mut self, items: &[Target]) -> Target {
        if items.is_empty() {
            return self.runtime(self.l.runtime.tuple_empty);
        }
        let tl = &self.l.tuple;
        let ptr = self.l.ptr_size as u64;
        let start = self.alloc(tl.gc_head_size as u64 + tl.items as u64 + ptr * items.len() as u64);
        let obj = start + tl.gc_head_size as u64;
        self.var_head(obj, self.l.sym.tuple_type, items.len() as u64);
        if let Some(f) = tl.hash {
            // Not computed yet (-1).
            self.put(obj, f, u64::MAX);
        }
        for (i, &t) in items.iter().enumerate() {
            let f = Field {
                off: tl.items + i as u32 * ptr as u32,
                size: ptr as u8,
            };
            self.ptr(obj, f, t);
        }
        Target::Data(obj)
    }

    /// A slice constant (marshal version 5), behind a GC header as the
    /// runtime allocates one (zeroed: not tracked, as static tuples).
    /// Refused where the version has no slice constants: the marshal data
    /// is then not that version's.
    fn emit_slice(&mut self, items: &[ObjId; 3]) -> Result<Target> {
        let l = self.l;
        let (Some(sl), Some(ty)) = (&l.slice, l.sym.slice_type) else {
            return Err(Error::msg(format!(
                "a slice constant, which CPython {}.{} code cannot hold (marshal version 5, \
                 3.14+): compile the module with the target's own Python",
                l.version.0, l.version.1
            )));
        };
        let gc = l.tuple.gc_head_size as u64;
        let obj = self.alloc(gc + sl.size as u64) + gc;
        self.head(obj, ty);
        for (f, item) in [
            (sl.start, items[0]),
            (sl.stop, items[1]),
            (sl.step, items[2]),
        ] {
            let t = self.target(item);
            self.ptr(obj, f, t);
        }
        Ok(Target::Data(obj))
    }

    /// CPython's generator emits a frozenset as a tuple of its items in
    /// sorted order (a known gap there, kept here for equality with it).
    fn emit_frozenset(&mut self, items: &[ObjId]) -> Target {
        let mut sorted = items.to_vec();
        sorted.sort_by(|&a, &b| py_order(self.graph, a, b));
        let targets: Vec<Target> = sorted.iter().map(|&i| self.target(i)).collect();
        let t = self.emit_tuple(&targets);
        if let Target::Data(off) = t {
            self.img.frozenset_tuples.push(off);
        }
        t
    }

    fn emit_code(&mut self, id: ObjId, c: &Code) -> Target {
        let (l, cl) = (self.l, &self.l.code);
        let obj = self.alloc(cl.code_adaptive as u64 + c.code.len() as u64);
        self.var_head(obj, l.sym.code_type, c.code.len() as u64 / 2);
        for (f, field) in [
            (cl.consts, c.consts),
            (cl.names, c.names),
            (cl.exceptiontable, c.exceptiontable),
            (cl.localsplusnames, c.localsplusnames),
            (cl.localspluskinds, c.localspluskinds),
            (cl.filename, c.filename),
            (cl.name, c.name),
            (cl.qualname, c.qualname),
            (cl.linetable, c.linetable),
        ] {
            let t = self.target(field);
            self.ptr(obj, f, t);
        }
        let kinds = match self.graph.get(c.localspluskinds) {
            Obj::Bytes(k) => k.as_slice(),
            _ => &[],
        };
        let (mut nlocals, mut ncells, mut nfree, mut nplaincells) = (0u64, 0u64, 0u64, 0u64);
        for &k in kinds {
            if k & cl.co_fast_local != 0 {
                nlocals += 1;
                if k & cl.co_fast_cell != 0 {
                    ncells += 1;
                }
            } else if k & cl.co_fast_cell != 0 {
                ncells += 1;
                nplaincells += 1;
            } else if k & cl.co_fast_free != 0 {
                nfree += 1;
            }
        }
        let nlocalsplus = kinds.len() as u64;
        let int = |v: i32| v as i64 as u64;
        let stacksize = c.stacksize.max(self.pre.min_stacksize);
        self.put(obj, cl.flags, int(c.flags));
        self.put(obj, cl.argcount, int(c.argcount));
        self.put(obj, cl.posonlyargcount, int(c.posonlyargcount));
        self.put(obj, cl.kwonlyargcount, int(c.kwonlyargcount));
        self.put(obj, cl.stacksize, int(stacksize));
        self.put(obj, cl.firstlineno, int(c.firstlineno));
        self.put(obj, cl.nlocalsplus, nlocalsplus);
        self.put(obj, cl.nlocals, nlocals);
        self.put(obj, cl.ncellvars, ncells);
        self.put(obj, cl.nfreevars, nfree);
        for &(f, v) in cl.fixed {
            self.put(obj, f, v);
        }
        if let Some(f) = cl.nplaincellvars {
            self.put(obj, f, nplaincells);
        }
        if let Some(f) = cl.framesize {
            let size = int(stacksize) + nlocalsplus + cl.frame_specials_size as u64;
            self.put(obj, f, size);
        }
        if let Some(f) = cl.version {
            self.put(obj, f, self.version[id.0 as usize] as u64);
        }
        if let Some(f) = cl.firsttraceable {
            let first = cl.first_traceable(&c.code);
            self.put(obj, f, first as u64);
        }
        self.put_bytes(obj + cl.code_adaptive as u64, &c.code);
        if let (true, Some(q)) = (self.pre.quicken, &cl.quicken) {
            let at = (obj + cl.code_adaptive as u64) as usize;
            q.apply(&mut self.img.data[at..at + c.code.len()], c.flags as u32);
        }
        Target::Data(obj)
    }

    /// The string fields each module's code objects intern (its code
    /// objects are contiguous in `order`, modules in order): what the
    /// runtime's code constructor interns, where it holds one of our
    /// strings (the runtime's own are interned already).
    fn intern_slots(&self, order: &[ObjId]) -> Vec<Interns> {
        let mut out = Vec::new();
        let mut codes = order.iter();
        for &n in &self.img.module_codes {
            let (mut imm, mut mor) = (Vec::new(), Vec::new());
            for &id in codes.by_ref().take(n) {
                let (Obj::Code(c), Place::At(Target::Data(obj))) =
                    (self.graph.get(id), self.place[id.0 as usize])
                else {
                    continue;
                };
                let cl = &self.l.code;
                for (f, s) in [
                    (cl.filename, c.filename),
                    (cl.name, c.name),
                    (cl.qualname, c.qualname),
                ] {
                    if let Some(t) = self.own_str(s) {
                        mor.push(((obj + f.off as u64) as u32, t));
                    }
                }
                for names in [c.names, c.localsplusnames] {
                    self.tuple_strs(names, &mut |slot, t, _| imm.push((slot, t)));
                }
                self.identifier_consts(c.consts, &mut mor);
            }
            imm.sort_unstable();
            imm.dedup();
            mor.sort_unstable();
            mor.dedup();
            mor.retain(|x| imm.binary_search(x).is_err());
            out.push(Interns {
                immortal: imm,
                mortal: mor,
            });
        }
        out
    }

    /// Data offset of `id` if it is a string we emitted.
    fn own_str(&self, id: ObjId) -> Option<u32> {
        match (self.graph.get(id), self.place[id.0 as usize]) {
            (Obj::Str(_), Place::At(Target::Data(off))) => Some(off as u32),
            _ => None,
        }
    }

    /// The items of tuple or frozenset `id` in the order its tuple holds
    /// them, and where that tuple is.
    fn placed_items(&self, id: ObjId) -> Option<(u64, Vec<ObjId>)> {
        let Place::At(Target::Data(obj)) = self.place[id.0 as usize] else {
            return None;
        };
        match self.graph.get(id) {
            Obj::Tuple(items) => Some((obj, items.clone())),
            Obj::FrozenSet(items) => {
                let mut sorted = items.clone();
                sorted.sort_by(|&a, &b| py_order(self.graph, a, b));
                Some((obj, sorted))
            }
            _ => None,
        }
    }

    /// `f(slot, string, value)` for each item of tuple (or frozenset) `id`
    /// that is a string we emitted.
    fn tuple_strs(&self, id: ObjId, f: &mut dyn FnMut(u32, u32, &Str)) {
        let Some((obj, items)) = self.placed_items(id) else {
            return;
        };
        let (ptr, base) = (self.l.ptr_size as u64, self.l.tuple.items as u64);
        for (i, &item) in items.iter().enumerate() {
            if let (Some(t), Obj::Str(s)) = (self.own_str(item), self.graph.get(item)) {
                f((obj + base + ptr * i as u64) as u32, t, s);
            }
        }
    }

    /// The identifier-like strings among constants `id` (in nested tuples
    /// and frozensets too), as the code constructor interns them.
    fn identifier_consts(&self, id: ObjId, out: &mut Vec<(u32, u32)>) {
        self.tuple_strs(id, &mut |slot, t, s| {
            let ident = (s.0.iter())
                .all(|&c| c < 0x80 && ((c as u8).is_ascii_alphanumeric() || c == '_' as u32));
            if ident {
                out.push((slot, t));
            }
        });
        if let Some((_, items)) = self.placed_items(id) {
            for item in items {
                if matches!(self.graph.get(item), Obj::Tuple(_) | Obj::FrozenSet(_)) {
                    self.identifier_consts(item, out);
                }
            }
        }
    }
}

/// The order Python's `sorted()` gives a frozenset's items in CPython's
/// generator: by value when the items are mutually comparable (all str, all
/// bytes, all numbers), else by `repr()`.
fn py_order(g: &Graph, a: ObjId, b: ObjId) -> Ordering {
    match (g.get(a), g.get(b)) {
        (Obj::Str(x), Obj::Str(y)) => x.0.cmp(&y.0),
        (Obj::Bytes(x), Obj::Bytes(y)) => x.cmp(y),
        (Obj::Int(x), Obj::Int(y)) => int_cmp(x, y),
        _ => repr(g, a).cmp(&repr(g, b)),
    }
}

fn int_cmp(x: &BigInt, y: &BigInt) -> Ordering {
    let mag = |v: &BigInt| {
        (
            v.digits.len(),
            v.digits.iter().rev().copied().collect::<Vec<_>>(),
        )
    };
    match (x.negative, y.negative) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, false) => mag(x).cmp(&mag(y)),
        (true, true) => mag(y).cmp(&mag(x)),
    }
}

/// An approximation of Python's `repr()`, used only to order frozensets of
/// mixed types the way CPython's generator does.
fn repr(g: &Graph, id: ObjId) -> Vec<u32> {
    let text = match g.get(id) {
        Obj::None => "None".to_string(),
        Obj::True => "True".to_string(),
        Obj::False => "False".to_string(),
        Obj::Ellipsis => "Ellipsis".to_string(),
        Obj::Int(v) => match v.to_i64() {
            Some(i) => i.to_string(),
            None => format!("{v:?}"),
        },
        Obj::Float(b) => format!("{}", f64::from_bits(*b)),
        Obj::Str(s) => {
            let q = if s.0.contains(&('\'' as u32)) && !s.0.contains(&('"' as u32)) {
                '"'
            } else {
                '\''
            };
            let mut out: Vec<u32> = vec![q as u32];
            out.extend(s.0.iter().copied());
            out.push(q as u32);
            return out;
        }
        Obj::Bytes(b) => format!("b'{}'", b.escape_ascii()),
        _ => format!("<{}>", id.0),
    };
    text.chars().map(|c| c as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Code, Module};
    use crate::layout::{f, SliceLayout};
    use crate::version::PY313;

    /// A module whose constants are `(slice(1000, None, 'a'), (1000,))`.
    fn graph() -> Graph {
        let mut g = Graph::new();
        let big = g.add(Obj::Int(BigInt::from_i64(1000)));
        let none = g.add(Obj::None);
        let a = g.add(Obj::Str(Str(vec!['a' as u32, 'b' as u32])));
        let slice = g.add(Obj::Slice([big, none, a]));
        let inner = g.add(Obj::Tuple(vec![big]));
        let consts = g.add(Obj::Tuple(vec![slice, inner]));
        let empty = g.add(Obj::Tuple(vec![]));
        let bytes = g.add(Obj::Bytes(vec![]));
        let name = g.add(Obj::Str(Str("m".chars().map(|c| c as u32).collect())));
        let code = g.add(Obj::Code(Box::new(Code {
            argcount: 0,
            posonlyargcount: 0,
            kwonlyargcount: 0,
            stacksize: 1,
            flags: 0,
            code: vec![0, 0],
            consts,
            names: empty,
            localsplusnames: empty,
            localspluskinds: bytes,
            filename: name,
            name,
            qualname: name,
            firstlineno: 1,
            linetable: bytes,
            exceptiontable: bytes,
        })));
        g.modules.push(Module {
            name: "m".into(),
            accessor: "_Py_get_m_toplevel".into(),
            code,
        });
        g
    }

    /// 3.13's layout with slices and tuple hashes, as 3.14's tables have
    /// them (offsets made up but disjoint from the header).
    fn with_slices() -> &'static Version {
        let mut l = PY313.layout.clone();
        l.slice = Some(SliceLayout {
            size: 40,
            start: f(16, 8),
            stop: f(24, 8),
            step: f(32, 8),
        });
        l.sym.slice_type = Some("PySlice_Type");
        l.tuple.hash = Some(f(24, 8));
        l.tuple.items = 32;
        Box::leak(Box::new(Version {
            layout: Box::leak(Box::new(l)),
            contract: PY313.contract,
        }))
    }

    fn reloc_at(img: &Image, at: u64) -> Option<Target> {
        img.relocs.iter().find(|r| r.offset == at).map(|r| r.target)
    }

    #[test]
    fn slices_are_refused_where_the_layout_has_none() {
        let g = graph();
        let e = place(&g, &PY313, 4, 0, false).unwrap_err();
        assert!(e.message.contains("slice constant"), "{e:?}");
        assert!(e.message.contains("3.13"), "{e:?}");
    }

    #[test]
    fn slices_and_tuple_hashes_are_placed_as_the_layout_says() {
        let g = graph();
        let v = with_slices();
        let l = v.layout;
        let p = place(&g, v, 4, 0, false).unwrap();
        // Where the objects went: follow the module's co_consts.
        let code = p.accessors[0].code;
        let Some(Target::Data(consts)) = reloc_at(&p, code + l.code.consts.off as u64) else {
            panic!("co_consts not relocated to our data")
        };
        let item = |t: u64, i: u64| reloc_at(&p, t + l.tuple.items as u64 + 8 * i);
        let (Some(Target::Data(s)), Some(Target::Data(t))) = (item(consts, 0), item(consts, 1))
        else {
            panic!("co_consts items not relocated to our data")
        };
        let sl = l.slice.as_ref().unwrap();
        let word = |at: u64, f: Field| {
            let mut b = [0u8; 8];
            b[..f.size as usize]
                .copy_from_slice(&p.data[(at + f.off as u64) as usize..][..f.size as usize]);
            u64::from_le_bytes(b)
        };
        // The slice: static header, PySlice_Type, a zeroed GC header
        // before it, its three items.
        assert_eq!(word(s, l.head.refcnt), l.head.static_refcnt);
        let ty = |t: u64| match reloc_at(&p, t + l.head.type_.off as u64) {
            Some(Target::Extern(id, 0)) => p.externs[id.0 as usize],
            other => panic!("type pointer: {other:?}"),
        };
        assert_eq!(ty(s), "PySlice_Type");
        let gc = l.tuple.gc_head_size as u64;
        assert!(p.data[(s - gc) as usize..s as usize]
            .iter()
            .all(|&b| b == 0));
        let Some(Target::Data(start)) = reloc_at(&p, s + sl.start.off as u64) else {
            panic!("slice start")
        };
        assert!(
            matches!(reloc_at(&p, s + sl.stop.off as u64), Some(Target::Extern(id, 0)) if p.externs[id.0 as usize] == l.sym.none)
        );
        assert!(matches!(
            reloc_at(&p, s + sl.step.off as u64),
            Some(Target::Data(_))
        ));
        // The int is shared with the tuple (one object).
        assert_eq!(item(t, 0), Some(Target::Data(start)));
        // Tuples: ob_hash -1; ints: lv_tag without bit 2.
        assert_eq!(ty(t), l.sym.tuple_type);
        assert_eq!(word(t, l.tuple.hash.unwrap()), u64::MAX);
        assert_eq!(word(consts, l.tuple.hash.unwrap()), u64::MAX);
        let crate::layout::IntSize::LvTag(tag) = l.int.size else {
            panic!("3.13 has lv_tag")
        };
        assert_eq!(word(start, tag), 1 << 3, "one digit, positive, bit 2 clear");
    }

    #[test]
    fn equal_slices_are_one_object() {
        let mut g = Graph::new();
        let one = g.add(Obj::Int(BigInt::from_i64(1)));
        let none = g.add(Obj::None);
        let a = g.add(Obj::Slice([one, none, none]));
        let b = g.add(Obj::Slice([one, none, none]));
        let c = g.add(Obj::Slice([none, one, none]));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
