#!/usr/bin/env python3
"""The deep-freeze step of CPython 3.11's own build, before and after
Makefile.frag, measured in one run.

Two out-of-tree builds of Debian's CPython 3.11.2 source package (the tree
tests/setup/cpython-build.sh provides), configured plainly: "stock" (CPython's
step: Tools/scripts/deepfreeze.py run by _bootstrap_python writes
deepfreeze.c, then the build's gcc compiles it) and "frag" (the Makefile with
`include Makefile.frag`: one `pyfreeze-obj emit`). Each is built once with
`make -j2` (timed; kept under ${PYFREEZE_CACHE:-~/.cache/pyfreeze-obj}/
bench-makefrag, rebuilt with --rebuild). Then the step itself is timed the way
it runs inside the build, on the critical path between the frozen headers and
the link: the object (and for stock its C file) is deleted and
`make Python/deepfreeze/deepfreeze.o` re-makes it, several times (median).
Make's own overhead (reading CPython's Makefile) is measured with
`make -q` and reported beside it.

Usage: python3 tests/bench/makefrag_step.py [--runs N] [--rebuild]
       python3 tests/bench/makefrag_step.py --stock DIR --frag DIR
(the second form times existing build directories, e.g. the ones
tests/makefrag.rs caches: $PYFREEZE_CACHE/makefrag/{stock,frag}/build)
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PYFREEZE_CACHE", Path.home() / ".cache" / "pyfreeze-obj"))
OBJ = "Python/deepfreeze/deepfreeze.o"
C = "Python/deepfreeze/deepfreeze.c"


def env():
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MAKE"))}
    e["LC_ALL"] = "C.UTF-8"
    return e


def sh(cmd, **kw):
    kw.setdefault("check", True)
    kw.setdefault("env", env())
    return subprocess.run(cmd, **kw)


def timed(cmd, cwd, log=None):
    t0 = time.perf_counter()
    out = open(log, "w") if log else subprocess.DEVNULL
    try:
        sh(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log:
            out.close()
    return time.perf_counter() - t0


def build(variant, src, tool, rebuild):
    """Configure and build once; returns (build dir, full make seconds or None)."""
    d = CACHE / "bench-makefrag" / variant
    stamp = d / "bench-stamp"
    if stamp.exists() and not rebuild:
        return d, None
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    print(f"  configuring and building {variant} in {d} ...", flush=True)
    timed([str(src / "configure")], d, d / "configure.log")
    if variant == "frag":
        with open(d / "Makefile", "a") as mk:
            mk.write(f"\nPYFREEZE_OBJ = {tool}\ninclude {ROOT / 'Makefile.frag'}\n")
    secs = timed(["make", "-j2"], d, d / "make.log")
    stamp.write_text(f"{secs:.1f}\n")
    return d, secs


def step(d, remove, runs, extra=()):
    """Median seconds of `make deepfreeze.o` after deleting `remove`."""
    walls = []
    for _ in range(runs):
        for f in remove:
            (d / f).unlink(missing_ok=True)
        walls.append(timed(["make", *extra, OBJ], d))
    return statistics.median(walls), min(walls)


def make_overhead(d, runs, extra=()):
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sh(["make", "-q", *extra, OBJ], cwd=d, check=False, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs of CPython's step (ours: 4x as many)")
    ap.add_argument("--rebuild", action="store_true", help="configure and build both trees again")
    ap.add_argument("--stock", type=Path, help="an existing build directory without the fragment")
    ap.add_argument("--frag", type=Path, help="an existing build directory with the fragment")
    opts = ap.parse_args()
    if bool(opts.stock) != bool(opts.frag):
        ap.error("--stock and --frag go together")

    sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    tool = ROOT / "target" / "release" / "pyfreeze-obj"
    out = sh([str(ROOT / "tests/setup/cpython-build.sh"), "--no-cross"], capture_output=True, text=True)
    src = Path(out.stdout.strip().splitlines()[-1])
    print(f"CPython {src.name}, out-of-tree builds, make -j2 on {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")

    if opts.stock:
        (stock, stock_full), (frag, frag_full) = (opts.stock, None), (opts.frag, None)
    else:
        stock, stock_full = build("stock", src, tool, opts.rebuild)
        frag, frag_full = build("frag", src, tool, opts.rebuild)
    if stock_full is not None and frag_full is not None:
        print(f"  whole build (make -j2):  stock {stock_full:6.1f} s   with Makefile.frag {frag_full:6.1f} s")

    # the stock step, whole and in its two parts
    s_med, s_min = step(stock, [C, OBJ], opts.runs)
    c_med, _ = step(stock, [OBJ], opts.runs)  # deepfreeze.c is there: gcc alone
    gen = s_med - c_med
    # the release build of the tool, whatever the build directory's Makefile says
    ours = [f"PYFREEZE_OBJ={tool}"]
    o_med, o_min = step(frag, [OBJ], opts.runs * 4, ours)
    over_s, over_f = make_overhead(stock, 5), make_overhead(frag, 5, ours)

    print("deep-freeze step on the critical path (`make Python/deepfreeze/deepfreeze.o`, median):")
    print(f"  CPython:  deepfreeze.py + gcc      {s_med * 1e3:8.0f} ms  (min {s_min * 1e3:.0f}; "
          f"of which gcc -c deepfreeze.c {c_med * 1e3:.0f} ms, deepfreeze.py ~{gen * 1e3:.0f} ms)")
    print(f"  ours:     pyfreeze-obj emit        {o_med * 1e3:8.0f} ms  (min {o_min * 1e3:.0f})")
    print(f"  make's own overhead (make -q):     {over_s * 1e3:8.0f} ms stock, {over_f * 1e3:.0f} ms with the fragment")
    net_s, net_o = max(s_med - over_s, 1e-6), max(o_med - over_f, 1e-6)
    print(f"  => step without make's overhead: {net_s * 1e3:.0f} ms -> {net_o * 1e3:.0f} ms "
          f"({net_s / net_o:,.0f}x faster, {net_s - net_o:.2f} s off the critical path)")
    size = (frag / OBJ).stat().st_size
    print(f"  no deepfreeze.c in the fragment build: {not (frag / C).exists()}; our object {size:,} bytes")


if __name__ == "__main__":
    sys.exit(main())
