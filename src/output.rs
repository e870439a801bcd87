//! Writing output files atomically: a reader (or a build interrupted
//! half-way) sees the old file or the new one, never a part.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write to a temporary file beside `path`, then put it in the place of
/// `path` ([`replace`]): on any error `path` is left as it was and the
/// temporary file is removed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with(path, |f| f.write_all(bytes))
}

/// Put `tmp` in the place of `path`, atomically.
///
/// Renaming over an existing file makes ext4 start writing the new file
/// back at once (its auto_da_alloc heuristic for programs that neither
/// sync nor rename), and when the file being replaced is itself still
/// being written back (an output rewritten within seconds, as in a build
/// loop), the rename waits for that I/O: about a millisecond for a 1.4 MB
/// object here, more than reading the inputs. On Linux, an existing regular
/// file is swapped with `tmp` in one step (renameat2 RENAME_EXCHANGE; a
/// reader sees the old file or the new one, as with rename) and the old
/// one, now at `tmp`, is unlinked; like a compiler writing its output, this
/// leaves write-back to the kernel's schedule.
fn replace(tmp: &Path, path: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        let is_file = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
        if is_file && renameat_with(CWD, tmp, CWD, path, RenameFlags::EXCHANGE).is_ok() {
            let _ = std::fs::remove_file(tmp);
            return Ok(());
        }
    }
    std::fs::rename(tmp, path)
}

/// [`write_atomically`] with `write` filling the temporary file.
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "output is not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        drop(f);
        replace(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(path, format!("cannot write output: {e}"))
    })
}
