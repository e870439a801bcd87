//! The frozen module tables (what CPython's `frozen.o` defines): the
//! bootstrap, stdlib and test arrays of `struct _frozen`, the alias table,
//! the global pointers to them (`_PyImport_FrozenBootstrap`, ...), and
//! `PyImport_FrozenModules` (NULL: no custom table).
//!
//! They are written into the same data section as the frozen objects, after
//! them, so one object replaces both `deepfreeze.o` and `frozen.o`.

use crate::frozen::{Entry, Tables};
use crate::layout::Layout;
use crate::place::{Image, Target};

/// Append the tables to `img`: arrays, names, kept marshal bytes, aliases
/// and the global symbols. `get_code` names are accessor symbols of `img`.
pub fn append(img: &mut Image, l: &Layout, t: &Tables) {
    let fl = &l.frozen;
    let ptr = l.ptr_size as u64;
    let mut arrays = Vec::new();
    for entries in &t.tables {
        // One more, zeroed: the sentinel.
        let at = img.alloc(fl.entry_size as u64 * (entries.len() as u64 + 1));
        for (i, e) in entries.iter().enumerate() {
            write_entry(img, l, at + i as u64 * fl.entry_size as u64, e);
        }
        arrays.push(at);
    }
    let aliases = img.alloc(2 * ptr * (t.aliases.len() as u64 + 1));
    for (i, (alias, orig)) in t.aliases.iter().enumerate() {
        let slot = aliases + 2 * ptr * i as u64;
        let s = c_string(img, alias);
        img.relocs.push(crate::place::Reloc {
            owner: crate::graph::SHARED,
            offset: slot,
            target: Target::Data(s),
        });
        if let Some(orig) = orig {
            let s = c_string(img, orig);
            img.relocs.push(crate::place::Reloc {
                owner: crate::graph::SHARED,
                offset: slot + ptr,
                target: Target::Data(s),
            });
        }
    }
    for (name, &array) in fl.tables.iter().zip(&arrays) {
        pointer_var(img, name, Some(array), ptr);
    }
    pointer_var(img, fl.aliases, Some(aliases), ptr);
    pointer_var(img, fl.custom, None, ptr);
}

fn write_entry(img: &mut Image, l: &Layout, at: u64, e: &Entry) {
    let fl = &l.frozen;
    let name = c_string(img, &e.name);
    img.relocs.push(crate::place::Reloc {
        owner: crate::graph::SHARED,
        offset: at + fl.name.off as u64,
        target: Target::Data(name),
    });
    let module =
        (e.get_code.as_ref()).and_then(|g| img.accessors.iter().position(|a| a.symbol == *g));
    if let (Some((bytes, _)), true) = (&e.code, fl.keeps_marshal) {
        let code = img.alloc(bytes.len() as u64);
        img.data[code as usize..code as usize + bytes.len()].copy_from_slice(bytes);
        img.relocs.push(crate::place::Reloc {
            owner: crate::graph::SHARED,
            offset: at + fl.code.off as u64,
            target: Target::Data(code),
        });
        put(
            img,
            at + fl.size.off as u64,
            fl.size.size,
            bytes.len() as u64,
        );
        if let Some(m) = module {
            img.blobs.push(crate::place::Blob {
                data: code,
                size: bytes.len() as u64,
                module: m as u32,
            });
        }
    }
    put(
        img,
        at + fl.is_package.off as u64,
        fl.is_package.size,
        e.is_package as u64,
    );
    if let (Some(i), Some(get_code)) = (module, fl.get_code) {
        img.relocs.push(crate::place::Reloc {
            owner: crate::graph::SHARED,
            offset: at + get_code.off as u64,
            target: Target::Accessor(i as u32),
        });
    }
}

fn put(img: &mut Image, at: u64, size: u8, v: u64) {
    let at = at as usize;
    img.data[at..at + size as usize].copy_from_slice(&v.to_le_bytes()[..size as usize]);
}

fn c_string(img: &mut Image, s: &str) -> u64 {
    let at = img.alloc(s.len() as u64 + 1);
    img.data[at as usize..at as usize + s.len()].copy_from_slice(s.as_bytes());
    at
}

/// A global pointer-sized variable pointing at `to` (or NULL).
fn pointer_var(img: &mut Image, name: &'static str, to: Option<u64>, ptr: u64) {
    let at = img.alloc(ptr);
    if let Some(to) = to {
        img.relocs.push(crate::place::Reloc {
            owner: crate::graph::SHARED,
            offset: at,
            target: Target::Data(to),
        });
    }
    img.symbols.push((name, at, ptr));
}
