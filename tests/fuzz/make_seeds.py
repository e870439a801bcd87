#!/usr/bin/env python3
"""Write the fuzzers' seed corpus into fixtures/fuzz/: small real inputs.

marshal/: marshal data of the fixture modules and a few small stdlib
modules, compiled by CPython 3.11 and 3.12 (`compile(src, "<frozen NAME>")`).
emit/:    the same with the fuzz target's selector byte in front (bits 0-2:
          target, bit 3: 3.11 instead of 3.12).
header/:  the body of a frozen header (the fuzz target adds the comment).
Run with any Python 3; needs `pyenv prefix 3.11.7` and `3.12.1`.
"""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "fuzz"
SOURCES = sorted((ROOT / "fixtures").glob("fx_*.py"))
STDLIB = ["__hello__", "__phello__/spam", "stat", "genericpath", "keyword"]
DUMP = "import marshal,sys; sys.stdout.buffer.write(marshal.dumps(compile(open(sys.argv[1],'rb').read(), '<frozen '+sys.argv[2]+'>', 'exec')))"


def python(v):
    prefix = subprocess.run(["pyenv", "prefix", v], capture_output=True, text=True, check=True).stdout.strip()
    return Path(prefix) / "bin" / ("python" + v.rsplit(".", 1)[0])


def main():
    for d in ("marshal", "emit", "header"):
        (OUT / d).mkdir(parents=True, exist_ok=True)
        for f in (OUT / d).iterdir():
            f.unlink()
    for v, sel in (("3.11.7", 8), ("3.12.1", 0)):
        py = python(v)
        lib = Path(subprocess.run([py, "-c", "import sysconfig;print(sysconfig.get_path('stdlib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
        files = [(s, s.stem) for s in SOURCES] + [(lib / (m + ".py"), m.replace("/", ".")) for m in STDLIB]
        for i, (src, name) in enumerate(files):
            run = subprocess.run([py, "-c", DUMP, str(src), name], capture_output=True)
            data = run.stdout
            # Skip what this version cannot compile (3.12-only syntax) and big inputs.
            if run.returncode != 0 or len(data) > 40_000:
                continue
            tag = f"{v[:4]}-{name}"
            (OUT / "marshal" / f"{tag}.marshal").write_bytes(data)
            (OUT / "emit" / f"{tag}.bin").write_bytes(bytes([sel | (i % 6)]) + data)
            if name == "__hello__":
                body = ",".join(str(b) for b in data[:64]) + ",\n};\n"
                (OUT / "header" / f"{tag}.txt").write_bytes(body.encode())


if __name__ == "__main__":
    main()
