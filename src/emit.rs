//! `emit`: inputs -> graph -> layout -> object file, written atomically.

mod collect;
mod depfile;
mod parallel;
mod read;

pub use collect::{collect, module_tables, Collected};
pub use read::read_graph;

use crate::error::{Error, Result};
use crate::frozen::Tables;
use crate::graph::Graph;
use crate::input::Marshalled;
use crate::output::{write_atomically, write_atomically_with};
use crate::rotables::RoTables;
use crate::stubs::{self, Scheme};
use crate::target::Target;
use crate::version::Version;
use crate::{objfile, place};
use std::io::Seek;
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
    /// The target's stdlib sources (default: beside the archive).
    pub stdlib: Option<PathBuf>,
    /// Folders searched first by `--freeze`/`--trace` (an application's).
    pub paths: Vec<PathBuf>,
    /// The headers of the `modules_from` archive's build, for reading its
    /// layout from its debug info when the built-in table does not fit it
    /// ([`fit_layout`]; default: `compile_with`'s `INCLUDEPY`).
    pub include: Option<PathBuf>,
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

/// Whether the version's objects always replace `frozen.o` (a load hook
/// recognizes modules by the marshal bytes of the tables it writes).
pub fn needs_tables(v: &Version) -> bool {
    !v.contract.entry.wrapped().is_empty()
}

/// The reason tables are needed, for an error about them.
fn tables_needed(v: &Version, e: Error) -> Error {
    if !needs_tables(v) {
        return e;
    }
    let (a, b) = v.layout.version;
    Error::msg(format!(
        "CPython {a}.{b}: the object replaces frozen.o (the runtime loads frozen modules from the \
         module tables' marshal bytes, which the object recognizes): give --modules-from \
         LIBPYTHON.a, whose frozen.o the tables start from"
    ))
}

/// The `--modules-from` archive's layout, when the built-in table of its
/// X.Y does not fit it.
///
/// A table is generated from one release (`Layout::release`); another
/// release of the same X.Y may lay the runtime out otherwise (3.13.5's
/// global strings are not 3.13.0's). The archive is first checked against
/// the built-in table ([`crate::input::verify`]); when the check passes,
/// nothing changes. When it fails for an archive of another release that
/// carries DWARF (CPython compiles with `-g` by default), the layout is
/// generated from the archive itself, as `gen-layout` would write it,
/// with `compile_with` (the archive's own interpreter) for the probes and
/// `include` (or that interpreter's `INCLUDEPY`) for the headers; the
/// version's contract is kept, and the archive is then checked against the
/// generated table like any other. Otherwise the check's refusal names
/// both releases and what to do.
///
/// The archive's module tables and identity (read in the same pass as
/// the check), and, when the layout was generated, the options with the
/// generated version.
pub fn fit_layout(opts: &Options, t0: Instant) -> Result<Fitted> {
    let Some(ar) = &opts.modules_from else {
        return Ok(Fitted::default());
    };
    let table = opts.version.layout;
    let (a, b) = table.version;
    let c = crate::input::archive::check(ar, table)?;
    let release = &c.identity.version;
    let misfit = match c.fits {
        Ok(tables) => {
            if *release != table.release {
                log(
                    opts,
                    t0,
                    format_args!(
                        "CPython {release}: the built-in {a}.{b} table (from CPython {}) fits \
                         the archive",
                        table.release
                    ),
                );
            }
            return Ok(Fitted {
                opts: None,
                archive: Some((tables, c.identity)),
            });
        }
        Err(misfit) => misfit,
    };
    if *release == table.release {
        return Err(misfit);
    }
    // What the check found, without its advice (given below instead).
    let what = misfit
        .message
        .split(": this build's layout")
        .next()
        .unwrap_or(&misfit.message)
        .to_string();
    let Some(py) = opts.compile_with.as_ref().filter(|_| c.debug_info) else {
        let todo = if c.debug_info {
            format!(
                "give --compile-with PYTHON (the interpreter of this build, CPython {release}) \
                 to read the layout from the archive's debug info"
            )
        } else {
            "the archive has no debug info to read the layout from: rebuild it with -g \
             (CPython's default CFLAGS), or write a table from a -g build with `pyfreeze-obj \
             gen-layout`"
                .to_string()
        };
        return Err(Error::file(
            ar,
            format!(
                "{what}: the built-in {a}.{b} table (from CPython {}) does not fit CPython \
                 {release}; {todo}",
                table.release
            ),
        ));
    };
    let generated = crate::genlayout::generate(&crate::genlayout::Options {
        archive: ar.clone(),
        python: Some(py.clone()),
        include: opts.include.clone(),
        types: None,
    })
    .map_err(|e| {
        Error::msg(format!(
            "CPython {release} does not fit the built-in {a}.{b} table (from CPython {}), and \
             reading its layout from the archive's debug info failed: {e}",
            table.release
        ))
    })?;
    log(
        opts,
        t0,
        format_args!(
            "CPython {release}: the built-in {a}.{b} table is CPython {}'s ({what}); layout read \
             from {}'s debug info",
            table.release,
            ar.display()
        ),
    );
    let version: &'static Version = Box::leak(Box::new(Version {
        layout: generated.layout,
        contract: opts.version.contract,
    }));
    Ok(Fitted {
        archive: Some(crate::input::archive::read_tables(ar, generated.layout)?),
        opts: Some(Options {
            version,
            ..opts.clone()
        }),
    })
}

/// What [`fit_layout`] found.
#[derive(Default)]
pub struct Fitted {
    /// The options with a generated version, when the built-in table does
    /// not fit the archive.
    pub opts: Option<Options>,
    /// The `--modules-from` archive's module tables and identity, checked
    /// against the layout the options name.
    pub archive: Option<(Tables, crate::input::archive::Identity)>,
}

/// Lay the graph out and write the object file's bytes.
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

/// Everything an object file is made of: the placed data, the tables the
/// stubs walk, and the stubs.
pub struct LaidOut {
    image: place::Image,
    rodata: RoTables,
    stubs: crate::arch::Stubs,
    /// All but `object_bytes`.
    pub stats: Stats,
}

impl LaidOut {
    /// The object file, borrowing the data and code.
    pub fn object(&self, opts: &Options) -> Result<object::write::Object<'_>> {
        objfile::build(&opts.target, &self.image, &self.rodata, &self.stubs)
    }
}

/// Lay the graph out, build the read-only tables and lower the stub
/// program.
pub fn lay_out(opts: &Options, graph: &Graph, tables: Option<&Tables>) -> Result<LaidOut> {
    check_runtime_known(opts)?;
    let (v, l) = (opts.version, opts.version.layout);
    let mut image = place::place(
        graph,
        v,
        opts.target.wchar_size,
        l.runtime_shift(opts.target.arch),
        opts.lazy,
    )?;
    if let Some(t) = tables {
        crate::tables::append(&mut image, l, t);
    }
    let wrapped = matches!(v.contract.entry, crate::version::Entry::Wrapped(_));
    if !wrapped {
        // Only a load hook looks modules up by their marshal bytes.
        image.blobs.clear();
    }
    let mut slots = stubs::Slots::default();
    if stubs::needs_main_interp(v.contract) {
        let at = image.alloc(l.ptr_size as u64);
        let main = l.interp.main.on(opts.target.arch).off;
        let target = image.extern_target(l.runtime.symbol, main);
        image.relocs.push(place::Reloc {
            offset: at,
            target,
            owner: crate::graph::SHARED,
        });
        slots.main_interp = at;
    }
    if let (Some(lo), Some(hi)) = (
        image.blobs.iter().map(|b| b.data).min(),
        image.blobs.iter().map(|b| b.data + b.size).max(),
    ) {
        slots.blobs = (lo, hi);
    }
    let scheme = if opts.lazy || !v.contract.entry.has_eager() {
        image.defer_relocations();
        let flags = image.add_module_flags();
        Scheme::Lazy {
            flags,
            extern_table: image.fixups.as_ref().map_or(0, |f| f.extern_table),
        }
    } else {
        Scheme::Eager
    };
    let pristine = stubs::needs_pristine(v.contract, scheme).then_some(l.code.code_adaptive);
    let rodata = RoTables::build(&image, pristine)?;
    let program = stubs::program(
        v,
        &image.accessors,
        &rodata,
        scheme,
        slots,
        opts.target.arch,
    );
    let stubs = opts.target.arch.lower(opts.target.conv, &program);
    let stats = Stats {
        modules: graph.modules.len(),
        code_objects: image.codes.len(),
        data_bytes: image.data.len(),
        relocations: image.relocs.len() + stubs.relocs.len(),
        object_bytes: 0,
    };
    Ok(LaidOut {
        image,
        rodata,
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
    let fitted = fit_layout(opts, t0)?;
    let opts = fitted.opts.as_ref().unwrap_or(opts);
    let collected = collect(opts, fitted.archive)?;
    let tables = if opts.frozen_tables || needs_tables(opts.version) {
        Some(module_tables(&collected).map_err(|e| tables_needed(opts.version, e))?)
    } else {
        None
    };
    let flags = opts.version.contract.entry.link_flags();
    if !flags.is_empty() {
        log(
            opts,
            t0,
            format_args!("link the interpreter with: {}", flags.join(" ")),
        );
    }
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
        write_atomically(dep, depfile::depfile_rule(opts, output, &mods).as_bytes())?;
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
