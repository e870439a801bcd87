//! Output targets: parsing `--target` and the facts about a target that the
//! rest of the tool needs (object format, architecture, calling convention).

use crate::arch;
use crate::error::{Error, Result};
use std::str::FromStr;
use target_lexicon::{Architecture, BinaryFormat, Environment, OperatingSystem, Triple};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Elf,
    MachO,
    Coff,
}

/// The operating systems whose CPython builds we target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Os {
    /// Linux with glibc (the C library whose types the layout tables
    /// were measured with).
    Linux,
    /// Linux with another C library (musl, Android's bionic): other sizes
    /// for the pthread and signal types that precede the runtime's shared
    /// objects.
    OtherLinux,
    MacOs,
    Windows,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub os: Os,
    /// The triple as given or expanded from a short form.
    pub triple: String,
    pub format: Format,
    pub arch: arch::Arch,
    /// The calling convention the stubs follow.
    pub conv: &'static arch::Conv,
    /// `sizeof(wchar_t)`: 2 on Windows, 4 elsewhere.
    pub wchar_size: u8,
}

/// Short forms accepted besides full triples.
pub const SHORT_FORMS: &[(&str, &str)] = &[
    ("x86_64-linux", "x86_64-unknown-linux-gnu"),
    ("aarch64-linux", "aarch64-unknown-linux-gnu"),
    ("x86_64-macos", "x86_64-apple-darwin"),
    ("aarch64-macos", "aarch64-apple-darwin"),
    ("x86_64-windows", "x86_64-pc-windows-msvc"),
    ("aarch64-windows", "aarch64-pc-windows-msvc"),
];

impl Target {
    pub fn parse(s: &str) -> Result<Target> {
        let full = SHORT_FORMS
            .iter()
            .find(|(k, _)| *k == s)
            .map(|(_, v)| v.to_string());
        let full = full.unwrap_or_else(|| normalize(s));
        let full = full.as_str();
        let triple = Triple::from_str(full).map_err(|e| {
            Error::msg(format!(
                "unknown target '{s}': {e} (use a target triple or one of: {})",
                SHORT_FORMS
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let os = match triple.operating_system {
            OperatingSystem::Linux => match triple.environment {
                Environment::Gnu | Environment::Unknown | Environment::Gnuabi64 => Os::Linux,
                _ => Os::OtherLinux,
            },
            OperatingSystem::Darwin | OperatingSystem::MacOSX { .. } => Os::MacOs,
            OperatingSystem::Windows => Os::Windows,
            other => {
                return Err(Error::msg(format!(
                    "target '{s}': operating system {other} is not one pyfreeze-obj knows \
                     CPython's runtime layout for (Linux, macOS, Windows)"
                )))
            }
        };
        let format = match (os, triple.binary_format) {
            (Os::Linux | Os::OtherLinux, BinaryFormat::Elf | BinaryFormat::Unknown) => Format::Elf,
            (Os::MacOs, BinaryFormat::Macho | BinaryFormat::Unknown) => Format::MachO,
            (Os::Windows, BinaryFormat::Coff | BinaryFormat::Unknown) => Format::Coff,
            (_, f) => {
                return Err(Error::msg(format!(
                    "target '{s}': object format {f} is not the one CPython uses on {}",
                    triple.operating_system
                )))
            }
        };
        let arch = match triple.architecture {
            Architecture::X86_64 => arch::Arch::X86_64,
            Architecture::Aarch64(_) => arch::Arch::Aarch64,
            other => {
                return Err(Error::msg(format!(
                    "target '{s}': pyfreeze-obj has machine code and layouts for x86_64 and \
                     aarch64 only, not {other}"
                )))
            }
        };
        let conv = arch.convention(format == Format::Coff);
        let wchar_size = if format == Format::Coff { 2 } else { 4 };
        Ok(Target {
            os,
            triple: full.to_string(),
            format,
            arch,
            conv,
            wchar_size,
        })
    }
}

/// Spellings target-lexicon does not take: GCC's `x86_64-w64-mingw32` and
/// versioned Apple triples (`x86_64-apple-macosx11.0`).
fn normalize(s: &str) -> String {
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        [arch, "w64", os] if os.starts_with("mingw") => format!("{arch}-pc-windows-gnu"),
        [arch, "apple", os] if os.starts_with("macos") || os.starts_with("darwin") => {
            format!("{arch}-apple-darwin")
        }
        _ => s.to_string(),
    }
}
