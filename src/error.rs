//! One error type for the whole tool. Every error prints as one line that
//! names the input and, for content errors, the byte offset.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Error {
    /// The file (or other input) the error is about, if any.
    pub file: Option<PathBuf>,
    /// Byte offset within `file` for errors in its content.
    pub offset: Option<u64>,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn msg(message: impl Into<String>) -> Error {
        Error {
            file: None,
            offset: None,
            message: message.into(),
        }
    }
    pub fn file(file: impl AsRef<Path>, message: impl Into<String>) -> Error {
        Error {
            file: Some(file.as_ref().to_path_buf()),
            offset: None,
            message: message.into(),
        }
    }
    pub fn at(file: impl AsRef<Path>, offset: u64, message: impl Into<String>) -> Error {
        Error {
            file: Some(file.as_ref().to_path_buf()),
            offset: Some(offset),
            message: message.into(),
        }
    }
    /// Attach a file name to an error that has none yet.
    pub fn in_file(mut self, file: impl AsRef<Path>) -> Error {
        if self.file.is_none() {
            self.file = Some(file.as_ref().to_path_buf());
        }
        self
    }
    /// Shift the byte offset, for errors in data embedded at `base` of a file.
    pub fn shifted(mut self, base: u64) -> Error {
        if let Some(o) = self.offset.as_mut() {
            *o += base;
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(off) = self.offset {
                write!(f, ": byte {off}")?;
            }
            write!(f, ": ")?;
        } else if let Some(off) = self.offset {
            write!(f, "byte {off}: ")?;
        }
        // Keep the message on one line whatever it quotes.
        let one_line: String = self
            .message
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        write!(f, "{one_line}")
    }
}

impl std::error::Error for Error {}
