//! Fuzzes the whole front end: bytes → source file → parse → lower → infer,
//! then renders every diagnostic (both styles) and the DOT graph. Any panic,
//! overflow or stack exhaustion is a bug: every input must give a network or
//! diagnostics.
#![no_main]

use cnnc_syntax::{RenderStyle, SourceFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = SourceFile::from_bytes("fuzz.cnn", data.to_vec());
    match cnnc_ir::check(&file) {
        Ok(checked) => {
            let _ = cnnc_ir::dot::to_dot(&checked.graph, &checked.info);
            let _ = cnnc_ir::expected_weights(&checked.graph, &checked.info);
            for node in checked.graph.node_ids() {
                let _ = checked.graph[node].op.summary();
                let _ = checked.info.conv2d_geometry(&checked.graph, node, 2);
                let _ = checked.info.pool2d_geometry(&checked.graph, node, 2);
            }
            let _ = checked.warnings.render(&file, RenderStyle::Plain);
        }
        Err(diagnostics) => {
            assert!(diagnostics.has_errors(), "failure without an error");
            let _ = diagnostics.render(&file, RenderStyle::Plain);
            let _ = diagnostics.render(&file, RenderStyle::Short);
        }
    }
});
