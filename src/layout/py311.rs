//! CPython 3.11 on 64-bit targets (LP64 and LLP64 alike: no C `long` in any
//! field used here). Offsets from pyenv 3.11.7's DWARF, checked by
//! `tests/layout_dwarf.rs`; Debian's 3.11.2 (no DWARF) is checked by graph
//! equality with its own deepfreeze.o.

use super::*;

mod strings {
    include!("py311_strings.rs");
}

pub static LAYOUT: Layout = Layout {
    version: (3, 11),
    pyc_magic: 3495,
    ptr_size: 8,
    head: HeadLayout {
        refcnt: f(0, 8),
        type_: f(8, 8),
        size: f(16, 8),
        // 3.11 has no immortal objects: a large count that never reaches 0.
        static_refcnt: 999_999_999,
        immortal: false,
    },
    code: CodeLayout {
        code_adaptive: 184,
        consts: f(24, 8),
        names: f(32, 8),
        exceptiontable: f(40, 8),
        flags: f(48, 4),
        argcount: f(56, 4),
        posonlyargcount: f(60, 4),
        kwonlyargcount: f(64, 4),
        stacksize: f(68, 4),
        firstlineno: f(72, 4),
        nlocalsplus: f(76, 4),
        framesize: None,
        nlocals: f(80, 4),
        nplaincellvars: Some(f(84, 4)),
        ncellvars: f(88, 4),
        nfreevars: f(92, 4),
        version: None,
        localsplusnames: f(96, 8),
        localspluskinds: f(104, 8),
        filename: f(112, 8),
        name: f(120, 8),
        qualname: f(128, 8),
        linetable: f(136, 8),
        firsttraceable: Some(f(168, 4)),
        // co_warmup = QUICKENING_INITIAL_WARMUP_VALUE (-8);
        // _co_linearray_entry_size (54) stays 0.
        fixed: &[(f(52, 2), (-8i16) as u16 as u64)],
        // co_weakreflist, _co_code, _co_linearray, co_extra
        runtime_state: &[f(144, 8), f(152, 8), f(160, 8), f(176, 8)],
        frame_specials_size: 0,
        opcode_resume: 151,
        co_fast_local: 0x20,
        co_fast_cell: 0x40,
        co_fast_free: 0x80,
    },
    str_: StrLayout {
        length: f(16, 8),
        hash: f(24, 8),
        state: f(32, 4),
        ascii_size: 48,
        compact_size: 72,
        utf8_length: f(48, 8),
        utf8: f(56, 8),
        kind_shift: 2,
        compact_bit: 5,
        ascii_bit: 6,
        // ready
        static_bits: 1 << 7,
        wstr: Some((f(40, 8), f(64, 8))),
    },
    bytes: BYTES_3X,
    int: IntLayout {
        size: IntSize::SignedObSize,
        digits: 24,
        digit_size: 4,
        min_size: 32,
    },
    float: FLOAT_3X,
    tuple: TUPLE_3X,
    runtime: RuntimeLayout {
        symbol: "_PyRuntime",
        // _PyRuntime.global_objects.singletons.*
        small_ints: 680,
        small_int_stride: 32,
        small_int_neg: 5,
        small_int_pos: 256,
        bytes_empty: 9064,
        bytes_characters: Some((9104, 48)),
        tuple_empty: 58904,
        // 3.11's generator does not share one-character strings.
        ascii_chars: None,
        latin1_chars: None,
        global_strings: strings::GLOBAL_STRINGS,
        // Measured: gcc's arm64 deepfreeze.o of Debian's 3.11.2 refers to
        // every shared object 16 bytes further than the x86_64 one does.
        arch_shift: &[(crate::arch::Arch::Aarch64, 16)],
        known_on: &[crate::target::Os::Linux],
    },
    sym: SYMBOLS_3X,

    frozen: FrozenLayout {
        keeps_marshal: false,
        ..FROZEN_3X
    },
};
