//! The one runner of CPython's own test modules on two interpreters linked
//! from the same build, ours and the stock link, requiring the same
//! outcomes: regrtest's per-module verdicts, per-module counts and every
//! test case's outcome (from `--junit-xml`, summarized by
//! `tests/relink_support/junit_summary.py`), and its totals. Interpreters
//! inside the Debian sid chroot (CPython 3.14, 3.15) run through
//! [`run_in_sid`] / [`check_sid_matches_stock`].

use super::builds::Build;
use super::{output, run_text, sid};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The test modules that exercise frozen modules and code objects
/// (`tests/relink.rs` and `tests/lazy.rs` each add two).
pub fn frozen_and_code(more: &[&'static str]) -> Vec<&'static str> {
    let core = [
        "test_frozen",
        "test_code",
        "test_importlib",
        "test_site",
        "test_sys",
    ];
    [&core[..], &["test_inspect", "test_traceback"], more].concat()
}

/// What to run and what to require.
#[derive(Default)]
pub struct Suite<'a> {
    pub tests: &'a [&'a str],
    /// `-jN` (1: in-process).
    pub jobs: u32,
    /// Run the stock link and ours at the same time (slow interpreters:
    /// qemu), rather than one after the other.
    pub concurrent: bool,
    /// Test cases each run must have, at least.
    pub min_cases: usize,
    /// A `test` package put on `PYTHONPATH` (alone) instead of the build's
    /// own.
    pub test_package: Option<&'a Path>,
    /// Test cases that differ by construction, with the reason; the
    /// verdicts and counts of their modules are not compared.
    pub expected: &'a [(&'a str, &'a str)],
    /// Top-level test modules whose verdict alone (`passed` against
    /// `failed (env changed)`) differs by construction, with the reason;
    /// their test cases and counts are still compared.
    pub expected_verdicts: &'a [(&'a str, &'a str)],
    /// Test cases from `-v`'s log rather than `--junit-xml` (which needs
    /// pyexpat, missing from a plain build of Debian's tree).
    pub verbose: bool,
}

/// One `python -m test` run, digested.
#[derive(Debug, Clone)]
pub struct SuiteRun {
    /// regrtest's per-module verdict line: `test_code` -> `passed`.
    pub modules: BTreeMap<String, String>,
    /// junit test case id -> passed/skipped/failure/error.
    pub cases: BTreeMap<String, String>,
    pub log: String,
}

/// `test.test_x.A.t1` -> `test_x`.
fn module_of(id: &str) -> String {
    id.split('.').nth(1).unwrap_or(id).to_string()
}

impl SuiteRun {
    /// Per top-level test module: [total, passed, skipped, failure, error].
    pub fn counts(&self) -> BTreeMap<String, [usize; 5]> {
        let mut m: BTreeMap<String, [usize; 5]> = BTreeMap::new();
        for (id, outcome) in &self.cases {
            let c = m.entry(module_of(id)).or_default();
            c[0] += 1;
            let i = ["passed", "skipped", "failure"]
                .iter()
                .position(|o| o == outcome);
            c[1 + i.unwrap_or(3)] += 1;
        }
        m
    }
}

/// regrtest prints `... [3/9] test_x passed` / `[ 4/25/1] test_y failed (2
/// failures) (1 min 3 sec)`: name and verdict without timings (none, in
/// an in-process run: `[1/2] test_x`).
pub fn parse_verdicts(log: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in log.lines() {
        let Some(open) = line.find('[') else { continue };
        let Some(close) = line[open..].find("] ") else {
            continue;
        };
        // "[3/9]", "[ 2/25/1]"
        let counter = line[open + 1..open + close].trim();
        if !counter.contains('/') || !counter.chars().all(|c| c.is_ascii_digit() || c == '/') {
            continue;
        }
        // (an in-process run names the module before running it, and
        // gives no verdict for one that passes)
        let rest = &line[open + close + 2..];
        let (name, verdict) = rest.split_once(' ').unwrap_or((rest, ""));
        if !name.starts_with("test_") {
            continue;
        }
        let mut v = verdict.trim().to_string();
        // drop trailing timing groups: "(12.3 sec)", "(1 min 2 sec)"
        while let Some(p) = v.rfind(" (") {
            if [" sec)", " ms)", " min)"]
                .iter()
                .any(|t| v[p..].ends_with(t))
            {
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
/// "Result: ..." (3.11.7, 3.12), "Tests result: ...", "All 9 tests OK.",
/// "1 test OK." (3.11.2 prints only these).
pub fn totals(log: &str) -> Option<String> {
    let heads = [
        "Total tests:",
        "Total test files:",
        "Result:",
        "Tests result:",
    ];
    // ("All 9 tests OK.", "1 test OK.", not -v's "Trying 20 threads ... OK.")
    let ok = |l: &str| match l.split_whitespace().collect::<Vec<_>>()[..] {
        ["All", n, "tests", "OK."] | [n, "test" | "tests", "OK."] => n.parse::<u32>().is_ok(),
        _ => false,
    };
    let lines: Vec<&str> = (log.lines())
        .filter(|l| heads.iter().any(|h| l.starts_with(h)) || ok(l))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// `python -m test` by `python` (an interpreter's command, its
/// environment set), with junit output, in a fresh `DIR/cwd-TAG`; `host`
/// (a Python that runs here) summarizes the junit file. The log goes to
/// `DIR/log-TAG.txt`, the junit file stays at `DIR/junit-TAG.xml`.
pub fn run(
    mut python: Command,
    host: Command,
    dir: &Path,
    tag: &str,
    tests: &[&str],
    s: &Suite,
) -> SuiteRun {
    let launch = |cwd: &Path, env: Vec<(&str, PathBuf)>, args: Vec<OsString>| {
        python.current_dir(cwd);
        for (k, v) in env {
            python.env(k, v);
        }
        output(python.args(args))
    };
    run_launched(launch, host, dir, tag, tests, s)
}

/// [`run`] for an interpreter inside the Debian sid chroot
/// (`super::sid`): `python` and `env` are as seen inside, `dir` is a host
/// folder inside the chroot (a [`super::sid::Scratch`]'s); the test package
/// is the chroot's own unless `s.test_package` (a host path inside the
/// chroot) says otherwise. The junit file is summarized by the host's
/// `python3`.
pub fn run_in_sid(
    python: &str,
    env: &[(&str, &str)],
    dir: &Path,
    tag: &str,
    tests: &[&str],
    s: &Suite,
) -> SuiteRun {
    let root = sid::root();
    let inside = |p: &Path| -> String {
        let rel = p.strip_prefix(root).unwrap_or_else(|_| {
            panic!(
                "{} is not inside the sid chroot {}",
                p.display(),
                root.display()
            )
        });
        format!("/{}", rel.display())
    };
    let launch = |cwd: &Path, more: Vec<(&str, PathBuf)>, args: Vec<OsString>| {
        let more: Vec<(&str, String)> = more.iter().map(|(k, v)| (*k, inside(v))).collect();
        let mut all: Vec<(&str, &str)> = env.to_vec();
        all.extend(more.iter().map(|(k, v)| (*k, v.as_str())));
        let args: Vec<String> = args
            .iter()
            .map(|a| match Path::new(a) {
                p if p.starts_with(root) => inside(p),
                _ => a.to_string_lossy().into_owned(),
            })
            .collect();
        let mut argv = vec![python];
        argv.extend(args.iter().map(String::as_str));
        output(&mut sid::command_in(&inside(cwd), &argv, &all))
    };
    let host = Command::new(super::find_tool(
        &["python3"],
        "install the Debian package `python3`",
    ));
    run_launched(launch, host, dir, tag, tests, s)
}

/// [`run`]'s body: `launch(cwd, env, args)` runs the interpreter.
fn run_launched(
    launch: impl FnOnce(&Path, Vec<(&str, PathBuf)>, Vec<OsString>) -> Output,
    host: Command,
    dir: &Path,
    tag: &str,
    tests: &[&str],
    s: &Suite,
) -> SuiteRun {
    let cwd = dir.join(format!("cwd-{tag}"));
    let _ = std::fs::remove_dir_all(&cwd);
    std::fs::create_dir_all(&cwd).unwrap();
    let xml = dir.join(format!("junit-{tag}.xml"));
    let _ = std::fs::remove_file(&xml);
    let mut env = Vec::new();
    if let Some(pkg) = s.test_package {
        let path = dir.join("pythonpath");
        if !path.join("test").exists() {
            std::fs::create_dir_all(&path).unwrap();
            std::os::unix::fs::symlink(pkg, path.join("test")).unwrap();
        }
        env.push(("PYTHONPATH", path));
    }
    let mut args: Vec<OsString> = ["-m", "test", "--timeout=900"].map(OsString::from).into();
    match s.verbose {
        true => args.push("-v".into()),
        false => args.extend(["--junit-xml".into(), xml.clone().into_os_string()]),
    };
    if s.jobs > 1 {
        args.push(format!("-j{}", s.jobs).into());
    }
    args.extend(tests.iter().map(OsString::from));
    let out = launch(&cwd, env, args);
    // The exit status is deliberately not required to be 0: a test failing
    // on the stock link as well is not ours to fix; equality is what counts.
    let log = format!(
        "[{tag}: exit {}]\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join(format!("log-{tag}.txt")), &log).unwrap();
    let run = load(host, dir, tag, s.verbose);
    run.unwrap_or_else(|| panic!("regrtest reported no test case for {tag}:\n{log}"))
}

/// The run [`run`] left in `dir` under `tag`, if it is there and ran
/// test cases.
pub fn load(mut host: Command, dir: &Path, tag: &str, verbose: bool) -> Option<SuiteRun> {
    let xml = dir.join(format!("junit-{tag}.xml"));
    let log = std::fs::read_to_string(dir.join(format!("log-{tag}.txt"))).ok()?;
    let cases = if verbose {
        verbose_cases(&log)
    } else {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/relink_support/junit_summary.py"
        );
        let summary = run_text(
            host.arg("-I")
                .arg(script)
                .arg(xml.is_file().then_some(&xml)?),
        );
        (summary.lines())
            .filter_map(|l| l.split_once('\t'))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let cases: BTreeMap<String, String> = cases;
    (!cases.is_empty()).then(|| SuiteRun {
        modules: parse_verdicts(&log),
        cases,
        log,
    })
}

/// `-v`'s `test_x (test.test_m.C.test_x) ... ok` lines: test id -> outcome,
/// in junit's words where it has them.
fn verbose_cases(log: &str) -> BTreeMap<String, String> {
    let case = |l: &str| -> Option<(String, String)> {
        let (case, outcome) = l.rsplit_once(" ... ")?;
        let id = case
            .strip_suffix(')')?
            .split_once(" (")
            .filter(|c| c.0.starts_with("test"))?
            .1;
        let outcome = match outcome.trim() {
            "ok" => "passed",
            "FAIL" => "failure",
            "ERROR" => "error",
            o if o.starts_with("skipped") => "skipped",
            o @ ("expected failure" | "unexpected success") => o,
            _ => return None,
        };
        Some((id.to_string(), outcome.to_string()))
    };
    log.lines().filter_map(case).collect()
}

/// Top-level test modules on which the two runs disagree, with reasons;
/// `expected` differences left out.
pub fn disagreements(
    ours: &SuiteRun,
    stock: &SuiteRun,
    expected: &[(&str, &str)],
) -> BTreeMap<String, Vec<String>> {
    let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let ids: BTreeSet<&String> = ours.cases.keys().chain(stock.cases.keys()).collect();
    let mut excused = BTreeSet::new();
    for id in ids {
        let (a, b) = (ours.cases.get(id), stock.cases.get(id));
        if a != b {
            if expected.iter().any(|(e, _)| e == id) {
                excused.insert(module_of(id));
                continue;
            }
            let list = bad.entry(module_of(id)).or_default();
            if list.len() < 40 {
                list.push(format!("{id}: ours {a:?}, stock {b:?}"));
            }
        }
    }
    let top = |m: &str| m.split('.').next().unwrap().to_string();
    let names: BTreeSet<&String> = ours.modules.keys().chain(stock.modules.keys()).collect();
    for n in names {
        let (a, b) = (ours.modules.get(n), stock.modules.get(n));
        if a != b && !excused.contains(&top(n)) {
            (bad.entry(top(n)).or_default()).push(format!("verdict: ours {a:?}, stock {b:?}"));
        }
    }
    let (ca, cb) = (ours.counts(), stock.counts());
    for n in ca.keys().chain(cb.keys()).collect::<BTreeSet<_>>() {
        let (a, b) = (ca.get(n), cb.get(n));
        if a != b && !excused.contains(n) {
            bad.entry(n.clone()).or_default().push(format!(
                "counts [total, passed, skipped, failure, error]: ours {a:?}, stock {b:?}"
            ));
        }
    }
    bad
}

/// Run `s` on the stock link and on ours of build `b` and require the same
/// outcomes ([`compare_with_stock`]). Returns our run.
pub fn check_matches_stock(
    b: &Build,
    stock: &Path,
    ours: &Path,
    dir: &Path,
    s: &Suite,
) -> SuiteRun {
    let both = |tag: &str, tests: &[&str], s: &Suite| -> (SuiteRun, SuiteRun) {
        let on = |exe: &Path, side: &str| {
            let tag = format!("{side}{tag}");
            run(b.python(exe, dir), b.host_python(), dir, &tag, tests, s)
        };
        let run_stock = || on(stock, "stock");
        let run_ours = || on(ours, "ours");
        if s.concurrent {
            std::thread::scope(|scope| {
                let st = scope.spawn(run_stock);
                (run_ours(), st.join().unwrap())
            })
        } else {
            let st = run_stock();
            (run_ours(), st)
        }
    };
    compare_with_stock(b.label, &both, s)
}

/// [`check_matches_stock`] inside the Debian sid chroot: `stock` and
/// `ours` are interpreters as seen inside (`PYTHONHASHSEED` unset, no other
/// variable), `dir` a host folder inside the chroot. Returns our run.
pub fn check_sid_matches_stock(
    label: &str,
    stock: &str,
    ours: &str,
    dir: &Path,
    s: &Suite,
) -> SuiteRun {
    let both = |tag: &str, tests: &[&str], s: &Suite| -> (SuiteRun, SuiteRun) {
        let on =
            |exe: &str, side: &str| run_in_sid(exe, &[], dir, &format!("{side}{tag}"), tests, s);
        if s.concurrent {
            std::thread::scope(|scope| {
                let st = scope.spawn(|| on(stock, "stock"));
                (on(ours, "ours"), st.join().unwrap())
            })
        } else {
            let st = on(stock, "stock");
            (on(ours, "ours"), st)
        }
    };
    compare_with_stock(label, &both, s)
}

/// Takes out of `bad` the modules of `s.expected_verdicts` whose only
/// difference is their verdict; what was excused, with the reasons.
fn excuse_verdicts(bad: &mut BTreeMap<String, Vec<String>>, s: &Suite) -> Vec<String> {
    let mut seen = Vec::new();
    for (m, why) in s.expected_verdicts {
        if bad
            .get(*m)
            .is_some_and(|l| l.iter().all(|p| p.starts_with("verdict: ")))
        {
            let l = bad.remove(*m).unwrap();
            seen.push(format!("{m}: {} ({why})", l.join("; ")));
        }
    }
    seen
}

/// Runs tests on ours and on the stock link: (tag, tests, suite) -> (ours, stock).
pub type RunBoth<'a> = dyn Fn(&str, &[&str], &Suite) -> (SuiteRun, SuiteRun) + 'a;

/// `both(tag, tests, suite)` runs `tests` on ours and on the stock link
/// (the first time with tag "", then "-rerun"). Both runs must really have
/// run the suite and agree (after one serial re-run of the disagreeing
/// modules on both sides, to tell a flaky test from a real difference),
/// totals included. Returns our run.
pub fn compare_with_stock(label: &str, both: &RunBoth, s: &Suite) -> SuiteRun {
    let started = std::time::Instant::now();
    let (ours_run, stock_run) = both("", s.tests, s);
    for (tag, r) in [("stock", &stock_run), ("ours", &ours_run)] {
        let counts = r.counts();
        for m in s.tests {
            let n = counts.get(*m).map_or(0, |c| c[0]);
            let skipped = r.modules.get(*m).is_some_and(|v| v.starts_with("skipped"));
            assert!(
                n >= 3 || skipped,
                "{tag}: {n} junit results for {m}:\n{}",
                r.log
            );
        }
        let n = r.cases.len();
        assert!(
            n > s.min_cases,
            "{tag}: only {n} test cases ran:\n{}",
            r.log
        );
        if s.jobs > 1 {
            // (in-process runs print no verdict for a passing module)
            assert_eq!(
                r.modules.len(),
                s.tests.len(),
                "{tag}: verdicts:\n{}",
                r.log
            );
        }
    }
    let mut bad = disagreements(&ours_run, &stock_run, s.expected);
    let mut verdicts_seen = excuse_verdicts(&mut bad, s);
    let expected_seen: Vec<String> = (s.expected.iter())
        .filter(|(id, _)| ours_run.cases.get(*id) != stock_run.cases.get(*id))
        .map(|(id, why)| format!("{id}: {why}"))
        .collect();
    if bad.is_empty() && expected_seen.is_empty() && verdicts_seen.is_empty() {
        // regrtest's own totals ("Total tests: run=2,140 skipped=110")
        let (a, b) = (totals(&ours_run.log), totals(&stock_run.log));
        assert_eq!(
            a, b,
            "regrtest totals differ:\n{}\n\n{}",
            ours_run.log, stock_run.log
        );
        assert!(a.is_some(), "no totals line:\n{}", ours_run.log);
    } else if !bad.is_empty() {
        let again: Vec<String> = bad.keys().cloned().collect();
        let again: Vec<&str> = again.iter().map(String::as_str).collect();
        eprintln!("re-running {again:?} after a first disagreement: {bad:#?}");
        let serial = Suite { jobs: 1, ..*s };
        let (o2, s2) = both("-rerun", &again, &serial);
        bad = disagreements(&o2, &s2, s.expected);
        verdicts_seen.extend(excuse_verdicts(&mut bad, s));
        assert!(
            bad.is_empty(),
            "ours and stock disagree (after a re-run): {bad:#?}\n\n{}\n\n{}",
            o2.log,
            s2.log
        );
    }
    for e in expected_seen.iter().chain(&verdicts_seen) {
        eprintln!("  expected difference: {e}");
    }
    let summary: Vec<String> = (ours_run.counts().iter())
        .map(|(m, [t, p, s, f, e])| {
            format!("{m}: {t} run, {p} passed, {s} skipped, {f} failed, {e} errors")
        })
        .collect();
    eprintln!(
        "{label}: CPython test suite{}, identical on ours and stock ({:.1} s):\n  {}",
        s.test_package
            .map(|p| format!(" from {}", p.display()))
            .unwrap_or_default(),
        started.elapsed().as_secs_f64(),
        summary.join("\n  ")
    );
    ours_run
}
