//! The read-only section: the tables the stub program walks, defined here
//! and nowhere else.
//!
//! Layout: the [`Table`]s, in [`Table::ALL`] order, each an array of
//! 32-bit little-endian words with no padding between them; then one zero
//! word, the sentinel, so that the end of every table (an empty last one
//! too) is an address inside the section; then the pristine blob (the
//! bytecode of every code object as emitted, which the lazy scheme's
//! teardown copies back).
//!
//! No table holds a relocation: object offsets are relative to the data
//! section, whose address the stubs add; blob offsets are relative to the
//! start of this section.

use crate::error::{Error, Result};
use crate::place::{Fixups, Image};

/// The tables, in the order they sit in the section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// `u32`: data offset of a code object, in the order Init visits them
    /// (a module's are contiguous, modules in accessor order).
    Codes,
    /// `u32`: data offset of a string object we emit (not the runtime's):
    /// each module's own, in module order, then the shared ones (a
    /// module's strings have valid pointers only once its fixups ran).
    Strs,
    /// One [`ModuleRecord`] per module, in accessor order.
    Modules,
    /// `u32`: data offset of a pointer field that holds a data offset:
    /// its module's first use adds the data section's address.
    Fixups,
    /// `(u32 field offset, u32 index)`: add the address of external symbol
    /// `index` (from the data's table of external addresses) to the field.
    ExternFixups,
    /// `(u32 field offset, u32 tuple offset)`: a frozenset constant's
    /// field and the tuple standing for it (shared fields are listed under
    /// every module that uses them).
    Frozensets,
    /// Per code object, parallel to [`Table::Codes`]: `(u32 offset of its
    /// pristine bytecode from the start of this section, u32 length)`.
    Pristine,
    /// `(u32 field offset, u32 string offset)`: a string field a module's
    /// first use interns immortal, and the string we put there.
    InternImmortal,
    /// As [`Table::InternImmortal`], interned mortal.
    InternMortal,
    /// `(u32 data offset, u32 size, u32 module, u32 code)`: marshal bytes of
    /// the module tables, the module they stand for and the data offset of
    /// its top-level code object; in data order, no two overlapping.
    Blobs,
}

impl Table {
    pub const ALL: [Table; 10] = [
        Table::Codes,
        Table::Strs,
        Table::Modules,
        Table::Fixups,
        Table::ExternFixups,
        Table::Frozensets,
        Table::Pristine,
        Table::InternImmortal,
        Table::InternMortal,
        Table::Blobs,
    ];

    /// Bytes per entry.
    pub const fn entry_size(self) -> u32 {
        match self {
            Table::Codes | Table::Strs | Table::Fixups => 4,
            Table::Modules => ModuleRecord::SIZE,
            Table::ExternFixups
            | Table::Frozensets
            | Table::Pristine
            | Table::InternImmortal
            | Table::InternMortal => 8,
            Table::Blobs => 16,
        }
    }

    /// log2 of [`Table::entry_size`].
    pub const fn entry_shift(self) -> u8 {
        self.entry_size().trailing_zeros() as u8
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A range of one table's entries, as two 32-bit fields of a
/// [`ModuleRecord`]: the first entry's index at byte `at`, the number of
/// entries at `at + 4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub table: Table,
    pub at: u32,
}

impl Span {
    /// Byte offset of the count field.
    pub const fn count_at(self) -> u32 {
        self.at + 4
    }
}

/// A module's record in [`Table::Modules`]: 64 bytes, sixteen 32-bit
/// fields, of which the [`ModuleRecord::SPANS`] use fourteen; the rest is
/// zero.
pub struct ModuleRecord;

impl ModuleRecord {
    pub const SIZE: u32 = 64;
    /// log2 of [`ModuleRecord::SIZE`]: a record is at `index << SHIFT`.
    pub const SHIFT: u8 = 6;
    pub const CODES: Span = Span {
        table: Table::Codes,
        at: 0,
    };
    pub const FIXUPS: Span = Span {
        table: Table::Fixups,
        at: 8,
    };
    pub const EXTERN_FIXUPS: Span = Span {
        table: Table::ExternFixups,
        at: 16,
    };
    pub const FROZENSETS: Span = Span {
        table: Table::Frozensets,
        at: 24,
    };
    pub const STRS: Span = Span {
        table: Table::Strs,
        at: 32,
    };
    pub const INTERN_IMMORTAL: Span = Span {
        table: Table::InternImmortal,
        at: 40,
    };
    pub const INTERN_MORTAL: Span = Span {
        table: Table::InternMortal,
        at: 48,
    };
    /// Every span, in field order.
    pub const SPANS: [Span; 7] = [
        Self::CODES,
        Self::FIXUPS,
        Self::EXTERN_FIXUPS,
        Self::FROZENSETS,
        Self::STRS,
        Self::INTERN_IMMORTAL,
        Self::INTERN_MORTAL,
    ];
}

const _: () = {
    assert!(ModuleRecord::SIZE == 1 << ModuleRecord::SHIFT);
    let mut i = 0;
    while i < ModuleRecord::SPANS.len() {
        assert!(ModuleRecord::SPANS[i].at == 8 * i as u32);
        assert!(ModuleRecord::SPANS[i].count_at() + 4 <= ModuleRecord::SIZE);
        i += 1;
    }
};

/// The section's contents, built from an [`Image`].
#[derive(Debug, Default)]
pub struct RoTables {
    tables: [Vec<u32>; 10],
    blob: Vec<u8>,
    /// How many of [`Table::Strs`]' entries, at its end, are shared.
    shared_strs: u64,
}

impl RoTables {
    /// The tables for `image` (after [`Image::defer_relocations`] under
    /// the lazy scheme); with `pristine = Some(code_adaptive)`, also the
    /// pristine bytecode of every code object (it starts at that offset in
    /// the object) and its table.
    pub fn build(image: &Image, pristine: Option<u32>) -> Result<RoTables> {
        let offs = |v: &mut dyn Iterator<Item = u64>| -> Result<Vec<u32>> {
            v.map(|o| u32::try_from(o).map_err(|_| too_big())).collect()
        };
        let none = Fixups::default();
        let f = image.fixups.as_ref().unwrap_or(&none);
        // A stable sort by owner: SHARED is u32::MAX, so it comes last.
        let mut by_owner: Vec<(u32, u64)> = (image.str_owners.iter().copied())
            .zip(image.strs.iter().copied())
            .collect();
        by_owner.sort_by_key(|&(owner, _)| owner);
        let shared_strs = image.shared_strs();
        let mut t: [Vec<u32>; 10] = Default::default();
        let no_interns = crate::place::Interns::default();
        let interns = |m: usize| {
            let i = image.interns.get(m).unwrap_or(&no_interns);
            (&i.immortal, &i.mortal)
        };
        t[Table::Codes.index()] = offs(&mut image.codes.iter().copied())?;
        t[Table::Strs.index()] = offs(&mut by_owner.iter().map(|&(_, s)| s))?;
        let mut next = [0u32; ModuleRecord::SPANS.len()];
        for (m, &codes) in image.module_codes.iter().enumerate() {
            let m32 = m as u32;
            let strs_start = by_owner.partition_point(|&(o, _)| o < m32);
            let strs_end = by_owner.partition_point(|&(o, _)| o <= m32);
            let len = |v: &[Vec<u32>]| v.get(m).map_or(0, Vec::len);
            let len2 = |v: &[Vec<(u32, u32)>]| v.get(m).map_or(0, Vec::len);
            let mut record = [0u32; (ModuleRecord::SIZE / 4) as usize];
            for (k, span) in ModuleRecord::SPANS.iter().enumerate() {
                let (first, count) = match span.table {
                    Table::Codes => (next[k], codes),
                    Table::Fixups => (next[k], len(&f.internal)),
                    Table::ExternFixups => (next[k], len2(&f.external)),
                    Table::Frozensets => (next[k], len2(&f.frozensets)),
                    Table::Strs => (strs_start as u32, strs_end - strs_start),
                    Table::InternImmortal => (next[k], interns(m).0.len()),
                    Table::InternMortal => (next[k], interns(m).1.len()),
                    Table::Modules | Table::Pristine | Table::Blobs => {
                        unreachable!("no such span")
                    }
                };
                let count = count as u32;
                record[(span.at / 4) as usize] = first;
                record[(span.count_at() / 4) as usize] = count;
                next[k] = first + count;
            }
            t[Table::Modules.index()].extend(record);
        }
        t[Table::Fixups.index()] = f.internal.iter().flatten().copied().collect();
        let pairs = |v: &[Vec<(u32, u32)>]| -> Vec<u32> {
            v.iter().flatten().flat_map(|&(a, b)| [a, b]).collect()
        };
        t[Table::ExternFixups.index()] = pairs(&f.external);
        t[Table::Frozensets.index()] = pairs(&f.frozensets);
        let flat = |v: &mut dyn Iterator<Item = &(u32, u32)>| -> Vec<u32> {
            v.flat_map(|&(a, b)| [a, b]).collect()
        };
        t[Table::InternImmortal.index()] =
            flat(&mut image.interns.iter().flat_map(|i| &i.immortal));
        t[Table::InternMortal.index()] = flat(&mut image.interns.iter().flat_map(|i| &i.mortal));
        // In data order, which the load wrapper's binary search needs: the
        // module tables' bytes are allocated one after another, so this
        // only checks that; bytes that overlap (or start at one place) are
        // refused.
        let mut blobs = image.blobs.clone();
        blobs.sort_by_key(|b| b.data);
        if let Some(w) = blobs
            .windows(2)
            .find(|w| w[0].data + w[0].size.max(1) > w[1].data)
        {
            return Err(Error::msg(format!(
                "internal error: the marshal bytes of modules {} and {} overlap (data offsets \
                 {} and {}); please report it",
                w[0].module, w[1].module, w[0].data, w[1].data
            )));
        }
        for b in &blobs {
            let code = image.accessors.get(b.module as usize).map_or(0, |a| a.code);
            for v in [b.data, b.size, b.module as u64, code] {
                t[Table::Blobs.index()].push(u32::try_from(v).map_err(|_| too_big())?);
            }
        }
        let mut out = RoTables {
            tables: t,
            blob: Vec::new(),
            shared_strs,
        };
        if let Some(code_adaptive) = pristine {
            // Entries first (their number fixes where the blob starts),
            // then their offsets.
            out.tables[Table::Pristine.index()] = vec![0; 2 * image.codes.len()];
            let base = out.blob_start();
            let mut entries = Vec::with_capacity(2 * image.codes.len());
            for (&c, &n) in image.codes.iter().zip(&image.code_lens) {
                let at = (c + code_adaptive as u64) as usize;
                let off = u32::try_from(base + out.blob.len() as u64).map_err(|_| too_big())?;
                entries.extend([off, n]);
                out.blob.extend_from_slice(&image.data[at..at + n as usize]);
            }
            out.tables[Table::Pristine.index()] = entries;
        }
        Ok(out)
    }

    /// Entries of table `t`.
    pub fn len(&self, t: Table) -> u64 {
        (4 * self.tables[t.index()].len() as u64) / t.entry_size() as u64
    }

    /// Byte offset of table `t` in the section.
    pub fn start(&self, t: Table) -> u64 {
        4 * (self.tables[..t.index()].iter().map(Vec::len).sum::<usize>() as u64)
    }

    /// Byte offset just past table `t`.
    pub fn end(&self, t: Table) -> u64 {
        self.start(t) + 4 * self.tables[t.index()].len() as u64
    }

    /// Byte offset of the zero word after the last table.
    pub fn sentinel(&self) -> u64 {
        self.end(Table::ALL[Table::ALL.len() - 1])
    }

    /// Byte offset of the pristine blob.
    pub fn blob_start(&self) -> u64 {
        self.sentinel() + 4
    }

    /// Byte offsets `[start, end)` of the shared strings' entries (the
    /// end of [`Table::Strs`]).
    pub fn shared_strs(&self) -> (u64, u64) {
        let end = self.end(Table::Strs);
        (end - 4 * self.shared_strs, end)
    }

    /// The section's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let words = self.tables.iter().map(Vec::len).sum::<usize>() + 1;
        let mut out = Vec::with_capacity(4 * words + self.blob.len());
        for &v in self.tables.iter().flatten().chain([&0]) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        debug_assert_eq!(out.len() as u64, self.blob_start());
        out.extend_from_slice(&self.blob);
        out
    }
}

fn too_big() -> Error {
    Error::msg("frozen data exceeds 4 GiB; split the module set")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two modules: the first with two code objects, two internal fixups,
    /// a string; the second with one code object and a shared string.
    fn image() -> Image {
        let mut img = Image {
            data: (0..64u8).collect(),
            codes: vec![0, 16, 32],
            code_lens: vec![2, 4, 2],
            strs: vec![48, 56],
            str_owners: vec![crate::graph::SHARED, 0],
            module_codes: vec![2, 1],
            ..Image::default()
        };
        img.fixups = Some(Fixups {
            internal: vec![vec![8, 24], vec![]],
            external: vec![vec![], vec![(40, 0)]],
            frozensets: vec![vec![], vec![]],
            ..Fixups::default()
        });
        img
    }

    fn word(b: &[u8], at: u64) -> u32 {
        u32::from_le_bytes(b[at as usize..at as usize + 4].try_into().unwrap())
    }

    #[test]
    fn records_name_their_modules_ranges() {
        let t = RoTables::build(&image(), Some(4)).unwrap();
        let b = t.bytes();
        let rec = |m: u64, f: u32| word(&b, t.start(Table::Modules) + 64 * m + f as u64);
        let c = ModuleRecord::CODES;
        assert_eq!((rec(0, c.at), rec(0, c.count_at())), (0, 2));
        assert_eq!((rec(1, c.at), rec(1, c.count_at())), (2, 1));
        let f = ModuleRecord::FIXUPS;
        assert_eq!((rec(0, f.at), rec(0, f.count_at())), (0, 2));
        assert_eq!((rec(1, f.at), rec(1, f.count_at())), (2, 0));
        let x = ModuleRecord::EXTERN_FIXUPS;
        assert_eq!((rec(1, x.at), rec(1, x.count_at())), (0, 1));
        // Strings: module 0's own first, the shared one last.
        let s = ModuleRecord::STRS;
        assert_eq!((rec(0, s.at), rec(0, s.count_at())), (0, 1));
        assert_eq!((rec(1, s.at), rec(1, s.count_at())), (1, 0));
        assert_eq!(word(&b, t.start(Table::Strs)), 56);
        assert_eq!(
            t.shared_strs(),
            (t.end(Table::Strs) - 4, t.end(Table::Strs))
        );
        assert_eq!(t.len(Table::Modules), 2);
        for m in 0..2 {
            for at in (40..64).step_by(4) {
                assert_eq!(rec(m, at), 0);
            }
        }
    }

    #[test]
    fn sentinel_then_pristine_blob() {
        let img = image();
        let t = RoTables::build(&img, Some(4)).unwrap();
        let b = t.bytes();
        assert_eq!(word(&b, t.sentinel()), 0);
        assert_eq!(t.blob_start(), t.sentinel() + 4);
        for (i, (&c, &n)) in img.codes.iter().zip(&img.code_lens).enumerate() {
            let e = t.start(Table::Pristine) + 8 * i as u64;
            let (off, len) = (word(&b, e) as usize, word(&b, e + 4) as usize);
            assert_eq!(len, n as usize);
            assert_eq!(&b[off..off + len], &img.data[c as usize + 4..][..len]);
        }
        // Without the blob, the pristine table is empty and the sentinel
        // ends the section.
        let t = RoTables::build(&img, None).unwrap();
        assert_eq!(t.len(Table::Pristine), 0);
        assert_eq!(t.bytes().len() as u64, t.blob_start());
    }

    /// The blob table is in data order whatever the image's order; bytes
    /// that overlap, or start at one place, are refused.
    #[test]
    fn blobs_in_data_order_none_overlapping() {
        use crate::place::Blob;
        let blob = |data, size, module| Blob { data, size, module };
        let mut img = image();
        img.blobs = vec![blob(40, 8, 1), blob(16, 8, 0), blob(24, 16, 2)];
        let t = RoTables::build(&img, None).unwrap();
        let b = t.bytes();
        let starts: Vec<(u32, u32)> = (0..3)
            .map(|i| t.start(Table::Blobs) + 16 * i)
            .map(|e| (word(&b, e), word(&b, e + 8)))
            .collect();
        assert_eq!(starts, [(16, 0), (24, 2), (40, 1)]);
        for bad in [
            vec![blob(16, 9, 0), blob(24, 8, 1)],
            vec![blob(16, 0, 0), blob(16, 0, 1)],
        ] {
            img.blobs = bad;
            let e = RoTables::build(&img, None).unwrap_err().to_string();
            assert!(e.contains("overlap"), "{e}");
        }
    }
}
