//! Graph optimization passes, and [`optimize`], the pipeline that runs them.
//!
//! Every pass is a free function over a [`Graph`] in its own file, with a
//! `//!` line saying what it rewrites and what it leaves alone. Passes only
//! remove nodes and rewire edges between existing nodes (through the small
//! helpers of `rewrite.rs`), so a [`NodeId`] means the same layer before and
//! after, and every surviving node keeps its output shape: a pass never needs
//! fresh shape information, and the shapes inferred before optimization stay
//! valid for the nodes that survive it.
//!
//! # Order
//!
//! [`optimize`] runs, in this order:
//!
//! 1. [`eliminate_dead_nodes`]: layers the output does not depend on go
//!    first, so that they cannot keep a layer from being fused ("read only by
//!    ..." counts every reader).
//! 2. [`eliminate_identities`]: `dropout`, and `flatten` of a value that is
//!    already flat.
//! 3. Until nothing changes (at most [`MAX_ROUNDS`] rounds):
//!    1. [`fold_batchnorm`]: `conv2d → batchnorm2d` becomes one convolution
//!       whose weights are folded on loading;
//!    2. [`fuse_activation`]: an activation moves into the epilogue of the
//!       convolution, linear layer or `add` before it;
//!    3. [`fuse_residual`]: `add(conv, x)` becomes the convolution with `x`
//!       as its residual input, taking over the `add`'s activation. This runs
//!       after [`fuse_activation`] so that `add → relu` has already become
//!       one `add` whose activation the convolution can take.
//!
//! One round reaches the fixed point on every network the language can
//! express today; the loop (burn-onnx's simplifier has the same shape) makes
//! the result independent of that, and its cap makes it terminate even if a
//! future pass would undo another's work.
//!
//! # Verification
//!
//! In debug builds, shape inference runs again after every pass and must
//! give every surviving node the shape it had before (wasmtime's
//! `verify_if` between steps). In every build, the final graph is inferred
//! once more for the [`GraphInfo`] that [`Optimized`] returns (with the
//! folded batch-norms' tensors listed under their convolutions).
//!
//! # Example
//!
//! ```
//! use cnnc_ir::Op;
//! use cnnc_syntax::{RenderStyle, SourceFile};
//!
//! let text = "network t {\n  input x: [3, 8, 8]\n  c = conv2d(4, 3, padding=1, bias=false)\n  bn = batchnorm2d\n  relu\n}\n";
//! let file = SourceFile::new("t.cnn", text);
//! let checked = cnnc_ir::check(&file).map_err(|e| e.render(&file, RenderStyle::Plain))?;
//! let optimized = cnnc_ir::optimize(checked.graph, &checked.info)
//!     .map_err(|e| e.render(&file, RenderStyle::Plain))?;
//! // input and one convolution with the batch-norm and the relu fused.
//! assert_eq!(optimized.graph.len(), 2);
//! let Op::Conv2d(conv) = &optimized.graph[optimized.graph.output()].op else {
//!     panic!("not a convolution");
//! };
//! assert_eq!(conv.weights.folded_batchnorm.as_ref().map(|bn| bn.module.as_str()), Some("bn"));
//! assert_eq!(optimized.info.shape(optimized.graph.output()), &[4, 8, 8]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod eliminate_dead_nodes;
mod eliminate_identities;
mod fold_batchnorm;
mod fuse_activation;
mod fuse_residual;
mod rewrite;

pub use eliminate_dead_nodes::eliminate_dead_nodes;
pub use eliminate_identities::eliminate_identities;
pub use fold_batchnorm::fold_batchnorm;
pub use fuse_activation::fuse_activation;
pub use fuse_residual::fuse_residual;

use cnnc_syntax::{Diagnostic, Diagnostics, Label, Span};

use crate::graph::{Graph, NodeId};
use crate::infer::{format_shape, infer, GraphInfo};

/// The most rounds of the fusion passes [`optimize`] runs before it stops
/// looking for a fixed point.
pub const MAX_ROUNDS: usize = 4;

/// The result of [`optimize`].
#[derive(Debug)]
pub struct Optimized {
    /// The optimized graph. Node ids are those of the input graph (the
    /// nodes that survived keep theirs).
    pub graph: Graph,
    /// Shape information of the optimized graph.
    pub info: GraphInfo,
    /// What the passes did, and their warnings.
    pub report: Report,
}

/// What [`optimize`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// Every pass run that changed something, in order.
    pub runs: Vec<PassRun>,
    /// Warnings for the user (layers removed because the output does not
    /// depend on them; see [`eliminate_dead_nodes`] for which ones).
    pub warnings: Diagnostics,
}

impl Report {
    /// The total number of rewrites `pass` made over all its runs.
    pub fn rewrites(&self, pass: &str) -> usize {
        self.runs
            .iter()
            .filter(|run| run.pass == pass)
            .map(|run| run.rewrites)
            .sum()
    }
}

/// One run of one pass that changed the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassRun {
    /// The pass's function name (`fold_batchnorm`).
    pub pass: &'static str,
    /// How many rewrites it made (nodes removed or fused).
    pub rewrites: usize,
}

/// Runs every pass, in the order of the [module documentation](self), on a
/// checked graph and its info (from [`crate::check`] or [`crate::infer()`]).
///
/// Errors are internal: a pass produced a graph that shape inference
/// rejects or whose shapes changed. They are reported as diagnostics at the
/// offending layer, saying that this is a bug in cnnc.
pub fn optimize(graph: Graph, info: &GraphInfo) -> Result<Optimized, Diagnostics> {
    let mut pipeline = Pipeline {
        graph,
        info,
        report: Report::default(),
    };

    let warnings = pipeline.run("eliminate_dead_nodes", eliminate_dead_nodes)?;
    pipeline.report.warnings.extend(warnings);
    pipeline.run("eliminate_identities", |graph| {
        eliminate_identities(graph, info)
    })?;
    for _ in 0..MAX_ROUNDS {
        let mut changed = false;
        changed |= pipeline.run("fold_batchnorm", fold_batchnorm)? > 0;
        changed |= pipeline.run("fuse_activation", fuse_activation)? > 0;
        changed |= pipeline.run("fuse_residual", fuse_residual)? > 0;
        if !changed {
            break;
        }
    }

    let Pipeline { graph, report, .. } = pipeline;
    let info = infer(&graph).map_err(|errors| broken_by("the optimizer", &graph, errors))?;
    Ok(Optimized {
        graph,
        info,
        report,
    })
}

/// The graph being optimized, the shapes it had before, and the report.
struct Pipeline<'a> {
    graph: Graph,
    info: &'a GraphInfo,
    report: Report,
}

/// What a pass returns: a rewrite count, or a count and warnings.
trait PassOutput {
    fn rewrites(&self) -> usize;
}

impl PassOutput for usize {
    fn rewrites(&self) -> usize {
        *self
    }
}

impl PassOutput for Diagnostics {
    fn rewrites(&self) -> usize {
        0
    }
}

impl Pipeline<'_> {
    /// Runs one pass, records it in the report, and in debug builds checks
    /// that the graph is still valid with unchanged shapes.
    fn run<T: PassOutput>(
        &mut self,
        name: &'static str,
        pass: impl FnOnce(&mut Graph) -> T,
    ) -> Result<T, Diagnostics> {
        let before = self.graph.len();
        let output = pass(&mut self.graph);
        let rewrites = output
            .rewrites()
            .max(before.saturating_sub(self.graph.len()));
        if rewrites > 0 {
            self.report.runs.push(PassRun {
                pass: name,
                rewrites,
            });
        }
        if cfg!(debug_assertions) {
            verify_shapes(name, &self.graph, self.info)?;
        }
        Ok(output)
    }
}

/// Re-infers `graph` and checks that every node kept the shape `before`
/// gave it.
fn verify_shapes(pass: &str, graph: &Graph, before: &GraphInfo) -> Result<(), Diagnostics> {
    let after = infer(graph).map_err(|errors| broken_by(pass, graph, errors))?;
    for node in graph.node_ids() {
        if after.shape(node) != before.shape(node) {
            return Err(internal(
                graph,
                node,
                &format!(
                    "`{pass}` changed the shape of `{}` from {} to {}",
                    graph.display_name(node),
                    format_shape(before.shape(node)),
                    format_shape(after.shape(node))
                ),
            ));
        }
    }
    Ok(())
}

/// Shape inference rejected the graph a pass produced.
fn broken_by(pass: &str, graph: &Graph, errors: Diagnostics) -> Diagnostics {
    let first = errors
        .iter()
        .find(|d| d.is_error())
        .map(|d| d.message.clone())
        .unwrap_or_default();
    internal(
        graph,
        graph.output(),
        &format!("`{pass}` produced an invalid graph: {first}"),
    )
}

fn internal(graph: &Graph, node: NodeId, what: &str) -> Diagnostics {
    let span = graph.get(node).map_or(Span::default(), |n| n.origin.op);
    let mut diagnostics = Diagnostics::new();
    diagnostics.push(
        Diagnostic::error(format!("internal error: {what} (this is a bug in cnnc)"))
            .with_primary(Label::new(span, "")),
    );
    diagnostics
}

#[cfg(test)]
pub(crate) mod tests {
    //! Helpers for the passes' unit tests.

    use cnnc_syntax::{RenderStyle, SourceFile};

    use crate::graph::{Graph, NodeId};
    use crate::Checked;

    /// Checks `network t { BODY }`, panicking with the rendered errors.
    pub(crate) fn check(body: &str) -> Checked {
        let file = SourceFile::new("t.cnn", format!("network t {{\n{body}\n}}\n"));
        match crate::check(&file) {
            Ok(checked) => checked,
            Err(errors) => panic!("{}", errors.render(&file, RenderStyle::Plain)),
        }
    }

    /// The node named `name`.
    pub(crate) fn find(graph: &Graph, name: &str) -> NodeId {
        graph
            .node_ids()
            .find(|&node| graph[node].name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// The operator names in topological order.
    pub(crate) fn ops(graph: &Graph) -> Vec<&'static str> {
        graph
            .topo_order()
            .into_iter()
            .map(|node| graph[node].op.name())
            .collect()
    }

    #[test]
    fn the_pipeline_reports_its_passes() {
        let checked = check(
            "input x: [3, 8, 8]
             c = conv2d(3, 3, padding=1, bias=false)
             bn = batchnorm2d
             d = dropout
             s = add(d, x)
             relu
             flatten
             dropout",
        );
        let optimized = super::optimize(checked.graph, &checked.info).expect("optimizes");
        assert_eq!(ops(&optimized.graph), ["input", "conv2d", "flatten"]);
        let report = &optimized.report;
        assert_eq!(report.rewrites("eliminate_identities"), 2);
        assert_eq!(report.rewrites("fold_batchnorm"), 1);
        assert_eq!(report.rewrites("fuse_activation"), 1);
        assert_eq!(report.rewrites("fuse_residual"), 1);
        assert_eq!(report.rewrites("eliminate_dead_nodes"), 0);
        assert!(report.warnings.is_empty());
        assert_eq!(optimized.info.shape(optimized.graph.output()), [192]);
        assert_eq!(optimized.info.total_params, checked.info.total_params);
    }
}
