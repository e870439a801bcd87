//! read -> lay out -> write, for every version and target: any marshal
//! data that reads as a module must lay out and write without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyfreeze_obj::emit::{build_object, read_graph, Options};
use pyfreeze_obj::input::{Marshalled, OffsetMap};
use pyfreeze_obj::version::Version;
use pyfreeze_obj::target::Target;

const TARGETS: [&str; 6] = [
    "x86_64-linux",
    "aarch64-linux",
    "x86_64-macos",
    "aarch64-macos",
    "x86_64-windows",
    "aarch64-windows",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let target = Target::parse(TARGETS[(sel & 7) as usize % TARGETS.len()]).unwrap();
    let version = Version::get(3, if sel & 8 == 0 { 12 } else { 11 }).unwrap();
    let m = Marshalled {
        name: "m".into(),
        accessor: "_Py_get_m_toplevel".into(),
        data: body.to_vec(),
        origin: "fuzz".into(),
        offsets: OffsetMap::Base(0),
    };
    let Ok(graph) = read_graph(std::slice::from_ref(&m)) else {
        return;
    };
    let opts = Options {
        target,
        version,
        inputs: vec![],
        modules_from: None,
        compile_with: None,
        lazy: sel & 16 != 0,
        freeze: vec![],
        trace: vec![],
        frozen_tables: false,
        assume_linux_runtime: true,
        stdlib: None,
        paths: vec![],
        include: None,
        verbose: false,
    };
    let (obj, _) =
        build_object(&opts, &graph, None).expect("a graph that reads must lay out and write");
    assert!(!obj.is_empty());
});
