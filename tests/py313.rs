//! CPython 3.13 (pyenv's 3.13.0): the layout table, the object, the
//! relinked interpreter.
//!
//! 3.13 removed deep-freezing; the object replaces `frozen.o`, and the link
//! wraps `PyMarshal_ReadObjectFromString` (and the runtime's code and
//! interned-string teardown) so that loading a frozen module returns its
//! static code object.
//!
//! A missing reference build or tool fails the tests with what to install;
//! nothing is skipped.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

const PYENV: &str = "3.13.0";
const TABLE: &str = "src/layout/py313.rs";

fn python() -> PathBuf {
    support::pyenv_python(PYENV)
}

fn archive() -> PathBuf {
    support::pyenv_archive(PYENV)
}

fn ours() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pyfreeze-obj"))
}

/// The first lines where `want` and `got` differ.
fn first_difference(want: &str, got: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let i = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    format!(
        "line {}:\n- {}\n+ {}",
        i + 1,
        a.get(i).unwrap_or(&"<end>"),
        b.get(i).unwrap_or(&"<end>")
    )
}

// ---------------------------------------------------------------------------
// The layout table

/// The committed table is byte for byte what `gen-layout` writes from
/// pyenv's archive, headers and interpreter, and compiles to the value the
/// generator derives. (The generator itself checks its quickening facts
/// against the interpreter's own quickened bytecode.)
#[test]
fn layout_table_is_what_gen_layout_writes() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE);
    let want = std::fs::read_to_string(&committed).unwrap();
    let out = ours()
        .arg("gen-layout")
        .arg("--archive")
        .arg(archive())
        .arg("--python")
        .arg(python())
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gen-layout failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        got == want,
        "{TABLE} is not what gen-layout writes for pyenv {PYENV} (regenerate it with \
         `pyfreeze-obj gen-layout --archive {} -o {TABLE}`): {}",
        archive().display(),
        first_difference(&want, &got)
    );
    let g = pyfreeze_obj::genlayout::generate(&pyfreeze_obj::genlayout::Options {
        archive: archive(),
        python: Some(python()),
        include: None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        format!("{:#?}", g.layout),
        format!("{:#?}", pyfreeze_obj::layout::PY313)
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// The quickening facts come from the headers and are checked against the
/// interpreter: a counter macro that disagrees with what the interpreter's
/// constructor writes is refused in one line, naming the bytecode.
#[test]
fn gen_layout_checks_quickening_against_the_interpreter() {
    let dir = support::TempDir::new("py313-gen");
    let include = dir.path().join("include");
    let installed = python()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("include/python3.13");
    copy_tree(&installed, &include);
    let h = include.join("internal/pycore_backoff.h");
    let text = std::fs::read_to_string(&h).unwrap();
    let edited = text.replace(
        "#define JUMP_BACKWARD_INITIAL_VALUE 16",
        "#define JUMP_BACKWARD_INITIAL_VALUE 17",
    );
    assert_ne!(
        text,
        edited,
        "{} has no JUMP_BACKWARD_INITIAL_VALUE 16",
        h.display()
    );
    std::fs::write(&h, edited).unwrap();
    let out = ours()
        .arg("gen-layout")
        .arg("--archive")
        .arg(archive())
        .arg("--python")
        .arg(python())
        .arg("--include")
        .arg(&include)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("quickening differs from the interpreter's") && !err.contains("panicked"),
        "{err}"
    );
}
