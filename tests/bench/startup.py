#!/usr/bin/env python3
"""Start-up benchmark: interpreters relinked by `pyfreeze-obj relink`
against the stock link of the same CPython, in callgrind instruction counts.

For each pyenv CPython (3.13.0, 3.12.1, then 3.11.7):

  stock  gcc -o stock $LIBPL/python.o -Wl,--whole-archive $LIBPL/libpython3.X.a
             -Wl,--no-whole-archive
             LDFLAGS LINKFORSHARED LIBS SYSLIBS LOCALMODLIBS   (its sysconfig)
  set    pyfreeze-obj relink   (the stock set of frozen modules)
  a      pyfreeze-obj relink --freeze encodings,encodings.aliases,encodings.utf_8
         (the stock set plus the encodings modules every start loads)
  cli    pyfreeze-obj relink --trace "import argparse, json, re, typing,
         dataclasses, pathlib, logging, subprocess, tomllib, email.message"
  b      pyfreeze-obj relink --trace "<the same>, difflib"
  eager  pyfreeze-obj relink --eager   (control: CPython's scheme, stock set;
         3.13 has none, which the tool says and the table shows)

Each runs `-c pass`, the CLI imports and `-c "import difflib"` under
`valgrind --tool=callgrind`; the script prints "Collected" for each, the
ratio to stock (all measured in the same run) and the version's goals
(3.11/3.12: a: -c pass <= 0.95; b: CLI <= 0.82, difflib <= 0.86, -c pass <=
0.95; eager ~1.00. 3.13, whose stock link unmarshals its frozen modules:
set and cli: -c pass <= 0.90; cli: CLI <= 0.82).

Method (REFERENCE.md section 5): PYTHONHASHSEED=0, PYTHONHOME = the pyenv
prefix for every interpreter, no other PYTHON* variable (in particular
PYTHONDONTWRITEBYTECODE is removed, so .pyc caches are written and warm),
every command run once without valgrind before it is measured, all runs in
the same empty folder. An interpreter that exits non-zero is flagged with
"!" and its goals are NOT MET whatever its count. When the prefix's
site-packages holds .pth files (they run at every start, on both sides, and
dilute the ratios), the same binaries are measured again from an empty venv
made from that CPython (no PYTHONHOME there), in a second table.

App row (issue #16): a venv made from the same pyenv CPython with click
8.1.8 and rich 13.9.4 (their dependencies pinned, from PyPI), the stock
link and `pyfreeze-obj relink --python venv/bin/python --freeze click,rich`
both placed in the venv's bin/ (the venv's site-packages on both paths, no
PYTHONHOME), running `-c pass` and `import click, rich.console, rich.table`
(goal: app <= 0.85, aim 0.80). `--app-only` measures this row alone.

Side by side: PyCDS (`code-data-share` from PyPI, its README's
trace -> dump -> share workflow on the same workload as (b)), installed into
a venv made from the same pyenv CPython. To hold the binary equal it runs on
the stock link (placed in the venv's bin/), against that interpreter
without PyCDS in the same venv (the venv's pycds.pth imports `cds` at every
start, so both sides pay it), next to relink (b) in the same venv; and, as
its README runs it, on the venv's own python (pyenv's shared-libpython
binary). Anything that cannot be installed or run is printed as one
"PyCDS ...: NOT MEASURED: <why>" line; no number is made up.

Debian sid's CPython 3.14 and 3.15 (`--sid 3.14,3.15`; their archives need
glibc >= 2.38) are measured inside the chroot of tests/setup/sid.sh (built
or reused; root needed), with its gcc and valgrind: stock = `pyfreeze-obj
relink --stock` (python.o + the unmodified archive with relink's link line:
-no-pie, and the built-in modules the archive cannot link, _md5 _sha1 _sha2
_sha3 _blake2, left out as relink says), debian = Debian's own
/usr/bin/python3.X (another compiler run and link: shown for reference),
then set, a, cli, b as above. PYTHONHOME=/usr for every interpreter, the
same method otherwise. A relink that fails (3.14/3.15 until their layout
tables and contracts land) is printed as "NOT MADE: <the tool's error>" and
its goals as NOT MET; the goals are 3.13's (the stock links unmarshal their
frozen modules alike). No PyCDS or app row there.

Usage: tests/bench/startup.py [--versions 3.13.0,3.12.1,3.11.7] [--sid 3.14,3.15]
                              [--no-pycds] [--app-only] [--work DIR]
(`--versions ""` measures no pyenv CPython.)
Needs: cargo, gcc, valgrind, pyenv 3.13.0/3.12.1/3.11.7 (with static
archives), and for PyCDS and the app row, PyPI through pip; for --sid,
root, unshare and the sid chroot (tests/setup/sid.sh builds it).
"""
import hashlib
import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "target" / "release" / "pyfreeze-obj"

CLI = ("import argparse, json, re, typing, dataclasses, pathlib, logging, "
       "subprocess, tomllib, email.message")
DIFFLIB = "import difflib"
TRACE = CLI + ", difflib"
FREEZE_A = "encodings,encodings.aliases,encodings.utf_8"
COMMANDS = [("-c pass", "pass"), ("CLI", CLI), ("difflib", DIFFLIB)]
# X.Y -> [(variant, command label, bound)]
DEEPFREEZE_GOALS = [("a", "-c pass", 0.95), ("b", "CLI", 0.82), ("b", "difflib", 0.86),
                    ("b", "-c pass", 0.95)]
UNMARSHAL_GOALS = [("set", "-c pass", 0.90), ("cli", "-c pass", 0.90), ("cli", "CLI", 0.82)]
GOALS = {"3.11": DEEPFREEZE_GOALS, "3.12": DEEPFREEZE_GOALS, "3.13": UNMARSHAL_GOALS,
         "3.14": UNMARSHAL_GOALS, "3.15": UNMARSHAL_GOALS}
APP = "import click, rich.console, rich.table"
APP_PINS = ["click==8.1.8", "rich==13.9.4", "markdown-it-py==4.3.0", "mdurl==0.1.2",
            "pygments==2.21.0"]
APP_COMMANDS = [("-c pass", "pass"), ("app", APP)]
# The app row (#16) is measured where its tests run (tests/app.rs).
APP_VERSIONS = ("3.11", "3.12", "3.13")
FLAG_VARS = ("LDFLAGS", "LINKFORSHARED", "LIBS", "SYSLIBS", "LOCALMODLIBS")


def out(line=""):
    print(line, flush=True)


def sh(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def clean_env(home=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONHASHSEED"] = "0"
    if home is not None:
        env["PYTHONHOME"] = str(home)
    return env


class Version:
    def __init__(self, full):
        self.full = full
        self.xy = ".".join(full.split(".")[:2])
        r = sh(["pyenv", "prefix", full], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"pyenv has no CPython {full}: {r.stderr.strip()}")
        self.prefix = Path(r.stdout.strip())
        self.python = self.prefix / "bin" / f"python{self.xy}"
        q = ("import sysconfig as s\n"
             "print(s.get_config_var('LIBPL')); print(s.get_config_var('LIBRARY'))\n"
             "print(s.get_config_var('LINKCC') or 'gcc')\n"
             f"print(' '.join(s.get_config_var(k) or '' for k in {FLAG_VARS!r}))")
        lines = sh([str(self.python), "-S", "-c", q], capture_output=True,
                   text=True).stdout.splitlines()
        self.libpl = Path(lines[0])
        self.archive = self.libpl / lines[1]
        self.linkcc = lines[2]
        self.flags = lines[3].split()
        self.python_o = self.libpl / "python.o"
        for p in (self.archive, self.python_o):
            if not p.is_file():
                raise SystemExit(f"CPython {full} lacks {p}")


def collected(stderr):
    m = re.search(r"Collected : (\d+)", stderr)
    return int(m.group(1)) if m else None


class Runner:
    """Runs interpreters the same way every time: clean env, empty cwd."""

    def __init__(self, work):
        self.cwd = work / "empty-cwd"
        shutil.rmtree(self.cwd, ignore_errors=True)
        self.cwd.mkdir(parents=True)
        self.cg = work / "callgrind.out"

    def run(self, exe, code, env):
        return sh([str(exe), "-c", code], cwd=self.cwd, env=env,
                  capture_output=True, text=True, check=False)

    def measure(self, exe, code, env):
        """(count or None, note): warm once, then count under callgrind."""
        warm = self.run(exe, code, env)
        note = "" if warm.returncode == 0 else f"exit {warm.returncode}"
        if warm.returncode != 0:
            err = (warm.stderr.strip().splitlines() or [""])[-1]
            note += f" ({err[:80]})" if err else (
                " (SIGSEGV)" if warm.returncode == -11 else "")
        r = sh(["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.cg}",
                str(exe), "-c", code], cwd=self.cwd, env=env,
               capture_output=True, text=True, check=False)
        n = collected(r.stderr)
        if n is None:
            note = note or f"valgrind gave no count (exit {r.returncode})"
        return n, note


def link_stock(v, out_path):
    # Every member, as CPython links its own interpreter and relink does.
    sh([v.linkcc, "-o", str(out_path), str(v.python_o), "-Wl,--whole-archive", str(v.archive),
        "-Wl,--no-whole-archive", *v.flags])


def relink(v, out_path, args, may_refuse=False):
    """(seconds, what was frozen), or (None, the tool's refusal) when
    `may_refuse` (a scheme the version does not have)."""
    t0 = time.perf_counter()
    r = sh([str(TOOL), "relink", "--python", str(v.python), "-v", "-o", str(out_path), *args],
           capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        if may_refuse:
            return None, r.stderr.strip().splitlines()[-1]
        raise SystemExit(f"relink {' '.join(args)} failed:\n{r.stderr}")
    m = re.search(r"froze (\d+) modules \((\d+) code objects\)", r.stderr)
    return dt, (f"{m.group(1)} modules, {m.group(2)} code objects" if m else "?")


def fmt_count(n):
    return f"{n:,}" if n is not None else "-"


def ratio(n, base):
    return n / base if n is not None and base else None


def table(rows, names, base_name, commands=COMMANDS):
    """rows: {name: {label: (count, note)}}; prints counts and ratios."""
    head = f"  {'command':<9}" + "".join(f"{n:>26}" for n in names)
    out(head)
    notes = []
    for label, _ in commands:
        line = f"  {label:<9}"
        base = rows[base_name][label][0]
        for n in names:
            c, note = rows[n][label]
            cell = fmt_count(c)
            if n != base_name and c is not None and base:
                cell += f" {ratio(c, base):.3f}x"
            if note:
                cell += " !"
                notes.append(f"  ! {n} {label}: {note}")
            line += f"{cell:>26}"
        out(line)
    for n in notes:
        out(n)


def bench_version(v, work, runner, with_pycds, app_only):
    out()
    out(f"== CPython {v.full} (pyenv, {v.prefix}) ==")
    out(f"stock link: {v.linkcc} -o stock python.o -Wl,--whole-archive {v.archive.name} "
        f"-Wl,--no-whole-archive {' '.join(v.flags)}")
    d = work / v.full
    d.mkdir(parents=True, exist_ok=True)
    exes = {"stock": d / "python-stock"}
    link_stock(v, exes["stock"])
    if app_only:
        if v.xy in APP_VERSIONS:
            app(v, d, runner, exes["stock"])
        return
    variants = [("set", []), ("a", ["--freeze", FREEZE_A]), ("cli", ["--trace", CLI]),
                ("b", ["--trace", TRACE]), ("eager", ["--eager"])]
    for name, args in variants:
        exe = d / f"python-{name}"
        dt, what = relink(v, exe, args, may_refuse=(name == "eager"))
        shown = " ".join(a if a.startswith("--") else f'"{a}"' for a in args)
        if dt is None:
            out(f"  {name:<6} relink {shown}: not made: {what}")
            continue
        exes[name] = exe
        out(f"  {name:<6} relink {shown}: {what}, relink took {dt:.2f} s")
    env = clean_env(v.prefix)
    rows = {}
    for name, exe in exes.items():
        rows[name] = {label: runner.measure(exe, code, env) for label, code in COMMANDS}
    out("callgrind instructions (Collected), ratio to stock:")
    table(rows, list(exes), "stock")
    goals(rows, v.xy)
    pth = sorted(p.name for p in site_packages(v).glob("*.pth"))
    if pth:
        # .pth files run at every start on both sides; they dilute the
        # ratios. The same binaries in an empty venv do not see them.
        out(f"site-packages of {v.prefix.name} has .pth files run at every start: "
            f"{', '.join(pth)}; the same binaries in an empty venv (no PYTHONHOME):")
        venv = d / "empty-venv"
        shutil.rmtree(venv, ignore_errors=True)
        sh([str(v.python), "-m", "venv", "--without-pip", str(venv)], capture_output=True)
        vrows = {}
        for name, exe in exes.items():
            link = venv / "bin" / f"python-{name}"
            link.symlink_to(exe)
            vrows[name] = {label: runner.measure(link, code, clean_env())
                           for label, code in COMMANDS}
        table(vrows, list(exes), "stock")
        goals(vrows, v.xy)
    if v.xy in APP_VERSIONS:
        app(v, d, runner, exes["stock"])
    else:
        out(f"  app row: not measured for {v.xy} (freezing an application is tested on "
            f"{', '.join(APP_VERSIONS)})")
    if with_pycds:
        pycds(v, d, runner, exes)


def app(v, d, runner, stock):
    """The app row; prints one NOT MEASURED line on any failure."""
    tag = f"App (click + rich) on CPython {v.full}"
    venv = d / "app-venv"
    shutil.rmtree(venv, ignore_errors=True)
    r = sh([str(v.python), "-m", "venv", str(venv)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        out(f"{tag}: NOT MEASURED: cannot create a venv: {r.stderr.strip()[-200:]}")
        return
    pip = sh([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
              "--disable-pip-version-check", *APP_PINS],
             capture_output=True, text=True, check=False)
    if pip.returncode != 0:
        why = (pip.stderr.strip().splitlines() or ["no message"])[-1]
        out(f"{tag}: NOT MEASURED: pip install failed: {why}")
        return
    exe = d / "python-app"
    args = ["--freeze", "click,rich"]
    r = sh([str(TOOL), "relink", "--python", str(venv / "bin" / "python"), "-v", "-o", str(exe),
            *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        out(f"{tag}: NOT MEASURED: relink failed: {r.stderr.strip()[-300:]}")
        return
    m = re.search(r"froze (\d+) modules \((\d+) code objects\)", r.stderr)
    out()
    out(f"{tag}: {' '.join(APP_PINS)} in a venv; app = relink --python venv/bin/python "
        f"--freeze click,rich ({m.group(1) if m else '?'} modules, "
        f"{m.group(2) if m else '?'} code objects); both binaries in the venv's bin/, "
        "no PYTHONHOME; ratio to stock:")
    rows = {}
    for name, target in (("stock", stock), ("app", exe)):
        link = venv / "bin" / f"python-{name}"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        rows[name] = {label: runner.measure(link, code, clean_env())
                      for label, code in APP_COMMANDS}
    table(rows, ["stock", "app"], "stock", APP_COMMANDS)
    c, note = rows["app"]["app"]
    rr = ratio(c, rows["stock"]["app"][0])
    if rr is None or note:
        out(f"  app goal: not measured or failed ({note}): NOT MET")
    else:
        out(f"  app goal: {rr:.3f}x <= 0.85 (aim 0.80): {'met' if rr <= 0.85 else 'NOT MET'}")


def site_packages(v):
    return v.prefix / "lib" / f"python{v.xy}" / "site-packages"


def goals(rows, xy):
    out("goals:")
    for name, label, bound in GOALS.get(xy, []):
        if name not in rows:
            out(f"  {name} {label:<8} not made (see above): NOT MET")
            continue
        c, note = rows[name][label]
        r = ratio(c, rows["stock"][label][0])
        if r is None:
            out(f"  {name} {label:<8} not measured ({note}): NOT MET")
        elif note:
            out(f"  {name} {label:<8} {r:.3f}x (goal <= {bound:.2f}): NOT MET, "
                f"the interpreter failed: {note}")
        else:
            out(f"  {name} {label:<8} {r:.3f}x <= {bound:.2f}: {'met' if r <= bound else 'NOT MET'}")
    for label, _ in COMMANDS if "eager" in rows else []:
        c, note = rows["eager"][label]
        r = ratio(c, rows["stock"][label][0])
        shown = f"{r:.3f}x" if r is not None else "not measured"
        out(f"  eager {label:<8} {shown} (control, expected ~1.00){' ' + note if note else ''}")


def pycds(v, d, runner, exes):
    """PyCDS side by side; prints one NOT MEASURED line on any failure."""
    tag = f"PyCDS on CPython {v.full}"
    venv = d / "pycds-venv"
    shutil.rmtree(venv, ignore_errors=True)
    r = sh([str(v.python), "-m", "venv", str(venv)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        out(f"{tag}: NOT MEASURED: cannot create a venv: {r.stderr.strip()[-200:]}")
        return
    pip = sh([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
              "--disable-pip-version-check", "code-data-share"],
             capture_output=True, text=True, check=False)
    if pip.returncode != 0:
        why = (pip.stderr.strip().splitlines() or ["no message"])[-1]
        out(f"{tag}: NOT MEASURED: pip install code-data-share failed: {why}")
        return
    ver = sh([str(venv / "bin" / "python"), "-m", "pip", "show", "code-data-share"],
             capture_output=True, text=True, check=False).stdout
    m = re.search(r"^Version: (\S+)", ver, re.M)
    out()
    out(f"{tag}: code-data-share {m.group(1) if m else '?'} in a venv made from pyenv's "
        f"python{v.xy}; trace -> dump -> share on the workload of (b)")
    # The stock link and relink (b) inside the venv: same site-packages
    # (the venv's pycds.pth runs at every start of each).
    for name in ("stock", "b"):
        link = venv / "bin" / f"python-{name}"
        link.unlink(missing_ok=True)
        link.symlink_to(exes[name])
    binaries = [("stock link", venv / "bin" / "python-stock"),
                ("venv's python (pyenv's, shared libpython)", venv / "bin" / "python")]
    results = {}
    for what, exe in binaries:
        lst, img = d / f"pycds-{exe.name}.lst", d / f"pycds-{exe.name}.img"
        for p in (lst, img):
            p.unlink(missing_ok=True)
        env = clean_env()
        env.update(PYCDSMODE="TRACE", PYCDSLIST=str(lst))
        t = runner.run(exe, TRACE, env)
        if t.returncode != 0 or not lst.is_file():
            why = (t.stderr.strip().splitlines() or [f"exit {t.returncode}, no list written"])[-1]
            out(f"{tag} ({what}): NOT MEASURED: trace failed: {why}")
            continue
        dump = runner.run(exe, f"import cds.dump; cds.dump.run_dump({str(lst)!r}, {str(img)!r})",
                          clean_env())
        if dump.returncode != 0 or not img.is_file():
            why = (dump.stderr.strip().splitlines() or [f"exit {dump.returncode}"])[-1]
            out(f"{tag} ({what}): NOT MEASURED: dump failed: {why}")
            continue
        share = clean_env()
        share.update(PYCDSMODE="SHARE", PYCDSARCHIVE=str(img))
        probe = runner.run(exe, "import json, sys; print(type(json.__spec__.loader).__name__)", share)
        if probe.returncode != 0 or probe.stdout.strip() != "CDSFinder" or probe.stderr.strip():
            why = (probe.stderr.strip().splitlines() or [probe.stdout.strip() or "?"])[-1]
            out(f"{tag} ({what}): NOT MEASURED: the shared archive is not used: {why}")
            continue
        n_mods = len(lst.read_text().split())
        out(f"  {what}: traced {n_mods} modules, archive {img.stat().st_size:,} bytes")
        row = {"baseline": {l: runner.measure(exe, c, clean_env()) for l, c in COMMANDS},
               "PyCDS": {l: runner.measure(exe, c, share) for l, c in COMMANDS}}
        results[what] = row
    if "stock link" in results:
        results["stock link"]["relink (b)"] = {
            l: runner.measure(venv / "bin" / "python-b", c, clean_env()) for l, c in COMMANDS}
    for what, row in results.items():
        out(f"{tag}, {what}, in the venv; ratio to the same binary without PyCDS:")
        table(row, list(row), "baseline")


# -- Debian sid (CPython 3.14, 3.15) inside the chroot -------------------------

SID_SETUP = ROOT / "tests" / "setup" / "sid.sh"
SID_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# As tests/support/sid.rs: a private mount namespace with its own /proc, a
# clean environment; nothing stays mounted.
SID_SCRIPT = (
    'r="$1"; cwd="$2"; shift 2; '
    'mount -t proc proc "$r/proc" || { echo "cannot mount proc on $r/proc" >&2; exit 125; }; '
    'exec chroot "$r" env -i -C "$cwd" "$@"')


class Sid:
    """The chroot: commands inside it, our tool copied in, a work folder."""

    def __init__(self):
        if os.geteuid() != 0:
            raise SystemExit("--sid needs root (unshare --mount and chroot)")
        r = sh(["bash", str(SID_SETUP)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"{SID_SETUP} failed:\n{r.stderr[-3000:]}")
        self.root = Path(r.stdout.strip().splitlines()[-1])
        data = TOOL.read_bytes()
        # Named by content, as tests/support/sid.rs names its copies.
        d = f"/opt/pyfreeze-obj/bench-{hashlib.sha256(data).hexdigest()[:16]}"
        self.tool = f"{d}/pyfreeze-obj"
        host = self.host(self.tool)
        if not host.is_file() or host.read_bytes() != data:
            host.parent.mkdir(parents=True, exist_ok=True)
            tmp = host.with_name(f".tmp-{os.getpid()}")
            tmp.write_bytes(data)
            tmp.chmod(0o755)
            tmp.replace(host)
        self.work = f"/tmp/pyfreeze-bench-{os.getpid()}"
        shutil.rmtree(self.host(self.work), ignore_errors=True)
        self.host(self.work).mkdir(parents=True)

    def host(self, inside):
        return self.root / inside.lstrip("/")

    def cmd(self, args, env=None, cwd="/"):
        env = {"PATH": SID_PATH, "HOME": "/root", "LC_ALL": "C.UTF-8", **(env or {})}
        return (["unshare", "--mount", "--fork", "--", "sh", "-c", SID_SCRIPT, "sh",
                 str(self.root), cwd] + [f"{k}={v}" for k, v in env.items()] + list(args))

    def run(self, args, env=None, cwd="/"):
        return sh(self.cmd(args, env, cwd), capture_output=True, text=True, check=False)

    def close(self):
        shutil.rmtree(self.host(self.work), ignore_errors=True)


class SidRunner(Runner):
    """Runner's method, inside the chroot (valgrind and cwd in there)."""

    def __init__(self, sid):
        self.sid = sid
        self.cwd = f"{sid.work}/empty-cwd"
        sid.host(self.cwd).mkdir(parents=True, exist_ok=True)
        self.cg = f"{sid.work}/callgrind.out"

    def run(self, exe, code, env):
        return self.sid.run([str(exe), "-c", code], env, self.cwd)

    def measure(self, exe, code, env):
        warm = self.run(exe, code, env)
        note = "" if warm.returncode == 0 else f"exit {warm.returncode}"
        if warm.returncode != 0:
            err = (warm.stderr.strip().splitlines() or [""])[-1]
            note += f" ({err[:80]})" if err else ""
        r = self.sid.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.cg}",
                          str(exe), "-c", code], env, self.cwd)
        n = collected(r.stderr)
        if n is None:
            note = note or f"valgrind gave no count (exit {r.returncode})"
        return n, note


def bench_sid(sid, xy, runner):
    python = f"/usr/bin/python{xy}"
    v = sid.run([python, "-I", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
    if v.returncode != 0:
        raise SystemExit(f"sid: {python} does not run: {v.stderr.strip()}")
    out()
    out(f"== CPython {v.stdout.strip()} (Debian sid, chroot {sid.root}) ==")
    d = f"{sid.work}/{xy}"
    sid.host(d).mkdir(parents=True, exist_ok=True)
    exes = {}
    variants = [("stock", ["--stock"]), ("set", []), ("a", ["--freeze", FREEZE_A]),
                ("cli", ["--trace", CLI]), ("b", ["--trace", TRACE]), ("eager", ["--eager"])]
    for name, args in variants:
        exe = f"{d}/python-{name}"
        t0 = time.perf_counter()
        r = sid.run([sid.tool, "relink", "--python", python, "-v", "-o", exe, *args])
        dt = time.perf_counter() - t0
        shown = " ".join(a if a.startswith("--") else f'"{a}"' for a in args)
        notes = [l for l in r.stderr.splitlines() if "note:" in l]
        if r.returncode != 0:
            why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            if name == "stock":
                raise SystemExit(f"sid {xy}: relink --stock failed: {r.stderr[-2000:]}")
            out(f"  {name:<6} relink {shown}: NOT MADE: {why}")
            continue
        m = re.search(r"froze (\d+) modules \((\d+) code objects\)", r.stderr)
        what = f"{m.group(1)} modules, {m.group(2)} code objects" if m else "the build's own frozen modules"
        exes[name] = exe
        out(f"  {name:<6} relink {shown}: {what}, relink took {dt:.2f} s")
        for n in notes:
            out(f"         {n}")
    exes = {"stock": exes["stock"], "debian": python,
            **{k: e for k, e in exes.items() if k != "stock"}}
    env = {"PYTHONHASHSEED": "0", "PYTHONHOME": "/usr"}
    rows = {name: {label: runner.measure(exe, code, env) for label, code in COMMANDS}
            for name, exe in exes.items()}
    out("callgrind instructions (Collected), ratio to the stock link (debian: Debian's own "
        "binary, for reference):")
    table(rows, list(exes), "stock")
    goals(rows, xy)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", default="3.13.0,3.12.1,3.11.7")
    ap.add_argument("--no-pycds", action="store_true")
    ap.add_argument("--app-only", action="store_true",
                    help="measure the app row (click + rich) alone")
    ap.add_argument("--sid", default="",
                    help="Debian sid CPythons to measure inside the chroot, e.g. 3.14,3.15")
    ap.add_argument("--work", type=Path, default=ROOT / "target" / "bench-startup")
    a = ap.parse_args()
    versions = [v.strip() for v in a.versions.split(",") if v.strip()]
    sids = [v.strip() for v in a.sid.split(",") if v.strip()]
    needs = ["cargo", "gcc", "valgrind"] + (["pyenv"] if versions else []) + (
        ["unshare"] if sids else [])
    for tool in needs:
        if shutil.which(tool) is None:
            raise SystemExit(f"startup.py needs {tool} on PATH")
    sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    a.work.mkdir(parents=True, exist_ok=True)
    runner = Runner(a.work)
    vg = sh(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    cc = sh(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    tv = sh([str(TOOL), "--version"], capture_output=True, text=True).stdout.strip()
    rev = sh(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
             text=True, check=False).stdout.strip()
    dirty = sh(["git", "status", "--porcelain", "--", "src", "arch"], cwd=ROOT,
               capture_output=True, text=True, check=False).stdout.strip()
    out("pyfreeze-obj start-up benchmark: callgrind instruction counts (\"Collected\")")
    where = f"git {rev}" if rev else "not a git checkout"
    out(f"tool: {tv} ({where}{', src/arch modified' if dirty else ''}); {vg}; {cc}")
    out("method: PYTHONHASHSEED=0, PYTHONHOME=pyenv prefix, no other PYTHON* variable "
        "(.pyc caches written), each command run once before it is measured, one empty cwd")
    out(f"commands: -c pass | CLI: -c \"{CLI}\" | difflib: -c \"{DIFFLIB}\"")
    for full in versions:
        bench_version(Version(full), a.work, runner, not a.no_pycds, a.app_only)
    if sids and not a.app_only:
        sid = Sid()
        try:
            r = sid.run(["sh", "-c", "valgrind --version; gcc --version | head -n 1"])
            out()
            out(f"sid chroot: {' '.join(r.stdout.split(chr(10))[:2])}; PYTHONHOME=/usr")
            runner_sid = SidRunner(sid)
            for xy in sids:
                bench_sid(sid, xy, runner_sid)
        finally:
            sid.close()


if __name__ == "__main__":
    main()
