# Run inside a relinked interpreter (stock link first, then ours): describe
# every frozen module's code object as _imp.get_frozen_object hands it out,
# field by field and constant by constant, so that two links can be compared.
#
#   frozen_code.py dump OUT        write OUT.json (signatures) and OUT.marshal
#   frozen_code.py compare STOCK [lazy]
#                                  compare with the stock link's dump; prints
#                                  "modules N", "codes N", then one
#                                  "bad MODULE: ..." line per module that
#                                  differs (exit status 0 either way); with
#                                  "lazy", what LAZY_TOLERATED lists is
#                                  reported as "tolerated MODULE: ..."
#
# A signature holds every code field (co_code deoptimized, as CPython shows
# it), constants with their exact types (floats by bits), whether each string
# of two or more characters is the interned copy, and whether fetching the
# module again gives the very same object (it must: deep-frozen code is
# static). The compare step also checks plain == against the stock objects,
# unmarshalled.
import _imp
import json
import marshal
import sys
import types

FIELDS = (
    "co_argcount",
    "co_posonlyargcount",
    "co_kwonlyargcount",
    "co_nlocals",
    "co_stacksize",
    "co_flags",
    "co_firstlineno",
    "co_code",
    "co_consts",
    "co_names",
    "co_varnames",
    "co_freevars",
    "co_cellvars",
    "co_filename",
    "co_name",
    "co_qualname",
    "co_linetable",
    "co_exceptiontable",
)


def interned(s):
    """Whether s is the interpreter's interned copy (an equal copy is
    interned instead when none is, so s itself is left alone)."""
    if len(s) < 2:
        return None  # one-character strings are runtime singletons
    return sys.intern("".join(list(s))) is s


def sig(v):
    t = type(v)
    if t is types.CodeType:
        return ["code", {f: sig(getattr(v, f)) for f in FIELDS}]
    if t is str:
        return ["str", v, interned(v)]
    if t is bytes:
        return ["bytes", v.hex()]
    if t is int:
        return ["int", str(v)]
    if t is float:
        return ["float", v.hex()]
    if t is complex:
        return ["complex", v.real.hex(), v.imag.hex()]
    if t is tuple:
        return ["tuple", [sig(x) for x in v]]
    if t is frozenset:
        return ["frozenset", sorted((sig(x) for x in v), key=json.dumps)]
    if v is None or v is True or v is False or v is Ellipsis:
        return ["singleton", repr(v)]
    return ["other", t.__name__, repr(v)]


def count(c):
    return 1 + sum(count(k) for k in c.co_consts if isinstance(k, types.CodeType))


def differences(a, b, where, out):
    """Append (path, description) for every leaf where a and b differ."""
    if type(a) is not type(b):
        out.append((where, "%r vs %r" % (a, b)))
    elif isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            differences(a.get(k), b.get(k), "%s.%s" % (where, k), out)
    elif isinstance(a, list):
        if a[:1] == ["frozenset"] and b[:1] == ["tuple"]:
            same = sorted(map(json.dumps, a[1])) == sorted(map(json.dumps, b[1]))
            out.append((where + FROZENSET, "frozenset %s the tuple's items" % ("of", "unlike")[not same]))
        elif len(a) != len(b):
            out.append((where, "length %d vs %d: %r vs %r" % (len(a), len(b), a, b)))
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                differences(x, y, "%s[%d]" % (where, i), out)
    elif a != b:
        out.append((where, "%r vs %r" % (a, b)))


FROZENSET = "<frozenset for tuple>"

# What the lazy scheme may do differently from gcc's objects:
# - a module's strings are interned when the module is first requested, not
#   at start-up: by then the runtime may hold an interned copy of the text
#   already, and code-object initialization (CPython's own) interns
#   co_names, co_localsplusnames and identifier-like constants in their
#   tuples but leaves co_name and co_qualname pointing at the static string;
# - frozenset constants are real frozensets, as compile() makes them, where
#   CPython's generator writes a tuple of the same items (a known gap).
LAZY_TOLERATED = (".co_name[2]", ".co_qualname[2]", FROZENSET)


def tolerable(path, what):
    return path.endswith(LAZY_TOLERATED) and not what.endswith("unlike the tuple's items")


names = sorted(_imp._frozen_module_names())
codes = {n: _imp.get_frozen_object(n) for n in names}
sigs = {}
for n in names:
    again = _imp.get_frozen_object(n)
    sigs[n] = {"same_object": again is codes[n], "code": sig(codes[n])}

mode, path = sys.argv[1], sys.argv[2]
if mode == "dump":
    with open(path + ".json", "w") as f:
        json.dump(sigs, f)
    with open(path + ".marshal", "wb") as f:
        f.write(marshal.dumps(codes))
elif mode == "compare":
    lazy = sys.argv[3:] == ["lazy"]
    with open(path + ".json") as f:
        stock_sigs = json.load(f)
    with open(path + ".marshal", "rb") as f:
        stock_codes = marshal.loads(f.read())
    print("modules", len(names))
    print("codes", sum(count(c) for c in codes.values()))
    for n in sorted(set(names) | set(stock_sigs)):
        if n not in stock_sigs or n not in sigs:
            print("bad %s: frozen in %s only" % (n, "ours" if n in sigs else "stock"))
            continue
        found = []
        differences(sigs[n], stock_sigs[n], "", found)
        bad = [d for d in found if not (lazy and tolerable(*d))]
        tolerated = [d for d in found if d not in bad]
        if tolerated:
            kinds = {}
            for where, what in tolerated:
                kind = "frozenset for tuple" if where.endswith(FROZENSET) else "name not interned"
                kinds[kind] = kinds.get(kind, 0) + 1
            print("tolerated %s: %s" % (n, ", ".join("%d %s" % (v, k) for k, v in sorted(kinds.items()))))
        if bad:
            where, what = bad[0]
            print("bad %s: %d differences, first %s: %s" % (n, len(bad), where, what[:2000]))
        elif codes[n] != stock_codes[n] and not any(w.endswith(FROZENSET) for w, _ in tolerated):
            print("bad %s: signatures agree but == says the code differs" % n)
else:
    sys.exit("usage: frozen_code.py dump|compare PATH")
