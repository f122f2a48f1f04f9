//! Compiles `.cnn` networks into Rust from a build script.
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), cnnc_build::Error> {
//!     cnnc_build::compile("nets/lenet5.cnn")?; // writes $OUT_DIR/lenet5.rs
//!     Ok(())
//! }
//! ```
//!
//! ```text
//! // src/lib.rs
//! cnnc_runtime::include_net!("lenet5");
//! // or: include!(concat!(env!("OUT_DIR"), "/lenet5.rs"));
//! ```
//!
//! The crate then depends on `cnnc-runtime` (what the generated code calls)
//! and build-depends on `cnnc-build`.
//!
//! # What it does
//!
//! [`Builder::compile`] reads the network, checks it, optimizes it, plans
//! its execution and generates the module with `cnnc-codegen`. When the
//! network has weights (its `weights "…"` statement, relative to the `.cnn`
//! file, or [`Builder::weights`]), they are checked, packed and written as
//! `<name>.weights.bin` next to `<name>.rs`, which embeds them: the module
//! then has `new()`. Both files are written atomically, and only when their
//! contents change (so an unchanged network does not rebuild the crate).
//!
//! It prints `cargo:rerun-if-changed` for the network and its weights, and
//! reports problems the way cargo shows them: each warning as a
//! `cargo:warning=` line, each error as a plain
//! `file:line:col: error: message` line on standard error (which cargo
//! prints when the build script fails), and returns an [`Error`] that says
//! how many errors there were. Nothing is written on error.
//!
//! # Environment
//!
//! Reads `OUT_DIR` (set by cargo for build scripts) when no
//! [`Builder::out_dir`] is given; nothing else.
#![deny(missing_docs)]

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use cnnc_codegen::{Frontend, Options};
use cnnc_runtime::WeightFile;
use cnnc_syntax::{Diagnostics, RenderStyle, SourceFile, MAX_SOURCE_LEN};

/// Compiles one network with the default [`Builder`]: the output goes to
/// `$OUT_DIR/<file stem>.rs` (and its weights next to it), with the weights
/// of the network's `weights` statement, if any.
pub fn compile(net: impl AsRef<Path>) -> Result<Output, Error> {
    Builder::new().compile(net)
}

/// What a compilation wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Output {
    /// The generated module (`$OUT_DIR/lenet5.rs`).
    pub module: PathBuf,
    /// Its weight blob, when built with weights.
    pub blob: Option<PathBuf>,
    /// The struct the module defines (`Lenet5`).
    pub type_name: String,
}

/// The options of a compilation (prost-build style: `&mut self` setters,
/// then [`compile`](Builder::compile)).
///
/// ```no_run
/// cnnc_build::Builder::new()
///     .weights("weights/lenet5-trained.safetensors")
///     .module_name("digits")
///     .compile("nets/lenet5.cnn")?; // $OUT_DIR/digits.rs, include_net!("digits")
/// # Ok::<(), cnnc_build::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    weights: WeightsChoice,
    out_dir: Option<PathBuf>,
    module_name: Option<String>,
    emit_rerun_if_changed: bool,
    cargo_messages: bool,
}

#[derive(Clone, Debug)]
enum WeightsChoice {
    /// The network's `weights` statement, if it has one.
    Statement,
    /// This file, whatever the statement says.
    File(PathBuf),
    /// None: no blob and no `new()`, only `from_safetensors`.
    Without,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl Builder {
    /// The defaults: weights from the network's `weights` statement, output
    /// to `$OUT_DIR`, the module named after the `.cnn` file, rerun
    /// directives and cargo messages printed.
    pub fn new() -> Builder {
        Builder {
            weights: WeightsChoice::Statement,
            out_dir: None,
            module_name: None,
            emit_rerun_if_changed: true,
            cargo_messages: true,
        }
    }

    /// Embeds the weights of this safetensors file (a path relative to the
    /// current directory, the package's root in a build script), overriding
    /// the network's `weights` statement.
    pub fn weights(&mut self, path: impl Into<PathBuf>) -> &mut Builder {
        self.weights = WeightsChoice::File(path.into());
        self
    }

    /// Embeds no weights, even if the network has a `weights` statement:
    /// the module has no `new()`, only `from_safetensors`.
    pub fn without_weights(&mut self) -> &mut Builder {
        self.weights = WeightsChoice::Without;
        self
    }

    /// Writes into `dir` instead of `$OUT_DIR`.
    pub fn out_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// Names the output files `<name>.rs` and `<name>.weights.bin` instead
    /// of after the `.cnn` file's stem (`include_net!("<name>")`).
    pub fn module_name(&mut self, name: impl Into<String>) -> &mut Builder {
        self.module_name = Some(name.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for the network and its
    /// weights (default: yes).
    pub fn emit_rerun_if_changed(&mut self, enable: bool) -> &mut Builder {
        self.emit_rerun_if_changed = enable;
        self
    }

    /// Whether to print diagnostics for cargo (`cargo:warning=` lines and
    /// errors on standard error; default: yes). Off, they are only in the
    /// returned [`Error`] (and warnings are dropped).
    pub fn cargo_messages(&mut self, enable: bool) -> &mut Builder {
        self.cargo_messages = enable;
        self
    }

    /// Compiles `net` and says what was written.
    pub fn compile(&self, net: impl AsRef<Path>) -> Result<Output, Error> {
        let net = net.as_ref();
        if self.emit_rerun_if_changed {
            println!("cargo:rerun-if-changed={}", net.display());
        }
        let file = read_source(net)?;
        let front = match cnnc_codegen::frontend(&file) {
            Ok(front) => front,
            Err(diagnostics) => return Err(self.report(&file, &diagnostics)),
        };
        self.warn(&file, &front.warnings);

        let weights_path = match &self.weights {
            WeightsChoice::File(path) => Some(path.clone()),
            WeightsChoice::Without => None,
            WeightsChoice::Statement => front.graph.weights_path().map(|(path, _)| {
                net.parent()
                    .map_or_else(|| PathBuf::from(path), |dir| dir.join(path))
            }),
        };
        if let (Some(path), true) = (&weights_path, self.emit_rerun_if_changed) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        let weights = match &weights_path {
            Some(path) => Some(
                WeightFile::from_path(path)
                    .map_err(|error| self.fail(format!("{}: error: {error}", net.display())))?,
            ),
            None => None,
        };

        let name = match &self.module_name {
            Some(name) => name.clone(),
            None => net
                .file_stem()
                .and_then(|stem| stem.to_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    self.fail(format!(
                        "{}: error: the file name is not valid UTF-8; set a module_name",
                        net.display()
                    ))
                })?,
        };
        let blob_file = format!("{name}.weights.bin");
        let source_name = net.display().to_string();
        let mut options = Options::new(&source_name);
        if let Some(weights) = &weights {
            options = options.weights(weights, &blob_file);
        }
        let generated =
            generate(&front, &options).map_err(|diagnostics| self.report(&file, &diagnostics))?;
        if let Some(weights) = &weights {
            let unused = weights.unused();
            if !unused.is_empty() && self.cargo_messages {
                println!(
                    "cargo:warning={}: {} tensor(s) of the weights are not used by the network: {}",
                    net.display(),
                    unused.len(),
                    unused.join(", ")
                );
            }
        }

        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| {
                    self.fail(
                        "error: OUT_DIR is not set: call cnnc_build from a build script, \
                     or set an out_dir"
                            .to_string(),
                    )
                })?,
        };
        let module = out_dir.join(format!("{name}.rs"));
        let mut files = vec![(module.clone(), generated.source.into_bytes())];
        let blob = generated.blob.map(|bytes| {
            let path = out_dir.join(&blob_file);
            files.push((path.clone(), bytes));
            path
        });
        write_all_atomic(&files).map_err(|message| self.fail(format!("error: {message}")))?;
        Ok(Output {
            module,
            blob,
            type_name: cnnc_codegen::type_name(&front.plan.name),
        })
    }

    /// Prints warnings as `cargo:warning=` lines.
    fn warn(&self, file: &SourceFile, warnings: &Diagnostics) {
        if !self.cargo_messages || warnings.is_empty() {
            return;
        }
        for line in warnings.render(file, RenderStyle::Short).lines() {
            println!("cargo:warning={line}");
        }
    }

    /// Prints errors (and the warnings among them) and makes the error.
    fn report(&self, file: &SourceFile, diagnostics: &Diagnostics) -> Error {
        let text = diagnostics.render(file, RenderStyle::Short);
        if self.cargo_messages {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
        let errors = diagnostics.error_count().max(1);
        let plural = if errors == 1 { "" } else { "s" };
        Error {
            message: format!(
                "{text}could not compile `{}` due to {errors} error{plural}",
                file.name()
            ),
        }
    }

    /// Prints one error line and makes the error.
    fn fail(&self, message: String) -> Error {
        if self.cargo_messages {
            eprintln!("{message}");
        }
        Error { message }
    }
}

/// Generates code for a front end's plan; weight errors become diagnostics
/// at their layers' lines.
fn generate(
    front: &Frontend,
    options: &Options<'_>,
) -> Result<cnnc_codegen::Generated, Diagnostics> {
    cnnc_codegen::generate(&front.plan, options).map_err(|error| error.to_diagnostics(&front.graph))
}

fn read_source(path: &Path) -> Result<SourceFile, Error> {
    use std::io::Read as _;
    let fail = |error: std::io::Error| {
        let message = format!(
            "{}: error: cannot read the network: {error}",
            path.display()
        );
        eprintln!("{message}");
        Error { message }
    };
    let file = fs::File::open(path).map_err(fail)?;
    let mut bytes = Vec::new();
    file.take(MAX_SOURCE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    Ok(SourceFile::from_bytes(path.display().to_string(), bytes))
}

/// Writes every file through a temporary file in its directory, then
/// renames them all into place; files whose contents are already right are
/// left alone (their modification time too). On failure, temporary files
/// are removed and no file is left half-written.
fn write_all_atomic(files: &[(PathBuf, Vec<u8>)]) -> Result<(), String> {
    let mut staged: Vec<(PathBuf, &Path)> = Vec::new();
    let cleanup = |staged: &[(PathBuf, &Path)]| {
        for (temp, _) in staged {
            let _ = fs::remove_file(temp);
        }
    };
    for (path, bytes) in files {
        if fs::read(path).is_ok_and(|current| current == *bytes) {
            continue;
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if let Err(error) = fs::create_dir_all(dir) {
            cleanup(&staged);
            return Err(format!("cannot create {}: {error}", dir.display()));
        }
        let file_name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let written = fs::File::create(&temp).and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
        if let Err(error) = written {
            let _ = fs::remove_file(&temp);
            cleanup(&staged);
            return Err(format!("cannot write {}: {error}", path.display()));
        }
        staged.push((temp, path));
    }
    for (index, (temp, path)) in staged.iter().enumerate() {
        if let Err(error) = fs::rename(temp, path) {
            cleanup(&staged[index..]);
            return Err(format!("cannot write {}: {error}", path.display()));
        }
    }
    Ok(())
}

/// A failed compilation. Its message holds every diagnostic (plain
/// `file:line:col: error: …` lines) and a summary; they were already
/// printed for cargo unless [`Builder::cargo_messages`] was turned off.
pub struct Error {
    message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The message itself, so that `build.rs`'s `unwrap()` or `fn main() ->
/// Result` prints it readably.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
