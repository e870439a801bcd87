//! `--depfile`: a make rule naming every file an emitted object depends on.

use super::Options;
use crate::input::Marshalled;
use std::path::{Path, PathBuf};

/// A make rule: `output` depends on every input file, the archive, the
/// compiling interpreter and this tool; each dependency also gets an empty
/// rule, so that a deleted one does not break the build (like `gcc -MP`).
pub(super) fn depfile_rule(opts: &Options, output: &Path, mods: &[Marshalled]) -> String {
    let mut deps: Vec<PathBuf> = Vec::new();
    let mut add = |p: PathBuf| {
        if !deps.contains(&p) {
            deps.push(p);
        }
    };
    for m in mods {
        add(m.origin.clone());
    }
    if let Some(a) = &opts.modules_from {
        add(a.clone());
    }
    if let Some(p) = &opts.compile_with {
        add(p.clone());
    }
    if let Ok(exe) = std::env::current_exe() {
        add(exe);
    }
    let esc = |p: &Path| {
        p.display()
            .to_string()
            .replace('$', "$$")
            .replace(' ', "\\ ")
            .replace('#', "\\#")
    };
    let mut s = format!("{}:", esc(output));
    for d in &deps {
        s.push_str(" \\\n  ");
        s.push_str(&esc(d));
    }
    s.push('\n');
    for d in &deps {
        s.push_str(&format!("\n{}:\n", esc(d)));
    }
    s
}
