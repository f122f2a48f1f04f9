//! `cnnc build NET.cnn [-o OUT] --emit ir`: compile a network.
//!
//! Every emitter starts from the same optimized graph ([`compile`]: check,
//! optimize, plan memory) and renders it; `--emit` picks the renderer. Only
//! `ir` exists so far (the optimized graph as text with its memory plan,
//! see `cnnc_ir::text`); the Rust emitter joins as another [`Emit`] variant
//! and another arm in [`run`].

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::ValueEnum;
use cnnc_ir::{MemoryPlan, Optimized};

use crate::common::{load_checked, optimize_checked, print_diagnostics, write_atomic};
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
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
}

/// The outputs of `cnnc build`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// The optimized graph as text: one node per line with its fused
    /// epilogue, inputs, shape and arena slot.
    Ir,
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
    let Some(emit) = args.emit else {
        bail!("generating Rust is not implemented yet; use `--emit ir` for the optimized graph");
    };
    let Some(compiled) = compile(&args.net, options)? else {
        return Ok(Outcome::Diagnosed);
    };
    let text = match emit {
        Emit::Ir => cnnc_ir::text::to_text(
            &compiled.optimized.graph,
            &compiled.optimized.info,
            Some(&compiled.plan),
        ),
    };
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(Outcome::Success)
}
