#!/usr/bin/env python3
"""Side-by-side benchmark: CPython 3.11's own deep-freeze route against
`pyfreeze-obj emit`, on the same 23 frozen headers, in one run.

CPython's route: Tools/scripts/deepfreeze.py (from Debian's python3.11
source package) writes deepfreeze.c, then `gcc -O3 -g` with the build's
flags compiles it. Ours: `pyfreeze-obj emit --python 3.11` on the same
headers. Both are timed over several runs (median wall time), and their
peak RSS is taken from GNU time in a few more runs; the script prints
both, and the ratios.
It also times our 3.12 emit of pyenv 3.12.1's stock set (--modules-from),
and checks that the object that wins links into Debian's interpreter and
prints "Hello world!".

Usage: tests/bench/deepfreeze_vs_cpython.py [--runs-cpython N] [--runs-ours N]
Needs: deb-src for bookworm (added if missing), gcc, GNU time, pyenv 3.12.1.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PYFREEZE_CACHE", Path.home() / ".cache" / "pyfreeze-obj"))
DEB_PYTHON = "/usr/bin/python3.11"
DEB_LIBPL = Path("/usr/lib/python3.11/config-3.11-x86_64-linux-gnu")


def sh(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def source_tree() -> Path:
    """Debian's CPython 3.11 source tree (apt-get source), cached."""
    dest = CACHE / "cpython-src"
    found = sorted(dest.glob("python3.11-3.11.*/Tools/scripts/deepfreeze.py"))
    if found:
        return found[-1].parents[2]
    src_list = Path("/etc/apt/sources.list.d/pyfreeze-src.sources")
    if not src_list.exists():
        src_list.write_text(
            "Types: deb-src\nURIs: http://deb.debian.org/debian\n"
            "Suites: bookworm bookworm-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        sh(["apt-get", "update", "-qq"])
    dest.mkdir(parents=True, exist_ok=True)
    sh(["apt-get", "source", "-qq", "python3.11"], cwd=dest, stdout=subprocess.DEVNULL)
    found = sorted(dest.glob("python3.11-3.11.*/Tools/scripts/deepfreeze.py"))
    if not found:
        sys.exit("apt-get source python3.11 gave no Tools/scripts/deepfreeze.py")
    return found[-1].parents[2]


def deepfreeze_args(src: Path):
    """The FILE:MODNAME list and the freeze commands, from Makefile.pre.in."""
    mk = (src / "Makefile.pre.in").read_text()
    block = mk.split("# BEGIN: deepfreeze modules", 1)[1].split("# END: deepfreeze modules", 1)[0]
    args = re.findall(r"(Python/frozen_modules/\S+\.h:\S+)", block)
    rules = dict(re.findall(r"\$\(FREEZE_MODULE(?:_BOOTSTRAP)?\) (\S+) \$\(srcdir\)/(\S+) Python/frozen_modules/", mk))
    return args, rules


def make_headers(src: Path, work: Path, args, rules):
    """Frozen headers, written by the source tree's Programs/_freeze_module.py."""
    out = work / "Python" / "frozen_modules"
    out.mkdir(parents=True, exist_ok=True)
    for a in args:
        header, name = a.rsplit(":", 1)
        sh([DEB_PYTHON, str(src / "Programs/_freeze_module.py"), name, str(src / rules[name]), str(work / header)])


GNU_TIME = "/usr/bin/time"
MEMORY_RUNS = 3


def timed(cmd, cwd):
    """Wall seconds of one run."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, _ = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}")
    return wall


def peak_rss(cmd, cwd):
    """Peak RSS in KB of one run of `cmd` and of the children it waits for
    (gcc's cc1 and as), from GNU time. Not from os.wait4 here: a child of
    this script starts as a copy of it and keeps the script's own ~14 MB as
    its peak until exec (/bin/true measures 14 MB that way)."""
    out = subprocess.run([GNU_TIME, "-f", "%M", *map(str, cmd)], cwd=cwd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}: {out.stderr.strip()}")
    return int(out.stderr.strip().splitlines()[-1])


def measure(label, steps, runs, cwd):
    """Run each step in order, `runs` times for the wall time (median), and
    MEMORY_RUNS more times under GNU time for the peak RSS (median of the
    runs' largest step)."""
    walls = [sum(timed(cmd, cwd) for cmd in steps) for _ in range(runs)]
    rss = [max(peak_rss(cmd, cwd) for cmd in steps) for _ in range(MEMORY_RUNS)]
    med, mem = statistics.median(walls), statistics.median(rss)
    print(f"  {label:<44} median {med * 1e3:10.2f} ms  (min {min(walls) * 1e3:.2f}, {runs} runs)  peak RSS {mem / 1024:7.1f} MB")
    return med, mem


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs-cpython", type=int, default=5)
    ap.add_argument("--runs-ours", type=int, default=30)
    opts = ap.parse_args()

    if not Path(GNU_TIME).exists():
        sys.exit(f"{GNU_TIME} (GNU time) is needed for peak memory: apt-get install time")
    sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    tool = ROOT / "target" / "release" / "pyfreeze-obj"
    src = source_tree()
    work = CACHE / "bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    args, rules = deepfreeze_args(src)
    assert len(args) == 23, f"expected the 23 stock deep-frozen modules, found {len(args)}"
    make_headers(src, work, args, rules)
    incs = ["-I", str(src / "Include"), "-I", str(src / "Include/internal"), "-I", "/usr/include/x86_64-linux-gnu/python3.11"]

    print(f"CPython 3.11 stock set: 23 modules, headers from {src.name}'s Programs/_freeze_module.py")
    gen = [DEB_PYTHON, str(src / "Tools/scripts/deepfreeze.py"), *args, "-o", "deepfreeze.c"]
    cc = ["gcc", "-O3", "-g", "-std=c11", "-fvisibility=hidden", "-DPy_BUILD_CORE", "-fPIC", *incs, "-c", "deepfreeze.c", "-o", "deepfreeze_gcc.o"]
    sh(gen, cwd=work)  # once, so the C file exists for the compile-only row
    gen_t, gen_m = measure("CPython: deepfreeze.py", [gen], opts.runs_cpython, work)
    cc_t, cc_m = measure("CPython: gcc -O3 -g deepfreeze.c", [cc], opts.runs_cpython, work)
    cpy_t, cpy_m = gen_t + cc_t, max(gen_m, cc_m)
    print(f"  {'CPython: both steps':<44} median {cpy_t * 1e3:10.2f} ms  peak RSS {cpy_m / 1024:7.1f} MB")
    ours = [str(tool), "emit", "--python", "3.11", "-o", "deepfreeze_ours.o", *args]
    our_t, our_m = measure("pyfreeze-obj emit --python 3.11", [ours], opts.runs_ours, work)
    print(f"  => pyfreeze-obj is {cpy_t / our_t:,.0f}x faster and uses {cpy_m / our_m:.1f}x less memory (goal: 300x, 10x)")

    # The winning object must work: relink Debian's interpreter with it.
    tmp = work / "lib.a"
    shutil.copy(DEB_LIBPL / "libpython3.11.a", tmp)
    sh(["ar", "d", str(tmp), "deepfreeze.o"])
    sh(["gcc", "-no-pie", "-o", "python", str(DEB_LIBPL / "python.o"), "deepfreeze_ours.o", str(tmp),
        "-Xlinker", "-export-dynamic", "-lexpat", "-lz", "-ldl", "-lm", "-lpthread", "-lutil"], cwd=work)
    out = sh([str(work / "python"), "-c", "import __hello__; __hello__.main()"], cwd=work,
             env={**os.environ, "PYTHONHOME": "/usr"}, capture_output=True, text=True).stdout.strip()
    print(f"  relinked Debian 3.11.2 with our object: {out!r}")
    if out != "Hello world!":
        sys.exit("the relinked interpreter does not work")

    p312 = subprocess.run(["pyenv", "prefix", "3.12.1"], capture_output=True, text=True, check=True).stdout.strip()
    ar312 = Path(p312) / "lib/python3.12/config-3.12-x86_64-linux-gnu/libpython3.12.a"
    print("CPython 3.12 stock set (pyenv 3.12.1): no 3.12 source tree here, so only our side is measured;")
    print("  REFERENCE.md gives ~4 s and ~175 MB for CPython's 3.12 route on this machine's kind.")
    ours312 = [str(tool), "emit", "--python", "3.12", "--modules-from", str(ar312), "-o", "deepfreeze312.o"]
    t312, m312 = measure("pyfreeze-obj emit --python 3.12 --modules-from", [ours312], opts.runs_ours, work)
    print(f"  => targets: < 10 ms ({'met' if t312 < 0.010 else 'NOT met'}), < 20 MB ({'met' if m312 < 20 * 1024 else 'NOT met'})")


if __name__ == "__main__":
    main()
