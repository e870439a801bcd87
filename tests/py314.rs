//! CPython 3.14 and 3.15 (Debian sid's 3.14.10 and 3.15.2, inside the sid
//! chroot of `tests/support/sid.rs`): our object in interpreters and in an
//! embedding program linked from Debian's static archives, on the same
//! contract steps as 3.13 plus the 3.14+ one that takes our strings out of
//! the interpreter's interned dict before its teardown.
//!
//! * `relink` of `/usr/bin/python3.X` (the CLI set traced) prints Hello
//!   world; every frozen module's code there, and in a full link of the
//!   archive with our object, is one static immortal object equal to
//!   `marshal.loads` of its bytes, quickened as the runtime's constructor
//!   does, its names interned, its `co_version` unique
//!   (`tests/py313_support/check_static.py`); a copy of the bytes and a
//!   subinterpreter get the runtime's unmarshalling.
//! * Where the runtime's constructor would build other code than ours
//!   (`-X no_debug_ranges`, 3.15's `PYTHON_JIT_*_INITIAL_*` and
//!   `PYTHON_SPECIALIZATION_OFF`), loads fall back to unmarshalling, and
//!   give what unmarshalling gives in that process.
//! * An embedding program survives three init/fini cycles with pristine
//!   code objects, and our static strings leave the interned dict with
//!   their static header and interned state back
//!   (`tests/py313_support/embed_cycle.py`); with the JIT on, executors on
//!   frozen code are released; under memcheck, no invalid access.
//! * Slow tier: CPython's test modules give the stock link's outcomes.
//! * Slice constants (marshal version 5, `fixtures/fx_slices.py`) are
//!   static objects equal to the compiler's.
//!
//! The chroot is built or reused by `tests/setup/sid.sh`; without it (or
//! root) these tests fail saying why.

#[macro_use]
mod support;

use pyfreeze_obj::version::{Version, PY314, PY315};
use std::sync::OnceLock;
use support::sid::{self, Scratch};

fn version(xy: &str) -> &'static Version {
    match xy {
        "3.14" => &PY314,
        "3.15" => &PY315,
        _ => unreachable!("{xy}"),
    }
}

/// The acceptance's command-line tool workload.
const CLI: &str = "import argparse, json, re, typing, dataclasses, pathlib, logging, \
                   subprocess, tomllib, email.message";

const SUPPORT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");

/// What one version's tests share, built once per test binary: a scratch
/// folder inside the chroot holding our object (the archive's set plus
/// json and argparse traced, and the slice fixture), the full links of
/// the archive (stock, and ours) and the support scripts.
struct Links {
    dir: Scratch,
    ours: String,
    stock: String,
    embed: String,
}

fn links(xy: &'static str) -> &'static Links {
    static CELLS: [OnceLock<Links>; 2] = [OnceLock::new(), OnceLock::new()];
    let i = sid::VERSIONS.iter().position(|v| *v == xy).unwrap();
    CELLS[i].get_or_init(|| build_links(xy))
}

fn copy_in(dir: &Scratch, from: &str, name: &str) -> String {
    let bytes = std::fs::read(format!("{SUPPORT}/{from}"))
        .unwrap_or_else(|e| panic!("{SUPPORT}/{from}: {e}"));
    dir.write(name, &bytes)
}

fn build_links(xy: &'static str) -> Links {
    let p = sid::python(xy);
    let tool = sid::install_tool();
    let dir = Scratch::new(&format!("py314-{xy}"));
    let link = copy_in(&dir, "py314_support/link.sh", "link.sh");
    for (from, name) in [
        ("py313_support/check_static.py", "check_static.py"),
        ("py313_support/embed_cycle.py", "embed_cycle.py"),
        ("lazy_support/embed.c", "embed.c"),
        ("../fixtures/fx_slices.py", "fx_slices.py"),
    ] {
        copy_in(&dir, from, name);
    }
    let obj = dir.at("ours.o");
    let slices = format!("{}:fx_slices", dir.at("fx_slices.py"));
    support::run_ok(&mut dir.command(
        &[
            tool,
            "emit",
            "--python",
            xy,
            "--modules-from",
            &p.archive,
            "--compile-with",
            &p.python,
            "--trace",
            "import json, argparse",
            "-o",
            &obj,
            &slices,
        ],
        &[],
    ));
    let flags = version(xy).contract.entry.link_flags();
    let sh = |args: &[&str]| {
        let mut all = vec!["sh", link.as_str(), xy];
        all.extend_from_slice(args);
        support::run_ok(&mut dir.command(&all, &[]));
    };
    let (ours, stock, embed) = (
        dir.at("python-ours"),
        dir.at("python-stock"),
        dir.at("embed"),
    );
    sh(&[&p.python_o, &stock]);
    let mut args = vec![p.python_o.as_str(), ours.as_str(), obj.as_str()];
    args.extend(flags.iter().map(String::as_str));
    sh(&args);
    let inc = sid::run_text(
        &[
            &p.python,
            "-I",
            "-c",
            "import sysconfig as s; print(s.get_path('include')); print(s.get_path('platinclude'))",
        ],
        &[],
    );
    let mut cc = vec!["gcc", "-c", "-O1", "-Wall", "-Werror"];
    let incs: Vec<String> = inc.lines().map(|d| format!("-I{d}")).collect();
    cc.extend(incs.iter().map(String::as_str));
    let embed_o = dir.at("embed.o");
    let embed_c = dir.at("embed.c");
    cc.extend([embed_c.as_str(), "-o", embed_o.as_str()]);
    support::run_ok(&mut dir.command(&cc, &[]));
    let mut args = vec![embed_o.as_str(), embed.as_str(), obj.as_str()];
    args.extend(flags.iter().map(String::as_str));
    sh(&args);
    Links {
        dir,
        ours,
        stock,
        embed,
    }
}

/// `exe ARGS` inside the chroot (from the scratch folder, with `env`):
/// its standard output; it must succeed.
fn run(xy: &'static str, exe: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let l = links(xy);
    let mut all = vec![exe];
    all.extend_from_slice(args);
    support::run_text(&mut l.dir.command(&all, env))
}

fn check_static(xy: &'static str, exe: &str, min_frozen: usize) -> String {
    let l = links(xy);
    let v = version(xy);
    let off = v.layout.code.version.unwrap().off.to_string();
    let min = min_frozen.to_string();
    let work = l.dir.inside().to_string();
    let script = l.dir.at("check_static.py");
    let out = run(
        xy,
        exe,
        &[&script],
        &[
            ("PY313_WORK", &work),
            ("PY313_MIN_FROZEN", &min),
            ("PY313_VERSION_OFF", &off),
        ],
    );
    assert!(out.starts_with("ok "), "{out}");
    out
}

// ---------------------------------------------------------------------------
// relink

/// `relink --trace "<the CLI set>"` of the chroot's interpreter gives one
/// that prints Hello world, runs the CLI workload as the installed one
/// does, and whose frozen code is static (no `_interpreters` in an archive
/// link: the subinterpreter check is the full link's).
fn relink_prints_hello_world(xy: &'static str) {
    let l = links(xy);
    let p = sid::python(xy);
    let exe = l.dir.at("python-relinked");
    support::run_ok(&mut l.dir.command(
        &[
            sid::install_tool(),
            "relink",
            "--python",
            &p.python,
            "--trace",
            CLI,
            "-o",
            &exe,
        ],
        &[],
    ));
    assert_eq!(
        run(xy, &exe, &["-c", support::HELLO], &[]),
        "Hello world!\n"
    );
    let code = format!(
        "{CLI}\nprint(json.dumps({{'a': [1, None]}}), re.sub('b+', 'x', 'abbbc'), \
         tomllib.loads('a = 1'))"
    );
    let want = run(xy, &p.python, &["-c", &code], &[]);
    assert_eq!(run(xy, &exe, &["-c", &code], &[]), want);
    // The CLI set's modules came in on top of the installed interpreter's.
    let count = "import _imp; print(len(_imp._frozen_module_names()))";
    let stock: usize = run(xy, &p.python, &["-c", count], &[])
        .trim()
        .parse()
        .unwrap();
    let names = "import _imp; n = _imp._frozen_module_names(); \
                 print(all(m in n for m in ('json', 'argparse', 'email.message', 'tomllib._parser')))";
    assert_eq!(run(xy, &exe, &["-c", names], &[]), "True\n");
    check_static(xy, &exe, stock + 40);
    // Start-up hooks stay the path's (Debian's stdlib has a sitecustomize,
    // which the trace sees imported): one on PYTHONPATH runs, as with the
    // installed interpreter.
    let hook = l.dir.at("hook");
    std::fs::create_dir_all(sid::host_path(&hook)).unwrap();
    std::fs::write(
        sid::host_path(&format!("{hook}/sitecustomize.py")),
        "print('EXECUTED_sitecustomize')\n",
    )
    .unwrap();
    for exe in [p.python.as_str(), exe.as_str()] {
        let out = run(xy, exe, &["-c", "pass"], &[("PYTHONPATH", &hook)]);
        assert_eq!(out, "EXECUTED_sitecustomize\n", "{exe}");
    }
}

// ---------------------------------------------------------------------------
// Static code objects

/// In the full link: every frozen code object static, immortal, equal to
/// its marshal bytes' and quickened as the constructor does; a copy of the
/// bytes and a subinterpreter get the runtime's unmarshalling.
fn frozen_code_is_static(xy: &'static str) {
    let out = check_static(xy, &links(xy).ours, 25);
    assert!(out.contains("subinterpreter: checked"), "{out}");
}

/// The fixture's slice constants are static objects of ours, equal to
/// what the compiler makes of its source, and the module runs as its
/// source does.
fn slice_constants(xy: &'static str) {
    let l = links(xy);
    let code = "import _imp, sys\n\
                data = _imp.find_frozen('fx_slices', withdata=True)[0]\n\
                c = _imp.get_frozen_object('fx_slices', data)\n\
                want = compile(open('fx_slices.py').read(), '<frozen fx_slices>', 'exec')\n\
                def consts(c):\n\
                \x20   for k in c.co_consts:\n\
                \x20       if type(k) is type(c): yield from consts(k)\n\
                \x20       elif type(k) is slice: yield k\n\
                mine, theirs = list(consts(c)), list(consts(want))\n\
                assert mine == theirs and len(mine) >= 8, (mine, theirs)\n\
                assert all(sys._is_immortal(k) for k in mine)\n\
                import fx_slices\n\
                ns = {}\n\
                exec(want, ns)\n\
                assert fx_slices.check() == ns['check'](), (fx_slices.check(), ns['check']())\n\
                print(len(mine), [hex(id(k)) for k in mine[:1]])";
    let out = run(xy, &l.ours, &["-c", code], &[]);
    let n: usize = out.split_whitespace().next().unwrap().parse().unwrap();
    assert!(n >= 8, "{out}");
    // Static: inside the executable's image (not the heap's addresses).
    let maps = run(
        xy,
        &l.ours,
        &[
            "-c",
            "import _imp, os\n\
             c = _imp.get_frozen_object('fx_slices', _imp.find_frozen('fx_slices', withdata=True)[0])\n\
             k = [k for k in c.co_consts if type(k) is slice][0]\n\
             exe = os.path.realpath('/proc/self/exe')\n\
             spans = [tuple(int(x, 16) for x in l.split()[0].split('-'))\n\
             \x20        for l in open('/proc/self/maps') if l.split()[-1] == exe]\n\
             print(any(lo <= id(k) < hi for lo, hi in spans))",
        ],
        &[],
    );
    assert_eq!(maps, "True\n");
}

// ---------------------------------------------------------------------------
// Fallbacks

/// `json.encoder` (frozen by our object, not run at start-up: its
/// bytecode is still as quickened) loaded twice in the main interpreter,
/// under `env` and `args`: whether the loads gave one object, and whether
/// it equals `marshal.loads` of the bytes in that process, adaptive
/// bytecode and positions included.
fn load_twice(xy: &'static str, args: &[&str], env: &[(&str, &str)]) -> String {
    let code = "import _imp, marshal\n\
                data = _imp.find_frozen('json.encoder', withdata=True)[0]\n\
                a = _imp.get_frozen_object('json.encoder', data)\n\
                b = _imp.get_frozen_object('json.encoder', data)\n\
                m = marshal.loads(data)\n\
                print(a is b, a == m and a._co_code_adaptive == m._co_code_adaptive,\n\
                \x20     list(a.co_positions()) == list(m.co_positions()))";
    let mut all = args.to_vec();
    all.extend(["-c", code]);
    run(xy, &links(xy).ours, &all, env)
}

/// Interpreter arguments and environment variables.
type Setting = (Vec<&'static str>, Vec<(&'static str, &'static str)>);

/// The runtime's settings under which its constructor builds other code
/// than ours: each makes loads unmarshal (what unmarshalling gives in that
/// process); the defaults give our one object.
fn fallbacks(xy: &'static str) {
    assert_eq!(load_twice(xy, &[], &[]), "True True True\n");
    let mut cases: Vec<Setting> = vec![(vec!["-X", "no_debug_ranges"], vec![])];
    if xy == "3.15" {
        for (k, v) in [
            ("PYTHON_JIT_JUMP_BACKWARD_INITIAL_VALUE", "100"),
            ("PYTHON_JIT_JUMP_BACKWARD_INITIAL_BACKOFF", "3"),
            ("PYTHON_JIT_RESUME_INITIAL_VALUE", "100"),
            ("PYTHON_JIT_RESUME_INITIAL_BACKOFF", "3"),
            ("PYTHON_SPECIALIZATION_OFF", "1"),
        ] {
            cases.push((vec![], vec![(k, v)]));
        }
    }
    for (args, env) in &cases {
        assert_eq!(
            load_twice(xy, args, env),
            "False True True\n",
            "{args:?} {env:?}: not the runtime's unmarshalling"
        );
    }
    // The stock link agrees that these settings change what the
    // constructor builds (else the fallback would prove nothing).
    if xy == "3.15" {
        let adaptive = |env: &[(&str, &str)]| {
            run(
                xy,
                &links(xy).stock,
                &[
                    "-c",
                    "import _imp, marshal\n\
                     def walk(c):\n\
                     \x20   yield c._co_code_adaptive.hex()\n\
                     \x20   for k in c.co_consts:\n\
                     \x20       if type(k) is type(c): yield from walk(k)\n\
                     print(' '.join(walk(marshal.loads(\
                     _imp.find_frozen('posixpath', withdata=True)[0]))))",
                ],
                env,
            )
        };
        let base = adaptive(&[]);
        for (_, env) in &cases[1..] {
            assert_ne!(
                adaptive(env),
                base,
                "{env:?} does not change the quickening"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Teardown

/// The embedding program's three cycles: pristine code objects in each,
/// our static strings out of the interned dict with their static header
/// back (checked for the strings no later start-up interned again). Run
/// twice: as installed, and with the JIT on (`PYTHON_JIT=1`: Debian builds
/// it in, off by default), where cycle 1 hangs executors on a frozen code
/// object and the teardown must release them.
fn embed_three_cycles(xy: &'static str) {
    // The field the runtime's executors hang on, from the layout.
    let lay = version(xy).layout;
    let executors = (lay.code.runtime_state.iter())
        .zip(lay.code.release)
        .find(|(_, r)| matches!(r, pyfreeze_obj::layout::Release::Call(_)))
        .map(|(f, _)| f.off)
        .expect("a tier-2 build's layout releases executors with a runtime call");
    // Whether cycle 1 left executors on one of the frozen code objects.
    let hung = |out: &str| {
        (out.lines())
            .filter(|l| l.starts_with("cycle 1: ") && l.contains(" runtime state set at "))
            .any(|l| {
                let set = l.rsplit_once(" at ").unwrap().1;
                set.trim_matches(['[', ']'])
                    .split(", ")
                    .any(|x| x == executors.to_string())
            })
    };
    let off = embed_cycles(xy, &[], false);
    assert!(!hung(&off), "executors without the JIT: {off}");
    let on = embed_cycles(xy, &[("PYTHON_JIT", "1")], false);
    assert!(
        hung(&on),
        "the JIT hung no executors on posixpath.commonprefix: {on}"
    );
}

/// The embedding program's three cycles under valgrind's memcheck (the
/// system allocator): nothing reads or frees memory it should not, our
/// static objects included.
fn embed_memcheck(xy: &'static str) {
    embed_cycles(xy, &[("PYTHONMALLOC", "malloc")], true);
}

/// One run of the embedding program with `env` (under memcheck with
/// `memcheck`); its output.
fn embed_cycles(xy: &'static str, extra: &[(&str, &str)], memcheck: bool) -> String {
    let l = links(xy);
    let v = version(xy);
    let lay = v.layout;
    let list = |f: &[pyfreeze_obj::layout::Field]| {
        f.iter()
            .map(|f| f.off.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let code = std::fs::read_to_string(format!("{SUPPORT}/py313_support/embed_cycle.py")).unwrap();
    let (state, scalars) = (list(lay.code.runtime_state), list(lay.code.runtime_scalars));
    let head = format!("{:#x}", lay.head.static_refcnt);
    let state_off = lay.str_.state.off.to_string();
    let mask = format!("{:#x}", lay.str_.interned_mask);
    let embed_state = l
        .dir
        .at(&format!("cycle1-{}-{memcheck}.marshal", extra.len()));
    let mut env = vec![
        ("PYTHONHOME", "/usr"),
        ("PY313_RUNTIME_STATE", &state),
        ("PY313_SCALARS", &scalars),
        ("PY313_EMBED_STATE", &embed_state),
        ("EMBED_PYTHON", xy),
        ("EMBED_STATIC_HEAD", &head),
        ("EMBED_STR_STATE_OFF", &state_off),
        ("EMBED_INTERNED_MASK", &mask),
    ];
    env.extend_from_slice(extra);
    let out = if memcheck {
        let args = [
            "--tool=memcheck",
            "--leak-check=no",
            "--error-exitcode=99",
            "-q",
            l.embed.as_str(),
            code.as_str(),
        ];
        run(xy, "valgrind", &args, &env)
    } else {
        run(xy, &l.embed, &[&code], &env)
    };
    for c in 1..=3 {
        assert!(out.contains(&format!("cycle {c} ok:")), "{out}");
        assert!(
            out.contains(&format!("embed: cycle {c} finalized")),
            "{out}"
        );
    }
    for c in 2..=3 {
        let line = (out.lines())
            .find(|l| l.starts_with(&format!("cycle {c}: static strings:")))
            .unwrap_or_else(|| panic!("no static string check in cycle {c}: {out}"));
        let restored: usize = line.split_whitespace().nth(4).unwrap().parse().unwrap();
        assert!(restored > 0, "no string of ours was left to check: {line}");
    }
    out
}

// ---------------------------------------------------------------------------
// CPython's own tests (slow tier)

/// `test_frozen test_code test_importlib test_site test_sys test_inspect
/// test_traceback test_embed` from the chroot's test package give the same
/// outcome for every test case on the full link with our object as on the
/// stock full link of the same archive (`tests/support/regrtest.rs`).
fn cpython_tests_as_stock(xy: &'static str) {
    let l = links(xy);
    let tests = support::regrtest::frozen_and_code(&["test_embed"]);
    let suite = support::regrtest::Suite {
        tests: &tests,
        jobs: 2,
        min_cases: 1000,
        ..Default::default()
    };
    support::regrtest::check_sid_matches_stock(
        &format!(
            "sid CPython {} (our object vs the stock link)",
            sid::python(xy).version
        ),
        &l.stock,
        &l.ours,
        l.dir.host(),
        &suite,
    );
}

tests! {
    sid_py314_relink_prints_hello_world: relink_prints_hello_world("3.14");
    sid_py315_relink_prints_hello_world: relink_prints_hello_world("3.15");
    sid_py314_frozen_code_is_static: frozen_code_is_static("3.14");
    sid_py315_frozen_code_is_static: frozen_code_is_static("3.15");
    sid_py314_slice_constants: slice_constants("3.14");
    sid_py315_slice_constants: slice_constants("3.15");
    sid_py314_fallbacks: fallbacks("3.14");
    sid_py315_fallbacks: fallbacks("3.15");
    sid_py314_embed_three_cycles: embed_three_cycles("3.14");
    sid_py315_embed_three_cycles: embed_three_cycles("3.15");
    sid_py314_embed_memcheck: embed_memcheck("3.14");
    sid_py315_embed_memcheck: embed_memcheck("3.15");
    slow_sid_py314_cpython_tests_as_stock: cpython_tests_as_stock("3.14");
    slow_sid_py315_cpython_tests_as_stock: cpython_tests_as_stock("3.15");
}
