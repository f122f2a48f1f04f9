//! `cnnc graph NET.cnn [--stage lowered|optimized] [-o net.dot]`: the
//! network's graph in Graphviz DOT, with each node's output shape.
//!
//! By default the optimized graph (batch-norms folded, epilogues fused);
//! `--stage lowered` shows the graph as written, before any pass.

use std::path::PathBuf;

use anyhow::Result;
use clap::ValueEnum;

use crate::common::{load_checked, optimize_checked, write_atomic};
use crate::{Options, Outcome};

/// Arguments of `cnnc graph`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The network (`.cnn` file).
    pub net: PathBuf,
    /// Where to write the DOT file (standard output if absent). Written
    /// atomically: a failed run leaves no partial file.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Which graph to draw.
    #[arg(long, value_enum, default_value_t = Stage::Optimized)]
    pub stage: Stage,
}

/// The stages of the pipeline `cnnc graph` can show.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// As written: every statement one node, before any pass.
    Lowered,
    /// After the optimizer: batch-norms folded, activations and residual
    /// adds fused into the layers before them.
    Optimized,
}

/// Runs `cnnc graph`.
pub fn run(args: &Args, options: &Options) -> Result<Outcome> {
    let (file, checked) = load_checked(&args.net, options)?;
    let Some(checked) = checked else {
        return Ok(Outcome::Diagnosed);
    };
    let dot = match args.stage {
        Stage::Lowered => cnnc_ir::dot::to_dot(&checked.graph, &checked.info),
        Stage::Optimized => {
            let Some(optimized) = optimize_checked(&file, checked.graph, &checked.info, options)
            else {
                return Ok(Outcome::Diagnosed);
            };
            cnnc_ir::dot::to_dot(&optimized.graph, &optimized.info)
        }
    };
    match &args.output {
        Some(path) => write_atomic(path, dot.as_bytes())?,
        None => print!("{dot}"),
    }
    Ok(Outcome::Success)
}
