//! `cnnc run NET.cnn [--weights W] --input X.npy --output Y.npy`: run a
//! network on a batch with the interpreter.
//!
//! The weights come from `--weights`, else from the network's
//! `weights "PATH"` statement (relative to the `.cnn` file); a network with
//! parameters and neither is an error. Weight problems are reported at the
//! layer whose tensor is wrong, naming the file. The input must be
//! `[N, ...input shape]` with `N >= 1`; the output, `[N, ...output shape]`
//! float32, is written atomically, so a failed run never leaves a file
//! behind (nor touches an existing one).
//!
//! `--mode` picks the interpreter's engine: `fast` (the default: the
//! optimized graph's execution plan on the NHWC SIMD kernels, what compiled
//! networks run), `optimized` (the same optimized graph through the naive
//! reference kernels) or `reference` (the graph as written, the oracle;
//! `--unoptimized` is a synonym). `--threads N` sets the fast mode's
//! threads (default: every core); the kernel tier is the best the CPU has,
//! or the one `CNNC_KERNELS` forces.
//!
//! This module also loads weights for `cnnc check --weights`
//! ([`bind_weights`]).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use cnnc_interp::{Interpreter, Mode};
use cnnc_ir::Checked;
use cnnc_runtime::WeightFile;
use cnnc_syntax::{Diagnostic, Label, SourceFile, Span};

use crate::common::{load_checked, print_diagnostics};
use crate::{Options, Outcome};

/// Arguments of `cnnc run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The network (`.cnn` file).
    pub net: PathBuf,
    /// The weights (safetensors with PyTorch `state_dict` names). Overrides
    /// the network's `weights "PATH"` statement.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The input batch: a float32 `.npy` of shape `[N, ...input shape]`
    /// (float64 and float16 are converted).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the output batch, float32 `.npy` of shape
    /// `[N, ...output shape]`. Written atomically.
    #[arg(long)]
    pub output: PathBuf,
    /// The execution engine: `fast` (SIMD kernels over one arena),
    /// `optimized` (the optimized graph on the reference kernels) or
    /// `reference` (the graph as written on the reference kernels).
    #[arg(long, value_enum, default_value_t = ModeArg::Fast)]
    pub mode: ModeArg,
    /// Run the graph as written, every layer on its own (no batch-norm
    /// folding, no fusion): the same as `--mode reference`.
    #[arg(long, conflicts_with = "mode")]
    pub unoptimized: bool,
    /// Threads of the fast mode (default: one per available core). Results
    /// are identical for every thread count.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
}

/// The values of `--mode`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeArg {
    /// The graph as written, naive reference kernels (the oracle).
    Reference,
    /// The optimized graph, naive reference kernels.
    Optimized,
    /// The optimized graph's execution plan on the SIMD kernels.
    Fast,
}

impl ModeArg {
    /// The interpreter's mode.
    pub fn mode(self) -> Mode {
        match self {
            ModeArg::Reference => Mode::Reference,
            ModeArg::Optimized => Mode::Optimized,
            ModeArg::Fast => Mode::Fast,
        }
    }
}

/// Interpreter options for a mode and an optional thread count.
pub fn interpreter_options(mode: Mode, threads: Option<u64>) -> cnnc_interp::Options {
    let options = cnnc_interp::Options::new().mode(mode);
    match threads.and_then(|t| usize::try_from(t).ok()) {
        Some(threads) => options.threads(threads),
        None => options,
    }
}

/// Runs `cnnc run`.
pub fn run(args: &Args, options: &Options) -> Result<Outcome> {
    let (file, checked) = load_checked(&args.net, options)?;
    let Some(checked) = checked else {
        return Ok(Outcome::Diagnosed);
    };
    // Refuse an output path that cannot be written before the work, not
    // after it.
    check_output_path(&args.output)?;
    let source = weights_source(args.weights.as_deref(), &args.net, &checked);
    let mode = if args.unoptimized {
        Mode::Reference
    } else {
        args.mode.mode()
    };
    let interpreter_options = interpreter_options(mode, args.threads);
    let Some(mut interpreter) =
        bind_weights_with(&file, &checked, &source, &interpreter_options, options)?
    else {
        return Ok(Outcome::Diagnosed);
    };
    let (shape, data) = cnnc_runtime::npy::read(&args.input).map_err(message)?;
    let what = format!("input `{}`", args.input.display());
    let batch = cnnc_runtime::check_per_sample_shape(&shape, interpreter.input_shape(), &what)
        .map_err(message)?;
    let output = interpreter.run(&data).map_err(message)?;
    let mut output_shape = vec![batch];
    output_shape.extend_from_slice(interpreter.output_shape());
    cnnc_runtime::npy::write(&args.output, &output_shape, &output).map_err(message)?;
    Ok(Outcome::Success)
}

/// The runtime's errors already say everything in their message (the I/O
/// error included): keep only that, so `main`'s `{:#}` prints it once.
pub fn message(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{error}")
}

/// Where a network's weights come from.
#[derive(Debug, Clone)]
pub enum WeightsSource {
    /// `--weights PATH`.
    Flag(PathBuf),
    /// The network's `weights "PATH"` statement, resolved against the
    /// `.cnn` file's folder.
    Statement {
        /// The resolved path.
        path: PathBuf,
        /// The statement, for diagnostics.
        span: Span,
    },
    /// No weights anywhere.
    None,
}

/// Where the weights of `net` come from: `--weights`, else its `weights`
/// statement (relative to the `.cnn` file), else nowhere.
pub fn weights_source(flag: Option<&Path>, net: &Path, checked: &Checked) -> WeightsSource {
    match flag {
        Some(path) => WeightsSource::Flag(path.to_path_buf()),
        None => match checked.graph.weights_path() {
            Some((path, span)) => WeightsSource::Statement {
                path: relative_to_net(net, Path::new(path)),
                span,
            },
            None => WeightsSource::None,
        },
    }
}

/// [`bind_weights_with`] in `mode` with the default options.
pub fn bind_weights(
    file: &SourceFile,
    checked: &Checked,
    source: &WeightsSource,
    mode: Mode,
    options: &Options,
) -> Result<Option<Interpreter>> {
    let interpreter_options = cnnc_interp::Options::new().mode(mode);
    bind_weights_with(file, checked, source, &interpreter_options, options)
}

/// Loads the weights and binds them to the network, printing every
/// diagnostic (errors at the layers whose tensors are wrong; a warning
/// listing unused tensors) and plans the network with
/// `interpreter_options`. `None` means errors were printed.
///
/// A weights file that cannot be read or parsed is an `Err` when it came
/// from `--weights`, and a diagnostic at the `weights` statement when it came
/// from there.
pub fn bind_weights_with(
    file: &SourceFile,
    checked: &Checked,
    source: &WeightsSource,
    interpreter_options: &cnnc_interp::Options,
    options: &Options,
) -> Result<Option<Interpreter>> {
    let graph = &checked.graph;
    let info = &checked.info;
    let (weights, statement) = match source {
        WeightsSource::Flag(path) => (WeightFile::from_path(path).map_err(message)?, None),
        WeightsSource::Statement { path, span } => match WeightFile::from_path(path) {
            Ok(weights) => (weights, Some(*span)),
            Err(error) => {
                let diagnostic = Diagnostic::error(error.to_string())
                    .with_primary(Label::new(*span, "weights file named here"))
                    .with_help(
                        "the path is relative to the .cnn file; `--weights FILE` overrides it",
                    );
                print_diagnostics(&diagnostic.into(), file, options);
                return Ok(None);
            }
        },
        WeightsSource::None => {
            return match Interpreter::with_options(graph, info, None, interpreter_options) {
                Ok(interpreter) => Ok(Some(interpreter)),
                Err(errors) => {
                    let first = errors.iter().next();
                    let mut diagnostic = Diagnostic::error(format!(
                        "network `{}` has parameters, but no weights file was given",
                        graph.name()
                    ))
                    .with_help(
                        "pass `--weights FILE.safetensors`, or add `weights \"FILE.safetensors\"` \
                         to the network",
                    );
                    if let Some(first) = first {
                        diagnostic = diagnostic.with_primary(Label::new(
                            first.span,
                            format!("this `{}` needs weights", first.op),
                        ));
                    }
                    print_diagnostics(&diagnostic.into(), file, options);
                    Ok(None)
                }
            };
        }
    };
    match Interpreter::with_options(graph, info, Some(&weights), interpreter_options) {
        Ok(interpreter) => {
            if let Some(warning) = unused_warning(interpreter.unused_weights(), &weights, statement)
            {
                print_diagnostics(&warning.into(), file, options);
            }
            Ok(Some(interpreter))
        }
        Err(errors) => {
            let mut diagnostics = errors.to_diagnostics();
            // The tensors no layer read are often the ones a misspelt layer
            // meant: worth seeing next to the errors.
            if let Some(warning) = unused_warning(&weights.unused(), &weights, statement) {
                diagnostics.push(warning);
            }
            print_diagnostics(&diagnostics, file, options);
            Ok(None)
        }
    }
}

/// The warning about tensors no layer reads, if any; on the `weights`
/// statement when the file was named there.
fn unused_warning(
    unused: &[String],
    weights: &WeightFile<'_>,
    statement: Option<Span>,
) -> Option<Diagnostic> {
    if unused.is_empty() {
        return None;
    }
    let count = unused.len();
    let plural = if count == 1 { "" } else { "s" };
    let warning = Diagnostic::warning(format!(
        "{count} tensor{plural} in {} not used by the network: {}",
        file_of(weights),
        list(unused)
    ))
    .with_note("a layer named `L` loads `L.weight` and `L.bias`: check for a misspelt layer name");
    Some(match statement {
        Some(span) => warning.with_primary(Label::new(span, "weights file named here")),
        None => warning,
    })
}

/// `weights file `w.safetensors``.
fn file_of(weights: &WeightFile<'_>) -> String {
    match weights.path() {
        Some(path) => format!("weights file `{}`", path.display()),
        None => "the weights".to_string(),
    }
}

/// `` `a`, `b`, `c` and 4 more ``.
fn list(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// `path` as written in `net`'s `weights` statement: relative to the
/// folder of the `.cnn` file (absolute paths stay as they are).
fn relative_to_net(net: &Path, path: &Path) -> PathBuf {
    match net.parent() {
        Some(dir) => dir.join(path),
        None => path.to_path_buf(),
    }
}

/// Refuses an output path whose folder does not exist or that names a
/// folder, before any work is done.
fn check_output_path(output: &Path) -> Result<()> {
    if output.is_dir() {
        bail!("cannot write `{}`: it is a directory", output.display());
    }
    if let Some(dir) = output.parent() {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            bail!(
                "cannot write `{}`: the directory `{}` does not exist",
                output.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{list, relative_to_net};
    use std::path::Path;

    #[test]
    fn weights_statements_are_relative_to_the_net() {
        assert_eq!(
            relative_to_net(Path::new("nets/a.cnn"), Path::new("a.safetensors")),
            Path::new("nets/a.safetensors")
        );
        assert_eq!(
            relative_to_net(Path::new("a.cnn"), Path::new("w/a.safetensors")),
            Path::new("w/a.safetensors")
        );
        assert_eq!(
            relative_to_net(Path::new("nets/a.cnn"), Path::new("/abs/a.safetensors")),
            Path::new("/abs/a.safetensors")
        );
    }

    #[test]
    fn long_lists_are_shortened() {
        let names: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
        assert_eq!(list(&names[..2]), "`t0`, `t1`");
        assert_eq!(list(&names), "`t0`, `t1`, `t2`, `t3`, `t4` and 2 more");
    }
}
