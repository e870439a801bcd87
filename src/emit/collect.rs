//! Gathering the modules to freeze: the archive's set, `FILE:MODNAME`
//! inputs and the `--freeze`/`--trace` selection, merged in order, each
//! with its marshal bytes (compiling what needs it); and the module tables
//! an object that replaces `frozen.o` writes.

use super::parallel::parallel_map;
use super::Options;
use crate::error::{Error, Result};
use crate::frozen::{accessor_symbol, Entry, Tables};
use crate::input::archive::Identity;
use crate::input::{self, compile, select, Marshalled};
use std::path::PathBuf;

enum Slot {
    Ready(Marshalled),
    Compile(compile::Request),
}

/// Every module to freeze, and what the module tables need.
#[derive(Debug)]
pub struct Collected {
    pub mods: Vec<Marshalled>,
    /// The archive's module tables, with `--modules-from`.
    pub tables: Option<Tables>,
    /// Modules beyond the archive's set: (name, is_package, accessor).
    pub added: Vec<(String, bool, String)>,
}

/// Gather every module's marshal bytes, in order: the archive's modules
/// first, then the `FILE:MODNAME` inputs, then the `--freeze`/`--trace`
/// selection. An input whose accessor is one of the archive's replaces that
/// module in place; selected modules already present are not added twice.
///
/// `archive`: the `--modules-from` archive's tables and identity, as
/// [`super::fit_layout`] read and checked them.
pub fn collect(opts: &Options, archive: Option<(Tables, Identity)>) -> Result<Collected> {
    let layout = opts.version.layout;
    // (accessor, from an explicit input?, what to do)
    let mut slots: Vec<(String, bool, Slot)> = Vec::new();
    let mut added = Vec::new();
    let archive = match (&opts.modules_from, archive) {
        (Some(ar), Some(read)) => Some((ar.as_path(), read)),
        (Some(ar), None) => Some((ar.as_path(), input::archive::read_tables(ar, layout)?)),
        (None, _) => None,
    };
    let interp = match &opts.compile_with {
        Some(py) => Some(compile::probe(py, layout, "--compile-with")?),
        None => None,
    };
    // Code compiled for an archive must be the archive's release's, from
    // the archive's own sources: another release's compiler may emit other
    // bytecode, and another build's (or the host's) stdlib other code.
    if let (Some((ar, (_, id))), Some(i), Some(py)) = (&archive, &interp, &opts.compile_with) {
        if i.version != id.version {
            return Err(Error::file(
                py,
                format!(
                    "--compile-with is CPython {} ({}), but {} is {}{}: give the interpreter of \
                     the archive's own release, which compiles what the archive's runtime expects",
                    i.version,
                    i.built,
                    ar.display(),
                    id.version,
                    id.built
                        .as_ref()
                        .map_or(String::new(), |b| format!(" ({b})")),
                ),
            ));
        }
    }
    let stdlib = target_stdlib(opts, archive.as_ref().map(|(ar, _)| *ar));
    if let Some((ar, (t, _))) = &archive {
        for m in input::archive::modules(t, ar) {
            let slot = match m.code {
                Some(code) => Slot::Ready(code),
                None => {
                    let dir = stdlib.as_ref().map_err(Clone::clone)?;
                    let rel = m.name.replace('.', "/");
                    let file = if m.is_package {
                        dir.join(rel).join("__init__.py")
                    } else {
                        dir.join(rel + ".py")
                    };
                    // No source in the stdlib (3.11's frozen_only): the
                    // interpreter's own frozen code, of the same release.
                    let code = if file.is_file() {
                        compile::Code::Stdlib(file)
                    } else {
                        compile::Code::Frozen(m.frozen_name)
                    };
                    Slot::Compile(compile::Request {
                        name: m.name,
                        accessor: m.accessor.clone(),
                        code,
                    })
                }
            };
            slots.push((m.accessor, false, slot));
        }
    }
    let tables = archive.map(|(_, (t, _))| t);
    let args: Vec<(PathBuf, String)> = opts
        .inputs
        .iter()
        .map(|a| input::split_arg(a))
        .collect::<Result<_>>()?;
    // Reading and parsing the files is independent per file: many are spread
    // over the cores. Results keep argument order (so does the first error).
    let mut loaded = parallel_map(&args, |(path, name)| {
        if path.extension().and_then(|e| e.to_str()) == Some("py") {
            if !path.is_file() {
                return Err(Error::file(path, "cannot read: no such file"));
            }
            Ok(Slot::Compile(compile::Request {
                name: name.clone(),
                accessor: accessor_symbol(name),
                code: compile::Code::Stdlib(path.clone()),
            }))
        } else {
            input::load_arg(path, name, opts.version.layout).map(Slot::Ready)
        }
    })
    .into_iter();
    let mut index: std::collections::HashMap<String, usize> = slots
        .iter()
        .enumerate()
        .map(|(i, (a, _, _))| (a.clone(), i))
        .collect();
    for (arg, (_, name)) in opts.inputs.iter().zip(&args) {
        let slot = loaded.next().expect("one result per input")?;
        let accessor = accessor_symbol(name);
        match index.get(&accessor) {
            Some(&i) if slots[i].1 => {
                return Err(Error::msg(format!(
                    "module {name} is given twice (input '{arg}'; its accessor {accessor} is taken)"
                )))
            }
            Some(&i) => slots[i] = (accessor, true, slot),
            None => {
                let pkg = args_pkg(&args, name);
                added.push((name.clone(), pkg, accessor.clone()));
                index.insert(accessor.clone(), slots.len());
                slots.push((accessor, true, slot));
            }
        }
    }
    if !opts.freeze.is_empty() || !opts.trace.is_empty() {
        let (py, interp) = opts.compile_with.as_deref().zip(interp.as_ref()).ok_or_else(|| {
            Error::msg("--freeze and --trace need --compile-with PYTHON (it finds and compiles the modules)")
        })?;
        let selection = select::resolve(py, layout, &opts.freeze, &opts.trace, &opts.paths)?;
        let mut report = Report::default();
        let mut helper = false;
        for mut sel in selection.chosen {
            let accessor = accessor_symbol(&sel.name);
            if let Some(&i) = index.get(&accessor) {
                let why = if slots[i].1 {
                    "given as a FILE:MODNAME input"
                } else {
                    "already frozen (the archive's set)"
                };
                report.skipped.push((sel.name, why.to_string()));
                continue;
            }
            let code = match sel.location {
                // A stdlib module comes from the target's stdlib, not the
                // interpreter's (which may be another build's, or the host's).
                select::Location::Stdlib => {
                    if let (Ok(target), Ok(rel)) =
                        (&stdlib, sel.source.strip_prefix(&interp.stdlib))
                    {
                        let file = target.join(rel);
                        if !file.is_file() {
                            return Err(Error::file(
                                &file,
                                format!(
                                    "module {}: the target's stdlib has no such source (the \
                                     --compile-with interpreter found {})",
                                    sel.name,
                                    sel.source.display()
                                ),
                            ));
                        }
                        sel.source = file;
                    }
                    // Where the runtime will find the file is known when the
                    // target's stdlib is the interpreter's own: then the
                    // code names it (tracebacks, inspect show the source);
                    // else `<frozen NAME>`, as for the stock modules.
                    if stdlib.as_ref().is_ok_and(|t| same_dir(t, &interp.stdlib)) {
                        compile::Code::StdlibAt(sel.source.clone())
                    } else {
                        compile::Code::Stdlib(sel.source.clone())
                    }
                }
                select::Location::App => {
                    helper = true;
                    compile::Code::App(sel.source.clone())
                }
            };
            report
                .chosen
                .push((sel.name.clone(), sel.location, sel.source));
            added.push((sel.name.clone(), sel.is_package, accessor.clone()));
            index.insert(accessor.clone(), slots.len());
            let req = compile::Request {
                name: sel.name,
                accessor: accessor.clone(),
                code,
            };
            slots.push((accessor, true, Slot::Compile(req)));
        }
        if helper {
            let name = compile::HELPER;
            let accessor = accessor_symbol(name);
            if index.contains_key(&accessor) {
                return Err(Error::msg(format!(
                    "module {name} is pyfreeze-obj's own (the modules from outside the stdlib \
                     need it): do not give it as an input"
                )));
            }
            added.push((name.to_string(), false, accessor.clone()));
            index.insert(accessor.clone(), slots.len());
            let req = compile::Request {
                name: name.to_string(),
                accessor: accessor.clone(),
                code: compile::Code::Text(compile::HELPER_SOURCE.to_string()),
            };
            slots.push((accessor, true, Slot::Compile(req)));
        }
        report.skipped.extend(selection.skipped);
        if opts.verbose {
            report.print();
        }
    }
    if slots.is_empty() {
        return Err(Error::msg(
            "no modules to freeze: give FILE:MODNAME inputs or --modules-from LIBPYTHON.a",
        ));
    }
    let requests: Vec<compile::Request> = slots
        .iter()
        .filter_map(|(_, _, s)| match s {
            Slot::Compile(r) => Some(r.clone()),
            Slot::Ready(_) => None,
        })
        .collect();
    let mut compiled = if requests.is_empty() {
        Vec::new()
    } else {
        let py = opts.compile_with.as_deref().ok_or_else(|| {
            let (a, b) = layout.version;
            let py_input = args
                .iter()
                .find(|(p, _)| p.extension().is_some_and(|e| e == "py"));
            match (py_input, &opts.modules_from) {
                (Some((src, _)), _) => Error::file(
                    src,
                    format!(
                        "a .py input needs --compile-with PYTHON: a CPython {a}.{b} interpreter \
                         compiles it"
                    ),
                ),
                (None, Some(ar)) => Error::file(
                    ar,
                    format!(
                        "the archive keeps no marshal bytes for its deep-frozen modules \
                         (CPython {a}.{b}'s frozen.o has none): give --compile-with the \
                         archive's own CPython release, which compiles them from the target's \
                         stdlib sources"
                    ),
                ),
                (None, None) => {
                    Error::msg(format!("give --compile-with a CPython {a}.{b} interpreter"))
                }
            }
        })?;
        compile::compile(py, layout, &requests)?
    }
    .into_iter();
    let mods = slots
        .into_iter()
        .map(|(_, _, s)| match s {
            Slot::Ready(m) => m,
            Slot::Compile(_) => compiled.next().expect("one result per request"),
        })
        .collect();
    Ok(Collected {
        mods,
        tables,
        added,
    })
}

/// What `--freeze`/`--trace` chose and passed over, for `-v`.
#[derive(Default)]
struct Report {
    chosen: Vec<(String, select::Location, PathBuf)>,
    skipped: Vec<(String, String)>,
}

impl Report {
    fn print(&self) {
        let app = self
            .chosen
            .iter()
            .filter(|c| c.1 == select::Location::App)
            .count();
        eprintln!(
            "--freeze/--trace: {} modules chosen ({} from the standard library, {app} from \
             elsewhere on the path, compiled with their file names), {} passed over",
            self.chosen.len(),
            self.chosen.len() - app,
            self.skipped.len()
        );
        for (name, at, path) in &self.chosen {
            let at = match at {
                select::Location::Stdlib => "stdlib",
                select::Location::App => "app",
            };
            eprintln!("  + {name} [{at}] {}", path.display());
        }
        let mut skipped: Vec<&(String, String)> = self.skipped.iter().collect();
        skipped.sort();
        for (name, why) in skipped {
            eprintln!("  - {name}: {why}");
        }
    }
}

/// Whether two paths name the same folder.
fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Where the target's stdlib sources are: `--stdlib`, else beside the
/// archive (an installed archive sits in `<stdlib>/config-X.Y-<triple>/`, a
/// build tree's at its top, beside `Lib/`). An error (for when sources are
/// needed) says where it looked.
fn target_stdlib(opts: &Options, archive: Option<&std::path::Path>) -> Result<PathBuf> {
    if let Some(dir) = &opts.stdlib {
        if !dir.join("os.py").is_file() {
            return Err(Error::file(
                dir,
                "--stdlib: not a CPython standard library folder (no os.py)",
            ));
        }
        return Ok(dir.clone());
    }
    let Some(ar) = archive else {
        return Err(Error::msg("no target stdlib: give --stdlib DIR"));
    };
    let dir = ar.parent().unwrap_or(std::path::Path::new("."));
    let candidates = [dir.parent().map(|p| p.to_path_buf()), Some(dir.join("Lib"))];
    for c in candidates.iter().flatten() {
        if c.join("os.py").is_file() {
            return Ok(c.clone());
        }
    }
    Err(Error::file(
        ar,
        format!(
            "no stdlib sources beside the archive (looked for os.py in {}): give --stdlib DIR, \
             the target's own Lib folder",
            candidates
                .iter()
                .flatten()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    ))
}

/// A `FILE:MODNAME` input is a package when its file is an `__init__`.
fn args_pkg(args: &[(PathBuf, String)], name: &str) -> bool {
    args.iter()
        .any(|(p, n)| n == name && p.file_stem().and_then(|s| s.to_str()) == Some("__init__"))
}

/// The module tables to write: the archive's, with the added modules
/// appended to the stdlib table (so `-X frozen_modules=off` turns them off
/// like the stock ones).
pub fn module_tables(c: &Collected) -> Result<Tables> {
    let mut t = c.tables.clone().ok_or_else(|| {
        Error::msg(
            "--frozen-tables needs --modules-from LIBPYTHON.a (the tables start from its frozen.o)",
        )
    })?;
    for (name, is_package, accessor) in &c.added {
        let code = c
            .mods
            .iter()
            .find(|m| m.accessor == *accessor)
            .map(|m| (m.data.clone(), 0));
        let entry = Entry {
            name: name.clone(),
            code,
            is_package: *is_package,
            get_code: Some(accessor.clone()),
        };
        t.tables[crate::frozen::STDLIB].push(entry);
    }
    Ok(t)
}
