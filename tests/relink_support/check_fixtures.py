# Run inside the relinked interpreter whose deep-frozen object holds the
# fixtures. For every fixture NAME it fetches the deep-frozen code object
# through the C shim (pyfreeze_fixture_NAME, default visibility, exported
# with -export-dynamic) and checks it against the source:
#   1. structurally equal to compile(src, "<frozen NAME>", "exec"), field by
#      field and constant by constant, floats compared bit for bit (NaNs
#      included); plus plain == and hash() when no NaN/frozenset is involved
#   2. marshal round trip of the frozen code is structurally equal as well
#   3. exec'ing it in a fresh module dict and calling check() gives the same
#      repr as (a) exec'ing the compiled source, (b) importing the source
#      normally, (c) the stock interpreter importing the source (reference)
# argv: FIXTURES_DIR REFERENCE_JSON NAME...
# Prints one line per fixture; exit status 1 on any mismatch.
import ctypes
import json
import marshal
import math
import struct
import sys
import types
import warnings

sys.dont_write_bytecode = True
# co_lnotab is deprecated but still compared
warnings.simplefilter("ignore", DeprecationWarning)
fixtures_dir, reference_path, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(reference_path) as f:
    reference = json.load(f)

lib = ctypes.CDLL(None)
problems = []
notes = []


def fbits(x):
    return struct.pack("<d", x)


def interned(s):
    """Whether s is the interpreter's interned copy (without interning s:
    an equal copy is interned instead when none is)."""
    return sys.intern("".join(list(s))) is s


class Walk:
    """Structural comparison of two code objects (expected, actual)."""

    def __init__(self, module):
        self.module = module
        self.awkward = False  # NaN or frozenset seen: == may not hold

    def fail(self, path, msg):
        problems.append("%s: %s: %s" % (self.module, path, msg))

    def const(self, path, a, b):
        if type(a) is frozenset and type(b) is tuple:
            self.awkward = True
            if set(b) == a and len(b) == len(a):
                notes.append("%s: %s: frozenset constant %r emitted as tuple %r" % (self.module, path, a, b))
            else:
                self.fail(path, "frozenset %r vs tuple %r" % (a, b))
            return
        if type(a) is not type(b):
            self.fail(path, "type %s vs %s (%r vs %r)" % (type(a).__name__, type(b).__name__, a, b))
            return
        if isinstance(a, types.CodeType):
            self.code(path, a, b)
        elif type(a) is float:
            if math.isnan(a):
                self.awkward = True
            if fbits(a) != fbits(b):
                self.fail(path, "float bits %s vs %s" % (fbits(a).hex(), fbits(b).hex()))
        elif type(a) is complex:
            if math.isnan(a.real) or math.isnan(a.imag):
                self.awkward = True
            if (fbits(a.real), fbits(a.imag)) != (fbits(b.real), fbits(b.imag)):
                self.fail(path, "complex bits %r vs %r" % (a, b))
        elif type(a) in (tuple, frozenset):
            if type(a) is frozenset:
                self.awkward = True
                a, b = sorted(a, key=repr), sorted(b, key=repr)
            if len(a) != len(b):
                self.fail(path, "length %d vs %d" % (len(a), len(b)))
                return
            for i, (x, y) in enumerate(zip(a, b)):
                self.const("%s[%d]" % (path, i), x, y)
        elif type(a) is str:
            if a != b:
                self.fail(path, "str %r vs %r" % (a, b))
            elif a is not b and interned(a) != interned(b):
                self.fail(path, "str %r: interned %s in the source's code, %s in the frozen one" % (a, interned(a), interned(b)))
        else:
            if a != b:
                self.fail(path, "%r vs %r" % (a, b))

    def code(self, path, a, b):
        path = "%s<%s>" % (path, a.co_qualname)
        for attr in sorted(dir(a)):
            if not attr.startswith("co_") or attr in ("co_consts", "co_lines", "co_positions"):
                continue
            x, y = getattr(a, attr), getattr(b, attr)
            if attr in ("co_names", "co_varnames", "co_cellvars", "co_freevars"):
                self.const("%s.%s" % (path, attr), x, y)
            elif x != y:
                self.fail(path, "%s: %r vs %r" % (attr, x, y))
        if list(a.co_lines()) != list(b.co_lines()):
            self.fail(path, "co_lines differ")
        if list(a.co_positions()) != list(b.co_positions()):
            self.fail(path, "co_positions differ")
        self.const(path + ".co_consts", a.co_consts, b.co_consts)


def count_codes(c):
    return 1 + sum(count_codes(k) for k in c.co_consts if isinstance(k, types.CodeType))


def run_check(code, name):
    module = types.ModuleType(name)
    module.__file__ = "<frozen %s>" % name
    exec(code, module.__dict__)
    return module.__dict__["check"]()


def first_difference(a, b, path="check()"):
    """Where two results first differ (by repr), for the report."""
    if repr(a) == repr(b):
        return None
    if type(a) is type(b) and isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, "%s[%d]" % (path, i))
            if d:
                return d
    return "%s: %.300r vs %.300r" % (path, a, b)


for name in names:
    accessor = getattr(lib, "pyfreeze_fixture_" + name)
    accessor.restype = ctypes.py_object
    accessor.argtypes = []
    frozen = accessor()
    path = "%s/%s.py" % (fixtures_dir, name)
    with open(path, "rb") as f:
        source = f.read()
    compiled = compile(source, "<frozen %s>" % name, "exec")
    before = len(problems)

    if type(frozen) is not types.CodeType:
        problems.append("%s: accessor returned %r" % (name, type(frozen)))
        continue
    walk = Walk(name)
    walk.code("", compiled, frozen)
    if not walk.awkward:
        if compiled != frozen:
            problems.append("%s: code objects are not ==" % name)
        if hash(compiled) != hash(frozen):
            problems.append("%s: hash() of code objects differs" % name)
    Walk(name + " (marshal round trip)").code("", compiled, marshal.loads(marshal.dumps(frozen)))

    results = {}
    try:
        results["frozen"] = run_check(frozen, name)
        # a second run of the same frozen code object must agree too
        results["frozen again"] = run_check(frozen, name)
    except Exception as e:  # report, keep going with the other fixtures
        problems.append("%s: exec of the frozen code raised %r" % (name, e))
    results["compiled"] = run_check(compiled, name)
    sys.path.insert(0, fixtures_dir)
    try:
        results["imported"] = __import__(name).check()
    finally:
        del sys.path[0]
    got = {k: repr(v) for k, v in results.items()}
    got["reference"] = reference[name]
    if got["imported"] != got["reference"]:
        problems.append("%s: the relinked interpreter runs the *source* differently from the stock one" % name)
    for k, v in got.items():
        if v != got["reference"]:
            where = first_difference(results[k], results["imported"]) or "(only the repr differs)"
            problems.append("%s: check() via %s differs from the source: %s" % (name, k, where))
    status = "ok" if len(problems) == before else "MISMATCH"
    print("%-20s %s  (%d code objects, check() repr %d chars)" % (name, status, count_codes(frozen), len(got.get("frozen", ""))))

for line in notes:
    print("note:", line)
for line in problems:
    print("PROBLEM:", line)
sys.exit(1 if problems else 0)
