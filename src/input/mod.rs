//! Inputs: where each frozen module's code comes from.
//!
//! - `FILE:MODNAME` arguments: a frozen-module header as CPython's freezer
//!   writes it (`Python/frozen_modules/NAME.h`), a `.pyc` file, a raw
//!   marshal file, or a `.py` source (compiled by `--compile-with`);
//! - `--modules-from LIBPYTHON.a`: the module set and marshal bytes of the
//!   `frozen.o` inside a libpython archive ([`archive`]).
//!
//! Every loader returns marshal bytes plus enough to report errors at the
//! right byte of the right file.

pub mod archive;
pub mod compile;
pub mod header;
pub mod select;
pub mod verify;

use crate::error::{Error, Result};
use crate::frozen::accessor_symbol;
use crate::layout::Layout;
use std::path::{Path, PathBuf};

/// One module's marshalled code and where it came from.
#[derive(Debug)]
pub struct Marshalled {
    pub name: String,
    /// The accessor symbol the module gets.
    pub accessor: String,
    pub data: Vec<u8>,
    /// The file the bytes came from (for error messages).
    pub origin: PathBuf,
    /// How to turn an offset in `data` into an offset in `origin`.
    pub offsets: OffsetMap,
}

#[derive(Debug)]
pub enum OffsetMap {
    /// `origin` holds the bytes verbatim from this offset on.
    Base(u64),
    /// A text header whose initializer starts at this offset (an error
    /// reads the text again to find the number that gave a byte).
    Header(usize),
    /// Produced by a compiler run: offsets are within its output.
    Generated,
}

impl OffsetMap {
    pub fn map(&self, origin: &Path, off: u64) -> Option<u64> {
        match self {
            OffsetMap::Base(b) => Some(b + off),
            OffsetMap::Header(start) => std::fs::read(origin)
                .ok()
                .map(|text| header::number_offset(&text, *start, off)),
            OffsetMap::Generated => Some(off),
        }
    }
}

/// What kind of file an input argument names.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Header,
    Pyc,
    Marshal,
    Source,
}

/// Split `FILE:MODNAME` at the last colon.
pub fn split_arg(arg: &str) -> Result<(PathBuf, String)> {
    let (file, name) = arg.rsplit_once(':').ok_or_else(|| {
        Error::msg(format!(
            "input '{arg}': expected FILE:MODNAME (e.g. Python/frozen_modules/os.h:os)"
        ))
    })?;
    if file.is_empty() || name.is_empty() {
        return Err(Error::msg(format!(
            "input '{arg}': expected FILE:MODNAME, with both parts"
        )));
    }
    check_module_name(name).map_err(|m| Error::msg(format!("input '{arg}': {m}")))?;
    Ok((PathBuf::from(file), name.to_string()))
}

/// A module name must be dotted identifiers (it becomes a C symbol).
pub fn check_module_name(name: &str) -> std::result::Result<(), String> {
    let ok = name.split('.').all(|p| {
        let mut c = p.chars();
        matches!(c.next(), Some(ch) if ch == '_' || ch.is_ascii_alphabetic())
            && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid module name '{name}' (expected dotted ASCII identifiers)"
        ))
    }
}

pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))
}

/// Decide the kind of an input from its name and first bytes.
pub fn classify(path: &Path, bytes: &[u8]) -> Kind {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if header::is_frozen_header(bytes) || ext == "h" {
        Kind::Header
    } else if ext == "pyc" {
        Kind::Pyc
    } else if ext == "py" {
        Kind::Source
    } else {
        Kind::Marshal
    }
}

/// The CPython version a `.pyc` magic number belongs to, to name it in
/// errors: the supported versions' own tables, else the releases before
/// them and the series after.
fn magic_version(m: u16) -> Option<String> {
    if let Some(v) = crate::version::VERSIONS
        .iter()
        .find(|v| v.layout.pyc_magic == m)
    {
        return Some(format!("{}.{}", v.layout.version.0, v.layout.version.1));
    }
    match m {
        3413 => Some("3.8".into()),
        3425 => Some("3.9".into()),
        3439 => Some("3.10".into()),
        3600..=3700 => Some("another 3.14+ release".into()),
        _ => None,
    }
}

/// The marshal data inside a `.pyc` file, after checking its magic.
pub fn pyc_payload(path: &Path, bytes: &[u8], layout: &Layout) -> Result<u64> {
    if bytes.len() < 16 {
        return Err(Error::at(
            path,
            bytes.len() as u64,
            "truncated .pyc header (expected 16 bytes)",
        ));
    }
    let magic = u16::from_le_bytes([bytes[0], bytes[1]]);
    if bytes[2..4] != *b"\r\n" {
        return Err(Error::at(
            path,
            2,
            "not a .pyc file (bad magic: expected \\r\\n after the number)",
        ));
    }
    if magic != layout.pyc_magic {
        let (a, b) = layout.version;
        let what = magic_version(magic)
            .map(|v| format!(" (CPython {v})"))
            .unwrap_or_default();
        return Err(Error::at(
            path,
            0,
            format!(
                "pyc magic {magic}{what} does not match --python {a}.{b} (magic {})",
                layout.pyc_magic
            ),
        ));
    }
    Ok(16)
}

/// Load one `FILE:MODNAME` argument (not `.py`: see [`compile`]).
pub fn load_arg(path: &Path, name: &str, layout: &Layout) -> Result<Marshalled> {
    // The text of a header is only needed while parsing it: one buffer per
    // thread serves every file (no fresh pages, no copy kept per file).
    thread_local! {
        static TEXT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    TEXT.with_borrow_mut(|bytes| {
        bytes.clear();
        std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_to_end(&mut f, bytes))
            .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        load_bytes(path, name, layout, bytes)
    })
}

fn load_bytes(path: &Path, name: &str, layout: &Layout, bytes: &[u8]) -> Result<Marshalled> {
    let origin = path.to_path_buf();
    match classify(path, bytes) {
        Kind::Header => {
            let (data, start) = header::parse(bytes).map_err(|e| e.in_file(path))?;
            Ok(Marshalled {
                name: name.to_string(),
                accessor: accessor_symbol(name),
                data,
                origin,
                offsets: OffsetMap::Header(start),
            })
        }
        Kind::Pyc => {
            let base = pyc_payload(path, bytes, layout)?;
            let data = bytes[base as usize..].to_vec();
            Ok(Marshalled {
                name: name.to_string(),
                accessor: accessor_symbol(name),
                data,
                origin,
                offsets: OffsetMap::Base(base),
            })
        }
        Kind::Marshal => Ok(Marshalled {
            name: name.to_string(),
            accessor: accessor_symbol(name),
            data: bytes.to_vec(),
            origin,
            offsets: OffsetMap::Base(0),
        }),
        Kind::Source => Err(Error::file(
            path,
            "a .py source needs --compile-with PYTHON to compile it",
        )),
    }
}
