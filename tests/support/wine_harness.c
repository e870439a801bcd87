/* The runtime harness for the x86_64 COFF object (tests/formats.rs): stands
   in for the CPython runtime, defines what the object references, records
   what Init and Fini call, and checks what the accessors return. Prints
   `key value...` lines. Compiled with -DRUNTIME_SIZE=N (bytes of
   _PyRuntime), -DACCESSORS="X(name) X(name)..." and the runtime functions
   -DCODE_INIT=... -DCODE_FINI=... [-DSTR_FINI=...]; -DLAZY for an object
   from `emit --lazy`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <windows.h>

#define TYPE_SIZE 512
__attribute__((aligned(16))) char PyCode_Type[TYPE_SIZE], PyBytes_Type[TYPE_SIZE],
    PyUnicode_Type[TYPE_SIZE], PyTuple_Type[TYPE_SIZE], PyLong_Type[TYPE_SIZE],
    PyFloat_Type[TYPE_SIZE], PyComplex_Type[TYPE_SIZE];
__attribute__((aligned(16))) char _Py_NoneStruct[64], _Py_TrueStruct[64],
    _Py_FalseStruct[64], _Py_EllipsisObject[64];
__attribute__((aligned(64))) char _PyRuntime[RUNTIME_SIZE];

int _Py_Deepfreeze_Init(void);
void _Py_Deepfreeze_Fini(void);
#define X(a) void *a(void);
ACCESSORS
#undef X
#define X(a) {#a, a},
static const struct { const char *name; void *(*fn)(void); } accessors[] = {ACCESSORS};
#undef X
#define N_ACCESSORS (sizeof accessors / sizeof accessors[0])

#define MAX 200000
static void *init_rec[MAX], *fini_rec[MAX], *str_rec[MAX];
static int n_init, n_fini, n_str, fail_at = -1, str_before_code_done;
static int unwind_frames = -1, unwind_reaches_caller = -1, control_reaches_caller = -1;
__declspec(noinline) int run_init(void);
__declspec(noinline) int run_control(void);

static int in_function(void *pc, void *fn) {
    DWORD64 base = 0;
    PRUNTIME_FUNCTION f = RtlLookupFunctionEntry((DWORD64)fn, &base, NULL);
    DWORD64 a = (DWORD64)pc;
    return f && a > base + f->BeginAddress && a <= base + f->EndAddress;
}

/* Control: a stack walk from a C function called by another reaches it. */
__declspec(noinline) static int control_leaf(void) {
    void *frames[64];
    int n = RtlCaptureStackBackTrace(0, 64, frames, NULL);
    control_reaches_caller = 0;
    for (int i = 0; i < n; i++)
        if (in_function(frames[i], (void *)run_control)) control_reaches_caller = 1;
    return n;
}
__declspec(noinline) int run_control(void) {
    int r = control_leaf();
    __asm__ volatile("" ::: "memory");
    return r;
}

/* The callbacks spill their argument to the caller's shadow space (-O0),
   as the Win64 convention allows. */
static int on_init(void *co) {
    if (n_init == 0 && unwind_frames < 0) {
        void *frames[64];
        unwind_frames = RtlCaptureStackBackTrace(0, 64, frames, NULL);
        unwind_reaches_caller = 0;
        for (int i = 0; i < unwind_frames; i++)
            if (in_function(frames[i], (void *)run_init)) unwind_reaches_caller = 1;
    }
    if (n_init < MAX) init_rec[n_init] = co;
    n_init++;
    return n_init == fail_at ? -1 : 0;
}
static void on_fini(void *co) {
    if (n_str) str_before_code_done = 1;
    if (n_fini < MAX) fini_rec[n_fini] = co;
    n_fini++;
}
static void on_str(void *s) {
    if (n_str < MAX) str_rec[n_str] = s;
    n_str++;
}
int CODE_INIT(void *co) { return on_init(co); }
void CODE_FINI(void *co) { on_fini(co); }
#ifdef LAZY
/* The lazy scheme's frozenset constants: the tuple stands in for its set. */
void *PyFrozenSet_New(void *tuple) { return tuple; }
void Py_DecRef(void *o) { (void)o; }
#endif
#ifdef STR_FINI
void STR_FINI(void *s) { on_str(s); }
#endif
#define TYPE(o) (((void **)(o))[1])
static int is_type(void *t) {
    return t == PyCode_Type || t == PyBytes_Type || t == PyUnicode_Type || t == PyTuple_Type
        || t == PyLong_Type || t == PyFloat_Type || t == PyComplex_Type;
}
static int in_runtime(void *p) {
    return (char *)p >= _PyRuntime && (char *)p < _PyRuntime + sizeof _PyRuntime;
}
static int is_singleton(void *p) {
    return p == _Py_NoneStruct || p == _Py_TrueStruct || p == _Py_FalseStruct
        || p == _Py_EllipsisObject;
}
/* An object pointer: one of ours (a known type) or the runtime's. */
static int is_object(void *p) {
    return p && (in_runtime(p) || is_singleton(p) || is_type(TYPE(p)));
}
/* Ours of type t, or inside the runtime (its shared objects). */
static int is_a(void *p, char *t) { return p && (in_runtime(p) || TYPE(p) == t); }

static long long checked_items, bad_items;
static void check(int ok) { checked_items++; if (!ok) bad_items++; }
static void check_tuple_items(void *t, int depth) {
    if (!t || in_runtime(t) || TYPE(t) != PyTuple_Type || depth > 64) return;
    intptr_t n = ((intptr_t *)t)[2];
    void **items = (void **)((char *)t + 24);
    for (intptr_t i = 0; i < n; i++) {
        check(is_object(items[i]));
        void *it = items[i];
        if (it && !in_runtime(it) && !is_singleton(it) && TYPE(it) == PyTuple_Type)
            check_tuple_items(it, depth + 1);
    }
}
/* A code object's pointer fields (offsets the same in 3.11 and 3.12). */
static void check_code(void *co) {
    void **f = (void **)co;
    check(is_a(f[24 / 8], PyTuple_Type));   /* co_consts */
    check(is_a(f[32 / 8], PyTuple_Type));   /* co_names */
    check(is_a(f[40 / 8], PyBytes_Type));   /* co_exceptiontable */
    check(is_a(f[96 / 8], PyTuple_Type));   /* co_localsplusnames */
    check(is_a(f[104 / 8], PyBytes_Type));  /* co_localspluskinds */
    check(is_a(f[112 / 8], PyUnicode_Type)); /* co_filename */
    check(is_a(f[120 / 8], PyUnicode_Type)); /* co_name */
    check(is_a(f[128 / 8], PyUnicode_Type)); /* co_qualname */
    check(is_a(f[136 / 8], PyBytes_Type));  /* co_linetable */
    check_tuple_items(f[24 / 8], 0);
    void *names = f[32 / 8];
    if (!in_runtime(names) && TYPE(names) == PyTuple_Type) {
        intptr_t n = ((intptr_t *)names)[2];
        for (intptr_t i = 0; i < n; i++)
            check(is_a(((void **)((char *)names + 24))[i], PyUnicode_Type));
    }
}

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = *(uintptr_t *)a, y = *(uintptr_t *)b;
    return x < y ? -1 : x > y;
}
static int distinct(void **v, int n) {
    void **c = malloc(sizeof(void *) * (n ? n : 1));
    memcpy(c, v, sizeof(void *) * n);
    qsort(c, n, sizeof(void *), cmp_ptr);
    int d = n > 0;
    for (int i = 1; i < n; i++) d += c[i] != c[i - 1];
    free(c);
    return d;
}
static int same_set(void **a, int na, void **b, int nb) {
    if (na != nb) return 0;
    void **x = malloc(sizeof(void *) * (na ? na : 1)), **y = malloc(sizeof(void *) * (nb ? nb : 1));
    memcpy(x, a, sizeof(void *) * na);
    memcpy(y, b, sizeof(void *) * nb);
    qsort(x, na, sizeof(void *), cmp_ptr);
    qsort(y, nb, sizeof(void *), cmp_ptr);
    int same = memcmp(x, y, sizeof(void *) * na) == 0;
    free(x);
    free(y);
    return same;
}
static int count_type(void **v, int n, char *t) {
    int k = 0;
    for (int i = 0; i < n; i++) k += TYPE(v[i]) == t;
    return k;
}
static int recorded(void *p) {
    for (int i = 0; i < n_init && i < MAX; i++)
        if (init_rec[i] == p) return 1;
    return 0;
}

__declspec(noinline) int run_init(void) {
    int r = _Py_Deepfreeze_Init();
    __asm__ volatile("" ::: "memory"); /* not a tail call */
    return r;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    fail_at = 5;
    int r = run_init();
    printf("init_fail ret %d calls %d\n", r, n_init);
    n_init = 0;
    fail_at = -1;
    r = run_init();
    printf("init ret %d calls %d distinct %d code_type %d\n", r, n_init, distinct(init_rec, n_init),
           count_type(init_rec, n_init, PyCode_Type));
    for (size_t i = 0; i < N_ACCESSORS; i++) {
        void *o = accessors[i].fn();
        intptr_t before = *(intptr_t *)o;
        void *o2 = accessors[i].fn();
        intptr_t after = *(intptr_t *)o2;
        void *consts = ((void **)o)[3];
        printf("accessor %s code %d consts_tuple %d initialized %d same %d refcnt_delta %lld\n",
               accessors[i].name, TYPE(o) == PyCode_Type,
               consts && !in_runtime(consts) && TYPE(consts) == PyTuple_Type, recorded(o), o == o2,
               (long long)(after - before));
    }
    /* (the lazy scheme initializes code objects here, at first use) */
    printf("after_accessors calls %d distinct %d code_type %d\n", n_init,
           distinct(init_rec, n_init), count_type(init_rec, n_init, PyCode_Type));
    for (int i = 0; i < n_init; i++) check_code(init_rec[i]);
    printf("graph checked %lld bad %lld\n", checked_items, bad_items);
    _Py_Deepfreeze_Fini();
    printf("fini calls %d same_set %d same_order %d\n", n_fini,
           same_set(init_rec, n_init, fini_rec, n_fini),
           n_fini == n_init && memcmp(init_rec, fini_rec, sizeof(void *) * n_init) == 0);
    printf("strings calls %d distinct %d str_type %d after_code %d\n", n_str,
           distinct(str_rec, n_str),
           count_type(str_rec, n_str, PyUnicode_Type), !str_before_code_done);
    DWORD64 base;
    run_control();
    printf("unwind init_entry %d fini_entry %d frames %d reaches_caller %d control %d\n",
           RtlLookupFunctionEntry((DWORD64)_Py_Deepfreeze_Init, &base, NULL) != NULL,
           RtlLookupFunctionEntry((DWORD64)_Py_Deepfreeze_Fini, &base, NULL) != NULL,
           unwind_frames, unwind_reaches_caller, control_reaches_caller);
    printf("done\n");
    return 0;
}
