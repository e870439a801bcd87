#!/usr/bin/env python3
"""The 3.13+ load wrapper's lookup, in callgrind instruction counts: two
builds of pyfreeze-obj (e.g. main's and a branch's) each relink pyenv's
CPython 3.13.0 with the whole pure-Python stdlib frozen
(`relink --freeze stdlib`), and each interpreter imports every frozen
module that imports quietly (no output, no error, in sorted order; package
`__main__`s, GUI and demo modules and the hello modules left out), one
after another, under `valgrind --tool=callgrind`.

Printed per build: the program's total, the self cost of
`__wrap_PyMarshal_ReadObjectFromString` (the lookup of a module's bytes
among the object's blobs, plus the fallback checks), its calls, and the
ratios before/after.

Method as tests/bench/startup.py's: PYTHONHASHSEED=0, PYTHONHOME = the
pyenv prefix, no other PYTHON* variable, each command run once without
valgrind first, all runs in one empty folder.

    python3 tests/bench/load_wrapper.py --before OLD/pyfreeze-obj \\
        --after target/release/pyfreeze-obj
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

PICK = r"""
import _imp, contextlib, importlib, io, sys
skip = ("__hello", "__phello", "idlelib", "turtledemo", "tkinter", "turtle",
        "antigravity", "this", "_aix", "_ios", "_android", "test")
ok = []
for n in sorted(_imp._frozen_module_names()):
    if n.endswith("__main__") or n.startswith(skip):
        continue
    mod = n.removesuffix(".__init__")
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            importlib.import_module(mod)
    except BaseException:
        continue
    if not out.getvalue():
        ok.append(mod)
print(",".join(ok))
"""

WORK = r"""
import importlib, sys
for m in sys.argv[1].split(","):
    importlib.import_module(m)
"""

WRAP = "__wrap_PyMarshal_ReadObjectFromString"


def env(prefix):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    e.update(PYTHONHASHSEED="0", PYTHONHOME=prefix)
    return e


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def calls(out_file, func):
    """Calls of `func` in a callgrind output file."""
    names, total, callee = {}, 0, None
    with open(out_file) as f:
        for line in f:
            m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
            if m:
                if m[3]:
                    names[m[2]] = m[3]
                if m[1] == "cfn":
                    callee = names.get(m[2])
                continue
            m = re.match(r"calls=(\d+)", line)
            if m and callee == func:
                total += int(m[1])
    return total


def measure(exe, prefix, mods, cwd, tag):
    cmd = [exe, "-c", WORK, mods]
    run(cmd, env=env(prefix), cwd=cwd)
    out = os.path.join(cwd, f"callgrind.{tag}.out")
    run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + cmd,
        env=env(prefix), cwd=cwd)
    text = run(["callgrind_annotate", out]).stdout
    total = int(re.search(r"([\d,]+) \S*\s*PROGRAM TOTALS", text)[1].replace(",", ""))
    m = re.search(r"([\d,]+) \([^)]*\)\s+\S*" + re.escape(WRAP) + r"\b", text)
    if not m:
        sys.exit(f"{tag}: no {WRAP} in the profile of {exe}")
    return total, int(m[1].replace(",", "")), calls(out, WRAP)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="pyfreeze-obj binary")
    ap.add_argument("--after", required=True, help="pyfreeze-obj binary")
    ap.add_argument("--python", default="3.13.0", help="pyenv version")
    a = ap.parse_args()
    prefix = run(["pyenv", "prefix", a.python]).stdout.strip()
    python = os.path.join(prefix, "bin", "python" + a.python.rsplit(".", 1)[0])
    with tempfile.TemporaryDirectory(prefix="load-wrapper-") as tmp:
        cwd = os.path.join(tmp, "cwd")
        os.mkdir(cwd)
        exes = {}
        for tag, tool in (("before", a.before), ("after", a.after)):
            exes[tag] = os.path.join(tmp, f"python-{tag}")
            run([tool, "relink", "--python", python, "--freeze", "stdlib", "-o", exes[tag]])
        mods = run([exes["after"], "-c", PICK], env=env(prefix), cwd=cwd).stdout.strip()
        print(f"CPython {a.python}, relink --freeze stdlib, importing "
              f"{mods.count(',') + 1} frozen modules")
        got = {tag: measure(exe, prefix, mods, cwd, tag) for tag, exe in exes.items()}
    print(f"{'':8}{'total Ir':>16}{'wrapper Ir':>14}{'calls':>8}{'Ir/call':>10}")
    for tag, (total, wrap, n) in got.items():
        print(f"{tag:8}{total:>16,}{wrap:>14,}{n:>8}{wrap / max(n, 1):>10.1f}")
    (tb, wb, _), (ta, wa, _) = got["before"], got["after"]
    print(f"ratio before/after: wrapper {wb / wa:.1f}x, total {tb / ta:.4f}x "
          f"({tb - ta:,} Ir fewer)")


if __name__ == "__main__":
    main()
