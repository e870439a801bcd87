//! Reading every module's marshal bytes into one constant graph.

use crate::error::Result;
use crate::graph::{Graph, Module};
use crate::input::Marshalled;
use crate::marshal;

/// Read all modules into one constant graph.
///
/// Real code nests a few dozen levels, which this thread's stack holds;
/// input nesting deeper than [`marshal::SHALLOW_DEPTH`] is read again from
/// the start on a thread with room for [`marshal::MAX_DEPTH`] (a thread of
/// its own costs more than the read of the stock set: its stack, and an
/// allocator arena whose every page is new).
pub fn read_graph(mods: &[Marshalled]) -> Result<Graph> {
    match read_graph_here(mods, true)? {
        Some(graph) => Ok(graph),
        None => marshal::with_stack(|| {
            read_graph_here(mods, false).map(|g| g.expect("no shallow limit"))
        }),
    }
}

/// `Ok(None)`: `shallow`, and some module nests too deep for it.
fn read_graph_here(mods: &[Marshalled], shallow: bool) -> Result<Option<Graph>> {
    let mut graph = Graph::new();
    for m in mods {
        let read = if shallow {
            marshal::read_code_shallow(&m.data, &mut graph)
        } else {
            marshal::read_code(&m.data, &mut graph).map(Some)
        };
        let code = read.map_err(|mut e| {
            e.offset = e.offset.and_then(|o| m.offsets.map(&m.origin, o));
            let mut e = e.in_file(&m.origin);
            e.message = format!("module {}: {}", m.name, e.message);
            e
        })?;
        let Some(code) = code else {
            return Ok(None);
        };
        graph.modules.push(Module {
            name: m.name.clone(),
            accessor: m.accessor.clone(),
            code,
        });
    }
    Ok(Some(graph))
}
