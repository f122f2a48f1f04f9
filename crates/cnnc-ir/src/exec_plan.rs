//! The execution plan: an optimized graph and its [`MemoryPlan`] lowered to
//! a list of kernel calls over one activation arena.
//!
//! This is the last compiler stage both fast engines share: the
//! interpreter's fast mode binds each [`Step`] to a `cnnc_runtime` layer
//! and runs the list; the code generator prints the same list as Rust
//! literals. Everything in a plan is plain data (kernel `…Spec`s, module
//! names, offsets), so printing it needs no knowledge of the graph.
//!
//! # Layout
//!
//! Rank-3 values `[C, H, W]` live in the arena as NHWC (`[H, W, C]` per
//! sample); values of any other rank are stored row-major, as PyTorch
//! stores them. The caller's input and output are NCHW. The plan converts
//! at the edges only:
//!
//! - **Input.** The first step reorders the caller's NCHW input into the
//!   input value's arena slot ([`Kernel::Reorder`], NCHW → NHWC). When the
//!   two layouts coincide (`C = 1`, `H·W = 1`, or not rank 3: see
//!   [`flatten_is_alias`]) and nothing writes over the input's memory (no
//!   in-place reader, no alias), there is no such step: the readers read
//!   the caller's buffer directly ([`Operand::Input`]). If the layouts
//!   coincide but the input's memory is written over, the step is a
//!   [`Kernel::Copy`].
//! - **Output.** The last step writes the caller's buffer
//!   ([`Operand::Output`]): a reorder NHWC → NCHW of a rank-3 output; for an
//!   output whose layouts coincide, the layer that computes it writes the
//!   caller's buffer itself (an in-place element-wise step then reads its
//!   input's slot instead), or, when the output is an alias of another
//!   value, a [`Kernel::Copy`] does.
//! - **A layer that reads the input's planes.** When the input's only
//!   reader is a max or average pooling, a depthwise convolution with
//!   channel multiplier 1, or a convolution of few input channels (a stem:
//!   the ones [`Algorithm::choose`] computes as [`Algorithm::RowIndirect`]),
//!   without residual and outside fused blocks, that layer reads the
//!   caller's NCHW planes itself ([`Layout::Nchw`],
//!   [`Algorithm::PlanarDepthwise`], [`Algorithm::PlanarDirect`]) and the
//!   input reorder moves after it,
//!   onto its output (a 3x3/2 pooling: a quarter of the data): the layer
//!   writes NCHW into the input's slot, then a reorder writes its own
//!   slot. Such a layer that is the network's output writes the caller's
//!   buffer and nothing is reordered; an output `[C, 1, 1]` needs no
//!   reorder either.
//! - **`flatten`** of `[C, H, W]` with `C > 1` and `H·W > 1` is a reorder
//!   NHWC → NCHW into the flattened value's slot; any other `flatten` (and
//!   `dropout`) is an alias and has no step.
//!
//! # Sizes
//!
//! Offsets and lengths are in floats **per sample**, as in the memory plan:
//! for a batch of `N` every offset and length is multiplied by `N`, and the
//! arena holds [`ExecPlan::arena_len`]` × N` floats. Kernel specs describe
//! one sample; the batch is an argument of every kernel call.
//!
//! # In place
//!
//! A step with [`Step::in_place`] writes its output over its first input
//! (`inputs[0] == output`, the same arena region): an activation, a
//! standalone batch-norm or an `add` (whose operands are swapped so that the
//! one written over comes first; `a + b` and `b + a` are the same `f32`).
//! Every other step's output overlaps none of its inputs.
//!
//! **Invariant:** steps run in order, each exactly once; a step reads only
//! values written by earlier steps (or the caller's input); regions follow
//! the memory plan, so a region is not overwritten while a later step still
//! needs it.
//!
//! ```
//! use cnnc_ir::exec_plan::{Kernel, Operand};
//! use cnnc_syntax::{RenderStyle, SourceFile};
//!
//! let text = "network t {\n  input x: [3, 8, 8]\n  c = conv2d(4, 3, padding=1, bias=false)\n  bn = batchnorm2d\n  relu\n  flatten\n  fc = linear(10)\n}\n";
//! let file = SourceFile::new("t.cnn", text);
//! let checked = cnnc_ir::check(&file).map_err(|e| e.render(&file, RenderStyle::Plain))?;
//! let optimized = cnnc_ir::optimize(checked.graph, &checked.info)
//!     .map_err(|e| e.render(&file, RenderStyle::Plain))?;
//! let memory = cnnc_ir::plan_memory(&optimized.graph, &optimized.info)
//!     .map_err(|e| e.render(&file, RenderStyle::Plain))?;
//! let plan = cnnc_ir::plan_execution(&optimized.graph, &optimized.info, &memory)
//!     .map_err(|e| e.render(&file, RenderStyle::Plain))?;
//! let kernels: Vec<&str> = plan.steps.iter().map(|step| step.kernel.name()).collect();
//! // NCHW → NHWC, the convolution (batch-norm and relu fused), the flatten
//! // (NHWC → CHW order), the linear layer writing the caller's output.
//! assert_eq!(kernels, ["reorder", "conv2d", "reorder", "linear"]);
//! assert_eq!(plan.steps[0].inputs, [Operand::Input]);
//! assert_eq!(plan.steps[3].output, Operand::Output);
//! let Kernel::Conv2d(conv) = &plan.steps[1].kernel else { unreachable!() };
//! assert!(conv.has_bias); // the folded batch-norm's
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use cnnc_kernels::ops::concat::ConcatSpec;
use cnnc_kernels::ops::conv::{
    planar_depthwise_supported, planar_direct_supported, Algorithm, BottleneckSpec, Conv2dSpec,
};
use cnnc_kernels::ops::elementwise::{ActivationSpec, AddSpec};
use cnnc_kernels::ops::layout::{Layout, Reorder, ReorderSpec};
use cnnc_kernels::ops::linear::LinearSpec;
use cnnc_kernels::ops::norm::BatchNormSpec;
use cnnc_kernels::ops::pool::{planar_supported, AdaptiveAvgPoolSpec, AvgPoolSpec, MaxPoolSpec};
use cnnc_kernels::ops::softmax::SoftmaxSpec;
use cnnc_kernels::Activation;
use cnnc_syntax::{Diagnostic, Diagnostics, Label, Span};

use crate::fusion::{self, Bottleneck};
use crate::graph::{Graph, NodeId};
use crate::infer::{resolve_dim, GraphInfo};
use crate::memory::{flatten_is_alias, MemoryPlan, Placement};
use crate::op::{FoldedBatchNorm, Op};

/// A network lowered to kernel calls: see the [module documentation](self).
#[derive(Clone, Debug, PartialEq)]
pub struct ExecPlan {
    /// The network's name (`network NAME { … }`).
    pub name: String,
    /// The per-sample input shape (NCHW for rank 3).
    pub input_shape: Vec<usize>,
    /// The per-sample output shape (NCHW for rank 3).
    pub output_shape: Vec<usize>,
    /// Floats per input sample.
    pub input_len: usize,
    /// Floats per output sample.
    pub output_len: usize,
    /// The arena's length in floats per sample (the memory plan's).
    pub arena_len: usize,
    /// The kernel calls, in execution order.
    pub steps: Vec<Step>,
}

/// One kernel call.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// A display name: the layer's name (`layer1.0.conv1`), `#3 relu` for
    /// an anonymous layer, `input`/`output` for the edge reorders.
    pub name: String,
    /// The graph node this step computes (the input node for the input
    /// edge, the output node for the output edge).
    pub node: NodeId,
    /// What runs, with its per-sample geometry.
    pub kernel: Kernel,
    /// Where the weights come from (`Some` exactly for `conv2d`, `linear`,
    /// `batchnorm2d` and `bottleneck` steps).
    pub weights: Option<StepWeights>,
    /// What the kernel reads, in the kernel's argument order: the main
    /// input, then a convolution's or linear layer's residual, an `add`'s
    /// second operand, or a `concat`'s further parts.
    pub inputs: Vec<Operand>,
    /// What the kernel writes.
    pub output: Operand,
    /// The kernel writes over `inputs[0]` (the same region as `output`).
    pub in_place: bool,
    /// Multiply-accumulates per sample (convolutions and linear layers; 0
    /// otherwise), for FLOP rates.
    pub macs: u64,
}

/// A buffer a step reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// The caller's input (NCHW), read-only.
    Input,
    /// The caller's output buffer (NCHW), written by the last step only.
    Output,
    /// A region of the activation arena.
    Arena(Region),
}

/// A region of the activation arena, in floats per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// Offset per sample (the region of a batch of `N` starts at
    /// `offset × N`).
    pub offset: usize,
    /// Length per sample.
    pub len: usize,
}

/// The kernel of a step, with its per-sample spec.
#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    /// A layout change: the input edge (NCHW → NHWC), the output edge and
    /// `flatten` (NHWC → NCHW).
    Reorder(ReorderSpec),
    /// A plain copy of `len` floats per sample (an edge whose layouts
    /// coincide).
    Copy {
        /// Floats per sample.
        len: usize,
    },
    /// `conv2d`, with its fused epilogue and chosen algorithm.
    Conv2d(Conv2dSpec),
    /// An inverted residual block run as one kernel ([`crate::fusion`]):
    /// reads the block's input (and the projection's residual), writes the
    /// projection's output.
    Bottleneck(Box<BottleneckSpec>),
    /// `linear`, with its fused epilogue.
    Linear(LinearSpec),
    /// A standalone `batchnorm2d` (one the optimizer could not fold).
    BatchNorm(BatchNormSpec),
    /// `maxpool2d`.
    MaxPool(MaxPoolSpec),
    /// `avgpool2d`.
    AvgPool(AvgPoolSpec),
    /// `adaptive_avgpool2d`.
    AdaptiveAvgPool(AdaptiveAvgPoolSpec),
    /// A standalone activation.
    Activation(ActivationSpec),
    /// `add`, with its fused activation.
    Add(AddSpec),
    /// `softmax`, its dimension resolved against the stored layout.
    Softmax(SoftmaxSpec),
    /// `concat`: `spec.outer` rows, and each part's row length per sample,
    /// in the order of [`Step::inputs`].
    Concat {
        /// The rows.
        spec: ConcatSpec,
        /// Each part's row length (`inner_k`).
        inners: Vec<usize>,
    },
}

impl Kernel {
    /// A short name: `reorder`, `copy`, `conv2d`, `linear`, `batchnorm2d`,
    /// `maxpool2d`, `avgpool2d`, `adaptive_avgpool2d`, `activation`, `add`,
    /// `softmax`, `concat`, `bottleneck`.
    pub fn name(&self) -> &'static str {
        match self {
            Kernel::Reorder(_) => "reorder",
            Kernel::Copy { .. } => "copy",
            Kernel::Conv2d(_) => "conv2d",
            Kernel::Bottleneck(_) => "bottleneck",
            Kernel::Linear(_) => "linear",
            Kernel::BatchNorm(_) => "batchnorm2d",
            Kernel::MaxPool(_) => "maxpool2d",
            Kernel::AvgPool(_) => "avgpool2d",
            Kernel::AdaptiveAvgPool(_) => "adaptive_avgpool2d",
            Kernel::Activation(_) => "activation",
            Kernel::Add(_) => "add",
            Kernel::Softmax(_) => "softmax",
            Kernel::Concat { .. } => "concat",
        }
    }

    /// The convolution algorithm's name (`indirect`, `gemm1x1`, ...), or
    /// for other kernels the variant worth showing (`gemv` is not decided
    /// here: `None`).
    pub fn algorithm(&self) -> Option<&'static str> {
        match self {
            Kernel::Conv2d(spec) => Some(spec.algorithm.name()),
            Kernel::MaxPool(MaxPoolSpec {
                layout: Layout::Nchw,
                ..
            })
            | Kernel::AvgPool(AvgPoolSpec {
                layout: Layout::Nchw,
                ..
            }) => Some("planar"),
            Kernel::Bottleneck(spec) => Some(if spec.expand.is_some() {
                "expand+depthwise+project"
            } else {
                "depthwise+project"
            }),
            _ => None,
        }
    }
}

/// Where a step's weights come from in the PyTorch `state_dict`: what the
/// `cnnc_runtime::bind` function of the step's kernel takes besides the
/// spec.
#[derive(Clone, Debug, PartialEq)]
pub enum StepWeights {
    /// A convolution: `{module}.weight` `[O, C/groups, kh, kw]`, and
    /// `{module}.bias` `[O]` when `bias`.
    Conv2d {
        /// The module (`layer1.0.conv1`).
        module: String,
        /// Whether the module has its own `.bias` tensor. (The spec's
        /// `has_bias` is also true when only a folded batch-norm provides
        /// one.)
        bias: bool,
        /// A batch-norm to fold into the weights when loading (in `f64`).
        batchnorm: Option<FoldedBatchNorm>,
        /// Rotate each kernel by 180° when loading (`flip_kernel=true`).
        flip: bool,
    },
    /// A linear layer: `{module}.weight` `[O, F]`, `{module}.bias` `[O]`
    /// when `bias`.
    Linear {
        /// The module (`fc`).
        module: String,
        /// Whether the module has its own `.bias` tensor.
        bias: bool,
        /// A batch-norm to fold into the weights when loading.
        batchnorm: Option<FoldedBatchNorm>,
    },
    /// A fused block: the weights of its convolutions, in order (each a
    /// [`StepWeights::Conv2d`]).
    Bottleneck {
        /// The expansion's (if any), the depthwise layer's, the projection's.
        stages: Vec<StepWeights>,
    },
    /// A standalone batch-norm: the module's four tensors `[C]`.
    BatchNorm {
        /// The module (`bn1`).
        module: String,
        /// Its `eps`.
        eps: f64,
    },
}

/// One convolution's weight source, borrowed from a
/// [`StepWeights::Conv2d`]: the arguments of `cnnc_runtime::bind::conv2d`
/// besides the file and the spec.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvSource<'a> {
    /// The module.
    pub module: &'a str,
    /// Whether it has its own `.bias`.
    pub bias: bool,
    /// A folded batch-norm's module and `eps`.
    pub batchnorm: Option<(&'a str, f64)>,
    /// Rotate the kernels by 180°.
    pub flip: bool,
}

impl StepWeights {
    /// A convolution's source; `None` for other weights.
    pub fn conv_source(&self) -> Option<ConvSource<'_>> {
        match self {
            StepWeights::Conv2d {
                module,
                bias,
                batchnorm,
                flip,
            } => Some(ConvSource {
                module,
                bias: *bias,
                batchnorm: batchnorm.as_ref().map(|bn| (bn.module.as_str(), bn.eps)),
                flip: *flip,
            }),
            _ => None,
        }
    }

    /// A fused block's sources: `(expansion, depthwise, projection)`;
    /// `None` unless these are [`StepWeights::Bottleneck`] of two or three
    /// convolutions.
    #[allow(clippy::type_complexity)]
    pub fn bottleneck_sources(
        &self,
    ) -> Option<(Option<ConvSource<'_>>, ConvSource<'_>, ConvSource<'_>)> {
        let StepWeights::Bottleneck { stages } = self else {
            return None;
        };
        let sources: Option<Vec<ConvSource<'_>>> =
            stages.iter().map(StepWeights::conv_source).collect();
        match sources?[..] {
            [expand, depthwise, project] => Some((Some(expand), depthwise, project)),
            [depthwise, project] => Some((None, depthwise, project)),
            _ => None,
        }
    }
}

/// Lowers a checked (usually optimized) graph, its info and its memory
/// plan to an [`ExecPlan`]. Errors are internal (the three disagree: a bug
/// in cnnc), reported at the layer concerned.
pub fn plan_execution(
    graph: &Graph,
    info: &GraphInfo,
    memory: &MemoryPlan,
) -> Result<ExecPlan, Diagnostics> {
    Planner {
        graph,
        info,
        memory,
        input_direct: false,
    }
    .plan()
}

struct Planner<'a> {
    graph: &'a Graph,
    info: &'a GraphInfo,
    memory: &'a MemoryPlan,
    /// The input's readers read the caller's buffer (no input step).
    input_direct: bool,
}

impl Planner<'_> {
    fn plan(mut self) -> Result<ExecPlan, Diagnostics> {
        let graph = self.graph;
        let (input, output) = (graph.input(), graph.output());
        let input_shape = self.info.shape(input).to_vec();
        let output_shape = self.info.shape(output).to_vec();
        let input_len = self.len_of(input)?;
        let output_len = self.len_of(output)?;
        if self.memory.order().first() != Some(&input) {
            return Err(internal(
                graph,
                input,
                "the plan does not start at the input",
            ));
        }

        // The input can be read in place unless its memory is written over.
        let written_over = self.memory.order().iter().any(|&node| {
            matches!(
                self.memory.slot(node).map(|slot| slot.placement),
                Some(Placement::InPlace(source) | Placement::Alias(source)) if source == input
            )
        });
        self.input_direct = input != output && flatten_is_alias(&input_shape) && !written_over;

        let planar = self.planar_first()?;
        let mut steps = Vec::with_capacity(self.memory.order().len() + 2);
        if !self.input_direct && planar.is_none() {
            let kernel = self.edge_kernel(input, &input_shape, Reorder::NchwToNhwc)?;
            steps.push(Step {
                name: "input".to_string(),
                node: input,
                kernel,
                weights: None,
                inputs: vec![Operand::Input],
                output: Operand::Arena(self.region(input)?),
                in_place: false,
                macs: 0,
            });
        }
        for &node in &self.memory.order()[1..] {
            match self.step(node)? {
                Some(step) if planar == Some(node) => self.push_planar(&mut steps, step)?,
                Some(step) => steps.push(step),
                None => {}
            }
        }
        for block in self.memory.bottlenecks() {
            self.fuse(&mut steps, block)?;
        }
        if let Some(step) = steps.iter().find(|step| {
            self.memory
                .slot(step.node)
                .is_some_and(|slot| slot.placement == Placement::Fused)
        }) {
            return Err(internal(
                graph,
                step.node,
                "a value with no memory outside its fused block",
            ));
        }

        // The output edge: the last layer writes the caller's buffer when
        // the layouts agree; otherwise a reorder or a copy does.
        let output_region = Operand::Arena(self.region(output)?);
        let redirect = input != output
            && flatten_is_alias(&output_shape)
            && steps
                .last()
                .is_some_and(|step| step.node == output && step.output == output_region);
        match steps.last_mut() {
            // A planar pooling that is the whole network wrote it.
            Some(step) if step.output == Operand::Output => {}
            Some(step) if redirect => {
                step.output = Operand::Output;
                step.in_place = false;
            }
            _ => {
                let kernel = self.edge_kernel(output, &output_shape, Reorder::NhwcToNchw)?;
                steps.push(Step {
                    name: "output".to_string(),
                    node: output,
                    kernel,
                    weights: None,
                    inputs: vec![self.operand(output)?],
                    output: Operand::Output,
                    in_place: false,
                    macs: 0,
                });
            }
        }
        Ok(ExecPlan {
            name: graph.name().to_string(),
            input_shape,
            output_shape,
            input_len,
            output_len,
            arena_len: self.memory.arena_len(),
            steps,
        })
    }

    /// The layer that reads the caller's NCHW input directly, if any: the
    /// input's only reader, a max or average pooling ([`Layout::Nchw`]) or
    /// a convolution outside fused blocks that [`planar_algorithm`] gives a
    /// planar algorithm, with a window
    /// the planar kernels take, whose output fits in the input's slot
    /// (where it is written before its reorder) or is the network's output.
    /// The NCHW → NHWC reorder then runs on that layer's output (a 3x3/2
    /// pooling: a quarter of the input), or not at all.
    fn planar_first(&self) -> Result<Option<NodeId>, Diagnostics> {
        let graph = self.graph;
        let (input, output) = (graph.input(), graph.output());
        if self.input_direct || input == output {
            return Ok(None);
        }
        let &[(first, _)] = &graph.users(input)[..] else {
            return Ok(None);
        };
        let fresh = self
            .memory
            .slot(first)
            .is_some_and(|slot| slot.placement == Placement::Fresh);
        let in_block = self.memory.bottlenecks().iter().any(|block| {
            block.expand == Some(first) || block.depthwise == first || block.project == first
        });
        let planar = match graph.get(first).map(|data| &data.op) {
            Some(Op::MaxPool2d(_) | Op::AvgPool2d(_)) => {
                planar_supported(&self.pool_geometry(first)?)
            }
            Some(Op::Conv2d(_)) => fusion::conv_spec(graph, self.info, first)
                .is_some_and(|spec| planar_algorithm(&spec).is_some()),
            _ => false,
        };
        if !planar || !fresh || in_block {
            return Ok(None);
        }
        let fits = first == output || self.len_of(first)? <= self.len_of(input)?;
        Ok(fits.then_some(first))
    }

    /// Pushes the planar form of `step` ([`Planner::planar_first`]): the
    /// layer on the caller's input, written to the caller's output or into
    /// the input's slot, and then the reorder of that into the layer's own
    /// slot.
    fn push_planar(&self, steps: &mut Vec<Step>, mut step: Step) -> Result<(), Diagnostics> {
        let graph = self.graph;
        let node = step.node;
        match &mut step.kernel {
            Kernel::MaxPool(spec) => spec.layout = Layout::Nchw,
            Kernel::AvgPool(spec) => spec.layout = Layout::Nchw,
            Kernel::Conv2d(spec) => {
                spec.algorithm = planar_algorithm(spec)
                    .ok_or_else(|| internal(graph, node, "a planar step of another convolution"))?
            }
            _ => return Err(internal(graph, node, "a planar step of another kernel")),
        }
        step.inputs = vec![Operand::Input];
        if node == graph.output() {
            step.output = Operand::Output;
            steps.push(step);
            return Ok(());
        }
        let shape = self.info.shape(node).to_vec();
        let Kernel::Reorder(spec) = self.edge_kernel(node, &shape, Reorder::NchwToNhwc)? else {
            // `[C, 1, 1]` (or one channel): both layouts are the same.
            step.output = Operand::Arena(self.region(node)?);
            steps.push(step);
            return Ok(());
        };
        let nchw = Region {
            len: self.len_of(node)?,
            ..self.region(graph.input())?
        };
        step.output = Operand::Arena(nchw);
        steps.push(step);
        steps.push(Step {
            name: "input".to_string(),
            node,
            kernel: Kernel::Reorder(spec),
            weights: None,
            inputs: vec![Operand::Arena(nchw)],
            output: Operand::Arena(self.region(node)?),
            in_place: false,
            macs: 0,
        });
        Ok(())
    }

    /// Replaces the steps of `block` by one [`Kernel::Bottleneck`] step at
    /// the projection's place (the memory plan keeps the block's input
    /// alive until there).
    fn fuse(&self, steps: &mut Vec<Step>, block: &Bottleneck) -> Result<(), Diagnostics> {
        let graph = self.graph;
        let find = |node: NodeId| {
            steps
                .iter()
                .position(|step| step.node == node)
                .ok_or_else(|| internal(graph, node, "a fused layer has no step"))
        };
        let expand = block.expand.map(find).transpose()?;
        let (depthwise, project) = (find(block.depthwise)?, find(block.project)?);
        let stages: Vec<usize> = expand.into_iter().chain([depthwise, project]).collect();
        let mut specs = Vec::with_capacity(3);
        let mut weights = Vec::with_capacity(3);
        for &index in &stages {
            let step = &steps[index];
            match (&step.kernel, &step.weights) {
                (Kernel::Conv2d(spec), Some(stage @ StepWeights::Conv2d { .. })) => {
                    specs.push(*spec);
                    weights.push(stage.clone());
                }
                _ => {
                    return Err(internal(
                        graph,
                        step.node,
                        "a fused layer is not a convolution",
                    ))
                }
            }
        }
        let [.., depthwise_spec, project_spec] = specs[..] else {
            return Err(internal(
                graph,
                block.project,
                "a fused block without layers",
            ));
        };
        let spec = BottleneckSpec {
            expand: expand.map(|_| specs[0]),
            depthwise: depthwise_spec,
            project: project_spec,
        };
        let first = &steps[stages[0]];
        let last = &steps[project];
        let mut inputs = vec![*first
            .inputs
            .first()
            .ok_or_else(|| internal(graph, first.node, "a convolution without input"))?];
        inputs.extend(last.inputs.iter().skip(1).copied());
        let names: Vec<&str> = stages
            .iter()
            .map(|&index| steps[index].name.as_str())
            .collect();
        let fused = Step {
            name: fused_name(&names),
            node: block.project,
            kernel: Kernel::Bottleneck(Box::new(spec)),
            weights: Some(StepWeights::Bottleneck { stages: weights }),
            inputs,
            output: last.output,
            in_place: false,
            macs: stages.iter().map(|&index| steps[index].macs).sum(),
        };
        steps[project] = fused;
        for &index in stages.iter().rev().skip(1) {
            steps.remove(index);
        }
        Ok(())
    }

    /// The reorder of an edge value in `direction`, or a copy when NCHW and
    /// the stored layout coincide.
    fn edge_kernel(
        &self,
        node: NodeId,
        shape: &[usize],
        direction: Reorder,
    ) -> Result<Kernel, Diagnostics> {
        Ok(match *shape {
            [channels, height, width] if !flatten_is_alias(shape) => Kernel::Reorder(ReorderSpec {
                reorder: direction,
                channels,
                height,
                width,
            }),
            _ => Kernel::Copy {
                len: self.len_of(node)?,
            },
        })
    }

    /// The step computing `node`, or `None` for an alias.
    fn step(&self, node: NodeId) -> Result<Option<Step>, Diagnostics> {
        let graph = self.graph;
        let Some(data) = graph.get(node) else {
            return Err(internal(graph, node, "the plan names a removed node"));
        };
        let slot = self
            .memory
            .slot(node)
            .ok_or_else(|| internal(graph, node, "the value has no slot"))?;
        if matches!(slot.placement, Placement::Alias(_)) {
            return Ok(None);
        }
        let producers = graph.inputs(node);
        let mut inputs = producers
            .iter()
            .map(|&producer| self.operand(producer))
            .collect::<Result<Vec<_>, _>>()?;
        let output = Operand::Arena(self.region(node)?);
        let len = self.len_of(node)?;
        let shape = self.info.shape(node);
        let first_shape = producers
            .first()
            .map_or(&[][..], |&producer| self.info.shape(producer));
        let macs = self.info.get(node).map_or(0, |info| info.macs);
        let mut weights = None;
        let kernel = match &data.op {
            Op::Input(_) => return Err(internal(graph, node, "a second input node")),
            Op::Dropout(_) => return Err(internal(graph, node, "a dropout that is not an alias")),
            Op::Conv2d(conv) => {
                let spec = fusion::conv_spec(graph, self.info, node)
                    .ok_or_else(|| internal(graph, node, "no convolution geometry"))?;
                let epilogue = &conv.epilogue;
                let batchnorm = conv.weights.folded_batchnorm.clone();
                if epilogue.bias != batchnorm.is_some() {
                    return Err(internal(
                        graph,
                        node,
                        "a folded bias without its batch-norm, or the reverse",
                    ));
                }
                weights = Some(StepWeights::Conv2d {
                    module: conv.weights.module.clone(),
                    bias: conv.bias,
                    batchnorm,
                    flip: conv.flip_kernel,
                });
                Kernel::Conv2d(spec)
            }
            Op::Linear(linear) => {
                let &[in_features] = first_shape else {
                    return Err(internal(graph, node, "a linear layer on a non-flat value"));
                };
                let epilogue = &linear.epilogue;
                let batchnorm = linear.weights.folded_batchnorm.clone();
                if epilogue.bias != batchnorm.is_some() {
                    return Err(internal(
                        graph,
                        node,
                        "a folded bias without its batch-norm, or the reverse",
                    ));
                }
                weights = Some(StepWeights::Linear {
                    module: linear.weights.module.clone(),
                    bias: linear.bias,
                    batchnorm,
                });
                Kernel::Linear(LinearSpec {
                    in_features,
                    out_features: linear.out_features,
                    activation: epilogue.activation,
                    has_bias: linear.bias || epilogue.bias,
                    has_residual: epilogue.residual,
                })
            }
            Op::MaxPool2d(_) => Kernel::MaxPool(MaxPoolSpec {
                geometry: self.pool_geometry(node)?,
                activation: Activation::Identity,
                layout: Layout::Nhwc,
            }),
            Op::AvgPool2d(pool) => Kernel::AvgPool(AvgPoolSpec {
                geometry: self.pool_geometry(node)?,
                count_include_pad: pool.count_include_pad,
                activation: Activation::Identity,
                layout: Layout::Nhwc,
            }),
            Op::AdaptiveAvgPool2d(pool) => {
                let &[channels, in_h, in_w] = first_shape else {
                    return Err(internal(
                        graph,
                        node,
                        "pooling a value that is not [C, H, W]",
                    ));
                };
                Kernel::AdaptiveAvgPool(AdaptiveAvgPoolSpec {
                    channels,
                    input: [in_h, in_w],
                    output: pool.output_size,
                })
            }
            Op::BatchNorm2d(bn) => {
                let &[channels, height, width] = shape else {
                    return Err(internal(
                        graph,
                        node,
                        "a batch-norm of a value that is not [C, H, W]",
                    ));
                };
                weights = Some(StepWeights::BatchNorm {
                    module: bn.module.clone(),
                    eps: bn.eps,
                });
                Kernel::BatchNorm(BatchNormSpec {
                    channels,
                    pixels: height * width,
                    activation: Activation::Identity,
                })
            }
            Op::Flatten => match *first_shape {
                [channels, height, width] => Kernel::Reorder(ReorderSpec {
                    reorder: Reorder::NhwcToNchw,
                    channels,
                    height,
                    width,
                }),
                _ => Kernel::Copy { len },
            },
            Op::Activation(activation) => Kernel::Activation(ActivationSpec {
                len,
                activation: *activation,
            }),
            Op::Softmax(softmax) => {
                let axis = resolve_dim(softmax.dim, shape.len())
                    .map_err(|why| internal(graph, node, &why))?;
                let (outer, dim, inner) = split_at_axis(shape, axis);
                Kernel::Softmax(SoftmaxSpec { outer, dim, inner })
            }
            Op::Add(add) => Kernel::Add(AddSpec {
                len,
                activation: add.epilogue.activation,
            }),
            Op::Concat(concat) => {
                let axis = resolve_dim(concat.dim, shape.len())
                    .map_err(|why| internal(graph, node, &why))?;
                let (outer, _, _) = split_at_axis(shape, axis);
                let inners = producers
                    .iter()
                    .map(|&producer| {
                        let (_, dim, inner) = split_at_axis(self.info.shape(producer), axis);
                        dim * inner
                    })
                    .collect();
                Kernel::Concat {
                    spec: ConcatSpec { outer },
                    inners,
                }
            }
        };

        let in_place = match slot.placement {
            Placement::InPlace(source) => {
                let position = producers
                    .iter()
                    .position(|&producer| producer == source)
                    .ok_or_else(|| {
                        internal(graph, node, "in place over a value it does not read")
                    })?;
                if !matches!(
                    kernel,
                    Kernel::Activation(_) | Kernel::Add(_) | Kernel::BatchNorm(_)
                ) {
                    return Err(internal(
                        graph,
                        node,
                        "in place for a kernel that cannot be",
                    ));
                }
                // The operand written over goes first (`add` commutes).
                inputs.swap(0, position);
                if inputs[0] != output {
                    return Err(internal(graph, node, "in place over another region"));
                }
                true
            }
            _ => false,
        };
        Ok(Some(Step {
            name: graph.display_name(node),
            node,
            kernel,
            weights,
            inputs,
            output,
            in_place,
            macs,
        }))
    }

    fn pool_geometry(&self, node: NodeId) -> Result<cnnc_kernels::Pool2dGeometry, Diagnostics> {
        self.info
            .pool2d_geometry(self.graph, node, 1)
            .ok_or_else(|| internal(self.graph, node, "no pooling geometry"))
    }

    /// What a reader of `node`'s value reads.
    fn operand(&self, node: NodeId) -> Result<Operand, Diagnostics> {
        if self.input_direct && node == self.graph.input() {
            Ok(Operand::Input)
        } else {
            Ok(Operand::Arena(self.region(node)?))
        }
    }

    fn region(&self, node: NodeId) -> Result<Region, Diagnostics> {
        let slot = self
            .memory
            .slot(node)
            .ok_or_else(|| internal(self.graph, node, "the value has no slot"))?;
        if slot.placement == Placement::Fused {
            // Only the steps of its own block touch it, and `fuse` replaces
            // them (`plan` checks that none is left).
            return Ok(Region { offset: 0, len: 0 });
        }
        let end = slot.offset.checked_add(slot.len);
        if end.is_none_or(|end| end > self.memory.arena_len()) {
            return Err(internal(self.graph, node, "the slot is outside the arena"));
        }
        Ok(Region {
            offset: slot.offset,
            len: slot.len,
        })
    }

    /// Floats per sample of `node`'s value, checked against its slot.
    fn len_of(&self, node: NodeId) -> Result<usize, Diagnostics> {
        let len = crate::infer::checked_product(self.info.shape(node))
            .and_then(|len| usize::try_from(len).ok())
            .ok_or_else(|| internal(self.graph, node, "the value has no valid size"))?;
        match self.memory.slot(node) {
            Some(slot) if slot.len == len => Ok(len),
            _ => Err(internal(
                self.graph,
                node,
                "the value's slot does not match its shape",
            )),
        }
    }
}

/// The algorithm of a convolution that reads the network's NCHW input
/// planes, if it has one: no residual, and either a depthwise layer with
/// channel multiplier 1 ([`Algorithm::PlanarDepthwise`]) or a layer of one
/// group that the NHWC rule computes directly for its few input channels
/// (a stem: [`Algorithm::RowIndirect`] → [`Algorithm::PlanarDirect`]).
fn planar_algorithm(spec: &Conv2dSpec) -> Option<Algorithm> {
    let g = &spec.geometry;
    if spec.has_residual {
        None
    } else if g.groups > 1 && planar_depthwise_supported(g) {
        Some(Algorithm::PlanarDepthwise)
    } else if Algorithm::choose(g) == Algorithm::RowIndirect && planar_direct_supported(g) {
        Some(Algorithm::PlanarDirect)
    } else {
        None
    }
}

/// The display name of fused layers: their common module path, then each
/// one's rest (`features.2.conv.0.0 + 1.0 + 2`); the full names joined
/// when they share no path.
fn fused_name(names: &[&str]) -> String {
    let parts: Vec<Vec<&str>> = names.iter().map(|name| name.split('.').collect()).collect();
    let shortest = parts.iter().map(Vec::len).min().unwrap_or(0);
    // Keep at least one component of each name.
    let common = (0..shortest.saturating_sub(1))
        .take_while(|&i| parts.iter().all(|p| p[i] == parts[0][i]))
        .count();
    if common == 0 {
        return names.join(" + ");
    }
    let rests: Vec<String> = parts.iter().map(|p| p[common..].join(".")).collect();
    format!("{}.{}", parts[0][..common].join("."), rests.join(" + "))
}

/// `(outer, dim, inner)` of a value of `shape` split at per-sample `axis`,
/// for the stored layout: NHWC `[H, W, C]` for rank 3, the shape itself
/// otherwise.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let stored: [usize; 3];
    let (stored_shape, stored_axis): (&[usize], usize) = match *shape {
        [c, h, w] => {
            stored = [h, w, c];
            // C → 2, H → 0, W → 1.
            (&stored, [2, 0, 1][axis.min(2)])
        }
        _ => (shape, axis),
    };
    let outer = stored_shape[..stored_axis.min(stored_shape.len())]
        .iter()
        .product();
    let dim = stored_shape.get(stored_axis).copied().unwrap_or(1);
    let inner = stored_shape
        .get(stored_axis + 1..)
        .map_or(1, |rest| rest.iter().product());
    (outer, dim, inner)
}

fn internal(graph: &Graph, node: NodeId, what: &str) -> Diagnostics {
    let span = graph.get(node).map_or(Span::default(), |n| n.origin.op);
    let mut diagnostics = Diagnostics::new();
    diagnostics.push(
        Diagnostic::error(format!(
            "internal error: execution plan: {what} (this is a bug in cnnc)"
        ))
        .with_primary(Label::new(span, "")),
    );
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::tests::{check, find};

    fn plan(body: &str) -> (Graph, ExecPlan) {
        let checked = check(body);
        let optimized = crate::optimize(checked.graph, &checked.info).expect("optimizes");
        let memory = crate::plan_memory(&optimized.graph, &optimized.info).expect("memory plan");
        let plan =
            plan_execution(&optimized.graph, &optimized.info, &memory).expect("execution plan");
        (optimized.graph, plan)
    }

    fn kernels(plan: &ExecPlan) -> Vec<&'static str> {
        plan.steps.iter().map(|step| step.kernel.name()).collect()
    }

    #[test]
    fn softmax_and_concat_axes_follow_the_nhwc_layout() {
        // [C, H, W] = [2, 3, 5] stored as [3, 5, 2].
        assert_eq!(split_at_axis(&[2, 3, 5], 0), (15, 2, 1));
        assert_eq!(split_at_axis(&[2, 3, 5], 1), (1, 3, 10));
        assert_eq!(split_at_axis(&[2, 3, 5], 2), (3, 5, 2));
        assert_eq!(split_at_axis(&[7], 0), (1, 7, 1));
        assert_eq!(split_at_axis(&[4, 6], 1), (4, 6, 1));
        assert_eq!(split_at_axis(&[4, 6], 0), (1, 4, 6));
    }

    #[test]
    fn a_residual_block_fuses_and_reorders_only_at_the_edges() {
        let (graph, plan) = plan(
            "input x: [8, 6, 6]
             c1 = conv2d(8, 3, padding=1, bias=false)
             bn1 = batchnorm2d
             relu
             c2 = conv2d(8, 3, padding=1, bias=false)
             bn2 = batchnorm2d
             s = add(bn2, x)
             relu",
        );
        assert_eq!(kernels(&plan), ["reorder", "conv2d", "conv2d", "reorder"]);
        assert_eq!((plan.input_len, plan.output_len), (288, 288));
        assert_eq!(plan.input_shape, [8, 6, 6]);
        let input = &plan.steps[0];
        assert_eq!(
            input.kernel,
            Kernel::Reorder(ReorderSpec {
                reorder: Reorder::NchwToNhwc,
                channels: 8,
                height: 6,
                width: 6
            })
        );
        let Operand::Arena(x) = input.output else {
            panic!("the input goes to the arena")
        };
        let c2 = &plan.steps[2];
        assert_eq!(c2.node, find(&graph, "c2"));
        // The residual is the reordered input.
        assert_eq!(c2.inputs[1], Operand::Arena(x));
        let Kernel::Conv2d(spec) = c2.kernel else {
            panic!("a convolution")
        };
        assert!(spec.has_bias && spec.has_residual);
        assert_eq!(spec.activation, Activation::Relu);
        assert_eq!(
            c2.weights,
            Some(StepWeights::Conv2d {
                module: "c2".into(),
                bias: false,
                batchnorm: Some(FoldedBatchNorm {
                    module: "bn2".into(),
                    eps: 1e-5
                }),
                flip: false
            })
        );
        assert_eq!(c2.macs, 36 * 8 * 72);
        let output = plan.steps.last().expect("steps");
        assert_eq!(output.inputs, [c2.output]);
        assert_eq!(output.output, Operand::Output);
        // Everything lies inside the arena.
        for step in &plan.steps {
            for operand in step.inputs.iter().chain([&step.output]) {
                if let Operand::Arena(region) = operand {
                    assert!(region.offset + region.len <= plan.arena_len);
                }
            }
        }
    }

    #[test]
    fn a_flat_input_is_read_in_place_and_the_last_layer_writes_the_output() {
        let (_, plan) = plan(
            "input x: [1, 6, 6]
             c = conv2d(2, 3)
             relu
             flatten
             fc = linear(3)",
        );
        // C = 1: no input step; [2, 4, 4] flattens through a reorder.
        assert_eq!(kernels(&plan), ["conv2d", "reorder", "linear"]);
        assert_eq!(plan.steps[0].inputs, [Operand::Input]);
        assert_eq!(plan.steps[2].output, Operand::Output);
        assert!(plan.steps.iter().all(|step| !step.in_place));
    }

    /// The layout of the plan's pooling steps, in order.
    fn pool_layouts(plan: &ExecPlan) -> Vec<Layout> {
        plan.steps
            .iter()
            .filter_map(|step| match step.kernel {
                Kernel::MaxPool(spec) => Some(spec.layout),
                Kernel::AvgPool(spec) => Some(spec.layout),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_pooling_of_the_input_pools_the_nchw_planes() {
        // The whole network: no reorder at all.
        let (_, plan) = self::plan(
            "input x: [4, 9, 9]
             p = maxpool2d(3, stride=2, padding=1)",
        );
        assert_eq!(kernels(&plan), ["maxpool2d"]);
        assert_eq!(pool_layouts(&plan), [Layout::Nchw]);
        assert_eq!(plan.steps[0].kernel.algorithm(), Some("planar"));
        assert_eq!(plan.steps[0].inputs, [Operand::Input]);
        assert_eq!(plan.steps[0].output, Operand::Output);

        // Followed by a convolution: pooled into the input's slot, then the
        // reorder of the (quarter-size) pooled value.
        let (graph, plan) = self::plan(
            "input x: [4, 9, 9]
             p = avgpool2d(3, stride=2, padding=1)
             c = conv2d(8, 3, padding=1)",
        );
        assert_eq!(
            kernels(&plan),
            ["avgpool2d", "reorder", "conv2d", "reorder"]
        );
        assert_eq!(pool_layouts(&plan), [Layout::Nchw]);
        let (pool, reorder, conv) = (&plan.steps[0], &plan.steps[1], &plan.steps[2]);
        let Operand::Arena(pooled) = pool.output else {
            panic!("pooled into the arena")
        };
        assert_eq!(pooled.len, 4 * 5 * 5);
        assert_eq!(reorder.inputs, [pool.output]);
        assert_eq!(
            reorder.kernel,
            Kernel::Reorder(ReorderSpec {
                reorder: Reorder::NchwToNhwc,
                channels: 4,
                height: 5,
                width: 5
            })
        );
        assert_eq!(reorder.node, find(&graph, "p"));
        assert_eq!(conv.inputs, [reorder.output]);
        let Operand::Arena(nhwc) = reorder.output else {
            panic!("reordered into the arena")
        };
        assert!(
            pooled.offset + pooled.len <= nhwc.offset || nhwc.offset + nhwc.len <= pooled.offset
        );

        // A pooled `[C, 1, 1]` is the same in both layouts: no reorder.
        let (_, plan) = self::plan(
            "input x: [4, 3, 3]
             p = maxpool2d(3)
             flatten
             fc = linear(2)",
        );
        assert_eq!(kernels(&plan), ["maxpool2d", "linear"]);
        assert_eq!(pool_layouts(&plan), [Layout::Nchw]);
    }

    /// The algorithms of the plan's convolution steps.
    fn algorithms(plan: &ExecPlan) -> Vec<Algorithm> {
        plan.steps
            .iter()
            .filter_map(|step| match step.kernel {
                Kernel::Conv2d(spec) => Some(spec.algorithm),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_depthwise_convolution_of_the_input_reads_the_nchw_planes() {
        let (_, plan) = self::plan(
            "input x: [8, 6, 6]
             c = conv2d(8, 3, padding=1, groups=8)
             relu6",
        );
        assert_eq!(kernels(&plan), ["conv2d"]);
        assert_eq!(algorithms(&plan), [Algorithm::PlanarDepthwise]);
        assert_eq!(plan.steps[0].inputs, [Operand::Input]);
        assert_eq!(plan.steps[0].output, Operand::Output);
        let (_, plan) = self::plan(
            "input x: [8, 6, 6]
             d = conv2d(8, 3, stride=2, padding=1, groups=8)
             p = conv2d(16, 1)",
        );
        assert_eq!(kernels(&plan), ["conv2d", "reorder", "conv2d", "reorder"]);
        assert_eq!(
            algorithms(&plan),
            [Algorithm::PlanarDepthwise, Algorithm::Gemm1x1]
        );
        // A channel multiplier, a residual, or a dense first layer: NHWC.
        for body in [
            "input x: [8, 6, 6]\n c = conv2d(16, 3, padding=1, groups=8)",
            "input x: [8, 6, 6]\n c = conv2d(8, 3, padding=1, groups=8)\n s = add(c, x)",
            "input x: [8, 6, 6]\n c = conv2d(8, 3, padding=1)",
        ] {
            let (_, plan) = self::plan(body);
            assert_eq!(kernels(&plan)[0], "reorder", "{body}");
            assert!(!algorithms(&plan).contains(&Algorithm::PlanarDepthwise));
        }
    }

    #[test]
    fn a_stem_that_is_the_network_writes_nchw_itself() {
        let (_, plan) = self::plan(
            "input x: [3, 32, 32]
             c = conv2d(16, 7, stride=2, padding=3)
             relu",
        );
        assert_eq!(kernels(&plan), ["conv2d"]);
        assert_eq!(algorithms(&plan), [Algorithm::PlanarDirect]);
        assert_eq!(plan.steps[0].inputs, [Operand::Input]);
        assert_eq!(plan.steps[0].output, Operand::Output);
        // Smaller than its input: planar, then the reorder of its output.
        let (_, plan) = self::plan(
            "input x: [3, 32, 32]
             c = conv2d(4, 3, stride=2, padding=1)
             p = conv2d(8, 1)",
        );
        assert_eq!(kernels(&plan), ["conv2d", "reorder", "conv2d", "reorder"]);
        assert_eq!(
            algorithms(&plan),
            [Algorithm::PlanarDirect, Algorithm::Gemm1x1]
        );
        // Larger than its input and not the output (a ResNet stem before
        // its pooling), many input channels, or a residual: NHWC.
        for body in [
            "input x: [3, 32, 32]\n c = conv2d(64, 7, stride=2, padding=3)\n p = maxpool2d(3, stride=2, padding=1)",
            "input x: [8, 6, 6]\n c = conv2d(8, 5, padding=2)",
            "input x: [3, 6, 6]\n c = conv2d(3, 3, padding=1)\n s = add(c, x)",
        ] {
            let (_, plan) = self::plan(body);
            assert_eq!(kernels(&plan)[0], "reorder", "{body}");
            assert!(!algorithms(&plan).contains(&Algorithm::PlanarDirect), "{body}");
        }
    }

    #[test]
    fn other_poolings_stay_nhwc() {
        // Larger than its input (it would not fit in the input's slot).
        let (_, plan) = self::plan(
            "input x: [4, 6, 6]
             p = maxpool2d(2, stride=1, padding=1)
             c = conv2d(4, 1)",
        );
        assert_eq!(
            kernels(&plan),
            ["reorder", "maxpool2d", "conv2d", "reorder"]
        );
        assert_eq!(pool_layouts(&plan), [Layout::Nhwc]);
        // The input read by another layer too, and a pooling that is not the
        // first layer.
        let (_, plan) = self::plan(
            "input x: [4, 6, 6]
             p = maxpool2d(3, stride=1, padding=1)
             s = add(p, x)
             q = maxpool2d(2)",
        );
        assert_eq!(pool_layouts(&plan), [Layout::Nhwc, Layout::Nhwc]);
        // One channel: the input is read in place already.
        let (_, plan) = self::plan(
            "input x: [1, 6, 6]
             p = maxpool2d(2)",
        );
        assert_eq!(pool_layouts(&plan), [Layout::Nhwc]);
    }

    #[test]
    fn in_place_steps_read_the_region_they_write() {
        let (_, plan) = plan(
            "input x: [4]
             a = relu
             b = sigmoid from x
             s = add(a, b)
             softmax",
        );
        // The sigmoid (x's last reader) writes over x, so x is copied in;
        // the add writes over one operand, whichever it is; the softmax
        // writes the caller's output.
        assert_eq!(
            kernels(&plan),
            ["copy", "activation", "activation", "add", "softmax"]
        );
        let (relu, sigmoid) = (&plan.steps[1], &plan.steps[2]);
        assert!(!relu.in_place);
        assert!(sigmoid.in_place && sigmoid.inputs[0] == sigmoid.output);
        assert_eq!(sigmoid.inputs[0], plan.steps[0].output);
        let add = &plan.steps[3];
        assert!(add.in_place && add.inputs[0] == add.output);
        assert_ne!(add.inputs[1], add.output);
        let softmax = &plan.steps[4];
        assert_eq!(softmax.inputs, [add.output]);
        assert_eq!(softmax.output, Operand::Output);
    }

    #[test]
    fn an_in_place_output_layer_writes_the_output_from_its_input() {
        let (_, plan) = plan(
            "input x: [1, 2, 3]
             a = sigmoid
             relu",
        );
        assert_eq!(kernels(&plan), ["copy", "activation", "activation"]);
        let (sigmoid, relu) = (&plan.steps[1], &plan.steps[2]);
        assert!(sigmoid.in_place);
        assert!(!relu.in_place);
        assert_eq!(relu.inputs, [sigmoid.output]);
        assert_eq!(relu.output, Operand::Output);
    }

    #[test]
    fn an_alias_output_is_copied_out() {
        let (_, plan) = plan(
            "input x: [3, 4, 4]
             p = adaptive_avgpool2d(1)
             flatten",
        );
        assert_eq!(kernels(&plan), ["reorder", "adaptive_avgpool2d", "copy"]);
        assert_eq!(plan.steps[2].inputs, [plan.steps[1].output]);
        assert_eq!(plan.steps[2].output, Operand::Output);
        assert_eq!(plan.output_shape, [3]);
    }

    #[test]
    fn concat_parts_and_softmax_dims_are_resolved() {
        let (_, plan) = plan(
            "input x: [2, 3, 3]
             a = relu
             b = sigmoid from x
             c = concat(a, b, dim=1)
             s = softmax(dim=3)",
        );
        let concat = plan
            .steps
            .iter()
            .find(|step| step.kernel.name() == "concat")
            .expect("a concat");
        assert_eq!(
            concat.kernel,
            Kernel::Concat {
                spec: ConcatSpec { outer: 9 },
                inners: vec![2, 2]
            }
        );
        let softmax = plan
            .steps
            .iter()
            .find(|step| step.kernel.name() == "softmax")
            .expect("a softmax");
        // Along W of [4, 3, 3] stored [3, 3, 4].
        assert_eq!(
            softmax.kernel,
            Kernel::Softmax(SoftmaxSpec {
                outer: 3,
                dim: 3,
                inner: 4
            })
        );
        assert_eq!(
            plan.steps.last().map(|step| step.kernel.name()),
            Some("reorder")
        );
    }

    fn overlaps(a: Operand, b: Operand) -> bool {
        match (a, b) {
            (Operand::Arena(a), Operand::Arena(b)) => {
                a.offset < b.offset + b.len && b.offset < a.offset + a.len
            }
            _ => false,
        }
    }

    #[test]
    fn large_inverted_residual_blocks_run_as_one_step_that_never_overwrites_its_input() {
        // Block 1 (dw + project) reads the input x; block 2 (expand, dw,
        // project) reads block 1's output, which dies inside block 2: the
        // fused step must not write over it (the memory plan keeps it
        // alive until the projection). Each depthwise input is 1 MiB.
        let (graph, plan) = plan(
            "input x: [64, 64, 64]
             d1 = conv2d(64, 3, padding=1, groups=64)
             relu6
             p1 = conv2d(16, 1)
             e2 = conv2d(64, 1)
             relu6
             d2 = conv2d(64, 3, stride=2, padding=1, groups=64)
             relu6
             p2 = conv2d(24, 1)
             flatten
             fc = linear(10)",
        );
        assert_eq!(
            kernels(&plan),
            ["reorder", "bottleneck", "bottleneck", "reorder", "linear"]
        );
        let (block1, block2) = (&plan.steps[1], &plan.steps[2]);
        assert_eq!(
            (block1.name.as_str(), block2.name.as_str()),
            ("d1 + p1", "e2 + d2 + p2")
        );
        assert_eq!(block2.node, find(&graph, "p2"));
        assert_eq!(block1.inputs, [plan.steps[0].output]);
        assert_eq!(block2.inputs, [block1.output]);
        assert!(!overlaps(block2.output, block2.inputs[0]));
        let Kernel::Bottleneck(spec) = &block2.kernel else {
            panic!("a fused block")
        };
        let expand = spec.expand.expect("an expansion");
        assert_eq!(expand.geometry.out_channels, 64);
        assert_eq!(spec.depthwise.geometry.stride, [2, 2]);
        assert_eq!(spec.project.activation, Activation::Identity);
        assert_eq!(
            block2.macs,
            64 * 64 * (16 * 64) + 32 * 32 * 64 * 9 + 32 * 32 * (64 * 24)
        );
        let Some(StepWeights::Bottleneck { stages }) = &block2.weights else {
            panic!("the block's weights")
        };
        let modules: Vec<&str> = stages
            .iter()
            .map(|stage| match stage {
                StepWeights::Conv2d { module, .. } => module.as_str(),
                _ => panic!("a convolution's weights"),
            })
            .collect();
        assert_eq!(modules, ["e2", "d2", "p2"]);
        assert!(matches!(&block1.kernel, Kernel::Bottleneck(spec) if spec.expand.is_none()));
    }

    #[test]
    fn blocks_whose_middle_values_are_read_elsewhere_or_that_are_small_stay_apart() {
        // `d`'s output is also added to the result: it must be stored.
        let (_, shared) = plan(
            "input x: [64, 64, 64]
             e = conv2d(64, 1)
             d = conv2d(64, 3, padding=1, groups=64)
             p = conv2d(64, 1)
             s = add(p, d)",
        );
        assert!(!kernels(&shared).contains(&"bottleneck"));
        // Small: 64 KiB per depthwise input.
        let (_, small) = plan(
            "input x: [16, 32, 32]
             e = conv2d(16, 1)
             d = conv2d(16, 3, padding=1, groups=16)
             p = conv2d(16, 1)",
        );
        assert_eq!(
            kernels(&small),
            ["reorder", "conv2d", "conv2d", "conv2d", "reorder"]
        );
    }

    #[test]
    fn fused_names_keep_the_common_module_path_once() {
        assert_eq!(
            fused_name(&[
                "features.2.conv.0.0",
                "features.2.conv.1.0",
                "features.2.conv.2"
            ]),
            "features.2.conv.0.0 + 1.0 + 2"
        );
        assert_eq!(fused_name(&["a.b", "a.c"]), "a.b + c");
        assert_eq!(fused_name(&["a", "a.c"]), "a + a.c");
        assert_eq!(fused_name(&["#3 conv2d", "p"]), "#3 conv2d + p");
    }
}
