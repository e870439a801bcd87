//! Reader for CPython's marshal format (version 4, as written by 3.11 to
//! 3.13, and version 5's slice constants, 3.14+) into the constant
//! [`Graph`].
//!
//! Input is untrusted: every length is checked against the bytes that remain
//! before anything is allocated, nesting is limited, and every error names
//! the byte offset (relative to the start of the marshal data) and what was
//! expected there.

use crate::error::{Error, Result};
use crate::graph::{BigInt, Code, Graph, Obj, ObjId, Str, DIGIT_BITS};

/// Deepest nesting accepted; CPython's own limit (`MAX_MARSHAL_STACK_DEPTH`).
pub const MAX_DEPTH: usize = 2000;

const FLAG_REF: u8 = 0x80;

/// Nesting any thread's stack has room for (real code nests a few dozen
/// levels): [`read_code_shallow`] reads up to this depth on the caller's
/// thread.
pub const SHALLOW_DEPTH: usize = 100;

/// Stack the reader may need at [`MAX_DEPTH`]: it recurses once per
/// nesting level, and unoptimized or sanitizer builds have large frames.
/// Only the pages actually touched are ever committed.
pub const STACK_SIZE: usize = 256 << 20;

/// Run `f` (which reads marshal data) on a thread with [`STACK_SIZE`] of
/// stack, so that no input, however deeply nested, can overflow it.
pub fn with_stack<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("marshal".into())
            .stack_size(STACK_SIZE)
            .spawn_scoped(s, f)
            .expect("cannot start the marshal reader thread")
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Read one marshalled object (normally a module's code object) into `graph`.
pub fn read_object(data: &[u8], graph: &mut Graph) -> Result<ObjId> {
    read_object_to(data, graph, MAX_DEPTH).map(|id| id.expect("no shallow limit"))
}

/// [`read_object`] nesting at most `limit` levels: `Ok(None)` if the data
/// nests deeper (below [`MAX_DEPTH`], that is not an error: the caller
/// reads again with more stack).
fn read_object_to(data: &[u8], graph: &mut Graph, limit: usize) -> Result<Option<ObjId>> {
    let mut r = Reader {
        data,
        pos: 0,
        refs: Vec::new(),
        graph,
        depth: 0,
        limit,
        too_deep: false,
    };
    let id = match r.object() {
        Ok(id) => id,
        Err(_) if r.too_deep => return Ok(None),
        Err(e) => return Err(e),
    };
    if r.pos != data.len() {
        return Err(Error {
            file: None,
            offset: Some(r.pos as u64),
            message: format!(
                "{} trailing bytes after the marshalled object",
                data.len() - r.pos
            ),
        });
    }
    Ok(Some(id))
}

/// Read one module's code: the top-level object must be a code object.
pub fn read_code(data: &[u8], graph: &mut Graph) -> Result<ObjId> {
    let id = read_object(data, graph)?;
    check_code(graph, id)
}

/// [`read_code`] on the caller's thread, nesting at most [`SHALLOW_DEPTH`]
/// levels: `Ok(None)` if the data nests deeper, to be read again with
/// [`read_code`] under [`with_stack`] (into a fresh graph: this one may
/// hold part of the module).
pub fn read_code_shallow(data: &[u8], graph: &mut Graph) -> Result<Option<ObjId>> {
    match read_object_to(data, graph, SHALLOW_DEPTH)? {
        Some(id) => check_code(graph, id).map(Some),
        None => Ok(None),
    }
}

fn check_code(graph: &Graph, id: ObjId) -> Result<ObjId> {
    match graph.get(id) {
        Obj::Code(_) => Ok(id),
        other => Err(Error {
            file: None,
            offset: Some(0),
            message: format!(
                "expected a code object at the top level, found {}",
                kind_name(other)
            ),
        }),
    }
}

pub fn kind_name(o: &Obj) -> &'static str {
    match o {
        Obj::None => "None",
        Obj::True | Obj::False => "bool",
        Obj::Ellipsis => "Ellipsis",
        Obj::Int(_) => "int",
        Obj::Float(_) => "float",
        Obj::Complex(..) => "complex",
        Obj::Bytes(_) => "bytes",
        Obj::Str(_) => "str",
        Obj::Tuple(_) => "tuple",
        Obj::FrozenSet(_) => "frozenset",
        Obj::Slice(_) => "slice",
        Obj::Code(_) => "code",
    }
}

struct Reader<'a, 'g> {
    data: &'a [u8],
    pos: usize,
    /// Objects flagged FLAG_REF, by reference index; `None` while reserved
    /// (a container being read).
    refs: Vec<Option<ObjId>>,
    graph: &'g mut Graph,
    depth: usize,
    /// Deepest nesting to read: [`MAX_DEPTH`], or less for a first try on
    /// a small stack (then `too_deep` tells that it was reached).
    limit: usize,
    too_deep: bool,
}

impl<'a> Reader<'a, '_> {
    fn err<T>(&self, at: usize, message: impl Into<String>) -> Result<T> {
        Err(Error {
            file: None,
            offset: Some(at as u64),
            message: message.into(),
        })
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let remaining = self.data.len() - self.pos;
        if n > remaining {
            return self.err(
                self.pos,
                format!("truncated: {what} needs {n} bytes, only {remaining} remain"),
            );
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length field: non-negative and not larger than what remains times
    /// `unit` bytes per element (so no allocation beyond the input's size).
    fn len(&mut self, unit: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.i32(what)?;
        self.check_len(at, n as i64, unit, what)
    }

    fn check_len(&self, at: usize, n: i64, unit: usize, what: &str) -> Result<usize> {
        if n < 0 {
            return self.err(at, format!("negative length {n} for {what}"));
        }
        let remaining = (self.data.len() - self.pos) as u64;
        if (n as u64).saturating_mul(unit as u64) > remaining {
            return self.err(
                at,
                format!("length {n} of {what} exceeds the {remaining} bytes that remain"),
            );
        }
        Ok(n as usize)
    }

    fn object(&mut self) -> Result<ObjId> {
        let at = self.pos;
        if self.depth >= self.limit {
            self.too_deep = self.limit < MAX_DEPTH;
            return self.err(at, format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.depth += 1;
        let r = self.object_inner(at);
        self.depth -= 1;
        r
    }

    fn object_inner(&mut self, at: usize) -> Result<ObjId> {
        let code = self.u8("a type code")?;
        let flag = code & FLAG_REF != 0;
        let ty = code & !FLAG_REF;
        // Containers reserve their reference slot before reading children,
        // as marshal.c does; everything else is registered when complete.
        let reserved = match ty {
            b'(' | b')' | b'>' | b':' | b'c' if flag => {
                self.refs.push(None);
                Some(self.refs.len() - 1)
            }
            _ => None,
        };
        let id = match ty {
            b'N' => self.graph.add(Obj::None),
            b'T' => self.graph.add(Obj::True),
            b'F' => self.graph.add(Obj::False),
            b'.' => self.graph.add(Obj::Ellipsis),
            b'i' => {
                let v = self.i32("an int")?;
                self.graph.add(Obj::Int(BigInt::from_i64(v as i64)))
            }
            b'I' => {
                let b = self.take(8, "a 64-bit int")?;
                let v = i64::from_le_bytes(b.try_into().unwrap());
                self.graph.add(Obj::Int(BigInt::from_i64(v)))
            }
            b'l' => {
                let v = self.long()?;
                self.graph.add(Obj::Int(v))
            }
            b'g' => {
                let b = self.take(8, "a binary float")?;
                self.graph
                    .add(Obj::Float(u64::from_le_bytes(b.try_into().unwrap())))
            }
            b'f' => {
                let v = self.text_float()?;
                self.graph.add(Obj::Float(v))
            }
            b'y' => {
                let b = self.take(16, "a binary complex")?;
                let re = u64::from_le_bytes(b[..8].try_into().unwrap());
                let im = u64::from_le_bytes(b[8..].try_into().unwrap());
                self.graph.add(Obj::Complex(re, im))
            }
            b'x' => {
                let re = self.text_float()?;
                let im = self.text_float()?;
                self.graph.add(Obj::Complex(re, im))
            }
            b's' => {
                let n = self.len(1, "bytes")?;
                let b = self.take(n, "bytes")?.to_vec();
                self.graph.add(Obj::Bytes(b))
            }
            b'u' | b't' => {
                let n = self.len(1, "a str")?;
                let start = self.pos;
                let b = self.take(n, "a str")?;
                let s = decode_utf8_surrogatepass(b).map_err(|e| {
                    self.err::<()>(start + e, "invalid UTF-8 in a str")
                        .unwrap_err()
                })?;
                self.graph.add(Obj::Str(s))
            }
            b'a' | b'A' | b'z' | b'Z' => {
                let n = if ty == b'z' || ty == b'Z' {
                    let at = self.pos;
                    let n = self.u8("a short string length")?;
                    self.check_len(at, n as i64, 1, "an ASCII str")?
                } else {
                    self.len(1, "an ASCII str")?
                };
                let start = self.pos;
                let b = self.take(n, "an ASCII str")?;
                if let Some(i) = b.iter().position(|&c| c >= 0x80) {
                    return self.err(start + i, "non-ASCII byte in an ASCII str");
                }
                let s = Str(b.iter().map(|&c| c as u32).collect());
                self.graph.add(Obj::Str(s))
            }
            b'(' | b')' | b'>' => {
                let n = if ty == b')' {
                    self.u8("a small tuple length")? as usize
                } else {
                    // Each item needs at least one byte.
                    self.len(1, if ty == b'>' { "a frozenset" } else { "a tuple" })?
                };
                let mut items = Vec::with_capacity(n.min(self.data.len() - self.pos));
                for _ in 0..n {
                    items.push(self.object()?);
                }
                self.graph.add(if ty == b'>' {
                    Obj::FrozenSet(items)
                } else {
                    Obj::Tuple(items)
                })
            }
            // Marshal version 5 (3.14+): start, stop, step.
            b':' => {
                let start = self.object()?;
                let stop = self.object()?;
                let step = self.object()?;
                self.graph.add(Obj::Slice([start, stop, step]))
            }
            b'c' => self.code()?,
            b'r' => {
                let i = self.i32("a reference index")?;
                return match usize::try_from(i).ok().and_then(|i| self.refs.get(i)) {
                    Some(Some(id)) => Ok(*id),
                    Some(None) => self.err(
                        at,
                        format!("back-reference {i} to an object that is still being read"),
                    ),
                    None => self.err(
                        at,
                        format!(
                            "back-reference {i} to an object not yet defined ({} defined so far)",
                            self.refs.len()
                        ),
                    ),
                };
            }
            b'0' => return self.err(at, "NULL object (type code '0') outside a dict"),
            b'S' | b'[' | b'{' | b'<' => {
                let what = match ty {
                    b'S' => "StopIteration",
                    b'[' => "list",
                    b'{' => "dict",
                    _ => "set",
                };
                return self.err(
                    at,
                    format!("a {what} object cannot occur in code constants"),
                );
            }
            _ => {
                return self.err(at, format!("unknown marshal type code 0x{code:02x}"));
            }
        };
        match reserved {
            Some(slot) => self.refs[slot] = Some(id),
            None if flag => self.refs.push(Some(id)),
            None => {}
        }
        Ok(id)
    }

    fn long(&mut self) -> Result<BigInt> {
        let at = self.pos;
        let n = self.i32("a long's digit count")?;
        let count = self.check_len(at, (n as i64).abs(), 2, "a long's digits")?;
        let mut digits15 = Vec::with_capacity(count);
        for _ in 0..count {
            let dat = self.pos;
            let b = self.take(2, "a long digit")?;
            let d = u16::from_le_bytes([b[0], b[1]]);
            if d >= 1 << 15 {
                return self.err(dat, "long digit out of range (expected < 2**15)");
            }
            digits15.push(d);
        }
        if digits15.last() == Some(&0) {
            return self.err(at, "long with a zero top digit (not normalized)");
        }
        // Regroup 15-bit digits into 30-bit ones.
        let mut digits = Vec::with_capacity(count.div_ceil(2));
        let (mut acc, mut bits) = (0u64, 0u32);
        for d in digits15 {
            acc |= (d as u64) << bits;
            bits += 15;
            if bits >= DIGIT_BITS {
                digits.push((acc & ((1 << DIGIT_BITS) - 1)) as u32);
                acc >>= DIGIT_BITS;
                bits -= DIGIT_BITS;
            }
        }
        if bits > 0 {
            digits.push(acc as u32);
        }
        while digits.last() == Some(&0) {
            digits.pop();
        }
        Ok(BigInt {
            negative: n < 0 && !digits.is_empty(),
            digits,
        })
    }

    fn text_float(&mut self) -> Result<u64> {
        let at = self.pos;
        let n = self.u8("a float's length")? as usize;
        let b = self.take(n, "a float's text")?;
        let v = std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<f64>().ok());
        match v {
            Some(v) => Ok(v.to_bits()),
            None => self.err(at, "malformed float text"),
        }
    }

    fn code(&mut self) -> Result<ObjId> {
        // Counts as CPython's own code-object validation accepts them.
        let mut count = |what: &str, max: i32| -> Result<i32> {
            let at = self.pos;
            let v = self.i32(what)?;
            if !(0..=max).contains(&v) {
                return self.err(at, format!("{what} is {v}; expected 0..={max}"));
            }
            Ok(v)
        };
        let argcount = count("co_argcount", i32::MAX)?;
        let posonlyargcount = count("co_posonlyargcount", argcount)?;
        let kwonlyargcount = count("co_kwonlyargcount", i32::MAX)?;
        // Bounded so that co_framesize (stack + locals + frame) fits an int.
        let stacksize = count("co_stacksize", 1 << 30)?;
        let flags = self.i32("co_flags")?;
        let at = self.pos;
        let code_id = self.object()?;
        let code = match self.graph.get(code_id) {
            Obj::Bytes(b) if b.len() % 2 == 0 => b.clone(),
            Obj::Bytes(_) => return self.err(at, "co_code has an odd length"),
            o => {
                return self.err(
                    at,
                    format!("co_code: expected bytes, found {}", kind_name(o)),
                )
            }
        };
        let consts = self.field("co_consts", Want::Tuple)?;
        let names = self.field("co_names", Want::StrTuple)?;
        let localsplusnames = self.field("co_localsplusnames", Want::StrTuple)?;
        let kinds_at = self.pos;
        let localspluskinds = self.field("co_localspluskinds", Want::Bytes)?;
        if let (Obj::Tuple(n), Obj::Bytes(k)) = (
            self.graph.get(localsplusnames),
            self.graph.get(localspluskinds),
        ) {
            if n.len() != k.len() {
                return self.err(
                    kinds_at,
                    format!(
                        "co_localspluskinds has {} entries for {} co_localsplusnames",
                        k.len(),
                        n.len()
                    ),
                );
            }
        }
        let filename = self.field("co_filename", Want::Str)?;
        let name = self.field("co_name", Want::Str)?;
        let qualname = self.field("co_qualname", Want::Str)?;
        let firstlineno = self.i32("co_firstlineno")?;
        let linetable = self.field("co_linetable", Want::Bytes)?;
        let exceptiontable = self.field("co_exceptiontable", Want::Bytes)?;
        Ok(self.graph.add(Obj::Code(Box::new(Code {
            argcount,
            posonlyargcount,
            kwonlyargcount,
            stacksize,
            flags,
            code,
            consts,
            names,
            localsplusnames,
            localspluskinds,
            filename,
            name,
            qualname,
            firstlineno,
            linetable,
            exceptiontable,
        }))))
    }

    fn field(&mut self, name: &str, want: Want) -> Result<ObjId> {
        let at = self.pos;
        let id = self.object()?;
        let o = self.graph.get(id);
        let ok = match (want, o) {
            (Want::Tuple, Obj::Tuple(_)) => true,
            (Want::StrTuple, Obj::Tuple(items)) => items
                .iter()
                .all(|&i| matches!(self.graph.get(i), Obj::Str(_))),
            (Want::Bytes, Obj::Bytes(_)) => true,
            (Want::Str, Obj::Str(_)) => true,
            _ => false,
        };
        if !ok {
            let expected = match want {
                Want::Tuple => "a tuple",
                Want::StrTuple => "a tuple of str",
                Want::Bytes => "bytes",
                Want::Str => "a str",
            };
            return self.err(
                at,
                format!("{name}: expected {expected}, found {}", kind_name(o)),
            );
        }
        Ok(id)
    }
}

#[derive(Clone, Copy)]
enum Want {
    Tuple,
    StrTuple,
    Bytes,
    Str,
}

/// Decode UTF-8 as CPython's "surrogatepass" error handler does: encoded
/// surrogates (U+D800..U+DFFF) are accepted, everything else must be
/// well-formed. On error, returns the index of the offending byte.
pub fn decode_utf8_surrogatepass(b: &[u8]) -> std::result::Result<Str, usize> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c0 = b[i] as u32;
        let (len, min, init) = match c0 {
            0x00..=0x7f => {
                out.push(c0);
                i += 1;
                continue;
            }
            0xc2..=0xdf => (2, 0x80, c0 & 0x1f),
            0xe0..=0xef => (3, 0x800, c0 & 0x0f),
            0xf0..=0xf4 => (4, 0x10000, c0 & 0x07),
            _ => return Err(i),
        };
        if i + len > b.len() {
            return Err(i);
        }
        let mut c = init;
        for k in 1..len {
            let cb = b[i + k] as u32;
            if cb & 0xc0 != 0x80 {
                return Err(i + k);
            }
            c = (c << 6) | (cb & 0x3f);
        }
        if c < min || c > 0x10ffff {
            return Err(i);
        }
        out.push(c);
        i += len;
    }
    Ok(Str(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `marshal.dumps((s, s, x))` by python3.14.10 (sid) with `x = 10**30`,
    /// `s = slice(x, x, None)`: the slice takes its reference index before
    /// its items (0, then the int 1), as for tuples.
    const SHARED_SLICE: &str =
        "2903baec0700000000000000a937a733044d9365270372010000004e72000000007201000000";

    #[test]
    fn slices_reserve_their_reference_before_their_items() {
        let bytes: Vec<u8> = (0..SHARED_SLICE.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&SHARED_SLICE[i..i + 2], 16).unwrap())
            .collect();
        let mut g = Graph::new();
        let id = read_object(&bytes, &mut g).unwrap();
        let Obj::Tuple(items) = g.get(id) else {
            panic!("not a tuple")
        };
        let (s, s2, x) = (items[0], items[1], items[2]);
        assert_eq!(s, s2);
        let Obj::Slice([start, stop, step]) = *g.get(s) else {
            panic!("not a slice")
        };
        assert_eq!((start, stop), (x, x));
        assert!(matches!(g.get(step), Obj::None));
        let Obj::Int(v) = g.get(x) else {
            panic!("not an int")
        };
        assert_eq!(v.digits.len(), 4, "10**30 has four 30-bit digits");
    }

    #[test]
    fn a_truncated_slice_names_its_offset() {
        // ':' then start 1 and nothing more.
        let bytes = [b':', b'i', 1, 0, 0, 0];
        let e = read_object(&bytes, &mut Graph::new()).unwrap_err();
        assert_eq!(e.offset, Some(6), "{e:?}");
    }
}
