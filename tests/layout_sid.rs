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
        "no Debian sid chroot with python3.14/3.15 at {}: build it as \
         /work/shared/REFERENCE-3.13-3.15.md section 1 says",
        r.display()
    );
    r
}

/// gen-layout's output for sid's `v` (`3.14`), run inside the chroot.
fn gen_in_sid(v: &str) -> String {
    let r = chroot();
    let n = v.replace('.', "");
    let rel = format!("tmp/pfo-layout-sid-{}-{n}", std::process::id());
    let dir = r.join(&rel);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/genlayout/types.c");
    std::fs::copy(&src, dir.join("types.c")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pyfreeze-obj"), dir.join("pyfreeze-obj")).unwrap();
    let script = format!(
        "set -e\ncd /{rel}\n\
         CF=$(python{v} -c \"import sysconfig; print(sysconfig.get_config_var('PY_CORE_CFLAGS'))\")\n\
         gcc $CF -g -fno-eliminate-unused-debug-types -I/usr/include/python{v} \
         -I/usr/include/python{v}/internal -c types.c -o types{n}.o\n\
         ./pyfreeze-obj gen-layout --archive \
         /usr/lib/python{v}/config-{v}-x86_64-linux-gnu/libpython{v}.a \
         --types-from types{n}.o --python /usr/bin/python{v} -o py{n}.rs\n"
    );
    std::fs::write(dir.join("run.sh"), script).unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--fork", "sh", "-c"])
        .arg(format!(
            "mount -t proc proc '{0}/proc' && chroot '{0}' sh /{rel}/run.sh",
            r.display()
        ))
        .output()
        .expect("unshare (util-linux) is needed to run in the sid chroot");
    let text = std::fs::read_to_string(dir.join(format!("py{n}.rs")));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "gen-layout in sid for {v} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.unwrap()
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

#[test]
fn py314_table_is_what_gen_layout_writes_in_sid() {
    table_is_generated("3.14", "src/layout/py314.rs", &pyfreeze_obj::layout::PY314);
}

#[test]
fn py315_table_is_what_gen_layout_writes_in_sid() {
    table_is_generated("3.15", "src/layout/py315.rs", &pyfreeze_obj::layout::PY315);
}
