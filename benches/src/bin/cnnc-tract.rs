//! `cnnc-tract MODEL.onnx --shape 1,3,224,224 [--warmup K] [--iters K]
//! [--input IN.f32] [--output OUT.f32] [--json]`: the latency of tract
//! (`tract-onnx`, optimized plan, one thread: built without tract's
//! `multithread-mm` feature, tract runs on the calling thread) on an ONNX
//! file, for `benches/peers.py`.
//!
//! The input's shape is fixed before optimization (the file may declare a
//! symbolic batch). Its values are seeded random numbers (the speed does
//! not depend on them), or the raw little-endian `f32` values of `--input`
//! (so that a caller can compare the output with another engine's on the
//! same input); `--output` writes the first output of the last run the same
//! way. One plan state is spawned and reused by every run, as a serving
//! loop would. After `--warmup` untimed runs, each of `--iters` runs is
//! timed; the report gives the median and minimum in milliseconds, as one
//! JSON object with `--json`.
//!
//! Built only with the `tract` feature:
//! `cargo build --release -p cnnc-benches --features tract --bin cnnc-tract`.

use std::process::ExitCode;
use std::time::Instant;

use cnnc_benches::median;
use cnnc_ir::random_values;
use tract_onnx::prelude::*;

const USAGE: &str = "usage: cnnc-tract MODEL.onnx --shape D0,D1,... [--warmup K] [--iters K] \
                     [--input IN.f32] [--output OUT.f32] [--json]";

/// What the command line asks for.
struct Args {
    model: String,
    shape: Vec<usize>,
    warmup: usize,
    iters: usize,
    input: Option<String>,
    output: Option<String>,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut model = None;
    let mut shape = None;
    let (mut warmup, mut iters, mut json) = (5, 50, false);
    let (mut input, mut output) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--shape" => {
                let text = value("--shape")?;
                let dims: Result<Vec<usize>, _> = text.split(',').map(str::parse).collect();
                shape = Some(dims.map_err(|e| format!("--shape {text}: {e}"))?);
            }
            "--warmup" => {
                warmup = value("--warmup")?
                    .parse()
                    .map_err(|e| format!("--warmup: {e}"))?
            }
            "--iters" => {
                iters = value("--iters")?
                    .parse()
                    .map_err(|e| format!("--iters: {e}"))?
            }
            "--input" => input = Some(value("--input")?),
            "--output" => output = Some(value("--output")?),
            "--json" => json = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other if model.is_none() && !other.starts_with('-') => model = Some(other.to_string()),
            other => return Err(format!("unexpected argument `{other}`\n{USAGE}")),
        }
    }
    let model = model.ok_or_else(|| format!("no model given\n{USAGE}"))?;
    let shape = shape.ok_or_else(|| format!("--shape D0,D1,... is required\n{USAGE}"))?;
    if shape.is_empty() || shape.contains(&0) {
        return Err(format!(
            "--shape {shape:?}: every dimension must be at least 1"
        ));
    }
    if iters == 0 {
        return Err("--iters must be at least 1".into());
    }
    Ok(Args {
        model,
        shape,
        warmup,
        iters,
        input,
        output,
        json,
    })
}

/// The values of a raw little-endian `f32` file of `len` values.
fn read_f32(path: &str, len: usize) -> TractResult<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| TractError::msg(format!("reading {path}: {e}")))?;
    if bytes.len() != len * 4 {
        return Err(TractError::msg(format!(
            "{path}: {} bytes, but the shape holds {len} f32 values ({} bytes)",
            bytes.len(),
            len * 4
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Writes `tensor` (f32) as raw little-endian values.
fn write_f32(path: &str, tensor: &Tensor) -> TractResult<()> {
    let view = tensor.to_plain_array_view::<f32>()?;
    let bytes: Vec<u8> = view.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|e| TractError::msg(format!("writing {path}: {e}")))?;
    Ok(())
}

/// Median and minimum latency in seconds.
fn measure(args: &Args) -> TractResult<(f64, f64)> {
    let model = tract_onnx::onnx()
        .model_for_path(&args.model)?
        .with_input_fact(0, f32::fact(&args.shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let len = args.shape.iter().product();
    let values = match &args.input {
        Some(path) => read_f32(path, len)?,
        None => random_values(len, 7, 1.0),
    };
    let input: TValue = Tensor::from_shape(&args.shape, &values)?.into_tvalue();
    let mut state = model.spawn()?;
    for _ in 0..args.warmup {
        state.run(tvec!(input.clone()))?;
    }
    let mut times = Vec::with_capacity(args.iters);
    let mut last = None;
    for _ in 0..args.iters {
        let start = Instant::now();
        let outputs = state.run(tvec!(input.clone()))?;
        times.push(start.elapsed().as_secs_f64());
        last = Some(outputs);
    }
    if let Some(path) = &args.output {
        let outputs = last.ok_or_else(|| TractError::msg("no run"))?;
        let first = outputs
            .first()
            .ok_or_else(|| TractError::msg("the model has no output"))?;
        write_f32(path, first)?;
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    Ok((median(&mut times), min))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("cnnc-tract: {message}");
            return ExitCode::from(2);
        }
    };
    match measure(&args) {
        Ok((median, min)) => {
            if args.json {
                let report = serde_json::json!({
                    "engine": "tract",
                    "model": args.model,
                    "shape": args.shape,
                    "median_ms": median * 1e3,
                    "min_ms": min * 1e3,
                    "warmup": args.warmup,
                    "iters": args.iters,
                    "threads": 1,
                });
                println!("{report}");
            } else {
                println!(
                    "{}: tract, 1 thread, {} runs after {} warm-ups: median {:.3} ms, min {:.3} ms",
                    args.model,
                    args.iters,
                    args.warmup,
                    median * 1e3,
                    min * 1e3
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cnnc-tract: {}: {error:?}", args.model);
            ExitCode::FAILURE
        }
    }
}
