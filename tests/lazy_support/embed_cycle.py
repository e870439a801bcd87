# Run by tests/lazy_support/embed.c in each of its three
# Py_Initialize/Py_FinalizeEx cycles (CYCLE = 1, 2, 3 is set before).
#
# json and argparse are frozen (added with --trace "import json, argparse"),
# posixpath is one of the stock frozen modules; all lazily initialized.
# Cycle 1 records, for one function of each, the raw bytecode (co_code) and
# the adaptive bytecode before and after a hot loop (which specializes it),
# in the file named by $LAZY_EMBED_STATE. Later cycles must start from the
# same adaptive bytecode as cycle 1 (teardown restored the pristine code,
# re-initialization quickened it again), not from cycle 1's specialized one,
# and specialize to the same result.
import _imp, argparse, dis, json, marshal, os, posixpath, sys

# Snapshots first, before anything here runs the functions (neither is
# called during start-up): (raw bytecode, adaptive bytecode).
CODES = {"json.dumps": json.dumps.__code__, "posixpath.relpath": posixpath.relpath.__code__}
now = {k: (c.co_code, c._co_code_adaptive) for k, c in CODES.items()}

assert sys.version_info[:2] in ((3, 11), (3, 12)), sys.version
for mod in (json, json.decoder, argparse, posixpath):
    assert _imp.is_frozen(mod.__name__), mod.__name__
    assert mod.__spec__.origin == "frozen", (mod.__name__, mod.__spec__)
    with open(mod.__file__, encoding="utf-8") as f:
        src = f.read()
    want = compile(src, "<frozen %s>" % mod.__name__, "exec")
    assert _imp.get_frozen_object(mod.__name__) == want, mod.__name__

# the code objects work
assert json.dumps({"a": [1, 2.5, None, "\xe9\u20ac"]}) == '{"a": [1, 2.5, null, "\\u00e9\\u20ac"]}'
assert json.loads('{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
try:
    json.loads("{")
except json.JSONDecodeError as e:
    assert e.pos == 1, e
else:
    raise AssertionError("json.loads('{') did not raise")
p = argparse.ArgumentParser(prog="embed")
p.add_argument("--n", type=int, default=0)
p.add_argument("words", nargs="*")
ns = p.parse_args(["--n", "3", "x", "y"])
assert (ns.n, ns.words) == (3, ["x", "y"]), ns
assert posixpath.join("a", "b") == "a/b"


def hot(fn, *args):
    for i in range(1000):
        fn(i, *args)


FUNCS = {
    "json.dumps": (json.dumps, ()),
    "posixpath.relpath": (lambda i: posixpath.relpath("/a/b/%d" % i, "/a/c"), ()),
}
state_file = os.environ["LAZY_EMBED_STATE"]
for name, (fn, args) in FUNCS.items():
    hot(fn, *args)
after = {k: c._co_code_adaptive for k, c in CODES.items()}
# the specialized instructions (their caches hold version tags that differ
# between cycles, so compare the names)
ops = {k: [i.opname for i in dis.get_instructions(c, adaptive=True)] for k, c in CODES.items()}
for k in CODES:
    assert after[k] != now[k][1], "%s did not specialize in a hot loop" % k
    assert CODES[k].co_code == now[k][0], k

if CYCLE == 1:
    with open(state_file, "wb") as f:
        marshal.dump({k: (now[k][0], now[k][1], after[k], ops[k]) for k in CODES}, f)
else:
    with open(state_file, "rb") as f:
        first = marshal.load(f)
    for k, (raw, adaptive, specialized, opnames) in first.items():
        assert now[k][0] == raw, "%s: co_code differs from cycle 1" % k
        assert now[k][1] != specialized, (
            "%s: cycle %d starts from cycle 1's specialized bytecode" % (k, CYCLE))
        assert now[k][1] == adaptive, (
            "%s: cycle %d starts from other adaptive bytecode than cycle 1" % (k, CYCLE))
        assert ops[k] == opnames, "%s: specialized differently: %s vs %s" % (
            k, [a for a, b in zip(ops[k], opnames) if a != b],
            [b for a, b in zip(ops[k], opnames) if a != b])
# a frozen module first used in a later cycle (initialized lazily then)
if CYCLE >= 2:
    import __hello__
    assert _imp.is_frozen("__hello__") and __hello__.initialized
    assert _imp.get_frozen_object("__hello__") == compile(
        open(os.path.join(os.path.dirname(os.__file__), "__hello__.py")).read(),
        "<frozen __hello__>", "exec")
print("cycle %d ok: %d frozen modules, %s" % (CYCLE, len(_imp._frozen_module_names()),
                                             ", ".join(sorted(CODES))))
sys.stdout.flush()
