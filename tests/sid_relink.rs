//! `pyfreeze-obj relink`'s link line on Debian sid's CPython 3.14 and 3.15
//! (inside the chroot, `tests/support/sid.rs`) and on the host's builds,
//! through `relink --stock` (the build's own frozen modules, no object of
//! ours: what runs before 3.14/3.15 emit support, and the reference that
//! relinked interpreters are compared with).
//!
//! * `sid_3_1X::left_out_modules_are_exactly_what_cannot_link`: relink
//!   prints one note, naming the built-in modules it left out; they are
//!   exactly the modules whose objects GNU ld blames when the untouched
//!   archive is linked whole (as relink and CPython's own build link it)
//!   with sysconfig's flags (its undefined references),
//!   the note's symbol count is ld's, and the link's
//!   `sys.builtin_module_names` are Debian's own minus those.
//! * `sid_3_1X::stock_link_runs_like_debian`: hashes (through OpenSSL's
//!   `_hashlib`), `random`, `zlib`, `json`, `struct`, compression modules
//!   and `sys` facts print what Debian's `/usr/bin/python3.1X` prints; its
//!   stderr holds nothing but `hashlib`'s complaint about the left-out
//!   blake2.
//! * `*::pie_choice_matches_the_build`: the link's ELF type (PIE or not) is
//!   the build's own interpreter's (sid, Debian 3.11.2: not PIC, `-no-pie`;
//!   pyenv: PIE), and where every built-in module links relink says nothing.
//! * slow tier: `sid_3_1X::slow_cpython_test_modules_stock_link_vs_debian`:
//!   CPython's `test_frozen test_code test_importlib test_site test_sys`
//!   from the chroot's test package give the same outcomes on the stock
//!   link as on Debian's own interpreter (`tests/support/regrtest.rs`,
//!   [`regrtest::check_sid_matches_stock`]).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use support::builds::{build, BuildId};
use support::{regrtest, run_ok, sid};

/// The ELF type (`e_type`: 2 EXEC, 3 DYN) of the file `p`.
fn elf_type(p: &Path) -> u16 {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    assert!(
        b.len() > 18 && &b[..4] == b"\x7fELF",
        "{} is no ELF file",
        p.display()
    );
    assert_eq!(b[5], 1, "{}: not little-endian", p.display());
    u16::from_le_bytes([b[16], b[17]])
}

/// Python printing `sys.builtin_module_names`, one a line.
const BUILTINS: &str = "import sys; print('\\n'.join(sorted(sys.builtin_module_names)))";

fn lines(s: &str) -> BTreeSet<String> {
    s.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn left_out_modules_are_exactly_what_cannot_link(xy: &str) {
    let py = sid::python(xy);
    let link = sid::stock_link(xy);
    // One note, nothing else.
    let err: Vec<&str> = link
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        err.len(),
        1,
        "relink --stock printed, for {xy}:\n{}",
        link.stderr
    );
    let note = err[0];
    assert!(
        note.starts_with("pyfreeze-obj relink: note: built-in modules "),
        "{note}"
    );
    let after = |s: &str, key: &str| -> String {
        let i = s.find(key).unwrap_or_else(|| panic!("no `{key}` in: {s}"));
        s[i + key.len()..].to_string()
    };
    let modules: BTreeSet<String> = after(note, "built-in modules ")
        .split(" left out")
        .next()
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    let members: BTreeSet<String> = after(note, &format!("{} (", py.archive))
        .split(')')
        .next()
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    let count: usize = after(note, ") need ")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("symbol count in `{note}`: {e}"));

    // The oracle: GNU ld on the untouched archive, every member linked,
    // sysconfig's flags (its backslashes read as blanks), Debian's -no-pie.
    let scratch = sid::Scratch::new(&format!("oracle-{xy}"));
    let flags = sid::run_text(
        &[
            &py.python,
            "-I",
            "-c",
            "import sysconfig as s; g = lambda k: s.get_config_var(k) or ''; \
             print(' '.join(g(k).replace(chr(92), ' ') for k in \
             ('LDFLAGS', 'LINKFORSHARED', 'LIBS', 'SYSLIBS', 'LOCALMODLIBS')))",
        ],
        &[],
    );
    let mut argv = vec![
        "cc",
        "-no-pie",
        "-o",
        "orig",
        &py.python_o,
        "-Wl,--whole-archive",
    ];
    argv.extend([py.archive.as_str(), "-Wl,--no-whole-archive"]);
    argv.extend(flags.split_whitespace());
    let out = support::output(&mut scratch.command(&argv, &[]));
    assert!(
        !out.status.success(),
        "the untouched archive linked: {flags}"
    );
    let text = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("{}(", py.archive);
    let mut blamed = BTreeSet::new();
    let mut undefined = BTreeSet::new();
    for l in text.lines() {
        if let Some(i) = l.find(&prefix) {
            let m = &l[i + prefix.len()..];
            blamed.insert(m[..m.find(')').unwrap()].to_string());
        }
        if let Some(i) = l.find("undefined reference to `") {
            let s = &l[i + "undefined reference to `".len()..];
            undefined.insert(s[..s.find('\'').unwrap()].to_string());
        }
    }
    assert!(!blamed.is_empty(), "no member blamed:\n{text}");
    assert_eq!(
        members, blamed,
        "members named by the note vs blamed by ld:\n{note}\n{text}"
    );
    assert_eq!(
        count,
        undefined.len(),
        "symbols: note vs ld's undefined references"
    );

    // The link's built-in modules: Debian's minus those named.
    let debian = lines(&sid::run_text(&[&py.python, "-I", "-c", BUILTINS], &[]));
    let ours = lines(&sid::run_text(&[&link.exe, "-I", "-c", BUILTINS], &[]));
    assert!(
        modules.is_subset(&debian),
        "{modules:?} not all built into Debian's"
    );
    let want: BTreeSet<String> = debian.difference(&modules).cloned().collect();
    assert_eq!(ours, want, "built-in modules of the stock link");
}

/// What both interpreters print: algorithms other than blake2 (whose
/// module the stock link lacks) through `hashlib`, OpenSSL's unkeyed
/// blake2b512, then modules built in or in lib-dynload.
const WORKLOAD: &str = r#"
import hashlib, random, sys, zlib, json, struct, math, binascii, importlib.util
for name in ("md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3_256", "sha3_512"):
    print(name, hashlib.new(name, b"pyfreeze").hexdigest())
print("sha256", hashlib.sha256(b"").hexdigest())
print("blake2b512", hashlib.new("blake2b512", b"pyfreeze").hexdigest())
print("random", random.Random(20261202).random())
print("zlib", zlib.crc32(b"pyfreeze"), len(zlib.compress(b"x" * 1000)))
print("json", json.dumps({"a": [1, 2.5, None]}, sort_keys=True))
print("struct", struct.pack("<qd", -3, 0.5).hex(), math.comb(40, 20), binascii.hexlify(b"\x01"))
for mod in ("bz2", "lzma", "compression.zstd"):
    if importlib.util.find_spec(mod.split(".")[0]) is None:
        print(mod, "absent")
        continue
    try:
        m = importlib.import_module(mod)
        print(mod, m.decompress(m.compress(b"abc" * 100)) == b"abc" * 100)
    except ImportError as e:
        print(mod, "ImportError", e)
print("version", sys.version_info[:], sys.implementation.cache_tag)
print("flags", sys.flags.optimize, sys.float_info.dig, sys.maxsize)
"#;

fn stock_link_runs_like_debian(xy: &str) {
    let py = sid::python(xy);
    let link = sid::stock_link(xy);
    let scratch = sid::Scratch::new(&format!("runs-{xy}"));
    let run = |exe: &str| {
        let out = support::output(&mut scratch.command(&[exe, "-I", "-c", WORKLOAD], &[]));
        assert!(
            out.status.success(),
            "{exe} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (want, want_err) = run(&py.python);
    let (got, got_err) = run(&link.exe);
    assert!(want.lines().count() > 15, "{want}");
    assert_eq!(got, want, "the stock link against Debian's {}", py.python);
    assert!(
        want_err.trim().is_empty(),
        "Debian's {}: {want_err}",
        py.python
    );
    // hashlib logs one error per hash whose module is missing; only the
    // left-out _blake2's may appear.
    let blake2_left_out = link.stderr.contains(" _blake2 ");
    for l in got_err.lines().filter(|l| l.starts_with("ERROR:")) {
        assert!(
            blake2_left_out && l.contains("blake2"),
            "unexpected error from the stock link: {l}\n{got_err}"
        );
    }
    assert!(
        got_err
            .lines()
            .all(|l| !l.contains("Segmentation") && !l.contains("Fatal")),
        "{got_err}"
    );
}

fn pie_choice_matches_sid(xy: &str) {
    let py = sid::python(xy);
    let link = sid::stock_link(xy);
    assert_eq!(
        elf_type(&sid::host_path(&link.exe)),
        elf_type(&sid::host_path(&py.python)),
        "ELF type of the stock link vs Debian's {}",
        py.python
    );
}

fn slow_cpython_test_modules_stock_link_vs_debian(xy: &str) {
    let py = sid::python(xy);
    let link = sid::stock_link(xy);
    let scratch = sid::Scratch::new(&format!("regrtest-{xy}"));
    let tests = [
        "test_frozen",
        "test_code",
        "test_importlib",
        "test_site",
        "test_sys",
    ];
    // 3.14's hashlib logs an error through `logging` for each hash whose
    // module is missing, which adds a handler: test_site, importing it,
    // then "altered the execution environment".
    let blake2 = [(
        "test_site",
        "the stock link lacks _blake2 (relink's note): importing hashlib logs an error, \
         which adds a logging handler",
    )];
    let suite = regrtest::Suite {
        tests: &tests,
        jobs: 2,
        min_cases: 1000,
        expected_verdicts: if link.stderr.contains(" _blake2 ") {
            &blake2
        } else {
            &[]
        },
        ..Default::default()
    };
    regrtest::check_sid_matches_stock(
        &format!("sid CPython {} (stock link vs Debian's)", py.version),
        &py.python,
        &link.exe,
        scratch.host(),
        &suite,
    );
}

macro_rules! sid_tests {
    ($($module:ident: $xy:literal;)*) => {$(
        mod $module {
            #[test]
            fn left_out_modules_are_exactly_what_cannot_link() {
                super::left_out_modules_are_exactly_what_cannot_link($xy)
            }
            #[test]
            fn stock_link_runs_like_debian() {
                super::stock_link_runs_like_debian($xy)
            }
            #[test]
            fn pie_choice_matches_the_build() {
                super::pie_choice_matches_sid($xy)
            }
            #[test]
            fn slow_cpython_test_modules_stock_link_vs_debian() {
                super::slow_cpython_test_modules_stock_link_vs_debian($xy)
            }
        }
    )*};
}

sid_tests! {
    sid_3_14: "3.14";
    sid_3_15: "3.15";
}

/// Host builds: `relink --stock` gives the build's own interpreter's ELF
/// type and, every built-in module linking, prints nothing.
fn host_pie_choice(id: BuildId) {
    let b = build(id);
    let dir = b.work_dir("relink-stock");
    let exe = dir.join("python-stock");
    let out = run_ok(
        support::ours()
            .args(["relink", "--stock", "--python"])
            .arg(&b.python)
            .arg("-o")
            .arg(&exe),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.trim().is_empty(),
        "{}: relink --stock printed: {err}",
        b.label
    );
    // The build's own interpreter (pyenv's may be a shared-libpython
    // binary: its type still says PIE or not).
    let own = std::fs::canonicalize(&b.python).unwrap();
    assert_eq!(
        elf_type(&exe),
        elf_type(&own),
        "{}: ELF type of relink --stock vs {}",
        b.label,
        own.display()
    );
    let text = support::run_text(b.python(&exe, &dir).args(["-c", support::HELLO]));
    assert_eq!(text.trim(), "Hello world!");
}

mod pyenv_3_12_1 {
    #[test]
    fn pie_choice_matches_the_build() {
        super::host_pie_choice(super::BuildId::Pyenv312)
    }
}

mod debian_3_11_2 {
    #[test]
    fn pie_choice_matches_the_build() {
        super::host_pie_choice(super::BuildId::Debian311)
    }
}
