//! Pre-packed constants embedded in a program: the weight blob that
//! generated code includes with `include_bytes!`.
//!
//! The code generator writes every operator's packed constants into one
//! binary file (`<network>.weights.bin`), each segment at a byte offset that
//! is a multiple of 64, in little-endian `f32`. Generated code embeds it as
//!
//! ```text
//! static BLOB: &cnnc_runtime::embed::Aligned<[u8]> =
//!     &cnnc_runtime::embed::Aligned(*include_bytes!("lenet5.weights.bin"));
//! ```
//!
//! (the reference to an `Aligned<[u8; N]>` coerces to `Aligned<[u8]>`), and
//! rebuilds each operator with `from_constants(spec, segment(BLOB, ..)?)`.
//! [`Aligned`] gives the bytes the 64-byte alignment of a cache line (and of
//! an AVX-512 load), so on little-endian targets a segment is borrowed in
//! place ([`Buffer::from_static`], no copy, no allocation). On big-endian
//! targets the bytes are decoded into an owned buffer instead: same values,
//! one copy at load time.
//!
//! ```
//! use cnnc_runtime::embed::{segment, Aligned};
//!
//! // Two segments: [1.0, 2.0] at byte 0, [-0.5] at byte 64.
//! static BLOB: &Aligned<[u8]> = &Aligned(*include_bytes!("../tests/fixtures/blob.bin"));
//! assert_eq!(&*segment(BLOB, 0, 2)?, &[1.0, 2.0]);
//! assert_eq!(&*segment(BLOB, 64, 1)?, &[-0.5]);
//! assert!(segment(BLOB, 4, 1).is_err()); // not on a 64-byte boundary
//! assert!(segment(BLOB, 64, 17).is_err()); // past the end
//! # Ok::<(), cnnc_runtime::embed::BlobError>(())
//! ```

use std::fmt;

use cnnc_kernels::ops::Buffer;

/// The alignment of every segment's byte offset in a blob, and of the blob
/// itself once wrapped in [`Aligned`].
pub const SEGMENT_ALIGN: usize = 64;

/// Wraps a value (an `include_bytes!` array) so that it starts on a 64-byte
/// boundary.
///
/// `#[repr(C)]` puts the one field at offset 0, so the bytes start where the
/// struct starts; `align(64)` aligns the struct.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Aligned<T: ?Sized>(pub T);

/// Why a segment of an embedded blob could not be read. The blob and the
/// code that reads it were generated together, so this means they were
/// mixed up (a blob from another network, or another version of cnnc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobError {
    /// The segment's byte offset.
    pub offset: usize,
    /// The segment's length in floats.
    pub len: usize,
    /// The blob's length in bytes.
    pub blob_len: usize,
}

impl fmt::Display for BlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the embedded weights have no segment of {} floats at byte {} \
             (the blob has {} bytes, segments start at multiples of {SEGMENT_ALIGN}): \
             the generated code and its `.weights.bin` do not belong together",
            self.len, self.offset, self.blob_len
        )
    }
}

impl std::error::Error for BlobError {}

/// The `len` floats at byte `offset` of `blob`, as an operator's constants.
///
/// `offset` must be a multiple of [`SEGMENT_ALIGN`] and the segment must lie
/// inside the blob. On little-endian targets the buffer borrows the blob
/// (no copy); on big-endian ones it is decoded into an owned buffer.
pub fn segment(
    blob: &'static Aligned<[u8]>,
    offset: usize,
    len: usize,
) -> Result<Buffer, BlobError> {
    let bytes = &blob.0;
    let error = || BlobError {
        offset,
        len,
        blob_len: bytes.len(),
    };
    if !offset.is_multiple_of(SEGMENT_ALIGN) {
        return Err(error());
    }
    let end = len
        .checked_mul(4)
        .and_then(|n| n.checked_add(offset))
        .ok_or_else(error)?;
    let bytes: &'static [u8] = bytes.get(offset..end).ok_or_else(error)?;
    floats(bytes).ok_or_else(error)
}

/// Views little-endian bytes as floats without copying.
#[cfg(target_endian = "little")]
fn floats(bytes: &'static [u8]) -> Option<Buffer> {
    // SAFETY: every bit pattern of 4 bytes is a valid `f32`, `f32` has no
    // padding, and `align_to` only puts into the middle slice the bytes
    // that are correctly aligned for `f32`; the lifetimes are the same.
    let (head, values, tail) = unsafe { bytes.align_to::<f32>() };
    // The blob is 64-byte aligned and so is the offset: nothing is left
    // over unless the blob was not wrapped in `Aligned`.
    if head.is_empty() && tail.is_empty() {
        Some(Buffer::from_static(values))
    } else {
        None
    }
}

/// Decodes little-endian bytes into an owned buffer (big-endian targets).
#[cfg(not(target_endian = "little"))]
fn floats(bytes: &'static [u8]) -> Option<Buffer> {
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect();
    Some(Buffer::from_slice(&values))
}

/// Appends `values` to a blob being written as little-endian floats, after
/// zero padding up to the next multiple of [`SEGMENT_ALIGN`], and returns
/// the segment's byte offset: what the code generator calls for every
/// operator's constants, in order.
///
/// ```
/// let mut blob = Vec::new();
/// assert_eq!(cnnc_runtime::embed::push_segment(&mut blob, &[1.0, 2.0]), 0);
/// assert_eq!(cnnc_runtime::embed::push_segment(&mut blob, &[-0.5]), 64);
/// assert_eq!(blob.len(), 68);
/// ```
pub fn push_segment(blob: &mut Vec<u8>, values: &[f32]) -> usize {
    let offset = blob.len().next_multiple_of(SEGMENT_ALIGN);
    blob.resize(offset, 0);
    blob.reserve(values.len() * 4);
    for value in values {
        blob.extend_from_slice(&value.to_le_bytes());
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_bytes_start_on_a_cache_line() {
        static BLOB: &Aligned<[u8]> = &Aligned([0u8; 3]);
        assert_eq!(BLOB.0.as_ptr() as usize % SEGMENT_ALIGN, 0);
        assert_eq!(BLOB.0.len(), 3);
    }

    #[test]
    fn segments_round_trip_without_copies() {
        let mut blob = Vec::new();
        let values: Vec<f32> = (0..40).map(|i| i as f32 * 0.25 - 3.0).collect();
        assert_eq!(push_segment(&mut blob, &values[..17]), 0);
        assert_eq!(push_segment(&mut blob, &values[17..]), 128);
        assert_eq!(push_segment(&mut blob, &[]), 256);
        assert_eq!(blob.len(), 256);
        let mut aligned = Box::new(Aligned([0u8; 256]));
        aligned.0.copy_from_slice(&blob);
        let leaked: &'static Aligned<[u8]> = Box::leak(aligned);
        let first = segment(leaked, 0, 17).expect("first");
        assert_eq!(&*first, &values[..17]);
        let second = segment(leaked, 128, 23).expect("second");
        assert_eq!(&*second, &values[17..]);
        if cfg!(target_endian = "little") {
            assert_eq!(first.as_ptr() as usize, leaked.0.as_ptr() as usize);
        }
        assert_eq!(segment(leaked, 256, 0).map(|b| b.len()), Ok(0));
        assert!(segment(leaked, 320, 0).is_err());
    }

    #[test]
    fn bad_segments_are_refused() {
        static BLOB: &Aligned<[u8]> = &Aligned([0u8; 128]);
        for (offset, len) in [
            (1, 1),
            (60, 1),
            (64, 17),
            (128, 1),
            (0, usize::MAX),
            (usize::MAX - 63, 1),
        ] {
            let error = segment(BLOB, offset, len).map(|_| ()).unwrap_err();
            assert_eq!(
                error,
                BlobError {
                    offset,
                    len,
                    blob_len: 128
                }
            );
        }
        let message = segment(BLOB, 64, 17).map(|_| ()).unwrap_err().to_string();
        assert_eq!(
            message,
            "the embedded weights have no segment of 17 floats at byte 64 (the blob has 128 bytes, \
             segments start at multiples of 64): the generated code and its `.weights.bin` do not \
             belong together"
        );
    }
}
