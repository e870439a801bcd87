//! `emit`: inputs -> graph -> layout -> object file, written atomically.

use crate::arch::{Lazy, Scheme, StubSpec, TableWalk};
use crate::error::{Error, Result};
use crate::graph::{Graph, Module};
use crate::input::archive::{Entry, Tables};
use crate::input::{self, compile, select, Marshalled};
use crate::target::Target;
use crate::version::Step;
use crate::version::Version;
use crate::{marshal, objfile, place};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    pub version: &'static Version,
    /// `FILE:MODNAME` arguments.
    pub inputs: Vec<String>,
    pub modules_from: Option<PathBuf>,
    pub compile_with: Option<PathBuf>,
    /// Initialize each module's code objects on its first use instead of
    /// all of them in `_Py_Deepfreeze_Init`.
    pub lazy: bool,
    /// Modules to add: names, `pkg.*`, `stdlib` (see [`select`]).
    pub freeze: Vec<String>,
    /// Code snippets whose imported pure-Python modules to add.
    pub trace: Vec<String>,
    /// Also write the module tables (replacing `frozen.o`).
    pub frozen_tables: bool,
    /// Emit for macOS/Windows although the offsets of the runtime's shared
    /// objects are only known for Linux builds (for harnesses that supply
    /// their own `_PyRuntime`).
    pub assume_linux_runtime: bool,
    pub verbose: bool,
}

/// Counts for `-v` and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub modules: usize,
    pub code_objects: usize,
    pub data_bytes: usize,
    pub relocations: usize,
    pub object_bytes: usize,
}

fn log(opts: &Options, t0: Instant, what: std::fmt::Arguments) {
    if opts.verbose {
        eprintln!("[{:8.3} ms] {what}", t0.elapsed().as_secs_f64() * 1e3);
    }
}

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
                accessor: crate::place::accessor_symbol(name),
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
        let accessor = crate::place::accessor_symbol(name);
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
            let accessor = crate::place::accessor_symbol(&sel.name);
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
        t.tables[crate::tables::STDLIB].push(entry);
    }
    Ok(t)
}

/// Fewest items worth a thread of their own: reading a file takes tens of
/// microseconds, starting threads (and asking how many cores there are)
/// hundreds; the 23 stock headers are read faster on one thread.
const PER_THREAD: usize = 32;

/// `f` over `items` on up to as many threads as there are cores (one per
/// [`PER_THREAD`] items), results in the order of `items`.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() < 2 * PER_THREAD {
        return items.iter().map(f).collect();
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len() / PER_THREAD);
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("input reader thread panicked"))
            .collect()
    })
}

/// Read all modules into one constant graph.
///
/// Real code nests a few dozen levels, which this thread's stack holds;
/// input nesting deeper than [`marshal::SHALLOW_DEPTH`] is read again from
/// the start on a thread with room for [`marshal::MAX_DEPTH`] (a thread of
/// its own costs more than the read of the stock set: its stack, and an
/// allocator arena whose every page is new).
pub fn read_graph(mods: &[Marshalled]) -> Result<Graph> {
    match read_graph_here(mods, true)? {
        Some(graph) => Ok(graph),
        None => marshal::with_stack(|| {
            read_graph_here(mods, false).map(|g| g.expect("no shallow limit"))
        }),
    }
}

/// `Ok(None)`: `shallow`, and some module nests too deep for it.
fn read_graph_here(mods: &[Marshalled], shallow: bool) -> Result<Option<Graph>> {
    let mut graph = Graph::new();
    for m in mods {
        let read = if shallow {
            marshal::read_code_shallow(&m.data, &mut graph)
        } else {
            marshal::read_code(&m.data, &mut graph).map(Some)
        };
        let code = read.map_err(|mut e| {
            e.offset = e.offset.and_then(|o| m.offsets.map(&m.origin, o));
            let mut e = e.in_file(&m.origin);
            e.message = format!("module {}: {}", m.name, e.message);
            e
        })?;
        let Some(code) = code else {
            return Ok(None);
        };
        graph.modules.push(Module {
            name: m.name.clone(),
            accessor: m.accessor.clone(),
            code,
        });
    }
    Ok(Some(graph))
}

/// Lay the graph out and write the object file's bytes.
/// The offsets of the runtime's shared objects inside `_PyRuntime` are
/// only known for the platforms the layout table lists (glibc Linux).
fn check_runtime_known(opts: &Options) -> Result<()> {
    if opts
        .version
        .layout
        .runtime
        .known_on
        .contains(&opts.target.os)
        || opts.assume_linux_runtime
    {
        return Ok(());
    }
    Err(Error::msg(format!(
        "target {}: where CPython {}.{} keeps its shared objects inside _PyRuntime is only known \
         for Linux builds with glibc (it depends on NSIG, pthread and other platform types); \
         --assume-linux-runtime emits anyway with Linux's offsets (for a harness that \
         supplies its own _PyRuntime)",
        opts.target.triple, opts.version.layout.version.0, opts.version.layout.version.1
    )))
}

pub fn build_object(
    opts: &Options,
    graph: &Graph,
    tables: Option<&Tables>,
) -> Result<(Vec<u8>, Stats)> {
    let laid = lay_out(opts, graph, tables)?;
    let bytes = laid
        .object(opts)?
        .write()
        .map_err(|e| Error::msg(format!("cannot write the object file: {e}")))?;
    let stats = Stats {
        object_bytes: bytes.len(),
        ..laid.stats
    };
    Ok((bytes, stats))
}

/// Everything an object file is made of: the placed data, the stubs, and
/// the tables they walk.
pub struct LaidOut {
    image: place::Image,
    tables: Vec<Vec<u32>>,
    blob: Vec<u8>,
    stubs: crate::arch::Stubs,
    /// All but `object_bytes`.
    pub stats: Stats,
}

impl LaidOut {
    /// The object file, borrowing the data and code.
    pub fn object(&self, opts: &Options) -> Result<object::write::Object<'_>> {
        objfile::build(
            &opts.target,
            &self.image,
            &self.tables,
            &self.blob,
            &self.stubs,
        )
    }
}

/// Lay the graph out and assemble the stubs.
pub fn lay_out(opts: &Options, graph: &Graph, tables: Option<&Tables>) -> Result<LaidOut> {
    check_runtime_known(opts)?;
    let (l, c) = (opts.version.layout, opts.version.contract);
    let mut image = place::place(
        graph,
        opts.version,
        opts.target.wchar_size,
        l.runtime_shift(opts.target.arch),
        opts.lazy,
    )?;
    if let Some(t) = tables {
        crate::tables::append(&mut image, l, t);
    }
    let str_walk = |name, range| {
        (c.fini.contains(&Step::StrFini).then_some(c.hooks.str_fini))
            .flatten()
            .map(|callee| TableWalk {
                name,
                table: 1,
                range,
                callee,
                check_result: false,
            })
    };
    // The stub program of 3.11 and 3.12 (the only contracts so far) calls
    // both code hooks.
    let hook = |h: Option<&'static str>| h.expect("3.11/3.12 contracts name both code hooks");
    let mut tables;
    let mut blob = Vec::new();
    let scheme = if opts.lazy {
        image.defer_relocations();
        let flags = image.add_module_flags();
        tables = image.tables()?;
        // The pristine bytecode follows the tables and their sentinel.
        let (pristine, mut entries) = image.pristine_bytecode(l.code.code_adaptive);
        let mut with_entries = tables.iter().map(Vec::len).collect::<Vec<_>>();
        with_entries.push(entries.len());
        let base = objfile::blob_offset(&with_entries);
        for e in entries.iter_mut().step_by(2) {
            *e += base;
        }
        tables.push(entries);
        blob = pristine;
        Scheme::Lazy(Lazy {
            init_name: c.entry.init,
            fini_name: c.entry.fini,
            code_init: hook(c.hooks.code_init),
            code_fini: hook(c.hooks.code_fini),
            flags,
            extern_table: image.fixups.as_ref().map_or(0, |f| f.extern_table),
            // Strings owned by no single module always have valid pointers.
            fini_walks: {
                let n = image.shared_strs();
                str_walk(c.entry.fini, Some((image.strs.len() as u64 - n, n)))
                    .into_iter()
                    .collect()
            },
            str_fini: c.hooks.str_fini,
            code_adaptive: l.code.code_adaptive,
            fixed: l
                .code
                .fixed
                .iter()
                .map(|&(f, v)| (f.off, f.size, v))
                .collect(),
            runtime_state: l.code.runtime_state.iter().map(|f| f.off).collect(),
            frozenset_new: c.hooks.frozenset_new,
            decref: c.hooks.decref,
        })
    } else {
        tables = image.tables()?;
        let mut walks = vec![
            TableWalk {
                name: c.entry.init,
                table: 0,
                range: None,
                callee: hook(c.hooks.code_init),
                check_result: true,
            },
            TableWalk {
                name: c.entry.fini,
                table: 0,
                range: None,
                callee: hook(c.hooks.code_fini),
                check_result: false,
            },
        ];
        walks.extend(str_walk(c.entry.fini, None));
        Scheme::Eager { walks }
    };
    let spec = StubSpec {
        abi: opts.target.abi,
        accessors: image
            .accessors
            .iter()
            .map(|a| (a.symbol.clone(), a.code))
            .collect(),
        incref: (!l.head.immortal).then_some(l.head.refcnt.off),
        tables: tables.iter().map(|t| t.len() as u64).collect(),
        scheme,
    };
    let stubs = opts.target.arch.assemble(&spec);
    let stats = Stats {
        modules: graph.modules.len(),
        code_objects: image.codes.len(),
        data_bytes: image.data.len(),
        relocations: image.relocs.len() + stubs.relocs.len(),
        object_bytes: 0,
    };
    Ok(LaidOut {
        image,
        tables,
        blob,
        stubs,
        stats,
    })
}

/// The whole job: read, lay out, write `output` atomically, and with
/// `depfile`, a make rule listing every file the output depends on.
pub fn run(opts: &Options, output: &Path, depfile: Option<&Path>) -> Result<Stats> {
    run_keeping(opts, output, depfile).map(|(stats, _)| stats)
}

/// [`run`] for a process that exits right after: the inputs, graph and
/// laid-out data are leaked instead of freed one allocation at a time
/// (tens of thousands of them; freeing took longer than writing the file).
pub fn run_and_leak(opts: &Options, output: &Path, depfile: Option<&Path>) -> Result<Stats> {
    run_keeping(opts, output, depfile).map(|(stats, kept)| {
        std::mem::forget(kept);
        stats
    })
}

/// What [`run_keeping`] built, for its caller to free or leak.
pub struct Kept {
    _mods: Vec<Marshalled>,
    _graph: Graph,
    _laid: LaidOut,
}

fn run_keeping(opts: &Options, output: &Path, depfile: Option<&Path>) -> Result<(Stats, Kept)> {
    let t0 = Instant::now();
    let collected = collect(opts)?;
    let tables = if opts.frozen_tables {
        Some(module_tables(&collected)?)
    } else {
        None
    };
    let mods = collected.mods;
    log(
        opts,
        t0,
        format_args!(
            "read {} modules ({} marshal bytes)",
            mods.len(),
            mods.iter().map(|m| m.data.len()).sum::<usize>()
        ),
    );
    let graph = read_graph(&mods)?;
    log(
        opts,
        t0,
        format_args!("constant graph: {} distinct objects", graph.nodes.len()),
    );
    let laid = lay_out(opts, &graph, tables.as_ref())?;
    let mut stats = laid.stats;
    log(
        opts,
        t0,
        format_args!(
            "laid out {} code objects, {} bytes of data, {} relocations",
            stats.code_objects, stats.data_bytes, stats.relocations
        ),
    );
    let obj = laid.object(opts)?;
    write_atomically_with(output, |f| {
        let mut out = std::io::BufWriter::with_capacity(1 << 18, &mut *f);
        obj.write_stream(&mut out)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        drop(out);
        stats.object_bytes = f.stream_position()? as usize;
        Ok(())
    })?;
    drop(obj);
    if let Some(dep) = depfile {
        write_atomically(dep, depfile_rule(opts, output, &mods).as_bytes())?;
    }
    log(
        opts,
        t0,
        format_args!("wrote {} ({} bytes)", output.display(), stats.object_bytes),
    );
    Ok((
        stats,
        Kept {
            _mods: mods,
            _graph: graph,
            _laid: laid,
        },
    ))
}

/// A make rule: `output` depends on every input file, the archive, the
/// compiling interpreter and this tool; each dependency also gets an empty
/// rule, so that a deleted one does not break the build (like `gcc -MP`).
fn depfile_rule(opts: &Options, output: &Path, mods: &[Marshalled]) -> String {
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

/// Write to a temporary file beside `path`, then put it in the place of
/// `path` ([`replace`]): on any error `path` is left as it was and the
/// temporary file is removed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with(path, |f| f.write_all(bytes))
}

/// Put `tmp` in the place of `path`, atomically.
///
/// Renaming over an existing file makes ext4 start writing the new file
/// back at once (its auto_da_alloc heuristic for programs that neither
/// sync nor rename), and when the file being replaced is itself still
/// being written back (an output rewritten within seconds, as in a build
/// loop), the rename waits for that I/O: about a millisecond for a 1.4 MB
/// object here, more than reading the inputs. On Linux, an existing regular
/// file is swapped with `tmp` in one step (renameat2 RENAME_EXCHANGE; a
/// reader sees the old file or the new one, as with rename) and the old
/// one, now at `tmp`, is unlinked; like a compiler writing its output, this
/// leaves write-back to the kernel's schedule.
fn replace(tmp: &Path, path: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        let is_file = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
        if is_file && renameat_with(CWD, tmp, CWD, path, RenameFlags::EXCHANGE).is_ok() {
            let _ = std::fs::remove_file(tmp);
            return Ok(());
        }
    }
    std::fs::rename(tmp, path)
}

/// [`write_atomically`] with `write` filling the temporary file.
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "output is not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        drop(f);
        replace(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(path, format!("cannot write output: {e}"))
    })
}
