//! Weights from safetensors files.
//!
//! A safetensors file is an 8-byte little-endian header length `n`, `n` bytes
//! of JSON mapping tensor names to `{"dtype", "shape", "data_offsets"}`, then
//! the data section, which the offsets index. [`WeightFile`] parses and checks
//! the whole header once, up front, so that every later access is a lookup
//! and a conversion that cannot fail for structural reasons.
//!
//! # What is checked, and how
//!
//! The header entries are read with the `safetensors` crate's own types
//! ([`safetensors::tensor::TensorInfo`], [`safetensors::Dtype`]). The
//! structural checks are ours, each with a precise error, and happen before
//! anything is allocated from a number in the file:
//!
//! - the header length field must fit in the file (a field of 2^62 is refused
//!   by comparing it with the file's length, not by trying to read it) and in
//!   the safetensors limit of 100 MB;
//! - the header must be UTF-8 JSON (the parser's recursion limit bounds the
//!   stack) whose entries describe tensors; `__metadata__` is ignored;
//! - each tensor's element count and byte size are computed with overflow
//!   checks and must equal its `data_offsets` range, which must lie inside the
//!   data section; no two tensors may share a byte.
//!
//! **One deliberate leniency:** the `safetensors` crate also refuses data
//! bytes that no tensor references (a hole, or bytes after the last tensor).
//! We accept them. A hole is what a user gets by deleting an entry from a
//! header, and then the useful message is "tensor `conv1.weight` not found"
//! when the network asks for it, not "invalid offset for tensor `conv2.bias`"
//! at load time. Unreferenced bytes are never read.
//!
//! # Conversions
//!
//! `F32` is native; `F16`, `BF16` and `F64` are converted to `f32` (F64 is
//! rounded to nearest). Every other dtype is refused by name when the tensor
//! is requested (a file may well hold `I64` counters the network never asks
//! for). Safetensors data is always little-endian.
//!
//! # Unused tensors
//!
//! Every successful [`WeightFile::tensor`] marks the tensor used;
//! [`WeightFile::unused`] lists the others so the caller can warn about
//! weights the network ignores. `*.num_batches_tracked` (a batch-norm training
//! counter in every PyTorch `state_dict`) is never reported.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use safetensors::tensor::TensorInfo;
use safetensors::Dtype;

use crate::error::{Error, IoAction};

/// The largest header the `safetensors` crate accepts, in bytes.
const MAX_HEADER_LEN: u64 = 100_000_000;

/// Length of the header length field.
const LEN_FIELD: usize = 8;

/// A parsed and checked safetensors file.
///
/// Borrows its bytes ([`from_bytes`](Self::from_bytes), e.g. weights embedded
/// with `include_bytes!`) or owns them ([`from_path`](Self::from_path),
/// [`from_vec`](Self::from_vec)).
///
/// **Invariant:** every entry's byte range lies inside `bytes`, matches its
/// dtype and shape exactly, and overlaps no other entry's range.
pub struct WeightFile<'a> {
    bytes: Cow<'a, [u8]>,
    file: Option<PathBuf>,
    /// Sorted by name.
    entries: Vec<Entry>,
    /// `used[i]` is set when `entries[i]` has been handed out.
    used: Vec<AtomicBool>,
}

/// One tensor of the header, with its byte range made absolute.
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Range in the whole file, not in the data section.
    start: usize,
    end: usize,
}

impl<'a> WeightFile<'a> {
    /// Parses and checks a safetensors file held in memory, borrowing it.
    ///
    /// Errors name no file ("weights: ..."); use
    /// [`from_path`](Self::from_path) to have the path in every message.
    ///
    /// ```
    /// use cnnc_runtime::WeightFile;
    /// // An 8-byte header length, then the JSON header, then the data.
    /// let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    /// let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    /// bytes.extend_from_slice(header);
    /// bytes.extend_from_slice(&1.5f32.to_le_bytes());
    /// bytes.extend_from_slice(&(-2.0f32).to_le_bytes());
    ///
    /// let weights = WeightFile::from_bytes(&bytes)?;
    /// assert_eq!(weights.tensor("w", &[2])?, vec![1.5, -2.0]);
    /// assert!(weights.unused().is_empty());
    /// # Ok::<(), cnnc_runtime::Error>(())
    /// ```
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, Error> {
        let entries = parse(bytes)?;
        Ok(Self::new(Cow::Borrowed(bytes), None, entries))
    }

    fn new(bytes: Cow<'a, [u8]>, file: Option<PathBuf>, entries: Vec<Entry>) -> Self {
        let used = entries.iter().map(|_| AtomicBool::new(false)).collect();
        WeightFile {
            bytes,
            file,
            entries,
            used,
        }
    }

    /// The file the weights were read from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The number of tensors in the file.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file holds no tensor at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// The shape of the tensor `name` as stored, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entry(name).map(|i| self.entries[i].shape.as_slice())
    }

    /// The safetensors dtype name (`F32`, `BF16`, `I64`, ...) of the tensor
    /// `name`, if present.
    pub fn dtype(&self, name: &str) -> Option<&'static str> {
        self.entry(name).map(|i| dtype_name(self.entries[i].dtype))
    }

    /// The tensor `name` as `f32` values in C order, after checking that its
    /// shape is exactly `expected_shape`. Marks the tensor used.
    ///
    /// Errors: [`Error::MissingTensor`] (with the closest name present, if
    /// one is plausible), [`Error::TensorShape`], [`Error::UnsupportedDtype`].
    pub fn tensor(&self, name: &str, expected_shape: &[usize]) -> Result<Vec<f32>, Error> {
        self.tensor_cow(name, expected_shape).map(Cow::into_owned)
    }

    /// Like [`tensor`](Self::tensor), but borrows the file's bytes instead of
    /// copying them when the tensor is `F32` and its data happens to be
    /// aligned for `f32` (on a little-endian machine); converts otherwise.
    pub fn tensor_cow(
        &self,
        name: &str,
        expected_shape: &[usize],
    ) -> Result<Cow<'_, [f32]>, Error> {
        let Some(index) = self.entry(name) else {
            return Err(Error::MissingTensor {
                file: self.file.clone(),
                name: name.to_string(),
                did_you_mean: crate::suggest::closest(
                    name,
                    self.entries.iter().map(|e| e.name.as_str()),
                ),
            });
        };
        let entry = &self.entries[index];
        if entry.shape != expected_shape {
            return Err(Error::TensorShape {
                file: self.file.clone(),
                name: name.to_string(),
                expected: expected_shape.to_vec(),
                found: entry.shape.clone(),
            });
        }
        let bytes = &self.bytes[entry.start..entry.end];
        let values = convert(entry.dtype, bytes).ok_or_else(|| Error::UnsupportedDtype {
            file: self.file.clone(),
            name: name.to_string(),
            dtype: dtype_name(entry.dtype),
        })?;
        self.used[index].store(true, Ordering::Relaxed);
        Ok(values)
    }

    /// The names of the tensors never handed out by
    /// [`tensor`](Self::tensor)/[`tensor_cow`](Self::tensor_cow), sorted,
    /// leaving out `num_batches_tracked` counters.
    pub fn unused(&self) -> Vec<String> {
        self.entries
            .iter()
            .zip(&self.used)
            .filter(|(entry, used)| {
                !used.load(Ordering::Relaxed) && !is_training_counter(&entry.name)
            })
            .map(|(entry, _)| entry.name.clone())
            .collect()
    }

    fn entry(&self, name: &str) -> Option<usize> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
    }
}

impl WeightFile<'static> {
    /// Parses and checks a safetensors file, taking ownership of its bytes.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self, Error> {
        let entries = parse(&bytes)?;
        Ok(Self::new(Cow::Owned(bytes), None, entries))
    }

    /// Reads, parses and checks the safetensors file at `path`; every error
    /// names the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, IoAction::Read, e))?;
        let entries = parse(&bytes).map_err(|e| e.in_file(path))?;
        Ok(Self::new(
            Cow::Owned(bytes),
            Some(path.to_path_buf()),
            entries,
        ))
    }
}

impl fmt::Debug for WeightFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightFile")
            .field("file", &self.file)
            .field("tensors", &self.entries.len())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// The name safetensors headers use for `dtype`.
fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::BOOL => "BOOL",
        Dtype::F4 => "F4",
        Dtype::F6_E2M3 => "F6_E2M3",
        Dtype::F6_E3M2 => "F6_E3M2",
        Dtype::U8 => "U8",
        Dtype::I8 => "I8",
        Dtype::F8_E5M2 => "F8_E5M2",
        Dtype::F8_E4M3 => "F8_E4M3",
        Dtype::F8_E8M0 => "F8_E8M0",
        Dtype::I16 => "I16",
        Dtype::U16 => "U16",
        Dtype::F16 => "F16",
        Dtype::BF16 => "BF16",
        Dtype::I32 => "I32",
        Dtype::U32 => "U32",
        Dtype::F32 => "F32",
        Dtype::F64 => "F64",
        Dtype::I64 => "I64",
        Dtype::U64 => "U64",
        // A dtype added to safetensors after this was written.
        _ => "(a dtype unknown to cnnc)",
    }
}

/// `*.num_batches_tracked`: PyTorch's batch-norm step counter, useless for
/// inference and present in every `state_dict`.
fn is_training_counter(name: &str) -> bool {
    name == "num_batches_tracked" || name.ends_with(".num_batches_tracked")
}

/// Converts little-endian tensor bytes to `f32`, borrowing when possible;
/// `None` for dtypes that have no conversion.
///
/// `bytes.len()` is a multiple of the dtype's size (checked at parse time).
fn convert(dtype: Dtype, bytes: &[u8]) -> Option<Cow<'_, [f32]>> {
    let values = match dtype {
        Dtype::F32 => {
            if let Some(borrowed) = borrow_f32(bytes) {
                return Some(Cow::Borrowed(borrowed));
            }
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        // bf16 is the top half of an f32: widening is exact, NaN payloads
        // included (as in PyTorch).
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ => return None,
    };
    Some(Cow::Owned(values))
}

/// Reinterprets little-endian `f32` bytes in place when they are aligned.
#[cfg(target_endian = "little")]
fn borrow_f32(bytes: &[u8]) -> Option<&[f32]> {
    // SAFETY: every bit pattern is a valid `f32`, and `align_to` only puts in
    // `middle` the part of the slice that is correctly aligned for `f32`; we
    // use it only when nothing is left over on either side. The byte order
    // of the file (little-endian) is the machine's.
    let (head, middle, tail) = unsafe { bytes.align_to::<f32>() };
    (head.is_empty() && tail.is_empty()).then_some(middle)
}

#[cfg(not(target_endian = "little"))]
fn borrow_f32(_bytes: &[u8]) -> Option<&[f32]> {
    None
}

/// Parses and checks the header; errors carry no file name yet.
fn parse(bytes: &[u8]) -> Result<Vec<Entry>, Error> {
    let Some(len_field) = bytes.first_chunk::<LEN_FIELD>() else {
        return Err(Error::FileTooShort {
            file: None,
            len: bytes.len(),
        });
    };
    let header_len = u64::from_le_bytes(*len_field);
    let available = bytes.len() - LEN_FIELD;
    let header_too_large = || Error::HeaderTooLarge {
        file: None,
        header_len,
        file_len: bytes.len(),
    };
    // Compare as u64 before converting: nothing is read or allocated from a
    // length that the file cannot back.
    if header_len > available as u64 || header_len > MAX_HEADER_LEN {
        return Err(header_too_large());
    }
    let header_end = LEN_FIELD + usize::try_from(header_len).map_err(|_| header_too_large())?;
    let header = &bytes[LEN_FIELD..header_end];
    let data_len = bytes.len() - header_end;

    let invalid = |reason: String| Error::InvalidHeader { file: None, reason };
    let text = std::str::from_utf8(header).map_err(|e| invalid(format!("not UTF-8 ({e})")))?;
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => invalid(format!("not a JSON object ({e})")),
            Category::Io | Category::Syntax | Category::Eof => invalid(format!("not JSON ({e})")),
        }
    })?;

    let mut entries = Vec::with_capacity(map.len());
    for (name, value) in map {
        if name == "__metadata__" {
            continue;
        }
        let info: TensorInfo =
            serde_json::from_value(value).map_err(|e| invalid(format!("tensor `{name}`: {e}")))?;
        let (start, end) = info.data_offsets;
        if end > data_len {
            return Err(Error::DataOutOfBounds {
                file: None,
                name,
                offsets: (start, end),
                data_len,
            });
        }
        let needed = byte_size(info.dtype, &info.shape);
        if end < start || Some(end - start) != needed {
            return Err(Error::TensorSize {
                file: None,
                name,
                dtype: dtype_name(info.dtype),
                shape: info.shape,
                offsets: (start, end),
                needed,
            });
        }
        entries.push(Entry {
            name,
            dtype: info.dtype,
            shape: info.shape,
            // Cannot overflow: end <= data_len and header_end + data_len == bytes.len().
            start: header_end + start,
            end: header_end + end,
        });
    }

    // No byte may belong to two tensors. Empty tensors own no byte.
    let mut by_offset: Vec<&Entry> = entries.iter().filter(|e| e.end > e.start).collect();
    by_offset.sort_by_key(|e| (e.start, e.end));
    for pair in by_offset.windows(2) {
        if pair[1].start < pair[0].end {
            return Err(Error::OverlappingTensors {
                file: None,
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
            });
        }
    }

    // BTreeMap iteration order: already sorted by name.
    Ok(entries)
}

/// The byte size of a tensor, `None` on overflow or when it does not fill a
/// whole number of bytes (sub-byte dtypes).
fn byte_size(dtype: Dtype, shape: &[usize]) -> Option<usize> {
    let elements = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    let bits = elements.checked_mul(dtype.bitsize())?;
    (bits % 8 == 0).then_some(bits / 8)
}
