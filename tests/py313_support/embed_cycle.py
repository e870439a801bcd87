# Run by tests/lazy_support/embed.c in each of its three
# Py_Initialize/Py_FinalizeEx cycles (CYCLE = 1, 2, 3 is set before), linked
# with a CPython 3.13 archive and our object (tests/py313.rs).
#
# json and argparse are frozen (added with --trace), posixpath is a stock
# frozen module. Every cycle starts from pristine code objects: nothing the
# runtime hangs on a code object is left from the previous cycle (the
# layout's runtime-state fields, PY313_RUNTIME_STATE and PY313_SCALARS:
# weak references, cached attributes, monitoring data, co_extra,
# instrumentation version), and the adaptive bytecode is cycle 1's initial
# one. Cycle 1 then makes the runtime hang all of that on the code objects
# (and leaks a weak reference to one, so that teardown finds it there); the
# last cycle leaves it for the process exit.
import ctypes, os, sys


def fresh(s):
    """An equal string that is another object."""
    return "".join(list(s)) if len(s) > 1 else s


# 3.14+ (EMBED_STATIC_HEAD set): our static strings left the interpreter's
# interned dict as it was finalized, with their interned state cleared and
# their static header back; checked before this cycle uses the modules
# they came from (a string of them interned again by this cycle's start-up
# must be the interned one). Their addresses and values come from cycle 1.
if "EMBED_STATIC_HEAD" in os.environ and CYCLE >= 2:
    head = int(os.environ["EMBED_STATIC_HEAD"], 0)
    state_off = int(os.environ["EMBED_STR_STATE_OFF"])
    mask = int(os.environ["EMBED_INTERNED_MASK"], 0)
    restored = again = 0
    with open(os.environ["PY313_EMBED_STATE"] + ".strs") as f:
        for line in f:
            addr, value = line.rstrip("\n").split(" ", 1)
            addr = int(addr)
            interned = ctypes.c_uint32.from_address(addr + state_off).value & mask
            if interned:
                assert id(sys.intern(fresh(value))) == addr, (
                    "cycle %d: %r is marked interned but is not the interned one" % (CYCLE, value))
                again += 1
            else:
                word = ctypes.c_uint64.from_address(addr).value
                assert word == head, "cycle %d: %r has header %#x, not the static %#x" % (
                    CYCLE, value, word, head)
                restored += 1
    print("cycle %d: static strings: %d restored, %d interned again" % (CYCLE, restored, again))

import _imp, argparse, dis, json, marshal, posixpath, warnings, weakref
from collections.abc import Sequence

CODES = {"json.dumps": json.dumps.__code__,
         "posixpath.relpath": posixpath.relpath.__code__,
         "posixpath.commonprefix": posixpath.commonprefix.__code__,
         "_collections_abc.Sequence.index": Sequence.index.__code__,
         "argparse.ArgumentParser.parse_args": argparse.ArgumentParser.parse_args.__code__}
RUNTIME_STATE = [int(x) for x in os.environ["PY313_RUNTIME_STATE"].split(",")]
SCALARS = [int(x) for x in os.environ["PY313_SCALARS"].split(",")]


def word(o, off):
    return ctypes.c_uint64.from_address(id(o) + off).value


for name, c in CODES.items():
    for off in RUNTIME_STATE + SCALARS:
        assert word(c, off) == 0, "cycle %d: %s: field at %d is %#x" % (
            CYCLE, name, off, word(c, off))
now = {k: (c.co_code, c._co_code_adaptive) for k, c in CODES.items()}

assert "%d.%d" % sys.version_info[:2] == os.environ.get("EMBED_PYTHON", "3.13"), sys.version
for mod in (json, json.decoder, argparse, posixpath):
    assert _imp.is_frozen(mod.__name__), mod.__name__
    assert mod.__spec__.origin == "frozen", (mod.__name__, mod.__spec__)
    data = _imp.find_frozen(mod.__name__, withdata=True)[0]
    code = _imp.get_frozen_object(mod.__name__, data)
    assert code is _imp.get_frozen_object(mod.__name__, data), mod.__name__
    assert code == marshal.loads(data), mod.__name__


# Our static strings are interned in this runtime: what sys.intern gives for
# an equal string is ours (the interned state was not left from before).
for name, c in CODES.items():
    for s in c.co_names + c.co_varnames + (c.co_name, c.co_qualname):
        f = fresh(s)
        assert sys.intern(f) is s, "cycle %d: %s: %r is not the interned one" % (CYCLE, name, s)
        assert hash(f) == hash(s), (CYCLE, name, s)
if "EMBED_STATIC_HEAD" in os.environ and CYCLE == 1:
    image = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and os.path.realpath(parts[5]) == os.path.realpath("/proc/self/exe"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                image.append((lo, hi))
    assert image, "no mapping of the executable"
    with open(os.environ["PY313_EMBED_STATE"] + ".strs", "w") as f:
        for c in CODES.values():
            for s in c.co_names + c.co_varnames:
                # Static ones only (the executable's image): a heap string
                # may be gone by the next cycle.
                if "\n" not in s and any(lo <= id(s) < hi for lo, hi in image):
                    f.write("%d %s\n" % (id(s), s))

# the code objects work
assert json.dumps({"a": [1, 2.5, None, "\xe9\u20ac"]}) == '{"a": [1, 2.5, null, "\\u00e9\\u20ac"]}'
assert json.loads('{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
p = argparse.ArgumentParser(prog="embed")
p.add_argument("--n", type=int, default=0)
p.add_argument("words", nargs="*")
ns = p.parse_args(["--n", "3", "x", "y"])
assert (ns.n, ns.words) == (3, ["x", "y"]), ns
assert posixpath.join("a", "b") == "a/b"

# Hang everything on the code objects: specialize (hot loops), cached
# attributes, a weak reference kept past the end, co_extra, monitoring.
for i in range(1000):
    json.dumps(i)
    posixpath.relpath("/a/b/%d" % i, "/a/c")
    p.parse_args(["--n", str(i)])
# Hot loops inside frozen functions: with the JIT on (PYTHON_JIT=1), its
# executors hang on their code objects (3.14 traces the first, 3.15 the
# second).


class Seq(Sequence):
    def __len__(self):
        return 5000

    def __getitem__(self, i):
        if i >= 5000:
            raise IndexError(i)
        return i


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # 3.15 deprecates commonprefix
    for i in range(30):
        posixpath.commonprefix(["a" * 5000 + "b", "a" * 5000 + "c"])
        Seq().index(4999)
after = {k: c._co_code_adaptive for k, c in CODES.items()}
ops = {k: [i.opname for i in dis.get_instructions(c, adaptive=True)] for k, c in CODES.items()}
for k, c in CODES.items():
    assert after[k] != now[k][1], "%s did not specialize in a hot loop" % k
    assert c.co_code == now[k][0], k
    c.co_code, c.co_varnames, c.co_cellvars, c.co_freevars  # _co_cached
keep = weakref.ref(CODES["json.dumps"])
ctypes.pythonapi.Py_IncRef(ctypes.py_object(keep))  # leaked: teardown finds it
api = ctypes.pythonapi
api.PyUnstable_Eval_RequestCodeExtraIndex.restype = ctypes.c_ssize_t
api.PyUnstable_Eval_RequestCodeExtraIndex.argtypes = [ctypes.c_void_p]
index = api.PyUnstable_Eval_RequestCodeExtraIndex(None)
assert index >= 0, index
api.PyUnstable_Code_SetExtra.argtypes = [ctypes.py_object, ctypes.c_ssize_t, ctypes.c_void_p]
assert api.PyUnstable_Code_SetExtra(CODES["posixpath.relpath"], index, 12345) == 0
mon = sys.monitoring
mon.use_tool_id(3, "embed")
lines = []
mon.register_callback(3, mon.events.LINE, lambda code, line: lines.append(line))
mon.set_local_events(3, CODES["posixpath.relpath"], mon.events.LINE)
posixpath.relpath("/a/b", "/a/c")
assert lines, "monitoring saw no line"
for name, c in CODES.items():
    set_ = [off for off in RUNTIME_STATE + SCALARS if word(c, off)]
    print("cycle %d: %s: runtime state set at %s" % (CYCLE, name, set_))

if CYCLE == 1:
    with open(os.environ["PY313_EMBED_STATE"], "wb") as f:
        marshal.dump({k: (now[k][0], now[k][1], after[k], ops[k]) for k in CODES}, f)
else:
    with open(os.environ["PY313_EMBED_STATE"], "rb") as f:
        first = marshal.load(f)
    for k, (raw, adaptive, specialized, opnames) in first.items():
        assert now[k][0] == raw, "%s: co_code differs from cycle 1" % k
        assert now[k][1] == adaptive, (
            "%s: cycle %d starts from other adaptive bytecode than cycle 1" % (k, CYCLE))
        assert ops[k] == opnames, "%s: specialized differently: %s vs %s" % (
            k, [a for a, b in zip(ops[k], opnames) if a != b],
            [b for a, b in zip(ops[k], opnames) if a != b])
# a frozen module first used in a later cycle (initialized lazily then)
if CYCLE >= 2:
    import __hello__
    assert _imp.is_frozen("__hello__") and __hello__.initialized
print("cycle %d ok: %d frozen modules, %s" % (CYCLE, len(_imp._frozen_module_names()),
                                             ", ".join(sorted(CODES))))
sys.stdout.flush()
