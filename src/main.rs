use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use pyfreeze_obj::emit::{self, Options};
use pyfreeze_obj::target::Target;
use pyfreeze_obj::version::Version;
use std::path::PathBuf;
use std::process::ExitCode;

/// Write CPython's deep-frozen code objects straight into a relocatable
/// object file: a drop-in for the `deepfreeze.o` that CPython 3.11/3.12
/// build from a generated C file, with no C compiler involved; for 3.13,
/// which unmarshals its frozen modules at every start, static code objects
/// its loading reaches through the link.
#[derive(Parser)]
#[command(name = "pyfreeze-obj", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Emit a deep-freeze object (drop-in for CPython's deepfreeze.o; for
    /// 3.13, a replacement for frozen.o whose link needs the flags below).
    ///
    /// Examples:
    ///
    ///   # re-freeze the modules of an installed CPython 3.12
    ///   pyfreeze-obj emit --python 3.12 --modules-from $LIBPL/libpython3.12.a -o deepfreeze.o
    ///
    ///   # the way CPython's build calls its generator
    ///   pyfreeze-obj emit --python 3.12 -o deepfreeze.o \
    ///       Python/frozen_modules/importlib._bootstrap.h:importlib._bootstrap ...
    #[command(verbatim_doc_comment)]
    Emit {
        /// Target: a triple (x86_64-unknown-linux-gnu) or a short form
        /// (x86_64-linux, aarch64-linux, x86_64-macos, aarch64-macos,
        /// x86_64-windows, aarch64-windows).
        #[arg(long, default_value = "x86_64-linux")]
        target: String,
        /// CPython version whose layout to write: 3.11 to 3.15.
        #[arg(long, value_name = "X.Y")]
        python: String,
        /// Output object file (written atomically).
        #[arg(short, long, value_name = "OUT.o")]
        output: PathBuf,
        /// Take the module set, in order, and the marshal bytes kept there
        /// from the frozen.o inside this libpython archive.
        #[arg(long, value_name = "LIBPYTHON.a")]
        modules_from: Option<PathBuf>,
        /// Interpreter that compiles .py inputs, --freeze/--trace modules
        /// and the archive's modules whose marshal bytes it does not keep
        /// (3.11). Same X.Y as --python; with --modules-from, the archive's
        /// exact release (e.g. 3.11.2), and the sources it compiles are the
        /// target's (see --stdlib), never the interpreter's own.
        /// Also the interpreter whose probes read the archive's layout from
        /// its debug info, when the built-in table of its X.Y does not fit
        /// it (another release: e.g. 3.13.5 against the 3.13.0 table).
        #[arg(long, value_name = "PYTHON")]
        compile_with: Option<PathBuf>,
        /// The headers of the --modules-from archive's build (a source tree's
        /// Include folder), for reading its layout from its debug info
        /// [default: the --compile-with interpreter's INCLUDEPY].
        #[arg(long, value_name = "DIR")]
        include: Option<PathBuf>,
        /// The target's standard library sources (its Lib folder). Default:
        /// beside the --modules-from archive (`<stdlib>/config-X.Y-<triple>/`
        /// when installed, `Lib/` in a build tree). For cross builds, point it
        /// at the target's own tree (an unpacked sysroot, say).
        #[arg(long, value_name = "DIR")]
        stdlib: Option<PathBuf>,
        /// Also write a make rule listing every file the output depends on
        /// (inputs, archive, interpreter, this tool), as `gcc -MD -MP` does.
        #[arg(long, value_name = "FILE.d")]
        depfile: Option<PathBuf>,
        /// Also write the flags the interpreter's link needs for the object
        /// (3.13: the --wrap options; one line, empty when none), as the C
        /// compiler driver takes them, to this file (for makefiles).
        #[arg(long, value_name = "FILE")]
        link_flags: Option<PathBuf>,
        /// Initialize each module's code objects when its code is first
        /// requested, not all of them at start-up (CPython's scheme, the
        /// default for 3.11 and 3.12; 3.13 has only this one); Fini
        /// finalizes only what was initialized.
        #[arg(long)]
        lazy: bool,
        /// Add modules, found and compiled by --compile-with on its whole
        /// path (stdlib, site-packages, .pth folders, PYTHONPATH, --path):
        /// NAME (a module or package; a package from outside the stdlib
        /// with all its submodules), NAME.* (a package and all its
        /// submodules), or `stdlib` (every pure-Python stdlib module, tests
        /// excluded). Comma-separated; repeatable.
        #[arg(long, value_name = "MOD[,MOD...]", value_delimiter = ',')]
        freeze: Vec<String>,
        /// Add every pure-Python module that running this code (with the
        /// --compile-with interpreter) imports. Repeatable.
        #[arg(long, value_name = "CODE")]
        trace: Vec<String>,
        /// A folder --freeze and --trace search first (an application's
        /// modules). Repeatable.
        #[arg(long = "path", value_name = "DIR")]
        paths: Vec<PathBuf>,
        /// Also write the module tables (bootstrap, stdlib, test, aliases,
        /// PyImport_FrozenModules) so the object replaces frozen.o too;
        /// added modules go into the stdlib table. Needs --modules-from.
        /// Always on for 3.13.
        #[arg(long)]
        frozen_tables: bool,
        /// For macOS and Windows targets: emit although where the runtime
        /// keeps its shared objects is only known for Linux builds (use
        /// Linux's offsets; for test harnesses supplying their own runtime).
        #[arg(long)]
        assume_linux_runtime: bool,
        /// Print progress and timing on stderr.
        #[arg(short, long)]
        verbose: bool,
        /// FILE:MODNAME pairs: a frozen header (Python/frozen_modules/NAME.h),
        /// a .pyc (its magic must match --python), a raw .marshal file, or a
        /// .py source (needs --compile-with). Appended after --modules-from.
        #[arg(value_name = "FILE:MODNAME")]
        inputs: Vec<String>,
    },
    /// Build a faster interpreter from an installed CPython 3.11 to 3.15.
    ///
    /// Re-freezes its stock modules plus the requested ones with lazy
    /// per-module initialization, replaces deepfreeze.o (3.11, 3.12) and
    /// frozen.o in a copy of its static libpython, and links its python.o
    /// against that with the flags of its own build (and, for 3.13, the
    /// --wrap flags the object needs). The interpreter must ship its static
    /// archive and python.o (pyenv builds and Debian's python3.X-dev do).
    ///
    /// Examples:
    ///
    ///   pyfreeze-obj relink --python $(pyenv prefix 3.12.1)/bin/python3.12 \
    ///       --freeze encodings,encodings.aliases,encodings.utf_8 -o python-fast
    ///
    ///   # freeze what a tool imports
    ///   pyfreeze-obj relink --python python3.12 --trace "import argparse, json" -o python-fast
    ///
    ///   # freeze an application's packages (and the stdlib modules they
    ///   # import) from its venv; -v lists what is chosen and passed over
    ///   pyfreeze-obj relink --python venv/bin/python --freeze click,rich -o py_app -v
    #[command(verbatim_doc_comment)]
    Relink {
        /// The interpreter to rebuild (and whose build flags to use).
        #[arg(long, value_name = "PYTHON")]
        python: PathBuf,
        /// Modules to add, as for `emit --freeze`.
        #[arg(long, value_name = "MOD[,MOD...]", value_delimiter = ',')]
        freeze: Vec<String>,
        /// Code whose imported pure-Python modules to add, as for `emit --trace`.
        #[arg(long, value_name = "CODE")]
        trace: Vec<String>,
        /// A folder --freeze and --trace search first, as for `emit --path`.
        #[arg(long = "path", value_name = "DIR")]
        paths: Vec<PathBuf>,
        /// Initialize every code object at start-up, as CPython 3.11 and
        /// 3.12 do (3.13 has no such scheme).
        #[arg(long)]
        eager: bool,
        /// The new interpreter.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Print progress and timing on stderr.
        #[arg(short, long)]
        verbose: bool,
        /// Link the interpreter's own frozen modules unchanged (no object of
        /// ours, any CPython with a static archive): the stock link, with the
        /// same link-line decisions, to compare a relinked interpreter with.
        #[arg(long, conflicts_with_all = ["freeze", "trace", "paths", "eager"])]
        stock: bool,
    },
    /// Write a version's layout table (src/layout/py3XX.rs) from a libpython
    /// archive built with debug info.
    ///
    /// Reads the archive's DWARF (struct offsets and sizes, bit fields, which
    /// members exist), the static initializer of `_PyRuntime` with its
    /// relocations (the runtime's shared objects, the global string table),
    /// gcc's deepfreeze.o and frozen.o (which shared objects CPython's
    /// generator uses, the module tables) and the symbol tables (type and
    /// singleton symbols); the headers installed with it (the static
    /// refcount, CO_FAST_*, _PY_NSMALL*INTS, FRAME_SPECIALS_SIZE, ...); and
    /// its interpreter (opcode RESUME, the .pyc magic, the version).
    ///
    /// Writes the Rust source of the version's `Layout` value and its global
    /// string table, to -o FILE or standard output. The output is
    /// deterministic and rustfmt-clean. Refuses (exit 1) an archive without
    /// DWARF or lacking a struct, member or object it needs.
    ///
    /// Example (CPython 3.12 from pyenv, whose archives are built with -g):
    ///
    ///   P=$(pyenv prefix 3.12.1)
    ///   pyfreeze-obj gen-layout \
    ///       --archive $P/lib/python3.12/config-3.12-x86_64-linux-gnu/libpython3.12.a \
    ///       --python $P/bin/python3.12 -o src/layout/py312.rs
    ///
    /// A release build's archive has no DWARF (Debian's libpython3.14.a):
    /// --types-from names an object compiled with -g from the installed
    /// headers with the core's own flags (src/genlayout/types.c), which
    /// describes the types; symbols, initializers and relocations still come
    /// from the archive. (Not the -dbg package's libpython3.14d.a: a
    /// Py_DEBUG build lays the runtime out differently.)
    ///
    ///   V=3.14; L=/usr/lib/python$V/config-$V-x86_64-linux-gnu
    ///   CF=$(python$V -c "import sysconfig; print(sysconfig.get_config_var('PY_CORE_CFLAGS'))")
    ///   gcc $CF -g -fno-eliminate-unused-debug-types -I/usr/include/python$V \
    ///       -I/usr/include/python$V/internal -c types.c -o types314.o
    ///   pyfreeze-obj gen-layout --archive $L/libpython$V.a --types-from types314.o \
    ///       --python /usr/bin/python$V -o py314.rs
    #[command(verbatim_doc_comment)]
    GenLayout {
        /// The static libpython (libpython3.X.a) built with -g.
        #[arg(long, value_name = "LIBPYTHON.a")]
        archive: PathBuf,
        /// Its interpreter [default: bin/python3.X of the installation the
        /// archive is in].
        #[arg(long, value_name = "INTERP")]
        python: Option<PathBuf>,
        /// Its installed headers [default: the interpreter's INCLUDEPY].
        #[arg(long, value_name = "DIR")]
        include: Option<PathBuf>,
        /// Read the types (DWARF) from this object, compiled with -g from
        /// the installed headers (src/genlayout/types.c), instead of the
        /// archive's members: for a release archive without debug info.
        #[arg(long, value_name = "TYPES.o")]
        types_from: Option<PathBuf>,
        /// Output file (written atomically) [default: standard output].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// What `emit --help` adds: the link flags each version's objects need.
fn link_help() -> String {
    let mut s = String::from("Linking the object into an interpreter needs:\n");
    for v in pyfreeze_obj::version::VERSIONS {
        let (a, b) = v.layout.version;
        let flags = v.contract.entry.link_flags();
        let what = if flags.is_empty() {
            "nothing more (the runtime calls the object)".to_string()
        } else {
            format!("{} (frozen.o removed from the archive)", flags.join(" "))
        };
        s.push_str(&format!("  CPython {a}.{b}: {what}\n"));
    }
    s
}

fn main() -> ExitCode {
    let parsed = Cli::command()
        .mut_subcommand("emit", |c| c.after_help(link_help()))
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(
                e.kind(),
                DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                };
            }
            eprintln!("pyfreeze-obj: error: {}", one_line(&e.render().to_string()));
            return ExitCode::from(1);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pyfreeze-obj: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// clap's message on one line: the error, then its tips (a similar
/// argument, how to pass a value that looks like a flag) in parentheses,
/// without the usage block.
fn one_line(text: &str) -> String {
    let (mut msg, mut tips) = (Vec::new(), Vec::new());
    for l in text.lines().take_while(|l| !l.starts_with("Usage:")) {
        let l = l.trim();
        match l.strip_prefix("tip: ") {
            Some(tip) => tips.push(tip),
            None if !l.is_empty() => msg.push(l.strip_prefix("error: ").unwrap_or(l)),
            None => {}
        }
    }
    let mut s = msg.join(" ");
    if !tips.is_empty() {
        s.push_str(&format!(" ({})", tips.join("; ")));
    }
    s.push_str(" (see --help)");
    s
}

fn run(cli: Cli) -> pyfreeze_obj::error::Result<()> {
    match cli.command {
        Cmd::Emit {
            target,
            python,
            output,
            modules_from,
            compile_with,
            verbose,
            depfile,
            link_flags,
            lazy,
            freeze,
            trace,
            paths,
            frozen_tables,
            assume_linux_runtime,
            stdlib,
            include,
            inputs,
        } => {
            let opts = Options {
                target: Target::parse(&target)?,
                version: Version::parse(&python)?,
                inputs,
                modules_from,
                compile_with,
                lazy,
                freeze,
                trace,
                frozen_tables,
                assume_linux_runtime,
                stdlib,
                paths,
                include,
                verbose,
            };
            check_output(&output)?;
            if let Some(f) = &link_flags {
                check_output(f)?;
            }
            emit::run_and_leak(&opts, &output, depfile.as_deref())?;
            if let Some(f) = &link_flags {
                let line = opts.version.contract.entry.link_flags().join(" ") + "\n";
                pyfreeze_obj::output::write_atomically(f, line.as_bytes())?;
            }
            Ok(())
        }
        Cmd::Relink {
            python,
            freeze,
            trace,
            paths,
            eager,
            output,
            verbose,
            stock,
        } => {
            check_output(&output)?;
            pyfreeze_obj::relink::relink(&pyfreeze_obj::relink::RelinkOptions {
                python,
                freeze,
                trace,
                paths,
                eager,
                output,
                verbose,
                stock,
            })
        }
        Cmd::GenLayout {
            archive,
            python,
            include,
            types_from,
            output,
        } => {
            if let Some(o) = &output {
                check_output(o)?;
            }
            let g = pyfreeze_obj::genlayout::generate(&pyfreeze_obj::genlayout::Options {
                archive,
                python,
                include,
                types: types_from,
            })?;
            match output {
                Some(o) => pyfreeze_obj::output::write_atomically(&o, g.text.as_bytes()),
                None => {
                    use std::io::Write;
                    std::io::stdout()
                        .write_all(g.text.as_bytes())
                        .map_err(|e| pyfreeze_obj::error::Error::msg(format!("stdout: {e}")))
                }
            }
        }
    }
}

/// An output must be a file name in an existing folder (both commands
/// refuse alike, before any work).
fn check_output(output: &std::path::Path) -> pyfreeze_obj::error::Result<()> {
    use pyfreeze_obj::error::Error;
    let text = output.to_string_lossy();
    if output.is_dir() || text.ends_with('/') || text.ends_with(std::path::MAIN_SEPARATOR) {
        return Err(Error::file(
            output,
            "output is a folder: give a file name (-o FOLDER/NAME)",
        ));
    }
    match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(Error::file(
            output,
            format!("output folder {} does not exist", dir.display()),
        )),
        _ => Ok(()),
    }
}
