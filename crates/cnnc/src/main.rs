//! The `cnnc` command line.
//!
//! One module per subcommand (`check.rs`, `graph.rs`, ...), each with an
//! `Args` struct and a `run(args, &Options) -> anyhow::Result<Outcome>`;
//! `common.rs` holds what they share (reading a `.cnn` file, printing
//! diagnostics, writing output files atomically).
//!
//! Exit codes: 0 on success, 1 on a diagnosed error (the diagnostics are on
//! stderr), 2 on a command-line usage error (from clap).

mod bench;
mod build;
mod check;
mod common;
mod graph;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// A compiler for convolutional networks written in the `.cnn` language.
#[derive(Parser, Debug)]
#[command(name = "cnnc", version, about)]
struct Cli {
    #[command(flatten)]
    options: Options,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// How to print diagnostics: `rich` (rustc-style, with the source line)
    /// or `short` (one `file:line:col: error: message` line each).
    #[arg(long, global = true, value_enum, default_value_t = ErrorFormat::Rich)]
    pub error_format: ErrorFormat,
}

/// The diagnostic styles of `--error-format`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    /// rustc-style with source lines and carets (colored on a terminal).
    Rich,
    /// One line per diagnostic.
    Short,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a network and print its layer table.
    Check(check::Args),
    /// Compile a network (so far: `--emit ir`, the optimized graph as text).
    Build(build::Args),
    /// Write the network's graph in Graphviz DOT.
    Graph(graph::Args),
    /// Run the network on a batch (`.npy` in, `.npy` out) with the interpreter.
    Run(run::Args),
    /// Time the network's forward pass (random weights if none are given).
    Bench(bench::Args),
}

/// What a subcommand ended with, when it did not fail on an I/O error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything went well.
    Success,
    /// The input had errors; they were printed.
    Diagnosed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check::run(&args, &cli.options),
        Command::Build(args) => build::run(&args, &cli.options),
        Command::Graph(args) => graph::run(&args, &cli.options),
        Command::Run(args) => run::run(&args, &cli.options),
        Command::Bench(args) => bench::run(&args, &cli.options),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Diagnosed) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
