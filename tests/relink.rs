//! Relink real CPython 3.12.1 interpreters with our object in place of gcc's
//! `deepfreeze.o` (REFERENCE.md section 4) and check that they behave like the
//! stock link:
//!
//! * `hello_world_from_our_object`: `import __hello__; __hello__.main()`.
//! * `stock_modules_equal_gcc_deepfreeze`: every deep-frozen module's code
//!   object, fetched with `_imp.get_frozen_object` in our interpreter, equals
//!   the one the stock interpreter (gcc's `deepfreeze.o`) hands out.
//! * `link_non_pie`, `link_shared_object`, `link_shared_libpython`: the
//!   object links (and, where an executable results, runs) as a non-PIE
//!   executable, as a bare shared object (relocation/visibility sanity via
//!   `readelf`) and inside a shared `libpython3.12.so`.
//! * `slow_cpython_test_modules_match_stock`: CPython's own test modules give
//!   the same per-module and per-test-case outcomes with ours as with the
//!   stock link. About 8 s of wall time on 2 cores (both interpreters run
//!   `python -m test -j2`); the fast tier skips it with
//!   `cargo test -- --skip slow_` (`--skip cpython_test_modules` works too).

mod relink_support;

use relink_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const HELLO: &str = "import __hello__; __hello__.main()";

#[test]
fn hello_world_from_our_object() {
    let r = relinked();
    let cwd = work_dir("hello");
    assert_eq!(python_c(&r.ours, &cwd, HELLO), "Hello world!\n");
    assert_eq!(python_c(&r.stock, &cwd, HELLO), "Hello world!\n");
    // the frozen importlib really is the deep-frozen one, and startup works
    let probe = "import _imp, sys, importlib._bootstrap as b\n\
                 print(_imp.is_frozen('__hello__'), b.__spec__.origin, sys.version_info[:3])";
    assert_eq!(python_c(&r.ours, &cwd, probe), "True frozen (3, 12, 1)\n");
    // our object defines what the stripped archive lost
    let nm = run_ok(Command::new("nm").arg(&r.ours_o));
    let syms = String::from_utf8_lossy(&nm.stdout);
    for want in [
        "_Py_Deepfreeze_Init",
        "_Py_Deepfreeze_Fini",
        "_Py_next_func_version",
        "_Py_get___hello___toplevel",
        "_Py_get_importlib__bootstrap_toplevel",
    ] {
        assert!(
            syms.lines()
                .any(|l| l.split_whitespace().last() == Some(want) && !l.contains(" U ")),
            "{want} not defined by our object:\n{syms}"
        );
    }
}

/// Stock interpreter marshals `_imp.get_frozen_object(name)` for every
/// frozen module (gcc's deep-frozen objects); ours compares its own.
#[test]
fn stock_modules_equal_gcc_deepfreeze() {
    let r = relinked();
    let cwd = work_dir("stock-modules");
    let dump = cwd.join("stock-frozen.marshal");
    let dump_s = dump.to_str().unwrap();
    python_c(
        &r.stock,
        &cwd,
        &format!(
            "import _imp, marshal\n\
             names = sorted(_imp._frozen_module_names())\n\
             codes = {{n: _imp.get_frozen_object(n) for n in names}}\n\
             open({dump_s:?}, 'wb').write(marshal.dumps(codes))"
        ),
    );
    let report = python_c(
        &r.ours,
        &cwd,
        &format!(
            "import _imp, marshal\n\
             stock = marshal.loads(open({dump_s:?}, 'rb').read())\n\
             names = sorted(_imp._frozen_module_names())\n\
             assert names == sorted(stock), (names, sorted(stock))\n\
             def count(c):\n\
             \x20   return 1 + sum(count(k) for k in c.co_consts if hasattr(k, 'co_code'))\n\
             bad = [n for n in names if _imp.get_frozen_object(n) != stock[n]]\n\
             print(len(names), sum(count(_imp.get_frozen_object(n)) for n in names), bad)"
        ),
    );
    let mut parts = report.split_whitespace();
    let modules: usize = parts.next().unwrap().parse().unwrap();
    let codes: usize = parts.next().unwrap().parse().unwrap();
    let bad: String = parts.collect::<Vec<_>>().join(" ");
    assert_eq!(bad, "[]", "modules whose code differs from gcc's: {bad}");
    assert!(
        modules >= 20 && codes >= 700,
        "suspiciously small frozen set: {report}"
    );
}

#[test]
fn link_non_pie() {
    let r = relinked();
    let dir = work_dir("non-pie");
    let exe = dir.join("python-nopie");
    link_interpreter(&exe, &["-no-pie"], &[&r.ours_o], &r.stripped);
    let header = readelf(&["-h"], &exe);
    assert!(
        header.contains("EXEC (Executable file)"),
        "-no-pie did not give an ET_EXEC file:\n{header}"
    );
    assert_eq!(python_c(&exe, &dir, HELLO), "Hello world!\n");
}

/// Relocation kinds a position-independent data object may leave for the
/// dynamic loader.
const PIC_RELOCS: &[&str] = &[
    "R_X86_64_RELATIVE",
    "R_X86_64_64",
    "R_X86_64_GLOB_DAT",
    "R_X86_64_JUMP_SLOT",
    "R_X86_64_JUMP_SLO", // readelf's truncated spelling without -W
];

#[test]
fn link_shared_object() {
    let r = relinked();
    let dir = work_dir("shared-object");
    let so = dir.join("deepfreeze.so");
    // -z text: any text relocation (non-PIC code) is a link error
    run_ok(
        Command::new("cc")
            .args([
                "-shared",
                "-Wl,-z,text",
                "-Wl,--unresolved-symbols=ignore-all",
                "-o",
            ])
            .arg(&so)
            .arg(&r.ours_o),
    );
    let dynamic = readelf(&["-d", "-W"], &so);
    assert!(
        !dynamic.contains("TEXTREL"),
        "text relocations in the shared object:\n{dynamic}"
    );
    let relocs = readelf(&["-r", "-W"], &so);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for line in relocs.lines() {
        let mut f = line.split_whitespace();
        if let (Some(_), Some(_), Some(kind)) = (f.next(), f.next(), f.next()) {
            if kind.starts_with("R_") {
                *kinds.entry(kind.to_string()).or_default() += 1;
            }
        }
    }
    let total: usize = kinds.values().sum();
    assert!(total > 10_000, "too few dynamic relocations: {kinds:?}");
    for k in kinds.keys() {
        assert!(
            PIC_RELOCS.contains(&k.as_str()),
            "unexpected dynamic relocation {k} ({kinds:?})"
        );
    }
    // hidden stays hidden: nothing of ours is exported; imports are the
    // runtime objects REFERENCE.md lists
    let dynsyms = readelf(&["--dyn-syms", "-W"], &so);
    let allowed_undefined = [
        "PyCode_Type",
        "PyBytes_Type",
        "PyUnicode_Type",
        "PyTuple_Type",
        "PyLong_Type",
        "PyFloat_Type",
        "PyComplex_Type",
        "_Py_NoneStruct",
        "_Py_TrueStruct",
        "_Py_FalseStruct",
        "_Py_EllipsisObject",
        "_PyRuntime",
        "_PyStaticCode_Init",
        "_PyStaticCode_Fini",
        // toolchain boilerplate of any -shared link
        "__cxa_finalize",
        "_ITM_registerTMCloneTable",
        "_ITM_deregisterTMCloneTable",
        "__gmon_start__",
    ];
    for line in dynsyms.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || !f[0].ends_with(':') || f[7] == "Name" {
            continue;
        }
        let (ndx, name) = (f[6], f[7]);
        if ndx == "UND" {
            assert!(
                allowed_undefined.contains(&name),
                "unexpected import {name}:\n{dynsyms}"
            );
        } else {
            assert!(
                !name.starts_with("_Py_get_") && !name.starts_with("_Py_Deepfreeze"),
                "hidden symbol {name} exported from the shared object:\n{dynsyms}"
            );
        }
    }
    assert!(dynsyms.contains("_PyStaticCode_Init"));
}

/// Our object inside a shared `libpython3.12.so` (every archive member),
/// with `python.o` linked against it: symbolic relocations to the runtime's
/// objects are resolved by the dynamic loader at startup.
#[test]
fn link_shared_libpython() {
    let r = relinked();
    let py = py312();
    let dir = work_dir("shared-libpython");
    let so = dir.join("libpython3.12.so");
    run_ok(
        Command::new("cc")
            .args(["-shared", "-Wl,-z,text", "-o"])
            .arg(&so)
            .arg("-Wl,--whole-archive")
            .arg(&r.stripped)
            .arg("-Wl,--no-whole-archive")
            .arg(&r.ours_o)
            .args(&py.link_flags),
    );
    let exe = dir.join("python-shared");
    run_ok(
        Command::new("cc")
            .arg("-o")
            .arg(&exe)
            .arg(&py.python_o)
            .arg(format!("-L{}", dir.display()))
            .arg("-lpython3.12")
            .arg(format!("-Wl,-rpath,{}", dir.display()))
            .args(&py.link_flags),
    );
    let needed = readelf(&["-d", "-W"], &exe);
    assert!(needed.contains("libpython3.12.so"), "{needed}");
    assert_eq!(python_c(&exe, &dir, HELLO), "Hello world!\n");
    assert_eq!(
        python_c(&exe, &dir, "import os, site, runpy, zipimport; print('ok')"),
        "ok\n"
    );
}

// ---------------------------------------------------------------------------
// CPython's own test suite, ours vs stock.

const SUITE: &[&str] = &[
    "test_frozen",
    "test_code",
    "test_importlib",
    "test_site",
    "test_sys",
    "test_compile",
    "test_dis",
    "test_inspect",
    "test_traceback",
];

/// One `python -m test` run, digested.
#[derive(Debug)]
struct SuiteRun {
    /// regrtest's per-module verdict line: `test_code` -> `passed`.
    modules: BTreeMap<String, String>,
    /// junit test case id -> passed/skipped/failure/error.
    cases: BTreeMap<String, String>,
    log: String,
}

impl SuiteRun {
    /// Per top-level test module: (total, passed, skipped, failure, error).
    fn counts(&self) -> BTreeMap<String, [usize; 5]> {
        let mut m: BTreeMap<String, [usize; 5]> = BTreeMap::new();
        for (id, outcome) in &self.cases {
            let module = id.split('.').nth(1).unwrap_or(id).to_string();
            let c = m.entry(module).or_default();
            c[0] += 1;
            let i = match outcome.as_str() {
                "passed" => 1,
                "skipped" => 2,
                "failure" => 3,
                _ => 4,
            };
            c[i] += 1;
        }
        m
    }
}

/// regrtest prints `... [3/9] test_x passed` / `[4/9/1] test_y failed (2
/// failures) (1 min 3 sec)`: name and verdict without timings.
fn parse_verdicts(log: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in log.lines() {
        let Some(open) = line.find('[') else { continue };
        let Some(close) = line[open..].find("] ") else {
            continue;
        };
        let counter = &line[open + 1..open + close];
        if !counter.contains('/') || !counter.chars().all(|c| c.is_ascii_digit() || c == '/') {
            continue;
        }
        let rest = &line[open + close + 2..];
        let Some((name, verdict)) = rest.split_once(' ') else {
            continue;
        };
        if !name.starts_with("test_") {
            continue;
        }
        let mut v = verdict.trim().to_string();
        // drop trailing timing groups: "(12.3 sec)", "(1 min 2 sec)"
        while let Some(p) = v.rfind(" (") {
            let tail = &v[p..];
            if tail.ends_with(" sec)") || tail.ends_with(" ms)") || tail.ends_with(" min)") {
                v.truncate(p);
            } else {
                break;
            }
        }
        out.insert(name.to_string(), v);
    }
    out
}

/// regrtest's summary lines: "Total tests: ...", "Total test files: ...",
/// "Result: ...".
fn totals(log: &str) -> Option<String> {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.starts_with("Total tests:")
                || l.starts_with("Total test files:")
                || l.starts_with("Result:")
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

fn run_suite(exe: &Path, dir: &Path, tag: &str, tests: &[&str], jobs: u32) -> SuiteRun {
    let py = py312();
    let cwd = dir.join(format!("cwd-{tag}"));
    let _ = std::fs::remove_dir_all(&cwd);
    std::fs::create_dir_all(&cwd).unwrap();
    let xml = dir.join(format!("junit-{tag}.xml"));
    let _ = std::fs::remove_file(&xml);
    let mut cmd = python(exe, &cwd);
    cmd.args(["-m", "test", "--timeout=900", "--junit-xml"])
        .arg(&xml);
    if jobs > 1 {
        cmd.arg(format!("-j{jobs}"));
    }
    cmd.args(tests);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    // exit status is deliberately not required to be 0: some tests may fail
    // on the stock link as well in this environment
    let log = format!(
        "[{tag}: exit {}]\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        xml.is_file(),
        "regrtest wrote no junit file for {tag}:\n{log}"
    );
    let summary = run_ok(
        Command::new(&py.python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/relink_support/junit_summary.py"
            ))
            .arg(&xml),
    );
    let cases = String::from_utf8(summary.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    SuiteRun {
        modules: parse_verdicts(&log),
        cases,
        log,
    }
}

/// Top-level test modules on which the two runs disagree, with reasons.
fn disagreements(ours: &SuiteRun, stock: &SuiteRun) -> BTreeMap<String, Vec<String>> {
    let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let top = |m: &str| m.split('.').next().unwrap().to_string();
    let names: BTreeSet<&String> = ours.modules.keys().chain(stock.modules.keys()).collect();
    for n in names {
        let (a, b) = (ours.modules.get(n), stock.modules.get(n));
        if a != b {
            bad.entry(top(n))
                .or_default()
                .push(format!("verdict: ours {a:?}, stock {b:?}"));
        }
    }
    let (ca, cb) = (ours.counts(), stock.counts());
    let names: BTreeSet<&String> = ca.keys().chain(cb.keys()).collect();
    for n in names {
        let (a, b) = (ca.get(n), cb.get(n));
        if a != b {
            bad.entry(n.clone()).or_default().push(format!(
                "counts [total, passed, skipped, failure, error]: ours {a:?}, stock {b:?}"
            ));
        }
    }
    let ids: BTreeSet<&String> = ours.cases.keys().chain(stock.cases.keys()).collect();
    for id in ids {
        let (a, b) = (ours.cases.get(id), stock.cases.get(id));
        if a != b {
            let module = id.split('.').nth(1).unwrap_or(id).to_string();
            let list = bad.entry(module).or_default();
            if list.len() < 40 {
                list.push(format!("{id}: ours {a:?}, stock {b:?}"));
            }
        }
    }
    bad
}

#[test]
fn slow_cpython_test_modules_match_stock() {
    let r = relinked();
    let dir = work_dir("cpython-suite");
    let stock = run_suite(&r.stock, &dir, "stock", SUITE, 2);
    let ours = run_suite(&r.ours, &dir, "ours", SUITE, 2);

    // sanity: both runs really ran the suite
    for (tag, run) in [("stock", &stock), ("ours", &ours)] {
        let counts = run.counts();
        for m in SUITE {
            assert!(
                counts.contains_key(*m),
                "{tag}: no junit results for {m}:\n{}",
                run.log
            );
        }
        assert!(
            run.cases.len() > 1500,
            "{tag}: only {} test cases ran:\n{}",
            run.cases.len(),
            run.log
        );
        assert_eq!(run.modules.len(), SUITE.len(), "{tag}:\n{}", run.log);
    }

    let mut bad = disagreements(&ours, &stock);
    if bad.is_empty() {
        // regrtest's own totals ("Total tests: run=2,140 skipped=110")
        assert_eq!(
            totals(&ours.log),
            totals(&stock.log),
            "regrtest totals differ:\n{}\n\n{}",
            ours.log,
            stock.log
        );
        assert!(totals(&ours.log).is_some(), "no totals line:\n{}", ours.log);
    } else {
        // one serial re-run of the disagreeing modules, on both sides, to
        // tell a flaky test from a real difference
        let again: Vec<String> = bad.keys().cloned().collect();
        let again: Vec<&str> = again.iter().map(String::as_str).collect();
        eprintln!("re-running {again:?} after a first disagreement: {bad:#?}");
        let stock2 = run_suite(&r.stock, &dir, "stock-rerun", &again, 1);
        let ours2 = run_suite(&r.ours, &dir, "ours-rerun", &again, 1);
        bad = disagreements(&ours2, &stock2);
        assert!(
            bad.is_empty(),
            "ours and stock disagree (after a re-run): {bad:#?}\n\n{}\n\n{}",
            ours2.log,
            stock2.log
        );
    }

    let c = ours.counts();
    let summary: Vec<String> = c
        .iter()
        .map(|(m, [t, p, s, f, e])| {
            format!("{m}: {t} run, {p} passed, {s} skipped, {f} failed, {e} errors")
        })
        .collect();
    eprintln!(
        "CPython test suite, identical on ours and stock:\n  {}",
        summary.join("\n  ")
    );
}

#[test]
fn regrtest_output_parsing() {
    let log = "0:00:00 load avg: 0.92 Run 9 tests in parallel using 2 worker processes\n\
               0:00:00 load avg: 0.92 [1/9] test_frozen passed\n\
               0:00:01 load avg: 0.92 [4/9] test_sys passed (1 min 2 sec)\n\
               0:00:03 load avg: 1.2 [5/9/1] test_dis failed (2 failures) (12.3 sec)\n\
               0:00:03 load avg: 1.2 [6/9/1] test_site skipped -- no reason\n\
               0:00:03 load avg: 0.92 [8/9/1] test_inspect.test_inspect passed\n\
               0:00:30 load avg: 1.0 running (1): test_x (30.1 sec)\n\
               Total tests: run=2,140 skipped=110\n\
               Total test files: run=9/9\n\
               Result: SUCCESS\n";
    let v = parse_verdicts(log);
    let want: BTreeMap<String, String> = [
        ("test_frozen", "passed"),
        ("test_sys", "passed"),
        ("test_dis", "failed (2 failures)"),
        ("test_site", "skipped -- no reason"),
        ("test_inspect.test_inspect", "passed"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(v, want);
    assert_eq!(
        totals(log).unwrap(),
        "Total tests: run=2,140 skipped=110\nTotal test files: run=9/9\nResult: SUCCESS"
    );
    let run = |cases: &[(&str, &str)]| SuiteRun {
        modules: BTreeMap::new(),
        cases: cases
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        log: String::new(),
    };
    let a = run(&[
        ("test.test_x.A.t1", "passed"),
        ("test.test_y.B.t", "skipped"),
    ]);
    let b = run(&[
        ("test.test_x.A.t1", "failure"),
        ("test.test_y.B.t", "skipped"),
    ]);
    assert_eq!(a.counts()["test_x"], [1, 1, 0, 0, 0]);
    let d = disagreements(&a, &b);
    assert_eq!(d.keys().collect::<Vec<_>>(), ["test_x"]);
    assert!(disagreements(&a, &a).is_empty());
}
