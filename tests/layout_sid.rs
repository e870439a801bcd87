//! The 3.14 and 3.15 layout tables (`src/layout/py314.rs`, `py315.rs`)
//! are byte for byte what `gen-layout --types-from` writes for Debian
//! sid's release builds: inside the sid chroot (~/.cache/pyfreeze-obj/sid,
//! whose archives need its glibc), the chroot's gcc compiles
//! src/genlayout/types.c with the build's PY_CORE_CFLAGS and the host-built
//! binary runs there. A missing chroot fails the test with how to build it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn chroot() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    let r = Path::new(&home).join(".cache/pyfreeze-obj/sid");
    assert!(
        r.join("usr/bin/python3.14").is_file() && r.join("usr/bin/python3.15").is_file(),
        "no Debian sid chroot with python3.14/3.15 at {}: build it with `debootstrap \
         --variant=minbase sid DIR` and install gcc libc6-dev python3.14 libpython3.14-dev \
         python3.15 libpython3.15-dev in it",
        r.display()
    );
    r
}

/// Run `script` (sh) inside the chroot, in a fresh folder holding
/// types.c and the test's pyfreeze-obj binary, after
/// `types{N}.o` is compiled there for sid's python`v` (`V`, `N`, `L` (the
/// config folder) are set): (success, stdout, stderr, the folder's file
/// `keep` if any).
fn in_sid(v: &str, script: &str, keep: &str) -> (bool, String, String, Option<Vec<u8>>) {
    let r = chroot();
    let n = v.replace('.', "");
    let rel = format!(
        "tmp/pfo-layout-sid-{}-{n}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let dir = r.join(&rel);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/genlayout/types.c");
    std::fs::copy(&src, dir.join("types.c")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pyfreeze-obj"), dir.join("pyfreeze-obj")).unwrap();
    let full = format!(
        "set -e\ncd /{rel}\nV={v}; N={n}; L=/usr/lib/python$V/config-$V-x86_64-linux-gnu\n\
         CF=$(python$V -c \"import sysconfig; print(sysconfig.get_config_var('PY_CORE_CFLAGS'))\")\n\
         gcc $CF -g -fno-eliminate-unused-debug-types -I/usr/include/python$V \
         -I/usr/include/python$V/internal -c types.c -o types$N.o\n{script}"
    );
    std::fs::write(dir.join("run.sh"), full).unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--fork", "sh", "-c"])
        .arg(format!(
            "mount -t proc proc '{0}/proc' && chroot '{0}' sh /{rel}/run.sh",
            r.display()
        ))
        .output()
        .expect("unshare (util-linux) is needed to run in the sid chroot");
    let kept = std::fs::read(dir.join(keep)).ok();
    let _ = std::fs::remove_dir_all(&dir);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.success(),
        text(&out.stdout),
        text(&out.stderr),
        kept,
    )
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The gen-layout command the tables come from (in the folder `in_sid`
/// prepares), with extra arguments.
const GEN: &str = "./pyfreeze-obj gen-layout --archive $L/libpython$V.a --types-from types$N.o \
                   --python /usr/bin/python$V";

/// gen-layout's output for sid's `v` (`3.14`), run inside the chroot.
fn gen_in_sid(v: &str) -> String {
    let (ok, out, err, text) = in_sid(
        v,
        &format!("{GEN} -o py$N.rs\n"),
        &format!("py{}.rs", v.replace('.', "")),
    );
    assert!(ok, "gen-layout in sid for {v} failed: {out}{err}");
    String::from_utf8(text.unwrap()).unwrap()
}

/// gen-layout refuses after `prepare` (sh, in the folder): exit code 1,
/// one error line containing `expect`.
fn refuses_in_sid(v: &str, prepare: &str, args: &str, expect: &str) {
    let script = format!(
        "{prepare}\nset +e\n{GEN} {args} -o out.rs 2>err.txt\necho \"exit $?\" >>err.txt\n"
    );
    let (ok, out, err, got) = in_sid(v, &script, "err.txt");
    assert!(ok, "preparing the refusal for {v} failed: {out}{err}");
    let got = String::from_utf8(got.unwrap_or_default()).unwrap();
    let lines: Vec<&str> = got.lines().collect();
    assert!(
        lines.len() == 2
            && lines[0].starts_with("pyfreeze-obj: error: ")
            && lines[0].contains(expect)
            && lines[1] == "exit 1",
        "gen-layout for {v}: expected one error line with {expect:?} and exit 1, got:\n{got}"
    );
}

/// A copy of sid's installed headers for `V` in ./inc with `sed` applied
/// to `file` (relative to the include folder); the edit must change it.
fn edited_headers(file: &str, sed: &str) -> String {
    format!(
        "cp -r /usr/include/python$V inc\n\
         cp inc/{file} orig.h\n\
         sed -i '{sed}' inc/{file}\n\
         ! cmp -s orig.h inc/{file}\n"
    )
}

fn table_is_generated(v: &str, table: &str, l: &pyfreeze_obj::layout::Layout) {
    let want = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(table)).unwrap();
    let got = gen_in_sid(v);
    assert!(
        got == want,
        "{table} is not what gen-layout writes for sid's {v} (regenerate it as \
         tests/layout_sid.rs does)"
    );
    // The table is the one compiled in.
    assert_eq!(
        l.version,
        (3, v[2..].parse().unwrap()),
        "{table} is not layout::PY{}",
        v.replace('.', "")
    );
}

/// The value the committed table compiles to is the one the generator
/// derives (the writer writes what it derived): `generate` on the host,
/// from the chroot's archive and headers, the types object compiled in
/// the chroot, and the chroot's interpreter (through unshare and chroot).
fn value_is_generated(v: &str, table: &str, l: &pyfreeze_obj::layout::Layout) {
    let r = chroot();
    let n = v.replace('.', "");
    let (ok, out, err, obj) = in_sid(v, "", &format!("types{n}.o"));
    assert!(
        ok && obj.is_some(),
        "compiling types.c in sid for {v}: {out}{err}"
    );
    let dir = std::env::temp_dir().join(format!("pfo-layout-sid-value-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let types = dir.join(format!("types{n}.o"));
    std::fs::write(&types, obj.unwrap()).unwrap();
    let python = dir.join(format!("python{v}"));
    std::fs::write(
        &python,
        format!(
            "#!/bin/sh\nexec unshare --mount --fork chroot '{}' /usr/bin/python{v} \"$@\"\n",
            r.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let g = pyfreeze_obj::genlayout::generate(&pyfreeze_obj::genlayout::Options {
        archive: r.join(format!(
            "usr/lib/python{v}/config-{v}-x86_64-linux-gnu/libpython{v}.a"
        )),
        python: Some(python),
        include: Some(r.join(format!("usr/include/python{v}"))),
        types: Some(types),
    });
    let _ = std::fs::remove_dir_all(&dir);
    let g = g.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(format!("{:#?}", g.layout), format!("{l:#?}"));
    let want = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(table)).unwrap();
    assert!(
        g.text == want,
        "{table}: the host's generate() writes another text"
    );
}

#[test]
fn py314_value_is_what_the_generator_derives() {
    value_is_generated("3.14", "src/layout/py314.rs", &pyfreeze_obj::layout::PY314);
}

#[test]
fn py315_value_is_what_the_generator_derives() {
    value_is_generated("3.15", "src/layout/py315.rs", &pyfreeze_obj::layout::PY315);
}

#[test]
fn py314_table_is_what_gen_layout_writes_in_sid() {
    table_is_generated("3.14", "src/layout/py314.rs", &pyfreeze_obj::layout::PY314);
}

#[test]
fn py315_table_is_what_gen_layout_writes_in_sid() {
    table_is_generated("3.15", "src/layout/py315.rs", &pyfreeze_obj::layout::PY315);
}

/// 3.15's quickening and first-traceable facts are checked against the
/// interpreter's own constructor: a RESUME counter macro, a GET_ITER oparg
/// macro or a RESUME location macro that is not what the runtime does is
/// refused.
#[test]
fn generator_checks_315_quickening_against_the_interpreter() {
    let resume = edited_headers(
        "internal/pycore_backoff.h",
        "s/^#define RESUME_INITIAL_VALUE .*/#define RESUME_INITIAL_VALUE 8189/",
    );
    let msg = "quickening differs from the interpreter's";
    refuses_in_sid("3.15", &resume, "--include inc", msg);
    let get_iter = edited_headers(
        "internal/pycore_opcode_utils.h",
        "s/^#define GET_ITER_YIELD_FROM_CORO_CHECK .*/#define GET_ITER_YIELD_FROM_CORO_CHECK 1/",
    );
    refuses_in_sid("3.15", &get_iter, "--include inc", msg);
    // Which RESUME starts tracing (a generator expression's first does not).
    let gen_expr = edited_headers(
        "internal/pycore_opcode_utils.h",
        "s/^#define RESUME_AT_GEN_EXPR_START .*/#define RESUME_AT_GEN_EXPR_START 5/",
    );
    let msg = "_co_firsttraceable differs from the interpreter's";
    refuses_in_sid("3.15", &gen_expr, "--include inc", msg);
}

/// A PyCodeObject member the generator has not classified is refused
/// (a scalar added to the struct, types compiled from edited headers).
#[test]
fn generator_refuses_unclassified_code_members() {
    let prepare = edited_headers(
        "cpython/code.h",
        "s/^\\( *\\)Py_ssize_t _co_unique_id;.*/&\\n\\1int co_pfo_probe; \\\\/",
    ) + "gcc $CF -g -fno-eliminate-unused-debug-types -Iinc -Iinc/internal -c types.c -o types$N.o\n";
    refuses_in_sid(
        "3.14",
        &prepare,
        "--include inc",
        "PyCodeObject.co_pfo_probe (4 bytes at 192) is a member gen-layout has not classified",
    );
}

/// In a tier-2 build, co_executors is released through the runtime's
/// `_PyCode_Clear_Executors`; an archive without it (localized here) is
/// refused.
#[test]
fn generator_refuses_tier2_builds_without_the_executor_release() {
    let prepare = "cp $L/libpython$V.a lib.a\nar x lib.a codeobject.o\n\
                   objcopy --localize-symbol=_PyCode_Clear_Executors codeobject.o\n\
                   ar r lib.a codeobject.o\nL=.\nln -s lib.a libpython$V.a\n";
    refuses_in_sid(
        "3.14",
        prepare,
        "",
        "without _PyCode_Clear_Executors in codeobject.o: PyCodeObject.co_executors",
    );
}
