//! Checks on an interpreter relinked with our object in place of gcc's
//! `deepfreeze.o`, for any build of the matrix (`tests/relink.rs`,
//! `tests/aarch64.rs`).

use super::builds::{readelf, relinked, Relinked, Scheme};
use super::objgraph::{model, ObjFile};
use super::{run_text, HELLO};
use std::path::Path;

/// Hello world from ours and the stock link; the deep-frozen importlib in
/// use, the version and machine; the executables' ELF type (PIE or not,
/// like the build's own interpreter); the symbols our object defines and
/// the runtime functions it calls; under `--lazy`, an object that differs
/// from the eager one.
pub fn check_hello(r: &Relinked) {
    let b = r.build;
    let cwd = b.work_dir(&format!("hello-{}", r.scheme.tag()));
    // start-up and exit alone (lazy: with most modules never requested)
    assert_eq!(b.python_c(&r.ours, &cwd, "pass"), "");
    assert_eq!(b.python_c(&r.ours, &cwd, HELLO), "Hello world!\n");
    assert_eq!(b.python_c(&r.stock, &cwd, HELLO), "Hello world!\n");
    let probe = "import _imp, platform, sys, importlib._bootstrap as b\n\
                 print(_imp.is_frozen('__hello__'), b.__spec__.origin, \
                 '%d.%d.%d' % sys.version_info[:3], platform.machine())";
    assert_eq!(
        b.python_c(&r.ours, &cwd, probe),
        format!("True frozen {} {}\n", b.version, b.machine)
    );
    for exe in [&r.ours_elf, &r.stock_elf] {
        let header = readelf(&["-h"], exe);
        assert!(
            header.contains(b.exe_type()),
            "{}: {} is not {}:\n{header}",
            b.label,
            exe.display(),
            b.exe_type()
        );
    }
    let bytes = std::fs::read(&r.ours_o).unwrap();
    let f = ObjFile::parse(&bytes).unwrap();
    let m = model(b.xy);
    let mut want = vec![
        "_Py_Deepfreeze_Init",
        "_Py_Deepfreeze_Fini",
        "_Py_get___hello___toplevel",
        "_Py_get_importlib__bootstrap_toplevel",
    ];
    want.extend(m.next_func_version());
    for w in want {
        assert!(f.symbol(w).is_some(), "{w} not defined by our object");
    }
    let undefined = f.undefined();
    for c in m.callees() {
        assert!(
            undefined.contains(c),
            "our object does not call {c}: {undefined:?}"
        );
    }
    if r.scheme == Scheme::Lazy {
        let eager = relinked(b.id, Scheme::Eager);
        assert_ne!(
            bytes,
            std::fs::read(&eager.ours_o).unwrap(),
            "{}: emit --lazy wrote the eager object",
            b.label
        );
    }
}

const FROZEN_CODE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/relink_support/frozen_code.py"
);

/// `frozen_code.py compare` output: modules, code objects, bad lines,
/// tolerated lines.
pub fn compare_frozen_code(
    r: &Relinked,
    cwd: &Path,
    stock_dump: &Path,
) -> (usize, usize, Vec<String>, Vec<String>) {
    let mut cmd = r.build.python(&r.ours, cwd);
    cmd.arg(FROZEN_CODE).arg("compare").arg(stock_dump);
    if r.scheme == Scheme::Lazy {
        cmd.arg("lazy");
    }
    let report = run_text(&mut cmd);
    let (mut modules, mut codes) = (0, 0);
    let (mut bad, mut tolerated) = (Vec::new(), Vec::new());
    for line in report.lines() {
        if let Some(n) = line.strip_prefix("modules ") {
            modules = n.parse().unwrap();
        } else if let Some(n) = line.strip_prefix("codes ") {
            codes = n.parse().unwrap();
        } else if line.starts_with("tolerated ") {
            tolerated.push(line.to_string());
        } else {
            bad.push(line.to_string());
        }
    }
    (modules, codes, bad, tolerated)
}

/// The stock link dumps every frozen module's code (gcc's deep-frozen
/// objects) into `DIR/stock-frozen`; returns DIR.
pub fn dump_stock_frozen_code(r: &Relinked, name: &str) -> std::path::PathBuf {
    let cwd = r.build.work_dir(name);
    let mut cmd = r.build.python(&r.stock, &cwd);
    run_text(
        cmd.arg(FROZEN_CODE)
            .arg("dump")
            .arg(cwd.join("stock-frozen")),
    );
    cwd
}

/// Every frozen module's code object, fetched with
/// `_imp.get_frozen_object` in our interpreter, equals the one the stock
/// interpreter hands out (`==`, every field, constant and string-interning
/// status; `tests/relink_support/frozen_code.py`, with what the lazy
/// scheme may change tolerated).
pub fn check_frozen_code(r: &Relinked) {
    let (b, scheme) = (r.build, r.scheme);
    let cwd = dump_stock_frozen_code(r, &format!("frozen-code-{}", scheme.tag()));
    let (modules, codes, bad, tolerated) = compare_frozen_code(r, &cwd, &cwd.join("stock-frozen"));
    assert!(
        bad.is_empty(),
        "{} ({scheme:?}): modules whose code differs from gcc's:\n{}",
        b.label,
        bad.join("\n")
    );
    assert!(
        modules >= 20 && codes >= 700,
        "{}: suspiciously small frozen set: {modules} modules, {codes} code objects",
        b.label
    );
    if !tolerated.is_empty() {
        eprintln!(
            "{} ({scheme:?}): differences from stock the lazy scheme may have:\n  {}",
            b.label,
            tolerated.join("\n  ")
        );
    }
    eprintln!(
        "{} ({scheme:?}): {modules} frozen modules, {codes} code objects equal to the stock link's",
        b.label
    );
}
