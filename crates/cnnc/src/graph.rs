//! `cnnc graph NET.cnn [-o net.dot]`: the network's graph in Graphviz DOT.
//!
//! The graph is the lowered one, with each node's output shape; once the
//! optimizer exists this shows the optimized graph.

use std::path::PathBuf;

use anyhow::Result;

use crate::common::{load_checked, write_atomic};
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
}

/// Runs `cnnc graph`.
pub fn run(args: &Args, options: &Options) -> Result<Outcome> {
    let (_, checked) = load_checked(&args.net, options)?;
    let Some(checked) = checked else {
        return Ok(Outcome::Diagnosed);
    };
    let dot = cnnc_ir::dot::to_dot(&checked.graph, &checked.info);
    match &args.output {
        Some(path) => write_atomic(path, dot.as_bytes())?,
        None => print!("{dot}"),
    }
    Ok(Outcome::Success)
}
