//! The one error type of the runtime.
//!
//! Every variant is a refusal of something the user handed us (a weights
//! file, a tensor file, a buffer passed to `forward`), never a bug of cnnc, so
//! each message names the file, the tensor, what was expected and what was
//! found. Messages follow the Rust convention: lower case, no final period,
//! one line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong when loading weights, reading or writing
/// tensors, or calling a network's `forward`.
///
/// Weights variants carry `file: Option<PathBuf>`: the path when the weights
/// came from [`WeightFile::from_path`](crate::WeightFile::from_path), `None`
/// when they came from bytes in memory (embedded weights).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed at the operating-system level
    /// (file does not exist, permission denied, disk full, ...).
    Io {
        /// The file (for a failed rename: the destination).
        path: PathBuf,
        /// What we were doing.
        action: IoAction,
        /// The operating system's error.
        source: io::Error,
    },

    // ---------------------------------------------------------- weights
    /// The network needs a tensor that the weights file does not have.
    MissingTensor {
        /// The weights file, if it came from one.
        file: Option<PathBuf>,
        /// The name the network asked for.
        name: String,
        /// The closest name present in the file, if one is plausibly meant.
        did_you_mean: Option<String>,
    },
    /// A tensor exists but its shape is not the one the network declares.
    TensorShape {
        /// The weights file, if it came from one.
        file: Option<PathBuf>,
        /// The tensor's name.
        name: String,
        /// The shape the network needs.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
    /// A tensor's element type cannot be converted to `f32` (integers,
    /// booleans, 8-bit and smaller floats).
    UnsupportedDtype {
        /// The weights file, if it came from one.
        file: Option<PathBuf>,
        /// The tensor's name.
        name: String,
        /// The safetensors dtype name, e.g. `I64`.
        dtype: &'static str,
    },
    /// The file is shorter than the 8-byte header length that starts every
    /// safetensors file.
    FileTooShort {
        /// The weights file, if it came from one.
        file: Option<PathBuf>,
        /// The file's length in bytes.
        len: usize,
    },
    /// The header length field is larger than the file (or than the 100 MB
    /// safetensors limit): a truncated file or not a safetensors file at all.
    /// Nothing is allocated for such a header.
    HeaderTooLarge {
        /// The weights file, if it came from one.
        file: Option<PathBuf>,
        /// The value of the header length field.
        header_len: u64,
        /// The file's length in bytes.
        file_len: usize,
    },
    /// The JSON header cannot be read: not UTF-8, not JSON, or JSON that does
    /// not describe tensors.
    InvalidHeader {
        /// The weights file, if it came from one.
        file: Option<PathBuf>,
        /// What is wrong, in words (includes the JSON parser's position).
        reason: String,
    },
    /// A tensor's `data_offsets` reach past the end of the file: the file is
    /// truncated or its header is wrong.
    DataOutOfBounds {
        /// The weights file, if it came from one.
        file: Option<PathBuf>,
        /// The tensor's name.
        name: String,
        /// The tensor's `data_offsets` (relative to the end of the header).
        offsets: (usize, usize),
        /// The number of data bytes after the header.
        data_len: usize,
    },
    /// Two tensors claim the same bytes.
    OverlappingTensors {
        /// The weights file, if it came from one.
        file: Option<PathBuf>,
        /// The tensor that starts first.
        first: String,
        /// The tensor that starts inside `first`.
        second: String,
    },
    /// A tensor's byte range does not match its dtype and shape (this
    /// includes offsets whose end comes before their start).
    TensorSize {
        /// The weights file, if it came from one.
        file: Option<PathBuf>,
        /// The tensor's name.
        name: String,
        /// The safetensors dtype name, e.g. `F32`.
        dtype: &'static str,
        /// The declared shape.
        shape: Vec<usize>,
        /// The declared `data_offsets`.
        offsets: (usize, usize),
        /// The number of bytes dtype and shape need; `None` when that
        /// overflows or is not a whole number of bytes.
        needed: Option<usize>,
    },

    // ------------------------------------------------------------ npy
    /// A `.npy` file whose prelude or header cannot be read (bad magic,
    /// unknown version, header larger than NumPy's limit, not a Python dict,
    /// absurd shape).
    NpyHeader {
        /// The `.npy` file.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// A `.npy` file with an element type other than float32/float64/float16.
    NpyDtype {
        /// The `.npy` file.
        path: PathBuf,
        /// The NumPy type string, e.g. `<i8`.
        descr: String,
    },
    /// A `.npy` file stored in Fortran (column-major) order.
    NpyFortranOrder {
        /// The `.npy` file.
        path: PathBuf,
    },
    /// The data after a `.npy` header is not exactly shape × item size bytes.
    NpyDataSize {
        /// The `.npy` file.
        path: PathBuf,
        /// The shape in the header.
        shape: Vec<usize>,
        /// The NumPy type string in the header.
        descr: String,
        /// The number of data bytes the header announces.
        expected: u64,
        /// The number of data bytes present.
        found: u64,
    },
    /// Data handed to a writer does not have as many values as its shape.
    ShapeDataMismatch {
        /// The shape given.
        shape: Vec<usize>,
        /// The number of values given.
        len: usize,
    },

    // -------------------------------------------------- forward and shapes
    /// A tensor's shape is not `[N, ...per-sample shape]`.
    SampleShape {
        /// What the tensor is, e.g. ``input `x.npy` ``.
        what: String,
        /// The per-sample shape the network expects (without the batch).
        expected: Vec<usize>,
        /// The full shape found.
        found: Vec<usize>,
    },
    /// The input slice of a `forward` call is not a whole number of samples.
    InputLength {
        /// The size of one sample.
        per_sample: usize,
        /// The input slice's length.
        found: usize,
    },
    /// The output slice of a `forward` call does not fit the batch.
    OutputLength {
        /// The length the output must have (batch × output sample size).
        expected: usize,
        /// The output slice's length.
        found: usize,
        /// The batch size deduced from the input.
        batch: usize,
    },
    /// A batch of zero samples.
    EmptyBatch {
        /// What is empty, e.g. `input`.
        what: String,
    },
    /// The activations of a batch cannot be allocated (or their size
    /// overflows). The caller's error: a smaller batch works.
    BatchTooLarge {
        /// The batch size asked for.
        batch: usize,
        /// The bytes the activation arena and scratch would need (`None`
        /// when that overflows).
        bytes: Option<u64>,
    },

    // ---------------------------------------------------------- layers
    /// A layer's kernel refused its spec, its constants or its buffers, or
    /// the layer's arena regions are inconsistent. Never caused by the
    /// user's data (weights shapes and batch sizes are checked before): a
    /// bug in cnnc, or generated code built by another version of cnnc.
    Layer {
        /// The layer (its module name or display name).
        layer: String,
        /// What was refused, in words.
        reason: String,
    },
}

/// What an [`Error::Io`] was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoAction {
    /// Reading a file.
    Read,
    /// Creating or writing a (temporary) file.
    Write,
    /// Renaming the finished temporary file onto the destination.
    Rename,
}

impl Error {
    /// Sets the weights file of a weights error that has none (errors made
    /// while parsing bytes learn their path this way).
    pub(crate) fn in_file(mut self, path: &Path) -> Self {
        let slot = match &mut self {
            Error::MissingTensor { file, .. }
            | Error::TensorShape { file, .. }
            | Error::UnsupportedDtype { file, .. }
            | Error::FileTooShort { file, .. }
            | Error::HeaderTooLarge { file, .. }
            | Error::InvalidHeader { file, .. }
            | Error::DataOutOfBounds { file, .. }
            | Error::OverlappingTensors { file, .. }
            | Error::TensorSize { file, .. } => file,
            _ => return self,
        };
        if slot.is_none() {
            *slot = Some(path.to_path_buf());
        }
        self
    }

    pub(crate) fn io(path: &Path, action: IoAction, source: io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}

/// Writes `weights file `p`` or `weights` as the start of a message.
struct Origin<'a>(&'a Option<PathBuf>);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "weights file `{}`", path.display()),
            None => f.write_str("weights"),
        }
    }
}

/// Writes a shape as `[64, 3, 7, 7]`.
pub(crate) struct ShapeDisplay<'a>(pub(crate) &'a [usize]);

impl fmt::Display for ShapeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Writes a per-sample shape with the batch in front: `[N, 3, 224, 224]`.
struct BatchedShapeDisplay<'a>(&'a [usize]);

impl fmt::Display for BatchedShapeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[N")?;
        for d in self.0 {
            write!(f, ", {d}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                path,
                action,
                source,
            } => {
                let verb = match action {
                    IoAction::Read => "cannot read",
                    IoAction::Write => "cannot write",
                    IoAction::Rename => "cannot move the finished file to",
                };
                write!(f, "{verb} `{}`: {source}", path.display())
            }
            Error::MissingTensor {
                file,
                name,
                did_you_mean,
            } => {
                write!(f, "{}: tensor `{name}` not found", Origin(file))?;
                if let Some(close) = did_you_mean {
                    write!(f, "; did you mean `{close}`?")?;
                }
                Ok(())
            }
            Error::TensorShape {
                file,
                name,
                expected,
                found,
            } => write!(
                f,
                "{}: tensor `{name}` has the wrong shape: expected {}, found {}",
                Origin(file),
                ShapeDisplay(expected),
                ShapeDisplay(found)
            ),
            Error::UnsupportedDtype { file, name, dtype } => write!(
                f,
                "{}: tensor `{name}` has dtype {dtype}, which cannot be converted to f32 \
                 (supported: F32, F16, BF16, F64)",
                Origin(file)
            ),
            Error::FileTooShort { file, len } => write!(
                f,
                "{}: file is {len} bytes long, too short for a safetensors file \
                 (it must start with an 8-byte header length)",
                Origin(file)
            ),
            Error::HeaderTooLarge {
                file,
                header_len,
                file_len,
            } => {
                if (*header_len as u128) + 8 > *file_len as u128 {
                    write!(
                        f,
                        "{}: the header length field says {header_len} bytes but the file has \
                         only {file_len}: truncated, or not a safetensors file",
                        Origin(file)
                    )
                } else {
                    write!(
                        f,
                        "{}: the header is {header_len} bytes long, more than the safetensors \
                         limit of 100000000",
                        Origin(file)
                    )
                }
            }
            Error::InvalidHeader { file, reason } => {
                write!(f, "{}: invalid safetensors header: {reason}", Origin(file))
            }
            Error::DataOutOfBounds {
                file,
                name,
                offsets,
                data_len,
            } => write!(
                f,
                "{}: tensor `{name}` has data_offsets [{}, {}] but the data section has only \
                 {data_len} bytes: the file is truncated or its header is wrong",
                Origin(file),
                offsets.0,
                offsets.1
            ),
            Error::OverlappingTensors {
                file,
                first,
                second,
            } => write!(
                f,
                "{}: tensors `{first}` and `{second}` overlap in the data section",
                Origin(file)
            ),
            Error::TensorSize {
                file,
                name,
                dtype,
                shape,
                offsets,
                needed,
            } => {
                write!(
                    f,
                    "{}: tensor `{name}` has data_offsets [{}, {}]",
                    Origin(file),
                    offsets.0,
                    offsets.1
                )?;
                if offsets.1 < offsets.0 {
                    f.write_str(", which end before they start")
                } else {
                    let len = offsets.1 - offsets.0;
                    match needed {
                        Some(needed) => write!(
                            f,
                            " ({len} bytes) but {dtype} {} needs {needed} bytes",
                            ShapeDisplay(shape)
                        ),
                        None => write!(
                            f,
                            " ({len} bytes) but {dtype} {} has no valid byte size \
                             (too large, or not a whole number of bytes)",
                            ShapeDisplay(shape)
                        ),
                    }
                }
            }
            Error::NpyHeader { path, reason } => {
                write!(
                    f,
                    "`{}`: not a readable .npy file: {reason}",
                    path.display()
                )
            }
            Error::NpyDtype { path, descr } => write!(
                f,
                "`{}`: unsupported .npy dtype `{descr}`: expected float32 \
                 (float64 and float16 are converted)",
                path.display()
            ),
            Error::NpyFortranOrder { path } => write!(
                f,
                "`{}`: .npy data is in Fortran order; save it in C order \
                 (numpy.ascontiguousarray) first",
                path.display()
            ),
            Error::NpyDataSize {
                path,
                shape,
                descr,
                expected,
                found,
            } => {
                let how = if found < expected {
                    "truncated"
                } else {
                    "has trailing bytes"
                };
                write!(
                    f,
                    "`{}`: .npy data {how}: shape {} of `{descr}` needs {expected} bytes, \
                     found {found}",
                    path.display(),
                    ShapeDisplay(shape)
                )
            }
            Error::ShapeDataMismatch { shape, len } => {
                let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                match count {
                    Some(count) => write!(
                        f,
                        "shape {} has {count} elements but {len} values were given",
                        ShapeDisplay(shape)
                    ),
                    None => write!(
                        f,
                        "shape {} has too many elements for the {len} values given",
                        ShapeDisplay(shape)
                    ),
                }
            }
            Error::SampleShape {
                what,
                expected,
                found,
            } => write!(
                f,
                "{what} has the wrong shape: expected {}, found {}",
                BatchedShapeDisplay(expected),
                ShapeDisplay(found)
            ),
            Error::InputLength { per_sample, found } => write!(
                f,
                "input has {found} values, which is not a whole number of samples of \
                 {per_sample} values each"
            ),
            Error::OutputLength {
                expected,
                found,
                batch,
            } => write!(
                f,
                "output buffer has {found} values, expected {expected} for a batch of {batch}"
            ),
            Error::EmptyBatch { what } => write!(f, "{what} is an empty batch (0 samples)"),
            Error::BatchTooLarge { batch, bytes } => match bytes {
                Some(bytes) => write!(
                    f,
                    "out of memory: the activations of a batch of {batch} need {bytes} bytes; \
                     use a smaller batch"
                ),
                None => write!(
                    f,
                    "the activations of a batch of {batch} are too large to address; \
                     use a smaller batch"
                ),
            },
            Error::Layer { layer, reason } => write!(
                f,
                "internal error in layer `{layer}`: {reason} (this is a bug in cnnc)"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
