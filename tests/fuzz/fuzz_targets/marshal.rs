//! The marshal reader on arbitrary bytes: errors are fine, panics, stack
//! overflows and huge allocations are not.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyfreeze_obj::{graph::Graph, marshal};

fuzz_target!(|data: &[u8]| {
    marshal::with_stack(|| {
        let mut g = Graph::new();
        let _ = marshal::read_object(data, &mut g);
    });
});
