//! `cnnc bench NET.cnn [--weights W] [--batch N] [--threads T] [--warmup K]
//! [--iters K] [--per-layer] [--json]`: time the network's forward pass in
//! the interpreter's fast mode (the kernels and plan generated code runs).
//!
//! The weights come from `--weights`, else from the network's `weights`
//! statement; a network with parameters and neither gets random weights
//! (seeded by `--seed`, scaled by fan-in, batch-norm variances positive),
//! since the speed does not depend on their values. The input is random
//! too. After `--warmup` untimed runs (the first grows the arena), each of
//! `--iters` runs is timed; the report gives the median, minimum and
//! maximum latency and the rate in GFLOP/s, counting `2 × MACs` of the
//! convolutions and linear layers as written (a Winograd layer counts the
//! direct convolution's FLOPs). `--per-layer` adds each step's median time,
//! algorithm and rate; `--json` prints one JSON object instead of text, with
//! the per-step figures (`layers`) in the fast mode.
//!
//! The kernel tier is the best the CPU has or the one `CNNC_KERNELS`
//! forces; the report names it, the thread count and the 1-minute load
//! average (the machine may be shared: compare runs made at similar load).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use cnnc_interp::{Interpreter, Mode};
use cnnc_ir::exec_plan::Kernel;
use cnnc_runtime::{Buffer, WeightFile};
use serde_json::json;

use crate::common::load_checked;
use crate::run::{
    bind_weights_with, interpreter_options, message, weights_source, ModeArg, WeightsSource,
};
use crate::{Options, Outcome};

/// Arguments of `cnnc bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The network (`.cnn` file).
    pub net: PathBuf,
    /// The weights (safetensors). Default: the network's `weights`
    /// statement, else random weights.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch: u64,
    /// Threads (default: one per available core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// Untimed runs first.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Timed runs.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub iters: u64,
    /// Also time each step of the execution plan.
    #[arg(long)]
    pub per_layer: bool,
    /// Print one JSON object (per-step figures included).
    #[arg(long)]
    pub json: bool,
    /// The execution engine (per-step figures need `fast`).
    #[arg(long, value_enum, default_value_t = ModeArg::Fast)]
    pub mode: ModeArg,
    /// Seed of the random weights and input.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `cnnc bench`.
pub fn run(args: &Args, options: &Options) -> Result<Outcome> {
    let (file, checked) = load_checked(&args.net, options)?;
    let Some(checked) = checked else {
        return Ok(Outcome::Diagnosed);
    };
    let mode = args.mode.mode();
    if args.per_layer && mode != Mode::Fast {
        bail!("--per-layer needs --mode fast");
    }
    let interpreter_options = interpreter_options(mode, args.threads);
    let source = weights_source(args.weights.as_deref(), &args.net, &checked);
    let specs = cnnc_ir::expected_weights(&checked.graph, &checked.info);
    let random_weights = matches!(source, WeightsSource::None) && !specs.is_empty();
    let interpreter = if random_weights {
        let bytes = cnnc_ir::random_weights(&specs, args.seed)?;
        let weights = WeightFile::from_vec(bytes).map_err(message)?;
        match Interpreter::with_options(
            &checked.graph,
            &checked.info,
            Some(&weights),
            &interpreter_options,
        ) {
            Ok(interpreter) => Some(interpreter),
            Err(errors) => {
                crate::common::print_diagnostics(&errors.to_diagnostics(), &file, options);
                None
            }
        }
    } else {
        bind_weights_with(&file, &checked, &source, &interpreter_options, options)?
    };
    let Some(mut interpreter) = interpreter else {
        return Ok(Outcome::Diagnosed);
    };

    let batch = usize::try_from(args.batch)?;
    let input_len = batch
        .checked_mul(interpreter.input_len())
        .ok_or_else(|| anyhow::anyhow!("a batch of {batch} is too large"))?;
    let output_len = batch
        .checked_mul(interpreter.output_len())
        .ok_or_else(|| anyhow::anyhow!("a batch of {batch} is too large"))?;
    // Refuse a batch whose buffers cannot be allocated instead of aborting.
    let mut buffers: Vec<f32> = Vec::new();
    buffers
        .try_reserve_exact(input_len.saturating_add(output_len))
        .map_err(|_| anyhow::anyhow!("out of memory: a batch of {batch} is too large"))?;
    drop(buffers);
    // 64-byte aligned, as the peers allocate their tensors (a planar
    // stem's stores are then whole cache lines).
    let input = Buffer::from_slice(&cnnc_ir::random_values(input_len, args.seed ^ 0x5EED, 1.0));
    let mut output = Buffer::zeroed(output_len);
    let output = output.make_mut();

    let steps = interpreter.exec_plan().map_or(0, |plan| plan.steps.len());
    let iters = usize::try_from(args.iters)?;
    let timed_steps = args.per_layer || args.json;
    let mut step_times: Vec<Vec<f64>> = vec![Vec::with_capacity(iters); steps];
    let mut totals = Vec::with_capacity(iters);
    for _ in 0..args.warmup {
        interpreter.forward(&input, output).map_err(message)?;
    }
    for _ in 0..iters {
        let start = Instant::now();
        if timed_steps && steps > 0 {
            interpreter
                .forward_timed(&input, output, |index, elapsed| {
                    if let Some(times) = step_times.get_mut(index) {
                        times.push(elapsed.as_secs_f64());
                    }
                })
                .map_err(message)?;
        } else {
            interpreter.forward(&input, output).map_err(message)?;
        }
        totals.push(start.elapsed().as_secs_f64());
    }
    if output.iter().any(|v| v.is_nan()) {
        eprintln!("warning: the output holds NaN values");
    }

    let context = interpreter.context();
    let tier = context.map_or_else(
        || "reference".to_string(),
        |ctx| ctx.kernels().tier().name().to_string(),
    );
    let threads = context.map_or(1, |ctx| ctx.threads());
    let macs = checked.info.total_macs.saturating_mul(args.batch);
    let (median, min, max) = stats(&mut totals);
    let gflops = rate(macs, median);
    let load = load_average();

    let mut layers = Vec::new();
    if let (Some(plan), true) = (interpreter.exec_plan(), timed_steps) {
        for (step, times) in plan.steps.iter().zip(&mut step_times) {
            let (step_median, _, _) = stats(times);
            let step_macs = step.macs.saturating_mul(args.batch);
            layers.push(LayerFigures {
                name: step.name.clone(),
                op: step.kernel.name(),
                algorithm: algorithm(&step.kernel, batch),
                median: step_median,
                gflops: (step_macs > 0).then(|| rate(step_macs, step_median)),
            });
        }
    }

    let mut stdout = std::io::stdout().lock();
    if args.json {
        let layers: Vec<_> = layers
            .iter()
            .map(|layer| {
                json!({
                    "name": layer.name,
                    "op": layer.op,
                    "algorithm": layer.algorithm,
                    "median_ms": layer.median * 1e3,
                    "gflops": layer.gflops,
                })
            })
            .collect();
        let report = json!({
            "network": checked.graph.name(),
            "mode": mode.name(),
            "median_ms": median * 1e3,
            "min_ms": min * 1e3,
            "max_ms": max * 1e3,
            "gflops": gflops,
            "macs": macs,
            "tier": tier,
            "threads": threads,
            "batch": batch,
            "iters": iters,
            "warmup": args.warmup,
            "random_weights": random_weights,
            "load_average": load,
            "layers": layers,
        });
        writeln!(stdout, "{report}")?;
        return Ok(Outcome::Success);
    }
    writeln!(
        stdout,
        "{}: {} mode, tier {tier}, {threads} thread{}, batch {batch}{}",
        checked.graph.name(),
        mode.name(),
        if threads == 1 { "" } else { "s" },
        if random_weights {
            ", random weights"
        } else {
            ""
        }
    )?;
    writeln!(
        stdout,
        "{iters} runs after {} warm-up{}: median {:.3} ms, min {:.3} ms, max {:.3} ms",
        args.warmup,
        if args.warmup == 1 { "" } else { "s" },
        median * 1e3,
        min * 1e3,
        max * 1e3
    )?;
    let work = if macs >= 100_000_000 {
        format!("{:.3} GMAC", macs as f64 / 1e9)
    } else {
        format!("{:.3} MMAC", macs as f64 / 1e6)
    };
    writeln!(
        stdout,
        "{work} per run: {gflops:.1} GFLOP/s at the median{}",
        load.map_or_else(String::new, |load| format!(" (load average {load:.2})"))
    )?;
    if !layers.is_empty() {
        let sum: f64 = layers.iter().map(|layer| layer.median).sum();
        let width = layers
            .iter()
            .map(|layer| layer.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        // A fused step's algorithm ("expand+depthwise+project") is wider
        // than a layer's.
        let algorithm_width = layers
            .iter()
            .map(|layer| layer.algorithm.map_or(1, str::len))
            .max()
            .unwrap_or(9)
            .max(9);
        writeln!(stdout)?;
        writeln!(
            stdout,
            "{:>3}  {:<width$}  {:<18}  {:<algorithm_width$}  {:>9}  {:>6}  {:>8}",
            "#", "step", "op", "algorithm", "median ms", "share", "GFLOP/s"
        )?;
        for (index, layer) in layers.iter().enumerate() {
            writeln!(
                stdout,
                "{index:>3}  {:<width$}  {:<18}  {:<algorithm_width$}  {:>9.4}  {:>5.1}%  {:>8}",
                layer.name,
                layer.op,
                layer.algorithm.unwrap_or("-"),
                layer.median * 1e3,
                100.0 * layer.median / sum.max(f64::MIN_POSITIVE),
                layer
                    .gflops
                    .map_or_else(|| "-".to_string(), |g| format!("{g:.1}")),
            )?;
        }
        writeln!(
            stdout,
            "sum of step medians {:.3} ms ({:.1}% of the median run)",
            sum * 1e3,
            100.0 * sum / median.max(f64::MIN_POSITIVE)
        )?;
    }
    Ok(Outcome::Success)
}

/// One step's figures.
struct LayerFigures {
    name: String,
    op: &'static str,
    algorithm: Option<&'static str>,
    median: f64,
    gflops: Option<f64>,
}

/// The variant of a step worth showing: the convolution's algorithm, a
/// linear layer's GEMV (batch 1) or GEMM.
fn algorithm(kernel: &Kernel, batch: usize) -> Option<&'static str> {
    match kernel {
        Kernel::Linear(_) => Some(if batch == 1 { "gemv" } else { "gemm" }),
        other => other.algorithm(),
    }
}

/// `(median, min, max)` of the samples (sorted in place); zeros if empty.
fn stats(samples: &mut [f64]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    (median, samples[0], samples[n - 1])
}

/// GFLOP/s of `macs` multiply-accumulates in `seconds`.
fn rate(macs: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        2.0 * macs as f64 / seconds / 1e9
    } else {
        0.0
    }
}

/// The 1-minute load average (Linux), if readable.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(stats(&mut [3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(stats(&mut [4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert_eq!(stats(&mut []), (0.0, 0.0, 0.0));
        assert_eq!(rate(500_000_000, 0.5), 2.0);
    }
}
