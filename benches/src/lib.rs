//! Benchmark support: the seven layers the project's performance targets
//! name, each as a one-layer `.cnn` network run by the interpreter's fast
//! mode (the execution plan and kernels that whole networks and generated
//! code run), and the machine's fp32 FMA peak, measured by a
//! register-resident loop, that their rates are a fraction of.
//!
//! Used by `benches/layers.rs` (criterion, `cargo bench -p cnnc-benches
//! --bench layers`) and by the `cnnc-tract` binary. `benches/peers.py`
//! holds the same seven layers for the peer comparison (keep the two lists
//! equal: [`LAYERS`] is the reference).

use std::time::Duration;

use cnnc_interp::{Interpreter, Mode, Options};
use cnnc_runtime::{Buffer, WeightFile};

/// One benchmarked layer.
#[derive(Clone, Copy, Debug)]
pub struct LayerSpec {
    /// A short identifier (`conv3x3_64_64_56`), also the network's name.
    pub name: &'static str,
    /// What it is, for tables (`conv 3x3 64→64 @56x56 pad 1`).
    pub description: &'static str,
    /// The per-sample input shape (`[C, H, W]` or `[F]`).
    pub input: &'static [usize],
    /// The layer as a `.cnn` statement's right-hand side
    /// (`conv2d(64, 3, padding=1)`).
    pub layer: &'static str,
    /// Floating-point operations of one sample: `2 × MACs` for convolutions
    /// and linear layers, one comparison per window element for pooling.
    pub ops: u64,
    /// The layer's parameters in floats (weights and bias).
    pub params: u64,
    /// The output values of one sample.
    pub outputs: u64,
}

/// The layers, batch 1: the list, in its order.
pub const LAYERS: [LayerSpec; 7] = [
    LayerSpec {
        name: "conv3x3_64_64_56",
        description: "conv 3x3 64→64 @56x56 pad 1",
        input: &[64, 56, 56],
        layer: "conv2d(64, 3, padding=1)",
        ops: 2 * 56 * 56 * 64 * 64 * 9,
        params: 64 * 64 * 9 + 64,
        outputs: 64 * 56 * 56,
    },
    LayerSpec {
        name: "conv3x3_256_256_14",
        description: "conv 3x3 256→256 @14x14 pad 1",
        input: &[256, 14, 14],
        layer: "conv2d(256, 3, padding=1)",
        ops: 2 * 14 * 14 * 256 * 256 * 9,
        params: 256 * 256 * 9 + 256,
        outputs: 256 * 14 * 14,
    },
    LayerSpec {
        name: "conv1x1_256_1024_14",
        description: "conv 1x1 256→1024 @14x14",
        input: &[256, 14, 14],
        layer: "conv2d(1024, 1)",
        ops: 2 * 14 * 14 * 256 * 1024,
        params: 256 * 1024 + 1024,
        outputs: 1024 * 14 * 14,
    },
    LayerSpec {
        name: "conv7x7s2_3_64_224",
        description: "conv 7x7/2 3→64 @224x224 pad 3",
        input: &[3, 224, 224],
        layer: "conv2d(64, 7, stride=2, padding=3)",
        ops: 2 * 112 * 112 * 64 * 3 * 49,
        params: 64 * 3 * 49 + 64,
        outputs: 64 * 112 * 112,
    },
    LayerSpec {
        name: "dw3x3_144_56",
        description: "depthwise 3x3 144 ch @56x56 pad 1",
        input: &[144, 56, 56],
        layer: "conv2d(144, 3, padding=1, groups=144)",
        ops: 2 * 56 * 56 * 144 * 9,
        params: 144 * 9 + 144,
        outputs: 144 * 56 * 56,
    },
    LayerSpec {
        name: "linear_4096_1000",
        description: "linear 4096→1000",
        input: &[4096],
        layer: "linear(1000)",
        ops: 2 * 4096 * 1000,
        params: 4096 * 1000 + 1000,
        outputs: 1000,
    },
    LayerSpec {
        name: "maxpool3x3s2_64_112",
        description: "maxpool 3x3/2 pad 1, 64 ch @112x112",
        input: &[64, 112, 112],
        layer: "maxpool2d(3, stride=2, padding=1)",
        ops: 64 * 56 * 56 * 9,
        params: 0,
        outputs: 64 * 56 * 56,
    },
];

/// The name of the layer inside every one-layer network (and of its step
/// in the execution plan).
pub const LAYER_NAME: &str = "layer";

impl LayerSpec {
    /// The one-layer network's `.cnn` source.
    pub fn source(&self) -> String {
        let dims: Vec<String> = self.input.iter().map(ToString::to_string).collect();
        format!(
            "# {}: one layer, for benchmarks.\nnetwork {} {{\n    input x: [{}]\n    {LAYER_NAME} = {}\n    output {LAYER_NAME}\n}}\n",
            self.description,
            self.name,
            dims.join(", "),
            self.layer
        )
    }

    /// Values of one input sample.
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    /// Bytes a run must move at least: the input read once, the output
    /// written once, the parameters read once (f32).
    pub fn bytes(&self) -> u64 {
        4 * (self.input_len() as u64 + self.outputs + self.params)
    }
}

/// A one-layer network bound to seeded random weights in the fast mode,
/// with an input and an output buffer of one sample.
pub struct OneLayer {
    /// The network.
    pub spec: LayerSpec,
    interpreter: Interpreter,
    step: usize,
    input: Buffer,
    output: Buffer,
}

impl OneLayer {
    /// Checks the spec's network, binds random weights (seeded, fan-in
    /// scaled) and plans it in [`Mode::Fast`] on `threads` threads.
    pub fn new(spec: LayerSpec, threads: usize) -> Result<OneLayer, String> {
        OneLayer::with_mode(spec, threads, Mode::Fast)
    }

    /// [`new`](Self::new) in any mode (the reference mode checks the fast
    /// one in tests).
    pub fn with_mode(spec: LayerSpec, threads: usize, mode: Mode) -> Result<OneLayer, String> {
        let file = cnnc_syntax::SourceFile::new(format!("{}.cnn", spec.name), spec.source());
        let checked = cnnc_ir::check(&file).map_err(|e| format!("{}: {e:?}", spec.name))?;
        let specs = cnnc_ir::expected_weights(&checked.graph, &checked.info);
        let weights = if specs.is_empty() {
            None
        } else {
            let bytes = cnnc_ir::random_weights(&specs, 0).map_err(|e| e.to_string())?;
            Some(WeightFile::from_vec(bytes).map_err(|e| e.to_string())?)
        };
        let options = Options::new().mode(mode).threads(threads);
        let interpreter =
            Interpreter::with_options(&checked.graph, &checked.info, weights.as_ref(), &options)
                .map_err(|e| format!("{}: {e:?}", spec.name))?;
        let step = match interpreter.exec_plan() {
            Some(plan) => plan
                .steps
                .iter()
                .position(|step| step.name == LAYER_NAME)
                .ok_or_else(|| format!("{}: no step named `{LAYER_NAME}`", spec.name))?,
            None => 0,
        };
        // 64-byte aligned, as the peers allocate their tensors.
        let input = Buffer::from_slice(&cnnc_ir::random_values(
            interpreter.input_len(),
            0x5EED,
            1.0,
        ));
        let output = Buffer::zeroed(interpreter.output_len());
        Ok(OneLayer {
            spec,
            interpreter,
            step,
            input,
            output,
        })
    }

    /// The interpreter (its plan, context and tier).
    pub fn interpreter(&self) -> &Interpreter {
        &self.interpreter
    }

    /// The layer's algorithm as the plan chose it (`winograd-f4x4`,
    /// `gemm-1x1`, `gemv`, …), if it has variants.
    pub fn algorithm(&self) -> Option<&'static str> {
        let step = self.interpreter.exec_plan()?.steps.get(self.step)?;
        match &step.kernel {
            cnnc_ir::exec_plan::Kernel::Linear(_) => Some("gemv"),
            kernel => kernel.algorithm(),
        }
    }

    /// The names of the plan's steps (`input`, `layer`, `output`: the edge
    /// reorders of NCHW tensors around the layer).
    pub fn step_names(&self) -> Vec<String> {
        self.interpreter
            .exec_plan()
            .map(|plan| plan.steps.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    }

    /// One forward pass; returns the time of the layer's step and of the
    /// whole pass (with the layout reorders at the network's edges).
    pub fn run(&mut self) -> Result<(Duration, Duration), String> {
        let start = std::time::Instant::now();
        let mut step_time = Duration::ZERO;
        let step = self.step;
        self.interpreter
            .forward_timed(&self.input, self.output.make_mut(), |index, elapsed| {
                if index == step {
                    step_time = elapsed;
                }
            })
            .map_err(|e| e.to_string())?;
        Ok((step_time, start.elapsed()))
    }

    /// The input the runs use.
    pub fn input(&self) -> &[f32] {
        &self.input
    }

    /// The last run's output.
    pub fn output(&self) -> &[f32] {
        &self.output
    }
}

/// The median of `samples` (sorted in place); 0 if empty.
pub fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// The 1-minute load average (Linux), if readable.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The fp32 FMA peak loops (`cnnc_kernels::peak`), re-exported for the
/// layers bench and its tests.
pub use cnnc_runtime::kernels::peak;

#[cfg(test)]
mod tests;
