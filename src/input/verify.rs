//! Whether an archive is a build the layout table is right for.
//!
//! A layout table is generated from one build (its DWARF); another build of
//! the same X.Y (another patch release, a distribution's) may lay the
//! runtime out otherwise, and an object written with the wrong offsets
//! gives an interpreter that crashes or, worse, misbehaves. What the object
//! relies on is checked against the archive's own data, with no need for
//! its DWARF:
//!
//! - the runtime's shared objects the table lists (small ints, the empty
//!   bytes and tuple, the one-character strings and bytes, the global
//!   strings) read back, through the table, from `_PyRuntime`'s initializer
//!   (pylifecycle.o): type, reference count and value;
//! - where the table says the main interpreter's function version counter
//!   is, the initializer holds its first value (1);
//! - where the table quickens bytecode at emit time, `_PyOpcode_Caches`
//!   and `_PyOpcode_Deopt` (compile.o in 3.13, codegen.o from 3.14) are the
//!   table's.
//!
//! A mismatch is refused, naming the archive and what differs.

use crate::error::{Error, Result};
use crate::layout::{IntSize, Layout};
use object::{Object, ObjectSection, ObjectSymbol, ReadRef, RelocationTarget};
use std::path::Path;

/// A defined symbol's bytes and its relocations (offset from the
/// symbol's start -> target), whose targets are named on demand.
struct Var<'f, 'd, R: ReadRef<'d>> {
    obj: &'f object::File<'d, R>,
    bytes: &'d [u8],
    /// Sorted by offset.
    relocs: Vec<(u64, RelocationTarget)>,
}

impl<'d, R: ReadRef<'d>> Var<'_, 'd, R> {
    /// Whether the relocation at `off` points to symbol `to`.
    fn points_to(&self, off: u64, to: Option<object::SymbolIndex>) -> bool {
        let Ok(i) = self.relocs.binary_search_by_key(&off, |r| r.0) else {
            return false;
        };
        matches!((self.relocs[i].1, to), (RelocationTarget::Symbol(a), Some(b)) if a == b)
    }
    /// The index of (undefined or defined) symbol `name`.
    fn symbol(&self, name: &str) -> Option<object::SymbolIndex> {
        self.obj.symbol_by_name(name).map(|s| s.index())
    }
}

fn read_var<'f, 'd, R: ReadRef<'d>>(
    obj: &'f object::File<'d, R>,
    name: &str,
) -> Option<Var<'f, 'd, R>> {
    let sym = obj.symbol_by_name(name)?;
    let sec = obj.section_by_index(sym.section_index()?).ok()?;
    let (start, size) = (sym.address() - sec.address(), sym.size());
    let data = sec.data().ok()?;
    let bytes = data.get(start as usize..(start + size) as usize)?;
    let mut relocs: Vec<(u64, RelocationTarget)> = (sec.relocations())
        .filter(|(off, _)| (start..start + size).contains(off))
        .map(|(off, r)| (off - start, r.target()))
        .collect();
    relocs.sort_unstable_by_key(|r| r.0);
    Some(Var { obj, bytes, relocs })
}

/// A little-endian integer of `size` bytes at `off` (None past the end).
fn rd(b: &[u8], off: u64, size: u8) -> Option<u64> {
    let s = b.get(off as usize..off as usize + size as usize)?;
    let mut w = [0u8; 8];
    w[..s.len()].copy_from_slice(s);
    Some(u64::from_le_bytes(w))
}

/// Check `archive` (its `pylifecycle.o`, and the members that may define
/// the opcode tables, read on demand; `release` its `PY_VERSION`) against
/// `layout`.
pub fn check<'d, R: ReadRef<'d>>(
    archive: &Path,
    release: &str,
    layout: &Layout,
    pylifecycle: Option<R>,
    opcodes: &[R],
) -> Result<()> {
    let (a, b) = layout.version;
    let refuse = |what: String| {
        Error::file(
            archive,
            format!(
                "CPython {release}'s {what}: this build's layout is not the {a}.{b} table's \
                 (generated from CPython {}); generate a table for it with `pyfreeze-obj \
                 gen-layout` from a build of it with debug info",
                layout.release
            ),
        )
    };
    let member = |name: &str, data: Option<R>| -> Result<object::File<'d, R>> {
        let data = data.ok_or_else(|| {
            Error::file(
                archive,
                format!("no {name} member: cannot check the build against the layout table"),
            )
        })?;
        object::File::parse(data).map_err(|e| Error::file(archive, format!("{name}: {e}")))
    };
    let life = member("pylifecycle.o", pylifecycle)?;
    let arch = match life.architecture() {
        object::Architecture::X86_64 => crate::arch::Arch::X86_64,
        object::Architecture::Aarch64 => crate::arch::Arch::Aarch64,
        other => {
            return Err(Error::file(
                archive,
                format!("pylifecycle.o is for {other:?}: x86_64 and aarch64 only"),
            ))
        }
    };
    let rt = &layout.runtime;
    let init = read_var(&life, rt.symbol).ok_or_else(|| {
        Error::file(
            archive,
            format!(
                "pylifecycle.o defines no {} (a stripped or unusual build): cannot check it \
                 against the layout table",
                rt.symbol
            ),
        )
    })?;
    let shift = layout.runtime_shift(arch) as u64;
    let (h, s) = (&layout.head, &layout.str_);
    let buf = init.bytes;
    let field = |base: u64, f: crate::layout::Field| rd(buf, base + f.off as u64, f.size);
    // An object of type `ty` at `base` (before the shift): its header, and
    // `ok` for the rest.
    let types: Vec<(&str, Option<object::SymbolIndex>)> = [
        layout.sym.int_type,
        layout.sym.bytes_type,
        layout.sym.tuple_type,
        layout.sym.str_type,
    ]
    .into_iter()
    .map(|t| (t, init.symbol(t)))
    .collect();
    let index = |ty: &str| types.iter().find(|t| t.0 == ty).and_then(|t| t.1);
    let object = |what: &dyn Fn() -> String, base: u64, ty: &str, ok: bool| -> Result<()> {
        let base = base + shift;
        let typed = init.points_to(base + h.type_.off as u64, index(ty));
        if typed && field(base, h.refcnt) == Some(h.static_refcnt) && ok {
            Ok(())
        } else {
            Err(refuse(format!(
                "{} does not hold {} where the table says",
                rt.symbol,
                what()
            )))
        }
    };
    let n = (rt.small_int_neg + rt.small_int_pos + 1) as u64;
    for i in 0..n {
        let base = rt.small_ints as u64 + i * rt.small_int_stride as u64;
        let at = base + shift;
        let v = i as i64 - rt.small_int_neg;
        let digit = rd(buf, at + layout.int.digits as u64, layout.int.digit_size);
        let ok = match &layout.int.size {
            IntSize::LvTag(f) => {
                let sign = match v.signum() {
                    0 => 1,
                    1 => 0,
                    _ => 2,
                };
                // Bit 2 is 3.14+'s mark of the runtime's own small ints
                // (not part of the sign or digit count; ours never set it).
                field(at, *f).map(|t| t & !4) == Some(((v != 0) as u64) << 3 | sign)
            }
            IntSize::SignedObSize => field(at, h.size) == Some(v.signum() as u64),
        } && digit == Some(v.unsigned_abs());
        object(
            &|| format!("the small int {v}"),
            base,
            layout.sym.int_type,
            ok,
        )?;
    }
    let empty_bytes = field(rt.bytes_empty as u64 + shift, h.size) == Some(0);
    object(
        &|| "b''".into(),
        rt.bytes_empty as u64,
        layout.sym.bytes_type,
        empty_bytes,
    )?;
    let empty_tuple = field(rt.tuple_empty as u64 + shift, h.size) == Some(0);
    object(
        &|| "()".into(),
        rt.tuple_empty as u64,
        layout.sym.tuple_type,
        empty_tuple,
    )?;
    if let Some((off, stride)) = rt.bytes_characters {
        for c in 0..256u64 {
            let base = off as u64 + c * stride as u64;
            let at = base + shift;
            let ok = field(at, h.size) == Some(1)
                && rd(buf, at + layout.bytes.sval as u64, 1) == Some(c);
            object(
                &|| format!("the bytes {c:#04x}"),
                base,
                layout.sym.bytes_type,
                ok,
            )?;
        }
    }
    // A one-byte-kind string: its length and characters (latin1).
    let string = |base: u64, value: &mut dyn ExactSizeIterator<Item = u32>| -> bool {
        let at = base + shift;
        let len = value.len();
        let chars: Vec<u32> = value.collect();
        let ascii = chars.iter().all(|&c| c < 0x80);
        let data = at + if ascii { s.ascii_size } else { s.compact_size } as u64;
        field(at, s.length) == Some(len as u64)
            && buf
                .get(data as usize..data as usize + len)
                .is_some_and(|b| b.iter().zip(&chars).all(|(&x, &c)| x as u32 == c))
    };
    for (arr, first) in [(rt.ascii_chars, 0u32), (rt.latin1_chars, 128)] {
        if let Some((off, stride)) = arr {
            for i in 0..128u32 {
                let base = off as u64 + i as u64 * stride as u64;
                let ok = string(base, &mut std::iter::once(first + i));
                let what = || format!("the string U+{:04X}", first + i);
                object(&what, base, layout.sym.str_type, ok)?;
            }
        }
    }
    for (v, off) in rt.global_strings {
        let ok = string(*off as u64, &mut v.bytes().map(u32::from));
        object(
            &|| format!("the string {v:?}"),
            *off as u64,
            layout.sym.str_type,
            ok,
        )?;
    }
    if let Some(next) = layout.interp.next_func_version {
        let at = layout.interp.main.on(arch).off as u64 + next.on(arch).off as u64;
        let first = u64::from(layout.interp.first_code_version);
        if rd(buf, at, next.field.size) != Some(first) {
            return Err(refuse(format!(
                "main interpreter's function version counter is not where the table says \
                 ({}+{at} does not start at {first})",
                rt.symbol
            )));
        }
    }
    if let Some(q) = &layout.code.quicken {
        let mut objs = Vec::new();
        for &data in opcodes {
            objs.push(member("an opcode table member", Some(data))?);
        }
        for (name, want) in [("_PyOpcode_Caches", q.caches), ("_PyOpcode_Deopt", q.deopt)] {
            let v = objs.iter().find_map(|o| read_var(o, name)).map(|v| v.bytes);
            let got: Option<Vec<(u8, u8)>> = v.filter(|b| b.len() == 256).map(|b| {
                (0..=255u8)
                    .zip(b.iter().copied())
                    .filter(|&(op, x)| {
                        if name == "_PyOpcode_Caches" {
                            x != 0
                        } else {
                            x != op
                        }
                    })
                    .collect()
            });
            if got.as_deref() != Some(want) {
                return Err(refuse(format!(
                    "{name} (how bytecode is quickened) differs from the table's"
                )));
            }
        }
    }
    Ok(())
}
