# Run by tests/py313.rs (and tests/py314.rs) in a relinked CPython 3.13+ interpreter: every
# frozen module's code is one static, immortal object, equal to what
# unmarshalling its frozen bytes gives; loads that are not the main
# interpreter's loading of the tables' own bytes get the runtime's
# unmarshalling. Prints one "ok ..." line, or raises.
import _imp, ctypes, marshal, os, sys

exe = os.path.realpath(sys.executable)


def image_ranges():
    """Address ranges mapped from the executable file itself."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and os.path.realpath(parts[5]) == exe:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi))
    assert out, "no mapping of %s" % exe
    return out


IMAGE = image_ranges()


def immortal(o):
    # 3.14+ says so; 3.13's immortal refcount (_Py_IMMORTAL_REFCNT, 2**32 - 1
    # on 64-bit builds) is never changed by increments or decrements.
    if hasattr(sys, "_is_immortal"):
        return sys._is_immortal(o)
    return sys.getrefcount(o) >= 2**32 - 1


def static(o):
    return any(lo <= id(o) < hi for lo, hi in IMAGE)


def walk(code):
    yield code
    for c in code.co_consts:
        if isinstance(c, type(code)):
            yield from walk(c)


ran = set(sys.modules)  # modules whose code already ran (specialized)
names = sorted(_imp._frozen_module_names())
assert len(names) >= int(os.environ.get("PY313_MIN_FROZEN", "20")), names
codes = 0
versions = {}
for name in names:
    data = _imp.find_frozen(name, withdata=True)[0]
    assert data is not None, name
    a = _imp.get_frozen_object(name, data)
    b = _imp.get_frozen_object(name, data)
    assert a is b, "%s: two loads gave two objects" % name
    want = marshal.loads(data)
    assert a == want, "%s differs from marshal.loads of its bytes" % name
    for x, y in zip(walk(a), walk(want), strict=True):
        codes += 1
        assert static(x), "%s: %s is not in the executable's image" % (name, x.co_qualname)
        assert immortal(x), "%s: %s is mortal" % (name, x.co_qualname)
        # Everything the constructor computes, as marshal.loads computed it.
        for attr in ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount",
                     "co_nlocals", "co_stacksize", "co_flags", "co_firstlineno",
                     "co_code", "co_consts", "co_names", "co_varnames", "co_freevars",
                     "co_cellvars", "co_filename", "co_name", "co_qualname",
                     "co_linetable", "co_exceptiontable"):
            assert getattr(x, attr) == getattr(y, attr), (name, x.co_qualname, attr)
        assert list(x.co_positions()) == list(y.co_positions()), (name, x.co_qualname)
        assert list(x.co_lines()) == list(y.co_lines()), (name, x.co_qualname)
        assert x.__sizeof__() == y.__sizeof__(), (name, x.co_qualname)
        # Code that has not run: quickened exactly as the constructor does.
        mod = name.removesuffix(".__init__")
        if mod not in ran and not name.startswith("_frozen_importlib"):
            assert x._co_code_adaptive == y._co_code_adaptive, (name, x.co_qualname)
        # Names are interned: an equal string interns to them.
        for s in x.co_names + x.co_varnames:
            assert sys.intern("".join(list(s))) is s, (name, x.co_qualname, s)
        versions[id(x)] = ctypes.c_uint32.from_address(
            id(x) + int(os.environ["PY313_VERSION_OFF"])).value
# Only the exact start of a table's bytes, at their size, is ours: the same
# bytes reached one byte later or earlier, or with another size (a buffer
# over the executable's image, read by the runtime's loader through the
# wrapper as the table's are), get the runtime's unmarshalling: not our
# object (an error, the bytes being cut mid-stream, or a new object).
class Buffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p),
                ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                ("internal", ctypes.c_void_p)]


def address(data):
    view = Buffer()
    ctypes.pythonapi.PyObject_GetBuffer.argtypes = [
        ctypes.py_object, ctypes.POINTER(Buffer), ctypes.c_int]
    ctypes.pythonapi.PyBuffer_Release.argtypes = [ctypes.POINTER(Buffer)]
    if ctypes.pythonapi.PyObject_GetBuffer(data, ctypes.byref(view), 0) != 0:
        raise RuntimeError("no buffer")
    try:
        assert view.len == len(data)
        return view.buf
    finally:
        ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))


def load_at(name, at, size):
    try:
        return _imp.get_frozen_object(name, (ctypes.c_char * size).from_address(at))
    except Exception as e:
        return e


near = 0
for name in names:
    data = _imp.find_frozen(name, withdata=True)[0]
    ours = _imp.get_frozen_object(name, data)
    at, size = address(data), len(data)
    assert any(lo <= at < hi for lo, hi in IMAGE), "%s: its bytes are not in the image" % name
    assert load_at(name, at, size) is ours, "%s: its bytes, read in place, not ours" % name
    for at2, size2 in ((at + 1, size), (at - 1, size), (at, size - 1), (at, size + 1)):
        got = load_at(name, at2, size2)
        assert got is not ours and not (isinstance(got, type(ours)) and static(got)), (
            "%s: bytes at %+d, size %d of %d gave a static code object"
            % (name, at2 - at, size2, size))
        near += 1
# co_version: taken from the interpreter's counter at the module's first
# load, so unique among live code objects, ours and the runtime's alike.
mine = sorted(versions.values())
assert all(mine), "a static code object with co_version 0"
assert len(set(mine)) == len(mine), "two static code objects share a co_version"
fresh = [compile("def f%d(): pass" % i, "<v>", "exec") for i in range(3)]
theirs = [ctypes.c_uint32.from_address(id(c) + int(os.environ["PY313_VERSION_OFF"])).value
          for c in fresh]
assert not set(theirs) & set(mine), "a new code object took a static one's co_version"
# The bytes of a frozen module elsewhere than in the tables (a copy) are the
# runtime's to unmarshal: a new object each time, on the heap.
data = _imp.find_frozen("__hello__", withdata=True)[0]
c1 = _imp.get_frozen_object("__hello__", bytes(data))
c2 = _imp.get_frozen_object("__hello__", bytes(data))
assert c1 is not c2 and c1 == c2 and not static(c1), "a copy's load was not the runtime's"
# Another interpreter gets the runtime's unmarshalling too (where the link
# has what the _interpreters module needs: an archive link drops members
# nothing in the interpreter references; the caller says which it expects).
try:
    import _interpreters
except ImportError as e:
    subinterp = "unavailable (%s)" % e
else:
    out = os.path.join(os.environ["PY313_WORK"], "subinterp.txt")
    interp = _interpreters.create()
    _interpreters.run_string(interp, """if 1:
        import _imp, os, sys
        data = _imp.find_frozen("__hello__", withdata=True)[0]
        a = _imp.get_frozen_object("__hello__", data)
        b = _imp.get_frozen_object("__hello__", data)
        with open(%r, "w") as f:
            f.write("%%s %%s" %% (a is b, sys._is_immortal(a) if hasattr(sys, "_is_immortal")
                                   else sys.getrefcount(a) >= 2**32 - 1))
    """ % out)
    _interpreters.destroy(interp)
    with open(out) as f:
        assert f.read() == "False False", "a subinterpreter's load was not the runtime's"
    subinterp = "checked"
print("ok %d frozen modules, %d static code objects, %d loads near their bytes "
      "the runtime's; subinterpreter: %s" % (len(names), codes, near, subinterp))
