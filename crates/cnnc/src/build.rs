//! `cnnc build NET.cnn [--weights W] [-o OUT] [--emit rust|ir|dot]`:
//! compile a network.
//!
//! Every emitter starts from the same optimized graph ([`compile`]: check,
//! optimize, plan memory) and renders it; `--emit` picks the renderer:
//!
//! - `rust` (the default): the Rust module of `cnnc-codegen`. With weights
//!   (`--weights`, or the network's `weights` statement) and `-o OUT.rs`,
//!   their pre-packed blob is written next to it as `OUT.weights.bin` and
//!   the module embeds it (`new()`); without weights, or to standard
//!   output, the module only has `from_safetensors`.
//! - `ir`: the optimized graph as text with its memory plan
//!   (`cnnc_ir::text`).
//! - `dot`: the optimized graph in Graphviz DOT (`cnnc_ir::dot`).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::ValueEnum;
use cnnc_ir::{MemoryPlan, Optimized};
use cnnc_runtime::WeightFile;

use crate::common::{load_checked, optimize_checked, print_diagnostics, read_source, write_atomic};
use crate::{Options, Outcome};

/// Arguments of `cnnc build`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The network (`.cnn` file).
    pub net: PathBuf,
    /// Where to write the result (standard output if absent). Written
    /// atomically: a failed run leaves no partial file.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// What to emit.
    #[arg(long, value_enum, default_value_t = Emit::Rust)]
    pub emit: Emit,
    /// The weights to embed (`--emit rust` with `-o`), overriding the
    /// network's `weights` statement.
    #[arg(long)]
    pub weights: Option<PathBuf>,
}

/// The outputs of `cnnc build`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// A Rust module (and its weight blob, next to `-o`).
    Rust,
    /// The optimized graph as text: one node per line with its fused
    /// epilogue, inputs, shape and arena slot.
    Ir,
    /// The optimized graph in Graphviz DOT.
    Dot,
}

/// A network through the whole middle end: optimized, with its memory plan.
pub struct Compiled {
    /// The optimized graph, its info and the optimizer's report.
    pub optimized: Optimized,
    /// The activation arena of the optimized graph.
    pub plan: MemoryPlan,
}

/// Reads, checks, optimizes and plans a network, printing every diagnostic
/// (warnings included). `None` means errors were printed.
pub fn compile(path: &std::path::Path, options: &Options) -> Result<Option<Compiled>> {
    let (file, checked) = load_checked(path, options)?;
    let Some(checked) = checked else {
        return Ok(None);
    };
    let Some(optimized) = optimize_checked(&file, checked.graph, &checked.info, options) else {
        return Ok(None);
    };
    match cnnc_ir::plan_memory(&optimized.graph, &optimized.info) {
        Ok(plan) => Ok(Some(Compiled { optimized, plan })),
        Err(errors) => {
            print_diagnostics(&errors, &file, options);
            Ok(None)
        }
    }
}

/// Runs `cnnc build`.
pub fn run(args: &Args, options: &Options) -> Result<Outcome> {
    if args.emit == Emit::Rust {
        return run_rust(args, options);
    }
    let Some(compiled) = compile(&args.net, options)? else {
        return Ok(Outcome::Diagnosed);
    };
    let text = match args.emit {
        Emit::Ir => cnnc_ir::text::to_text(
            &compiled.optimized.graph,
            &compiled.optimized.info,
            Some(&compiled.plan),
        ),
        Emit::Dot => cnnc_ir::dot::to_dot(&compiled.optimized.graph, &compiled.optimized.info),
        Emit::Rust => unreachable!("handled above"),
    };
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(Outcome::Success)
}

/// `--emit rust`: the module, and with weights and `-o` its blob.
fn run_rust(args: &Args, options: &Options) -> Result<Outcome> {
    let file = read_source(&args.net)?;
    let front = match cnnc_codegen::frontend(&file) {
        Ok(front) => front,
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, &file, options);
            return Ok(Outcome::Diagnosed);
        }
    };
    print_diagnostics(&front.warnings, &file, options);

    let weights_path = match (&args.weights, front.graph.weights_path()) {
        (Some(path), _) => Some(path.clone()),
        (None, Some((path, _))) => Some(match args.net.parent() {
            Some(dir) => dir.join(path),
            None => PathBuf::from(path),
        }),
        (None, None) => None,
    };
    let weights = match (&weights_path, &args.output) {
        (Some(path), Some(_)) => Some(WeightFile::from_path(path).map_err(|e| anyhow!("{e}"))?),
        (Some(path), None) => {
            if args.weights.is_some() {
                bail!(
                    "--weights needs -o: the weights are written next to the module, as OUT.weights.bin"
                );
            }
            eprintln!(
                "note: the weights ({}) are not embedded when writing to standard output; \
                 use -o OUT.rs to embed them",
                path.display()
            );
            None
        }
        (None, _) => None,
    };

    let (blob_path, blob_file) = match &args.output {
        Some(output) => {
            let stem = output
                .file_stem()
                .and_then(|stem| stem.to_str())
                .context("the output file name is not valid UTF-8")?;
            let blob_file = format!("{stem}.weights.bin");
            (Some(output.with_file_name(&blob_file)), blob_file)
        }
        None => (None, String::new()),
    };
    let source_name = args.net.display().to_string();
    let mut codegen_options = cnnc_codegen::Options::new(&source_name);
    if let Some(weights) = &weights {
        codegen_options = codegen_options.weights(weights, &blob_file);
    }
    let generated = match cnnc_codegen::generate(&front.plan, &codegen_options) {
        Ok(generated) => generated,
        Err(error) => {
            print_diagnostics(&error.to_diagnostics(&front.graph), &file, options);
            return Ok(Outcome::Diagnosed);
        }
    };
    if let Some(weights) = &weights {
        let unused = weights.unused();
        if !unused.is_empty() {
            eprintln!(
                "warning: {} tensor(s) of the weights are not used by the network: {}",
                unused.len(),
                unused.join(", ")
            );
        }
    }
    match (&args.output, &blob_path, generated.blob) {
        (Some(output), Some(blob_path), Some(blob)) => {
            write_atomic(blob_path, &blob)?;
            if let Err(error) = write_atomic(output, generated.source.as_bytes()) {
                let _ = std::fs::remove_file(blob_path);
                return Err(error);
            }
        }
        (Some(output), _, _) => write_atomic(output, generated.source.as_bytes())?,
        (None, _, _) => print!("{}", generated.source),
    }
    Ok(Outcome::Success)
}
