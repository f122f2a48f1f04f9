//! cnnc's intermediate representation: a graph of typed operators.
//!
//! # Data model
//!
//! A network is a [`Graph`]: nodes hold an [`Op`] (one closed enum, one
//! struct per operator, every parameter resolved with PyTorch's defaults),
//! an optional name (the PyTorch module path its weights load from) and the
//! source [`Origin`] for diagnostics. Edges carry values from a producer to
//! an input slot of a consumer; every operator has exactly one output.
//! Shapes are per sample: the batch size is a run-time value.
//!
//! Analyses do not mutate the graph; they return side tables. [`infer()`]
//! computes a [`GraphInfo`]: each node's output shape, parameter and MAC
//! counts and the weight tensors it expects. Later stages (the optimizer,
//! the interpreter, the code generator) take the graph and its info.
//!
//! # Pipeline
//!
//! ```text
//! SourceFile ─parse─▶ ast::Network ─lower─▶ Graph ─infer─▶ GraphInfo
//!                                            ─optimize─▶ Graph + GraphInfo ─plan_memory─▶ MemoryPlan
//! ```
//!
//! [`optimize`] runs the [`passes`] (batch-norm folding, epilogue fusion,
//! dead-code removal) and re-infers; [`plan_memory`] places every value of
//! a graph in one activation arena ([`memory`]); [`text`] prints a graph
//! with its plan (`cnnc build --emit ir`);
//! [`random_weights`] writes seeded random weights for every tensor
//! [`expected_weights`] lists (`cnnc bench` of a network without weights,
//! the benches).
//!
//! [`check`] runs the three steps and collects every diagnostic:
//!
//! ```
//! use cnnc_syntax::SourceFile;
//!
//! let file = SourceFile::new("tiny.cnn", "network tiny {\n  input x: [3, 8, 8]\n  c = conv2d(4, 3)\n  relu\n}\n");
//! let checked = cnnc_ir::check(&file).map_err(|e| e.render(&file, cnnc_syntax::RenderStyle::Plain))?;
//! let output = checked.graph.output();
//! assert_eq!(checked.info.shape(output), &[4, 6, 6]);
//! assert_eq!(checked.info.total_params, 4 * 3 * 3 * 3 + 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
// Diagnostics are large (labels, help, notes) but only built on the cold
// error path; boxing them would only add noise.
#![allow(clippy::result_large_err)]

pub mod dot;
pub mod exec_plan;
pub mod fusion;
pub mod graph;
pub mod infer;
pub mod lower;
pub mod memory;
pub mod op;
pub mod passes;
pub mod random;
pub mod spec;
pub mod suggest;
pub mod text;

pub use exec_plan::{plan_execution, ExecPlan};
pub use graph::{Edge, Graph, Node, NodeId, Origin};
pub use infer::{
    checked_product, expected_weights, format_shape, infer, resolve_dim, GraphInfo, NodeInfo,
    WeightSpec, MAX_ELEMENTS,
};
pub use lower::{lower, Lowered};
pub use memory::{plan_memory, MemoryPlan};
pub use op::{
    AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm2d, Concat, Conv2d, Dropout, Epilogue,
    FoldedBatchNorm, Input, Linear, MaxPool2d, Op, Softmax, WeightSource,
};
pub use passes::{optimize, Optimized};
pub use random::{random_values, random_weights};

use cnnc_syntax::{Diagnostics, SourceFile};

/// A checked network: the graph, its inferred info and the warnings found.
#[derive(Debug)]
pub struct Checked {
    /// The lowered graph.
    pub graph: Graph,
    /// Shapes, parameter and MAC counts, expected weights.
    pub info: GraphInfo,
    /// Warnings (unused layers, ...); there are no errors in a `Checked`.
    pub warnings: Diagnostics,
}

/// Parses, lowers and shape-checks a file. On failure the diagnostics hold
/// every error found (and the warnings found before it).
pub fn check(file: &SourceFile) -> Result<Checked, Diagnostics> {
    let network = cnnc_syntax::parse(file)?;
    let Lowered { graph, warnings } = lower(&network)?;
    match infer(&graph) {
        Ok(info) => Ok(Checked {
            graph,
            info,
            warnings,
        }),
        Err(errors) => {
            let mut all = warnings;
            all.extend(errors);
            all.sort_by_position();
            Err(all)
        }
    }
}
