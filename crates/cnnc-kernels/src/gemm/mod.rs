//! Packed single-precision GEMM with a fused epilogue, direct and indirect.
//!
//! ```text
//! C[M×N] = act( A[M×K] · B[K×N] + bias[N] + R[M×N] )        (+ C, with `accumulate`)
//! ```
//!
//! - `A` is the activation side, read **in place**: row-major with any row
//!   stride ([`MatRef`]), so a 1x1 convolution over NHWC is a GEMM with no
//!   copy (M = pixels, K = Cin). Or, for the indirect GEMM, rows gathered
//!   through a table of offsets, one per output pixel and kernel tap
//!   ([`IndirectA`]), so a k×k convolution needs no im2col copy (XNNPACK's
//!   igemm).
//! - `B` is the weight side, packed once into [`PackedB`] together with the
//!   bias (or borrowed in that layout from a larger buffer: [`PackedBRef`];
//!   every entry point takes either).
//! - The epilogue ([`Epilogue`]) happens in registers before the store: per
//!   column bias, residual add, then the activation — `relu(conv(x) + b + r)`.
//!
//! **Work splitting.** [`gemm_tiles`] and [`indirect_gemm_tiles`] compute a
//! rectangle of `C` (any rows, columns starting on a multiple of 16), so a
//! thread pool can split rows or columns between threads; `K` is never
//! split. **Invariant:** every element of `C` is computed by the same
//! sequence of operations whatever the split, so results are bit-identical
//! for any number of threads (for a given tier: tiers differ in FMA use).
//!
//! **Blocking.** `K` is cut into near-equal blocks of at most `KC` (partial
//! sums are stored in `C` and reloaded, exactly); within a block the driver
//! walks `NC`-column × `MC`-row blocks of `C` so that the `B` block stays in
//! L2 and a `KC × NR` `B` micro-panel in L1 while the microkernel sweeps the
//! rows. The sizes are per tier, measured in `docs/KERNELS.md`.

use core::fmt;
use core::ops::Range;

use crate::tier::Kernels;
use crate::Activation;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod microkernel;
mod pack;
pub(crate) mod portable;
pub(crate) mod reference;
pub(crate) mod simd;

pub use microkernel::PAD_OFFSET;
use microkernel::{MicroArgs, MicroFn};
pub use pack::{PackedB, PackedBRef};

/// Columns per packed panel of [`PackedB`] (one 64-byte line per k-step).
pub const PANEL: usize = 16;

/// Why a GEMM call was refused. Every variant is the caller's bug (sizes
/// that do not agree); the kernels check them all before touching memory.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GemmError {
    /// A buffer does not have the length its dimensions imply.
    Length {
        /// Which buffer.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length required.
        expected: usize,
    },
    /// A row stride is smaller than the row length.
    Stride {
        /// Which matrix.
        what: &'static str,
        /// Its stride.
        stride: usize,
        /// Its row length.
        cols: usize,
    },
    /// Two dimensions that must agree do not.
    Mismatch {
        /// Which dimension (`"K"`, `"M"`, `"N"`, ...).
        what: &'static str,
        /// The value on the left operand.
        left: usize,
        /// The value on the right operand.
        right: usize,
    },
    /// The tile range is outside `C` or its columns do not start on a
    /// multiple of [`PANEL`].
    Tiles,
    /// An indirection offset points outside the input.
    Offset {
        /// Index of the offending entry in the table.
        index: usize,
        /// Its value.
        offset: usize,
    },
    /// A size overflows `usize`.
    TooLarge,
}

impl fmt::Display for GemmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GemmError::Length {
                what,
                len,
                expected,
            } => {
                write!(f, "{what} has {len} elements, expected {expected}")
            }
            GemmError::Stride { what, stride, cols } => {
                write!(
                    f,
                    "{what} has row stride {stride}, less than its {cols} columns"
                )
            }
            GemmError::Mismatch { what, left, right } => {
                write!(f, "GEMM dimension {what} disagrees: {left} vs {right}")
            }
            GemmError::Tiles => f.write_str("tile range outside C or not panel-aligned"),
            GemmError::Offset { index, offset } => {
                write!(
                    f,
                    "indirection entry {index} ({offset}) points outside the input"
                )
            }
            GemmError::TooLarge => f.write_str("GEMM size overflows"),
        }
    }
}

impl std::error::Error for GemmError {}

/// Elements a `rows × cols` matrix with row stride `stride` spans.
fn span(rows: usize, cols: usize, stride: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        Some(0)
    } else {
        (rows - 1).checked_mul(stride)?.checked_add(cols)
    }
}

fn check_matrix(
    what: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    stride: usize,
) -> Result<(), GemmError> {
    if rows > 1 && stride < cols {
        return Err(GemmError::Stride { what, stride, cols });
    }
    let needed = span(rows, cols, stride).ok_or(GemmError::TooLarge)?;
    if len < needed {
        return Err(GemmError::Length {
            what,
            len,
            expected: needed,
        });
    }
    Ok(())
}

/// A read-only row-major matrix view: `rows × cols` with row stride `stride`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a> MatRef<'a> {
    /// A view of `data` as `rows × cols` with row stride `stride` (`≥ cols`);
    /// `data` must span the matrix (it may be longer).
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> Result<Self, GemmError> {
        check_matrix("matrix", data.len(), rows, cols, stride)?;
        Ok(MatRef {
            data,
            rows,
            cols,
            stride,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row stride.
    pub fn stride(&self) -> usize {
        self.stride
    }
}

/// A mutable row-major matrix view: `rows × cols` with row stride `stride`.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a> MatMut<'a> {
    /// A view of `data` as `rows × cols` with row stride `stride` (`≥ cols`);
    /// `data` must span the matrix (it may be longer).
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> Result<Self, GemmError> {
        check_matrix("matrix", data.len(), rows, cols, stride)?;
        Ok(MatMut {
            data,
            rows,
            cols,
            stride,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row stride.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// A shareable raw form for threads that write disjoint tiles of this
    /// matrix with [`gemm_tiles_shared`].
    pub fn share(self) -> SharedMatMut<'a> {
        SharedMatMut {
            ptr: self.data.as_mut_ptr(),
            rows: self.rows,
            cols: self.cols,
            stride: self.stride,
            _borrow: core::marker::PhantomData,
        }
    }
}

/// A mutable matrix that several threads write at once, each to its own
/// tiles (see [`gemm_tiles_shared`]). Made from an exclusive [`MatMut`].
#[derive(Clone, Copy, Debug)]
pub struct SharedMatMut<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    stride: usize,
    _borrow: core::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> SharedMatMut<'a> {
    /// The sub-matrix at `rows × cols` of this one (same row stride): how a
    /// caller that keeps several matrices in one buffer (per sample, per
    /// group of channels) hands one of them to [`gemm_tiles_shared`].
    pub fn submatrix(
        self,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<SharedMatMut<'a>, GemmError> {
        if rows.start > rows.end
            || rows.end > self.rows
            || cols.start > cols.end
            || cols.end > self.cols
        {
            return Err(GemmError::Tiles);
        }
        Ok(SharedMatMut {
            // Inside the matrix: `rows.start < rows` and `cols.start < cols`
            // (or the sub-matrix is empty and never written).
            ptr: self.ptr.wrapping_add(rows.start * self.stride + cols.start),
            rows: rows.end - rows.start,
            cols: cols.end - cols.start,
            stride: self.stride,
            _borrow: core::marker::PhantomData,
        })
    }
}

impl<'a> SharedMatMut<'a> {
    /// The same contiguous elements seen as another matrix (`rows × cols`
    /// at row stride `stride`), e.g. NHWC pixels `[N·H·W, C]` seen as
    /// `[N·H, W·C]` so that one output column of pixels is a sub-matrix.
    /// This matrix must be contiguous (`stride == cols`, or one row) and
    /// span the new one.
    pub fn reshape(
        self,
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> Result<SharedMatMut<'a>, GemmError> {
        if self.rows > 1 && self.stride != self.cols {
            return Err(GemmError::Stride {
                what: "reshaped matrix",
                stride: self.stride,
                cols: self.cols,
            });
        }
        let len = self
            .rows
            .checked_mul(self.cols)
            .ok_or(GemmError::TooLarge)?;
        check_matrix("reshaped matrix", len, rows, cols, stride)?;
        Ok(SharedMatMut {
            rows,
            cols,
            stride,
            ..self
        })
    }
}

// SAFETY: a `SharedMatMut` is only written through `gemm_tiles_shared`,
// whose contract makes concurrent writers use disjoint elements.
unsafe impl Send for SharedMatMut<'_> {}
// SAFETY: as for `Send`.
unsafe impl Sync for SharedMatMut<'_> {}

/// What happens between the accumulators and the store.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// Applied last, after bias and residual.
    pub activation: Activation,
    /// `R[M×N]` added after the bias and before the activation, as in
    /// `relu(conv(x) + b + residual)`. Same shape as `C`, its own stride.
    pub residual: Option<MatRef<'a>>,
    /// Accumulate onto `C`'s current values (`C = act(C + A·B + ...)`)
    /// instead of overwriting them; for GEMMs that sum into one output.
    pub accumulate: bool,
}

impl Epilogue<'_> {
    /// No residual, no accumulation, the given activation.
    pub fn activation(activation: Activation) -> Self {
        Epilogue {
            activation,
            residual: None,
            accumulate: false,
        }
    }
}

impl Default for Epilogue<'_> {
    fn default() -> Self {
        Epilogue::activation(Activation::Identity)
    }
}

/// A rectangle of `C`: `rows` any range, `cols` starting on a multiple of
/// [`PANEL`] (or at 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tiles {
    /// Rows of `C`.
    pub rows: Range<usize>,
    /// Columns of `C`.
    pub cols: Range<usize>,
}

/// The `A` side of an indirect GEMM: row `m`, tap `t` is the `channels`-long
/// vector at `input[offsets[m * taps + t]..]`, or zeros where the offset is
/// [`PAD_OFFSET`]. `K = taps · channels`, ordered tap-major (for NHWC conv:
/// `(kh, kw, Cin)`, matching [`PackedB::from_fn`]'s conv example).
///
/// A convolution builds the table once per geometry; a tap's row for an
/// output pixel is `((n·H + ih)·W + iw)·Cin` (plus the group's channel
/// offset), or `PAD_OFFSET` when `(ih, iw)` is in the padding.
#[derive(Clone, Copy, Debug)]
pub struct IndirectA<'a> {
    input: &'a [f32],
    offsets: &'a [usize],
    zero: &'a [f32],
    rows: usize,
    taps: usize,
    channels: usize,
}

/// An indirection table checked once, for inputs of any length above
/// [`IndirectTable::min_input_len`]: what a convolution builds at
/// construction and reuses for every sample of every call, where
/// [`IndirectA::new`] would re-check every offset.
///
/// Row `m`, tap `t` is `offsets[m * taps + t]`, an offset into the input
/// where `channels` values start, or [`PAD_OFFSET`].
#[derive(Clone, Debug)]
pub struct IndirectTable {
    offsets: Vec<usize>,
    taps: usize,
    channels: usize,
    min_input_len: usize,
}

impl IndirectTable {
    /// Checks `offsets.len() == rows · taps` (for `taps ≥ 1`) and computes
    /// the shortest input every offset fits in.
    pub fn new(
        offsets: Vec<usize>,
        taps: usize,
        channels: usize,
    ) -> Result<IndirectTable, GemmError> {
        if taps == 0 || !offsets.len().is_multiple_of(taps) {
            return Err(GemmError::Length {
                what: "indirection table",
                len: offsets.len(),
                expected: offsets.len().next_multiple_of(taps.max(1)),
            });
        }
        let mut min_input_len = 0;
        for &offset in &offsets {
            if offset != PAD_OFFSET {
                let end = offset.checked_add(channels).ok_or(GemmError::TooLarge)?;
                min_input_len = min_input_len.max(end);
            }
        }
        Ok(IndirectTable {
            offsets,
            taps,
            channels,
            min_input_len,
        })
    }

    /// Rows (`M`).
    pub fn rows(&self) -> usize {
        self.offsets.len() / self.taps
    }

    /// Taps per row.
    pub fn taps(&self) -> usize {
        self.taps
    }

    /// Channels per tap.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The offsets, row-major `[rows][taps]`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// The shortest input that every non-padding offset fits in.
    pub fn min_input_len(&self) -> usize {
        self.min_input_len
    }
}

impl<'a> IndirectA<'a> {
    /// The `A` side over a checked table: O(1), only checks that `input`
    /// has at least [`IndirectTable::min_input_len`] values and `zero` at
    /// least `channels`.
    pub fn with_table(
        input: &'a [f32],
        table: &'a IndirectTable,
        zero: &'a [f32],
    ) -> Result<Self, GemmError> {
        if input.len() < table.min_input_len {
            return Err(GemmError::Length {
                what: "indirect input",
                len: input.len(),
                expected: table.min_input_len,
            });
        }
        if zero.len() < table.channels {
            return Err(GemmError::Length {
                what: "zero vector",
                len: zero.len(),
                expected: table.channels,
            });
        }
        Ok(IndirectA {
            input,
            offsets: &table.offsets,
            zero,
            rows: table.rows(),
            taps: table.taps,
            channels: table.channels,
        })
    }

    /// Checks the table: `offsets.len() == rows · taps`, every offset either
    /// `PAD_OFFSET` or with `offset + channels ≤ input.len()`, and
    /// `zero.len() ≥ channels` (its values are read as the padding, so they
    /// should be zeros). O(rows · taps); do it once per input buffer.
    pub fn new(
        input: &'a [f32],
        offsets: &'a [usize],
        zero: &'a [f32],
        taps: usize,
        channels: usize,
    ) -> Result<Self, GemmError> {
        let rows = offsets.len().checked_div(taps).unwrap_or(0);
        if rows.checked_mul(taps) != Some(offsets.len()) {
            return Err(GemmError::Length {
                what: "indirection table",
                len: offsets.len(),
                expected: rows * taps,
            });
        }
        if zero.len() < channels {
            return Err(GemmError::Length {
                what: "zero vector",
                len: zero.len(),
                expected: channels,
            });
        }
        for (index, &offset) in offsets.iter().enumerate() {
            let inside = offset
                .checked_add(channels)
                .is_some_and(|end| end <= input.len());
            if offset != PAD_OFFSET && !inside {
                return Err(GemmError::Offset { index, offset });
            }
        }
        Ok(IndirectA {
            input,
            offsets,
            zero,
            rows,
            taps,
            channels,
        })
    }

    /// Rows (`M`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `K = taps · channels`.
    pub fn k(&self) -> usize {
        self.taps * self.channels
    }

    /// Rows `rows` of this `A` (same input, table entries and zero row):
    /// O(1), for a caller that computes a table's rows into different
    /// output matrices.
    pub fn sub_rows(self, rows: Range<usize>) -> Result<IndirectA<'a>, GemmError> {
        if rows.start > rows.end || rows.end > self.rows {
            return Err(GemmError::Tiles);
        }
        Ok(IndirectA {
            offsets: &self.offsets[rows.start * self.taps..rows.end * self.taps],
            rows: rows.end - rows.start,
            ..self
        })
    }
}

/// A tier's GEMM: its microkernel table and blocking sizes.
#[derive(Debug)]
pub(crate) struct GemmKernels {
    /// `{tier}_mmm_f32_{MR}x{NR}`.
    pub name: &'static str,
    /// Rows per tile.
    pub mr: usize,
    /// Lanes per vector.
    pub lanes: usize,
    /// Maximum `K` block.
    pub kc: usize,
    /// Rows of `C` per block (a multiple of `mr`).
    pub mc: usize,
    /// Columns of `C` per block (a multiple of [`PANEL`] and of the tile,
    /// including the one-row tile).
    pub nc: usize,
    /// Direct microkernels, `[vectors - 1][rows - 1]`.
    pub direct: &'static [&'static [MicroFn]],
    /// One-row microkernels `[vectors - 1]`, wider than `nr` so that a
    /// single row (a batch-1 linear layer) still has enough independent
    /// accumulators to hide the FMA latency; empty to use `direct`.
    pub gemv: &'static [MicroFn],
    /// Indirect microkernels, `[vectors - 1][rows - 1]`.
    pub indirect: &'static [&'static [MicroFn]],
}

impl GemmKernels {
    /// Columns per tile.
    pub fn nr(&self) -> usize {
        self.lanes * self.direct.len()
    }
}

/// The `A` operand as the driver sees it, bounds already checked.
#[derive(Clone, Copy)]
enum Source<'a> {
    Direct(MatRef<'a>),
    Indirect(IndirectA<'a>),
}

/// `C = act(A·B + bias + residual)` (see the module doc) with the given
/// kernels, single-threaded. `A` is `M × K`, `B` is `K × N`, `C` is `M × N`.
pub fn gemm<'b>(
    kernels: &Kernels,
    a: MatRef<'_>,
    b: impl Into<PackedBRef<'b>>,
    c: MatMut<'_>,
    epilogue: &Epilogue<'_>,
) -> Result<(), GemmError> {
    let tiles = Tiles {
        rows: 0..c.rows,
        cols: 0..c.cols,
    };
    gemm_tiles(kernels, a, b, c, epilogue, tiles)
}

/// [`gemm`] restricted to a rectangle of `C` (the unit of work of a thread).
pub fn gemm_tiles<'b>(
    kernels: &Kernels,
    a: MatRef<'_>,
    b: impl Into<PackedBRef<'b>>,
    c: MatMut<'_>,
    epilogue: &Epilogue<'_>,
    tiles: Tiles,
) -> Result<(), GemmError> {
    // SAFETY: `c` is borrowed exclusively, so no other writer exists.
    unsafe { gemm_tiles_shared(kernels, a, b, c.share(), epilogue, tiles) }
}

/// [`gemm_tiles`] on a `C` shared between threads.
///
/// # Safety
/// Calls running at the same time on the same `C` must be given disjoint
/// `tiles`. (Everything else is checked.)
pub unsafe fn gemm_tiles_shared<'b>(
    kernels: &Kernels,
    a: MatRef<'_>,
    b: impl Into<PackedBRef<'b>>,
    c: SharedMatMut<'_>,
    epilogue: &Epilogue<'_>,
    tiles: Tiles,
) -> Result<(), GemmError> {
    let b = b.into();
    if a.cols != b.k() {
        return Err(GemmError::Mismatch {
            what: "K",
            left: a.cols,
            right: b.k(),
        });
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        run(
            kernels.gemm,
            Source::Direct(a),
            a.rows,
            b,
            c,
            epilogue,
            tiles,
        )
    }
}

/// The indirect GEMM: `C = act(A·B + bias + residual)` with `A`'s rows
/// gathered through `a`'s table (a k×k convolution with no im2col copy).
pub fn indirect_gemm<'b>(
    kernels: &Kernels,
    a: &IndirectA<'_>,
    b: impl Into<PackedBRef<'b>>,
    c: MatMut<'_>,
    epilogue: &Epilogue<'_>,
) -> Result<(), GemmError> {
    let tiles = Tiles {
        rows: 0..c.rows,
        cols: 0..c.cols,
    };
    indirect_gemm_tiles(kernels, a, b, c, epilogue, tiles)
}

/// [`indirect_gemm`] restricted to a rectangle of `C`.
pub fn indirect_gemm_tiles<'b>(
    kernels: &Kernels,
    a: &IndirectA<'_>,
    b: impl Into<PackedBRef<'b>>,
    c: MatMut<'_>,
    epilogue: &Epilogue<'_>,
    tiles: Tiles,
) -> Result<(), GemmError> {
    // SAFETY: `c` is borrowed exclusively, so no other writer exists.
    unsafe { indirect_gemm_tiles_shared(kernels, a, b, c.share(), epilogue, tiles) }
}

/// [`indirect_gemm_tiles`] on a `C` shared between threads.
///
/// # Safety
/// Calls running at the same time on the same `C` must be given disjoint
/// `tiles`. (Everything else is checked.)
pub unsafe fn indirect_gemm_tiles_shared<'b>(
    kernels: &Kernels,
    a: &IndirectA<'_>,
    b: impl Into<PackedBRef<'b>>,
    c: SharedMatMut<'_>,
    epilogue: &Epilogue<'_>,
    tiles: Tiles,
) -> Result<(), GemmError> {
    let b = b.into();
    if a.k() != b.k() {
        return Err(GemmError::Mismatch {
            what: "K",
            left: a.k(),
            right: b.k(),
        });
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        run(
            kernels.gemm,
            Source::Indirect(*a),
            a.rows,
            b,
            c,
            epilogue,
            tiles,
        )
    }
}

/// `(start, len)` of `count` near-equal blocks of at most `max` covering `total`.
fn blocks(total: usize, max: usize) -> impl ExactSizeIterator<Item = (usize, usize)> {
    let count = total.div_ceil(max.max(1)).max(1);
    let base = total / count;
    let extra = total % count;
    (0..count).map(move |i| (i * base + i.min(extra), base + usize::from(i < extra)))
}

/// The smallest `B` (bytes) whose next column tile the first row tile of a
/// block prefetches into L2. In a network, a layer's weights are rarely
/// still in cache from the last pass (ResNet-18 has 46 MB of them), and
/// without the prefetch the first row tile of each column tile streams its
/// `B` from memory at the FMA rate: with it ResNet-18 ran 9% faster at one
/// thread (its 7x7 layers, 9.4 MB of weights each, from 118 to 133
/// GFLOP/s). A small `B` does not need it, and the prefetches cost load
/// slots (the 7x7 stem, 37 KiB, was 1.4% slower with them).
const PREFETCH_B_MIN_BYTES: usize = 64 * 1024;

/// Checks every dimension, then walks the blocks and tiles.
///
/// # Safety
/// As [`gemm_tiles_shared`].
unsafe fn run(
    g: &GemmKernels,
    a: Source<'_>,
    m: usize,
    b: PackedBRef<'_>,
    c: SharedMatMut<'_>,
    epilogue: &Epilogue<'_>,
    tiles: Tiles,
) -> Result<(), GemmError> {
    let n = b.n();
    if c.rows != m {
        return Err(GemmError::Mismatch {
            what: "M",
            left: m,
            right: c.rows,
        });
    }
    if c.cols != n {
        return Err(GemmError::Mismatch {
            what: "N",
            left: n,
            right: c.cols,
        });
    }
    if let Some(r) = &epilogue.residual {
        if (r.rows, r.cols) != (m, n) {
            return Err(GemmError::Mismatch {
                what: "residual shape",
                left: r.rows * r.cols,
                right: m * n,
            });
        }
    }
    let Tiles { rows, cols } = tiles;
    if rows.start > rows.end
        || rows.end > m
        || cols.start > cols.end
        || cols.end > n
        || cols.start % PANEL != 0
    {
        return Err(GemmError::Tiles);
    }
    if rows.is_empty() || cols.is_empty() {
        return Ok(());
    }

    let k = b.k();
    let panel_stride = k * PANEL;
    let bias = b.padded_bias().map_or(core::ptr::null(), <[f32]>::as_ptr);
    let (residual, ldr) = match &epilogue.residual {
        Some(r) => (r.data.as_ptr(), r.stride),
        None => (core::ptr::null(), 0),
    };
    // A single row goes through the wide one-row kernels (the same
    // per-element operations, so still bit-identical to any other split).
    let single_row = rows.len() == 1 && !g.gemv.is_empty() && matches!(a, Source::Direct(_));
    // The first row tile of each block prefetches the next column tile's
    // `B` into L2, unless `B` is small (see `PREFETCH_B_MIN_BYTES`).
    let prefetch_b = !single_row && k * n * core::mem::size_of::<f32>() >= PREFETCH_B_MIN_BYTES;
    let nr = if single_row {
        g.lanes * g.gemv.len()
    } else {
        g.nr()
    };
    // K blocks: in k-steps for the direct GEMM, in whole taps for the
    // indirect one (a tap's channels are contiguous only within the tap).
    let (k_unit, k_units) = match a {
        Source::Direct(_) => (1, k),
        Source::Indirect(ind) => (ind.channels, ind.taps),
    };
    let units_per_block = g.kc.checked_div(k_unit).unwrap_or(k_units).max(1);
    let block_count = blocks(k_units, units_per_block).len();

    for (block_index, (unit_start, unit_len)) in blocks(k_units, units_per_block).enumerate() {
        let k_start = unit_start * k_unit;
        let load_c = epilogue.accumulate || block_index > 0;
        let last = block_index + 1 == block_count;
        for jc in (cols.start..cols.end).step_by(g.nc) {
            let jc_end = (jc + g.nc).min(cols.end);
            for ic in (rows.start..rows.end).step_by(g.mc) {
                let ic_end = (ic + g.mc).min(rows.end);
                for jr in (jc..jc_end).step_by(nr) {
                    let tile_cols = (jc_end - jr).min(nr);
                    let vectors = tile_cols.div_ceil(g.lanes);
                    let b_tile = (jr / PANEL) * panel_stride + jr % PANEL + k_start * PANEL;
                    for ir in (ic..ic_end).step_by(g.mr) {
                        let tile_rows = (ic_end - ir).min(g.mr);
                        let mut args = MicroArgs {
                            kc: unit_len,
                            a: core::ptr::null(),
                            lda: 0,
                            offsets: core::ptr::null(),
                            taps_total: 0,
                            taps: 0,
                            zero: core::ptr::null(),
                            b: b.panels().as_ptr().wrapping_add(b_tile),
                            b_panel_stride: panel_stride,
                            // The first row tile of a block prefetches the
                            // next column tile's `B` (`nr` columns on).
                            b_prefetch: if prefetch_b && ir == ic && jr + nr < cols.end {
                                let next = jr + nr;
                                b.panels().as_ptr().wrapping_add(
                                    (next / PANEL) * panel_stride + next % PANEL + k_start * PANEL,
                                )
                            } else {
                                core::ptr::null()
                            },
                            c: c.ptr.wrapping_add(ir * c.stride + jr),
                            ldc: c.stride,
                            cols: tile_cols,
                            load_c,
                            last,
                            bias: if bias.is_null() {
                                bias
                            } else {
                                bias.wrapping_add(jr)
                            },
                            residual: if residual.is_null() {
                                residual
                            } else {
                                residual.wrapping_add(ir * ldr + jr)
                            },
                            ldr,
                            activation: epilogue.activation,
                        };
                        let kernel = match a {
                            Source::Direct(direct) => {
                                args.a = direct
                                    .data
                                    .as_ptr()
                                    .wrapping_add(ir * direct.stride + k_start);
                                args.lda = direct.stride;
                                if single_row {
                                    g.gemv[vectors - 1]
                                } else {
                                    g.direct[vectors - 1][tile_rows - 1]
                                }
                            }
                            Source::Indirect(ind) => {
                                args.kc = ind.channels;
                                args.a = ind.input.as_ptr();
                                args.offsets = ind
                                    .offsets
                                    .as_ptr()
                                    .wrapping_add(ir * ind.taps + unit_start);
                                args.taps_total = ind.taps;
                                args.taps = unit_len;
                                args.zero = ind.zero.as_ptr();
                                g.indirect[vectors - 1][tile_rows - 1]
                            }
                        };
                        // SAFETY: the tile lies inside every checked buffer:
                        // rows `ir..ir + tile_rows ≤ M` of A (checked by
                        // `MatRef::new`, or offsets checked by
                        // `IndirectA::new`), C and R (checked shapes and
                        // strides), columns `jr..jr + tile_cols ≤ N` of C
                        // and R, `vectors · lanes ≤ ⌈N/16⌉·16` columns of
                        // the zero-padded panels and bias, and k-steps
                        // `k_start..k_start + block ≤ K` of the panels. No
                        // other call writes these tiles (the caller's
                        // contract). The table belongs to a tier this CPU
                        // supports (`Kernels` only exist for those).
                        unsafe { kernel(&args) };
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
