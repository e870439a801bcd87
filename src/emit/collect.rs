//! Gathering the modules to freeze: the archive's set, `FILE:MODNAME`
//! inputs and the `--freeze`/`--trace` selection, merged in order, each
//! with its marshal bytes (compiling what needs it); and the module tables
//! an object that replaces `frozen.o` writes.

use super::parallel::parallel_map;
use super::Options;
use crate::error::{Error, Result};
use crate::frozen::{accessor_symbol, Entry, Tables};
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
pub fn collect(opts: &Options) -> Result<Collected> {
    // (accessor, from an explicit input?, what to do)
    let mut slots: Vec<(String, bool, Slot)> = Vec::new();
    let mut added = Vec::new();
    let tables = match &opts.modules_from {
        Some(ar) => Some(input::archive::read_tables(ar, opts.version.layout)?),
        None => None,
    };
    if let (Some(ar), Some(t)) = (&opts.modules_from, &tables) {
        for m in input::archive::modules(t, ar) {
            let slot = match m.code {
                Some(code) => Slot::Ready(code),
                None => Slot::Compile(compile::Request {
                    name: m.name,
                    accessor: m.accessor.clone(),
                    source: None,
                    frozen_name: m.frozen_name,
                }),
            };
            slots.push((m.accessor, false, slot));
        }
    }
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
                source: Some(path.clone()),
                frozen_name: name.clone(),
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
        let py = opts.compile_with.as_deref().ok_or_else(|| {
            Error::msg("--freeze and --trace need --compile-with PYTHON (it finds and compiles the modules)")
        })?;
        for sel in select::resolve(py, opts.version.layout, &opts.freeze, &opts.trace)? {
            let accessor = accessor_symbol(&sel.name);
            if index.contains_key(&accessor) {
                continue;
            }
            added.push((sel.name.clone(), sel.is_package, accessor.clone()));
            index.insert(accessor.clone(), slots.len());
            let req = compile::Request {
                name: sel.name.clone(),
                accessor: accessor.clone(),
                source: Some(sel.source),
                frozen_name: sel.name,
            };
            slots.push((accessor, true, Slot::Compile(req)));
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
            let names: Vec<&str> = requests.iter().map(|r| r.name.as_str()).collect();
            Error::msg(format!(
                "no marshal bytes for {} (3.11's frozen.o keeps none; .py inputs need compiling): \
                 give --compile-with PYTHON{}.{}",
                names.join(", "),
                opts.version.layout.version.0,
                opts.version.layout.version.1
            ))
        })?;
        compile::compile(py, opts.version.layout, &requests)?
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
