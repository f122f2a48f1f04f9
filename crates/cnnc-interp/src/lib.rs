//! Runs a checked cnnc graph directly, without generating code.
//!
//! # Data model
//!
//! An [`Interpreter`] is built once from a graph, its [`GraphInfo`] (from
//! `cnnc_ir::infer`) and a [`WeightFile`], then run on any number of
//! batches. Building it does all the checking that depends on the weights
//! (every tensor's name and shape) and on the graph
//! (every kernel's sizes, per sample), so that running it can only fail on
//! the buffers it is handed (or on memory).
//!
//! Tensors are NCHW `f32`, batch first, exactly as PyTorch stores a
//! contiguous tensor; shapes in the graph are per sample and the batch size
//! `N >= 1` is a run-time value.
//!
//! # Execution modes
//!
//! [`Mode::Fast`] (the default) is what compiled networks run: the
//! optimized graph (`cnnc_ir::optimize`: batch-norms folded, activations
//! and residual adds fused into the layers before them, identities and
//! dead layers removed) lowered to an execution plan
//! (`cnnc_ir::exec_plan`: NHWC SIMD kernels over one activation arena,
//! reorders only at the edges), its weights bound once by
//! `cnnc_runtime::bind` (folded in `f64`, packed), run by a
//! `cnnc_runtime::Program` with the kernel tier and threads of
//! [`Options`]. [`Interpreter::forward`] allocates nothing once the arena
//! has grown to the batch; results are bit-identical for every thread
//! count. The weights are checked against the graph as written first, so
//! errors point at the layers the user wrote, including layers the
//! optimizer removes.
//!
//! [`Mode::Optimized`] executes the same optimized graph with the naive
//! reference kernels instead: every node with `cnnc_kernels::reference`, a
//! folded batch-norm folded into the weights (`cnnc_runtime::fold`), a fused
//! layer as its kernel followed by the residual add and the activation. It
//! separates the optimizer's effect from the fast kernels'.
//!
//! [`Mode::Reference`] executes the graph as given, every node in
//! topological order with `cnnc_kernels::reference`, the naive oracle that
//! accumulates in `f64`: slow, but within float rounding of PyTorch computing
//! in `float64`. Fused epilogues and folded batch-norms that optimizer
//! passes put into the graph are executed as the operations they stand for
//! (a folded batch-norm as a batch-norm after the layer, not folded), so the
//! reference mode checks the passes too.
//!
//! # Example
//!
//! ```
//! use cnnc_interp::Interpreter;
//! use cnnc_runtime::WeightFile;
//! use cnnc_syntax::{RenderStyle, SourceFile};
//!
//! let file = SourceFile::new("scale.cnn", "network scale {\n  input x: [2]\n  fc = linear(1, bias=false)\n}\n");
//! let checked = cnnc_ir::check(&file).map_err(|e| e.render(&file, RenderStyle::Plain))?;
//!
//! // A safetensors file holding `fc.weight` = [[2, -1]].
//! let header = br#"{"fc.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}}"#;
//! let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
//! bytes.extend_from_slice(header);
//! for v in [2.0f32, -1.0] {
//!     bytes.extend_from_slice(&v.to_le_bytes());
//! }
//! let weights = WeightFile::from_bytes(&bytes)?;
//!
//! let mut net = Interpreter::new(&checked.graph, &checked.info, &weights)?;
//! assert!(net.unused_weights().is_empty());
//! // A batch of two samples.
//! assert_eq!(net.run(&[1.0, 1.0, 3.0, 0.5])?, [1.0, 5.5]);
//!
//! // Buffers that are not whole samples are refused.
//! assert!(net.run(&[1.0, 1.0, 3.0]).is_err());
//! assert!(net.run(&[]).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod bind;
mod fast;
mod reference;
#[cfg(test)]
mod tests;

use std::fmt;

use std::time::Duration;

use cnnc_ir::{ExecPlan, Graph, GraphInfo};
use cnnc_runtime::{Context, Tier, WeightFile};

pub use bind::{BindError, BindErrorKind, BindErrors};

use fast::FastPlan;
use reference::ReferencePlan;

/// How an [`Interpreter`] executes the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// The graph as given, every operator through the naive NCHW reference
    /// kernels, in `f64` accumulation: the oracle.
    Reference,
    /// The optimized graph (see `cnnc_ir::optimize`) with its batch-norms
    /// folded into the weights, through the reference kernels.
    Optimized,
    /// The optimized graph's execution plan through the fast NHWC kernels
    /// over one activation arena: what compiled networks run.
    #[default]
    Fast,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 3] = [Mode::Reference, Mode::Optimized, Mode::Fast];

    /// The mode's name on the command line (`reference`, `optimized`,
    /// `fast`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Reference => "reference",
            Mode::Optimized => "optimized",
            Mode::Fast => "fast",
        }
    }
}

/// Options of [`Interpreter::with_options`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The execution mode.
    pub mode: Mode,
    /// The kernel tier of [`Mode::Fast`]; `None`: the active one
    /// (`cnnc_kernels::kernels()`, which honours `CNNC_KERNELS`). A tier
    /// this CPU lacks also means the active one.
    pub tier: Option<Tier>,
    /// The threads of [`Mode::Fast`]; `None`: one per available core.
    pub threads: Option<usize>,
}

impl Options {
    /// The defaults: [`Mode::Fast`], the active tier, every core.
    pub fn new() -> Options {
        Options::default()
    }

    /// Sets the execution mode.
    pub fn mode(mut self, mode: Mode) -> Options {
        self.mode = mode;
        self
    }

    /// Sets the kernel tier of the fast mode.
    pub fn tier(mut self, tier: Tier) -> Options {
        self.tier = Some(tier);
        self
    }

    /// Sets the number of threads of the fast mode (at least 1).
    pub fn threads(mut self, threads: usize) -> Options {
        self.threads = Some(threads.max(1));
        self
    }

    /// The context these options ask for.
    fn context(&self) -> Context {
        let kernels = self
            .tier
            .and_then(cnnc_runtime::kernels::kernels_for)
            .unwrap_or_else(cnnc_runtime::kernels::kernels);
        let threads = self
            .threads
            .unwrap_or_else(cnnc_runtime::kernels::threads::default_threads);
        Context::with(kernels, threads)
    }
}

/// Why a run failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// The input (or output) buffer does not hold a whole, non-empty batch:
    /// [`cnnc_runtime::Error::EmptyBatch`], `InputLength` or `OutputLength`.
    /// The caller's error.
    Buffer(cnnc_runtime::Error),
    /// The activations of one layer for this batch have more elements than
    /// the address space allows. The caller's error (a smaller batch works).
    TooLarge {
        /// The layer's display name.
        layer: String,
        /// The batch size asked for.
        batch: usize,
    },
    /// The memory for one layer's activations could not be allocated.
    OutOfMemory {
        /// The layer's display name.
        layer: String,
        /// The batch size asked for.
        batch: usize,
        /// The size of the allocation that failed.
        bytes: usize,
    },
    /// The plan is inconsistent. A bug in cnnc.
    Internal(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Buffer(error) => write!(f, "{error}"),
            RunError::TooLarge { layer, batch } => write!(
                f,
                "the output of `{layer}` for a batch of {batch} is too large to address; \
                 use a smaller batch"
            ),
            RunError::OutOfMemory {
                layer,
                batch,
                bytes,
            } => write!(
                f,
                "out of memory: the output of `{layer}` for a batch of {batch} needs {bytes} bytes; \
                 use a smaller batch"
            ),
            RunError::Internal(what) => {
                write!(f, "internal error: {what} (this is a bug in cnnc)")
            }
        }
    }
}

/// The message of [`RunError::Buffer`] is the runtime error's own, so there
/// is no separate `source()` (which would print it twice in error chains).
impl std::error::Error for RunError {}

impl From<cnnc_runtime::Error> for RunError {
    fn from(error: cnnc_runtime::Error) -> RunError {
        RunError::Buffer(error)
    }
}

/// The engine behind an [`Interpreter`], one per [`Mode`].
#[derive(Debug)]
enum Engine {
    Reference(ReferencePlan),
    Fast(Box<FastPlan>),
}

/// A network ready to run: a graph with its weights bound and its kernels
/// planned.
///
/// Owns everything it needs (it borrows neither the graph nor the weights
/// file after [`new`](Self::new)).
#[derive(Debug)]
pub struct Interpreter {
    engine: Engine,
    mode: Mode,
    input_shape: Vec<usize>,
    output_shape: Vec<usize>,
    input_len: usize,
    output_len: usize,
    unused_weights: Vec<String>,
}

impl Interpreter {
    /// Binds `weights` to a checked graph and plans its execution in the
    /// default [`Mode`].
    ///
    /// Every tensor the layers expect is loaded and its shape checked; the
    /// error lists every layer with a missing, misshapen or unconvertible
    /// tensor ([`BindErrors::to_diagnostics`] reports them at the layers'
    /// lines). Tensors in the file that no layer reads are not an error:
    /// see [`unused_weights`](Self::unused_weights).
    pub fn new(
        graph: &Graph,
        info: &GraphInfo,
        weights: &WeightFile<'_>,
    ) -> Result<Interpreter, BindErrors> {
        Interpreter::with_options(graph, info, Some(weights), &Options::default())
    }

    /// Plans a network that has no parameters (no `conv2d`, `linear` or
    /// `batchnorm2d`). For any other network the error lists every tensor
    /// as missing.
    pub fn without_weights(graph: &Graph, info: &GraphInfo) -> Result<Interpreter, BindErrors> {
        Interpreter::with_options(graph, info, None, &Options::default())
    }

    /// [`new`](Self::new) or [`without_weights`](Self::without_weights)
    /// with options (the execution mode).
    pub fn with_options(
        graph: &Graph,
        info: &GraphInfo,
        weights: Option<&WeightFile<'_>>,
        options: &Options,
    ) -> Result<Interpreter, BindErrors> {
        let input_shape = info.shape(graph.input()).to_vec();
        let output_shape = info.shape(graph.output()).to_vec();
        let length = |shape: &[usize], node| {
            cnnc_ir::checked_product(shape)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| BindErrors::internal(graph, node, "the value has no valid size"))
        };
        let input_len = length(&input_shape, graph.input())?;
        let output_len = length(&output_shape, graph.output())?;
        let engine = match options.mode {
            Mode::Reference => {
                let mut bound = bind::bind(graph, info, weights)?;
                Engine::Reference(ReferencePlan::new(graph, info, &mut bound)?)
            }
            Mode::Optimized => {
                // The weights are checked against the graph as written,
                // then bound to the optimized graph (whose layers list their
                // folded batch-norms' tensors) and folded.
                bind::check(graph, info, weights)?;
                let optimized = cnnc_ir::optimize(graph.clone(), info).map_err(|errors| {
                    let what = errors
                        .iter()
                        .next()
                        .map_or_else(|| "the optimizer failed".to_string(), |d| d.message.clone());
                    BindErrors::internal(graph, graph.output(), what)
                })?;
                let mut bound = bind::bind(&optimized.graph, &optimized.info, weights)?;
                bound.fold_batchnorms(&optimized.graph)?;
                Engine::Reference(ReferencePlan::new(
                    &optimized.graph,
                    &optimized.info,
                    &mut bound,
                )?)
            }
            Mode::Fast => Engine::Fast(Box::new(FastPlan::new(
                graph,
                info,
                weights,
                options.context(),
            )?)),
        };
        Ok(Interpreter {
            engine,
            mode: options.mode,
            input_shape,
            output_shape,
            input_len,
            output_len,
            unused_weights: weights.map(WeightFile::unused).unwrap_or_default(),
        })
    }

    /// The execution mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The per-sample input shape (`[3, 224, 224]`).
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The per-sample output shape (`[1000]`).
    pub fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    /// Values per input sample.
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Values per output sample.
    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// The tensors of the weights file that no layer reads, sorted
    /// (`num_batches_tracked` counters are never listed). Worth a warning:
    /// often a misspelt layer name.
    pub fn unused_weights(&self) -> &[String] {
        &self.unused_weights
    }

    /// Runs the network on `input`, a whole number `N >= 1` of samples
    /// (NCHW, batch first), and returns the `N` outputs.
    ///
    /// Errors: [`RunError::Buffer`] when `input` is empty or not a whole
    /// number of samples; [`RunError::TooLarge`]/[`RunError::OutOfMemory`]
    /// when the batch is too large for memory.
    pub fn run(&mut self, input: &[f32]) -> Result<Vec<f32>, RunError> {
        let batch = self.batch_size(input.len())?;
        match &mut self.engine {
            Engine::Reference(plan) => plan.run(input, batch),
            Engine::Fast(plan) => {
                let len = batch
                    .checked_mul(self.output_len)
                    .ok_or_else(|| RunError::TooLarge {
                        layer: "(output)".to_string(),
                        batch,
                    })?;
                let mut output = Vec::new();
                output
                    .try_reserve_exact(len)
                    .map_err(|_| RunError::OutOfMemory {
                        layer: "(output)".to_string(),
                        batch,
                        bytes: len.saturating_mul(4),
                    })?;
                output.resize(len, 0.0);
                plan.forward(input, &mut output)?;
                Ok(output)
            }
        }
    }

    /// Runs the network on `input` into `output`, which must hold exactly
    /// the outputs of the batch: the contract of generated code's `forward`.
    ///
    /// In [`Mode::Fast`] this allocates nothing once the arena has grown to
    /// the batch (the first call with the largest batch grows it).
    pub fn forward(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), RunError> {
        if let Engine::Fast(plan) = &mut self.engine {
            return plan.forward(input, output);
        }
        cnnc_runtime::forward_batch_size(
            input.len(),
            output.len(),
            self.input_len,
            self.output_len,
        )?;
        let result = self.run(input)?;
        if result.len() != output.len() {
            return Err(RunError::Internal(format!(
                "the network produced {} values, expected {}",
                result.len(),
                output.len()
            )));
        }
        output.copy_from_slice(&result);
        Ok(())
    }

    /// [`forward`](Self::forward), calling `on_step(index, elapsed)` after
    /// each step of the [`exec_plan`](Self::exec_plan) with its duration
    /// (for per-layer profiles). In the reference modes, the whole run is
    /// one step (index 0).
    pub fn forward_timed(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        mut on_step: impl FnMut(usize, Duration),
    ) -> Result<(), RunError> {
        if let Engine::Fast(plan) = &mut self.engine {
            return plan
                .program
                .forward_timed(input, output, on_step)
                .map_err(fast::run_error);
        }
        let start = std::time::Instant::now();
        self.forward(input, output)?;
        on_step(0, start.elapsed());
        Ok(())
    }

    /// The execution plan of [`Mode::Fast`] (its steps are what
    /// [`forward_timed`](Self::forward_timed) reports on); `None` in the
    /// other modes.
    pub fn exec_plan(&self) -> Option<&ExecPlan> {
        match &self.engine {
            Engine::Fast(plan) => Some(&plan.plan),
            Engine::Reference(_) => None,
        }
    }

    /// The kernels and threads of [`Mode::Fast`]; `None` in the other
    /// modes.
    pub fn context(&self) -> Option<&Context> {
        match &self.engine {
            Engine::Fast(plan) => Some(plan.program.context()),
            Engine::Reference(_) => None,
        }
    }

    /// Grows the fast mode's activation arena to a batch of `batch`, so
    /// that no later run of at most `batch` samples allocates (a no-op in
    /// the other modes).
    pub fn reserve(&mut self, batch: usize) -> Result<(), RunError> {
        match &mut self.engine {
            Engine::Fast(plan) => plan.program.reserve(batch).map_err(fast::run_error),
            Engine::Reference(_) => Ok(()),
        }
    }

    /// The batch size of an input of `len` values.
    fn batch_size(&self, len: usize) -> Result<usize, RunError> {
        if len == 0 {
            return Err(cnnc_runtime::Error::EmptyBatch {
                what: "input".to_string(),
            }
            .into());
        }
        if !len.is_multiple_of(self.input_len) {
            return Err(cnnc_runtime::Error::InputLength {
                per_sample: self.input_len,
                found: len,
            }
            .into());
        }
        Ok(len / self.input_len)
    }
}
