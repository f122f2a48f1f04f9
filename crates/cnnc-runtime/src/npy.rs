//! `.npy` tensors for the command line (feature `npy`).
//!
//! Inputs and outputs of `cnnc run` are NumPy `.npy` files holding float32 in
//! C order, batch first. [`read`] returns the shape and the values;
//! [`write()`] writes float32 atomically.
//!
//! # Reading
//!
//! The format is parsed by the `npyz` crate. Accepted element types are
//! float32, and, converted to `f32` for convenience, float64 (rounded to
//! nearest) and float16 (exact), in either byte order. Fortran order is
//! refused unless at most one dimension exceeds 1, where both orders lay the
//! data out identically.
//!
//! `npyz` trusts its input more than we can, so a few guards run in front of
//! it, all before anything is allocated from a number in the file:
//!
//! - the header length field must fit in the file and within NumPy's own
//!   limit of 10 000 bytes (`npyz` would allocate whatever it says, up to
//!   4 GiB);
//! - the header may nest brackets at most 4 deep (the Python-literal parser
//!   backtracks exponentially in the depth: a few dozen bytes of `{{{{...`
//!   would otherwise hang it);
//! - the shape's element count must not overflow (`npyz` multiplies the
//!   dimensions unchecked, which panics in debug builds), and count × item
//!   size must be exactly the number of data bytes after the header.
//!
//! # Writing
//!
//! [`write()`] writes `<out>.tmp-<pid>` in the destination's directory, syncs
//! it to disk and renames it onto `<out>`; on any error it removes the
//! temporary file. So `<out>` is either absent, its old self, or complete.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

use crate::error::{Error, IoAction};

/// NumPy's `numpy.lib.format` refuses headers longer than this by default.
const MAX_HEADER_LEN: usize = 10_000;

/// Brackets deeper than this in a header are refused before parsing. NumPy
/// writes depth 2 for plain arrays (the dict, the shape tuple) and 3 for
/// structured ones. The Python-literal parser backtracks exponentially in the
/// depth (measured: `{` nested 12 deep took 7 s, 14 deep 91 s); at 4, the
/// worst 10 000-byte header we found takes a third of a second.
const MAX_NESTING: usize = 4;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Reads the `.npy` file at `path`: its shape and its values as `f32` in C
/// order. Every error names the file.
pub fn read(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<f32>), Error> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, IoAction::Read, e))?;
    from_bytes(&bytes, path)
}

/// Parses `.npy` bytes held in memory; `path` is only used in messages.
///
/// ```
/// let bytes = cnnc_runtime::npy::to_bytes(&[2, 1], &[0.5, -1.0])?;
/// let (shape, values) = cnnc_runtime::npy::from_bytes(&bytes, "x.npy".as_ref())?;
/// assert_eq!((shape, values), (vec![2, 1], vec![0.5, -1.0]));
/// # Ok::<(), cnnc_runtime::Error>(())
/// ```
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, Vec<f32>), Error> {
    let bad_header = |reason: String| Error::NpyHeader {
        path: path.to_path_buf(),
        reason,
    };

    // Guard 1: the prelude, and a header length the file can back.
    if bytes.len() < 8 || &bytes[..6] != MAGIC {
        return Err(bad_header(
            "it does not start with the .npy magic string".into(),
        ));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let len_field = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => {
            return Err(bad_header(format!(
                "unsupported format version {major}.{minor}"
            )))
        }
    };
    let text_start = 8 + len_field;
    let Some(len_bytes) = bytes.get(8..text_start) else {
        return Err(bad_header("the file ends inside the header length".into()));
    };
    let header_len = len_bytes
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if header_len > MAX_HEADER_LEN {
        return Err(bad_header(format!(
            "the header length field says {header_len} bytes, more than NumPy's limit of {MAX_HEADER_LEN}"
        )));
    }
    let data_start = text_start + header_len;
    if data_start > bytes.len() {
        return Err(bad_header(format!(
            "the header length field says {header_len} bytes but only {} follow",
            bytes.len() - text_start
        )));
    }

    // Guard 2: nesting depth, before any recursive parser sees the text.
    let header_text = &bytes[text_start..data_start];
    if nesting_depth(header_text) > MAX_NESTING {
        return Err(bad_header(format!(
            "the header nests brackets more than {MAX_NESTING} deep"
        )));
    }

    // Guard 3: a shape whose element count overflows.
    if let Some(dims) = header_shape(header_text) {
        let nonzero_product = dims
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d));
        if nonzero_product.is_none_or(|n| usize::try_from(n).is_err()) {
            return Err(bad_header(format!(
                "absurd shape ({}): more elements than memory can hold",
                dims.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }

    let npy = npyz::NpyFile::new(bytes).map_err(|e| {
        // The Python-literal parser's messages span several lines with a
        // caret diagram; keep the first and show the header instead.
        let message = e.to_string();
        match message.split_once('\n') {
            None => bad_header(message),
            Some((first, _)) => bad_header(format!(
                "{} in header `{}`",
                first.trim_end().trim_end_matches(':'),
                excerpt(header_text)
            )),
        }
    })?;
    let descr = match npy.dtype() {
        npyz::DType::Plain(type_str) => type_str.to_string(),
        other => {
            return Err(Error::NpyDtype {
                path: path.to_path_buf(),
                descr: other.descr(),
            })
        }
    };
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| bad_header("a dimension does not fit in memory".into()))?;
    if npy.order() == npyz::Order::Fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(Error::NpyFortranOrder {
            path: path.to_path_buf(),
        });
    }
    let item_size: u64 = match descr.as_str() {
        "<f4" | ">f4" => 4,
        "<f8" | ">f8" => 8,
        "<f2" | ">f2" => 2,
        _ => {
            return Err(Error::NpyDtype {
                path: path.to_path_buf(),
                descr,
            })
        }
    };
    // Guard 3 bounded the element count; the multiplication by 8 at most
    // could still overflow u64 only for counts above 2^61, which no file
    // backs, but check rather than assume.
    let expected = npy.len().checked_mul(item_size);
    let found = (bytes.len() - data_start) as u64;
    if expected != Some(found) {
        return Err(Error::NpyDataSize {
            path: path.to_path_buf(),
            shape,
            descr,
            expected: expected.unwrap_or(u64::MAX),
            found,
        });
    }

    let read_error = |e: io::Error| bad_header(format!("cannot decode the data: {e}"));
    let values = match item_size {
        4 => npy.into_vec::<f32>().map_err(read_error)?,
        8 => npy
            .into_vec::<f64>()
            .map_err(read_error)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        _ => npy
            .into_vec::<half::f16>()
            .map_err(read_error)?
            .into_iter()
            .map(half::f16::to_f32)
            .collect(),
    };
    Ok((shape, values))
}

/// The header text for a message: trimmed, at most 80 characters.
fn excerpt(header: &[u8]) -> String {
    let text = String::from_utf8_lossy(header);
    let text = text.trim();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// The deepest bracket nesting in `text`, counting brackets inside string
/// literals too (which only makes the guard stricter).
fn nesting_depth(text: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0;
    for &b in text {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The `shape` entry of a header as written, if the header is a Python dict
/// whose `shape` is a sequence of non-negative integers below 2^64; `None`
/// otherwise (then `npyz` reports the problem itself).
fn header_shape(text: &[u8]) -> Option<Vec<u64>> {
    use py_literal::Value;
    let text = std::str::from_utf8(text).ok()?.trim_end();
    let Ok(Value::Dict(entries)) = text.parse::<Value>() else {
        return None;
    };
    let shape = entries.iter().find_map(|(key, value)| match key {
        Value::String(key) if key == "shape" => Some(value),
        _ => None,
    })?;
    let (Value::Tuple(dims) | Value::List(dims)) = shape else {
        return None;
    };
    dims.iter()
        .map(|d| match d {
            // `BigInt` prints in decimal; parsing refuses negatives and
            // anything past u64.
            Value::Integer(n) => n.to_string().parse::<u64>().ok(),
            _ => None,
        })
        .collect()
}

/// Writes `data` with `shape` as a float32 `.npy` file at `path`, atomically:
/// either the whole file appears at `path` or nothing changes there.
///
/// Errors: [`Error::ShapeDataMismatch`] when `data` does not have as many
/// values as `shape`; [`Error::Io`] naming `path` when writing, syncing or
/// renaming fails.
pub fn write(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<(), Error> {
    let path = path.as_ref();
    check_count(shape, data)?;
    let write_error = |e: io::Error| Error::io(path, IoAction::Write, e);
    let file_name = path.file_name().ok_or_else(|| {
        write_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    let mut temp_name = file_name.to_os_string();
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = TempFile {
        path: path.with_file_name(temp_name),
        armed: true,
    };

    let file = File::create(&temp.path).map_err(write_error)?;
    let mut buffered = BufWriter::new(&file);
    encode(&mut buffered, shape, data).map_err(write_error)?;
    buffered.flush().map_err(write_error)?;
    drop(buffered);
    file.sync_all().map_err(write_error)?;
    drop(file);
    std::fs::rename(&temp.path, path).map_err(|e| Error::io(path, IoAction::Rename, e))?;
    temp.disarm();
    // Make the rename itself durable; the file is complete either way, so a
    // failure here (some file systems refuse to sync directories) is not
    // worth reporting.
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Encodes `data` with `shape` as the bytes of a float32 `.npy` file.
///
/// Errors: [`Error::ShapeDataMismatch`].
pub fn to_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>, Error> {
    check_count(shape, data)?;
    let mut bytes = Vec::with_capacity(128 + 4 * data.len());
    // Writing to a `Vec` cannot fail; map the impossible error anyway.
    encode(&mut bytes, shape, data)
        .map_err(|e| Error::io(Path::new("<memory>"), IoAction::Write, e))?;
    Ok(bytes)
}

/// Writes the `.npy` encoding through `npyz`; `shape` and `data` agree.
fn encode(out: impl Write, shape: &[usize], data: &[f32]) -> io::Result<()> {
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&dims)
        .writer(out)
        .begin_nd()?;
    writer.extend(data.iter().copied())?;
    writer.finish()
}

fn check_count(shape: &[usize], data: &[f32]) -> Result<(), Error> {
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if count == Some(data.len()) {
        Ok(())
    } else {
        Err(Error::ShapeDataMismatch {
            shape: shape.to_vec(),
            len: data.len(),
        })
    }
}

/// A temporary file, removed when dropped unless disarmed (so every early
/// return and every panic cleans up).
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
