//! CPython 3.12 on 64-bit targets (LP64 and LLP64 alike: no C `long` in any
//! field used here). Offsets from pyenv 3.12.1's DWARF; checked by
//! `tests/layout_dwarf.rs`.

use super::*;

mod strings {
    include!("py312_strings.rs");
}

pub static LAYOUT: Layout = Layout {
    version: (3, 12),
    pyc_magic: 3531,
    ptr_size: 8,
    head: HeadLayout {
        refcnt: f(0, 8),
        type_: f(8, 8),
        size: f(16, 8),
        // _Py_IMMORTAL_REFCNT on 64-bit: UINT_MAX
        static_refcnt: 0xffff_ffff,
        immortal: true,
    },
    code: CodeLayout {
        code_adaptive: 192,
        consts: f(24, 8),
        names: f(32, 8),
        exceptiontable: f(40, 8),
        flags: f(48, 4),
        argcount: f(52, 4),
        posonlyargcount: f(56, 4),
        kwonlyargcount: f(60, 4),
        stacksize: f(64, 4),
        firstlineno: f(68, 4),
        nlocalsplus: f(72, 4),
        framesize: Some(f(76, 4)),
        nlocals: f(80, 4),
        ncellvars: f(84, 4),
        nfreevars: f(88, 4),
        version: Some(f(92, 4)),
        localsplusnames: f(96, 8),
        localspluskinds: f(104, 8),
        filename: f(112, 8),
        name: f(120, 8),
        qualname: f(128, 8),
        linetable: f(136, 8),
        firsttraceable: Some(f(176, 4)),
        nplaincellvars: None,
        fixed: &[],
        // co_weakreflist, _co_cached, _co_monitoring, co_extra
        runtime_state: &[f(144, 8), f(152, 8), f(168, 8), f(184, 8)],
        // (sizeof(_PyInterpreterFrame) - 1) / sizeof(PyObject *) = 79 / 8
        frame_specials_size: 9,
        opcode_resume: 151,
        co_fast_local: 0x20,
        co_fast_cell: 0x40,
        co_fast_free: 0x80,
    },
    str_: StrLayout {
        length: f(16, 8),
        hash: f(24, 8),
        state: f(32, 4),
        ascii_size: 40,
        compact_size: 56,
        utf8_length: f(40, 8),
        utf8: f(48, 8),
        kind_shift: 2,
        compact_bit: 5,
        ascii_bit: 6,
        // statically_allocated
        static_bits: 1 << 7,
        wstr: None,
    },
    bytes: BYTES_3X,
    int: IntLayout {
        size: IntSize::LvTag(f(16, 8)),
        digits: 24,
        digit_size: 4,
        min_size: 32,
    },
    float: FLOAT_3X,
    tuple: TUPLE_3X,
    runtime: RuntimeLayout {
        symbol: "_PyRuntime",
        // _PyRuntime.static_objects.singletons.*
        small_ints: 3112,
        small_int_stride: 32,
        small_int_neg: 5,
        small_int_pos: 256,
        bytes_empty: 11496,
        bytes_characters: Some((11536, 48)),
        tuple_empty: 76264,
        ascii_chars: Some((61912, 48)),
        latin1_chars: Some((68056, 64)),
        global_strings: strings::GLOBAL_STRINGS,
        // static_objects comes before any lock in 3.12's _PyRuntimeState.
        arch_shift: &[],
        known_on: &[crate::target::Os::Linux],
    },
    sym: SYMBOLS_3X,

    frozen: FrozenLayout {
        keeps_marshal: true,
        ..FROZEN_3X
    },
};
