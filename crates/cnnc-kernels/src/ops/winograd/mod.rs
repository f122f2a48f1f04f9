//! Winograd convolution for 3x3, stride-1 layers over NHWC activations:
//! [`WinogradConv`], `F(4x4, 3x3)` on 6x6 tiles and `F(6x6, 3x3)` on 8x8
//! tiles ([`WinogradTile`]).
//!
//! ```text
//! y[n, oy, ox, o] = act( Σ_{ky, kx, c} x[n, oy+ky-top, ox+kx-left, c] · w[o, c, ky, kx] + bias[o] + residual[n, oy, ox, o] )
//! ```
//!
//! computed per `m×m` output tile as `Aᵀ [ Σ_c (G g Gᵀ) ⊙ (Bᵀ d B) ] A`
//! (`transform` documents the matrices and the choice of points):
//!
//! 1. **Weights, once, at pack time, in `f64`:** `U = G g Gᵀ` for every
//!    (output, input) channel pair, rounded once to `f32`, and laid out as
//!    one GEMM `B` matrix `[C × O]` per transform point (36 or 64 of them).
//! 2. **Per block of tiles** (sized so that the block's transformed tiles
//!    stay in L2), in three stages:
//!    - the input transform `Bᵀ d B`, vectorized over channels, reading the
//!      NHWC input with zero padding, writing `[tiles][points][C]`;
//!    - one GEMM per point, `[tiles × C]·[C × O]`, with the crate's packed
//!      GEMM ([`crate::gemm`]), writing `[tiles][points][O]`;
//!    - the output transform `Aᵀ m A` with bias, residual and activation in
//!      registers, storing the tile's valid part into the NHWC output
//!      (tiles on the bottom and right edges are clipped).
//!
//! ## Constants
//!
//! `points` packed GEMM matrices (`K = C`, `N = O`, panels `[⌈O/16⌉][C][16]`
//! as [`PackedBRef`] reads them), point `p = i·n + j` at offset
//! `p·⌈O/16⌉·16·C`, then the bias padded to `⌈O/16⌉·16` floats when the
//! layer has one. Every segment is a multiple of 16 floats, so each starts on
//! a 64-byte boundary of an aligned [`Buffer`].
//!
//! ## Scratch and threads
//!
//! A task works on its own *slot* of the scratch: the transformed tiles and
//! the GEMM results of one block. Tasks get near-equal runs of tiles (over
//! the whole batch); when there are too few tiles for every thread to have
//! [`MIN_TASK_TILES`], the output channels are cut into runs of whole
//! 32-column GEMM tiles too (each such task then repeats the input
//! transform of its tiles). At most [`MAX_TASKS`] tasks run, so
//! [`WinogradConv::scratch_len`] needs no thread count. Every output element
//! goes through the same arithmetic whatever the cut (the transforms are
//! per tile, and the GEMM's result does not depend on its tiling), so
//! results are bit-identical for every thread count.
//!
//! ## Accuracy and choice
//!
//! Measured against the `f64` reference in `docs/KERNELS.md` ("Winograd"),
//! which also records the speed and the rule of [`WinogradTile::recommend`].

use std::sync::OnceLock;

use super::{check_len, Buffer, Context, OpError, RunBuffers};
use crate::gemm::{gemm_tiles, Epilogue, GemmError, MatMut, MatRef, PackedBRef, Tiles, PANEL};
use crate::geometry::Conv2dGeometry;
use crate::tier::Tier;
use crate::Activation;

mod transform;

#[cfg(test)]
mod tests;

use transform::{InputArgs, OutputArgs, TransformFns};

/// Floats per 64-byte line.
const ALIGN_FLOATS: usize = 16;

/// The most tasks one call is split into (and so the number of scratch
/// slots [`WinogradConv::scratch_len`] provides).
pub const MAX_TASKS: usize = 4;

/// Below this many direct-equivalent multiply-accumulates per call a layer
/// runs as one task: waking another thread costs microseconds.
pub const PARALLEL_MIN_MACS: u64 = 1 << 20;

/// A task gets at least this many tiles (two AVX-512 GEMM row tiles) before
/// the output channels are cut instead: fewer rows per GEMM would re-read
/// every transformed weight matrix for too little work.
pub const MIN_TASK_TILES: usize = 28;

/// Bytes of transformed tiles and GEMM results per block (per task): a
/// quarter of the 2 MiB L2, which also holds the input and output rows and
/// the weights streaming through (measured: see [`block_tiles`]).
const BLOCK_BYTES: usize = 512 << 10;

/// Blocks hold a multiple of this many tiles (the AVX-512 GEMM's rows).
const BLOCK_ALIGN: usize = 14;

/// Never more tiles per block than this.
const MAX_BLOCK_TILES: usize = 8 * BLOCK_ALIGN;

/// Tiles per block: as many as fit [`BLOCK_BYTES`], but at least
/// `C·O / (C + O) / 2.5` so that each transformed weight matrix (read once
/// per block, from L3 once the weights outgrow L2) serves enough rows;
/// rounded to whole AVX-512 GEMM tiles, 14 to 112.
///
/// Measured (best of 6 interleaved rounds, one thread, `docs/KERNELS.md`):
/// 64→64 @56 F(4x4) is fastest with 20-28 tiles (409 µs; 56 tiles: 443 µs),
/// 128→128 @28 with 28-49, 256→256 @28 with 49 (1.51 ms; 14 tiles: 1.94
/// ms), 32→32 @112 with 56, F(6x6) 64→64 @56 with 14-20.
fn block_tiles(c: usize, o: usize, per_tile_bytes: usize) -> usize {
    let budget = BLOCK_BYTES / per_tile_bytes.max(1);
    let reuse = c.saturating_mul(o) / (c + o).max(1) * 2 / 5;
    let tiles = budget.max(reuse);
    ((tiles + BLOCK_ALIGN / 2) / BLOCK_ALIGN * BLOCK_ALIGN).clamp(BLOCK_ALIGN, MAX_BLOCK_TILES)
}

/// Output channels are cut between tasks in runs of this many (the
/// AVX-512 GEMM's columns).
const CHANNEL_UNIT: usize = 32;

/// The Winograd variant: the size of the output tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WinogradTile {
    /// `F(4x4, 3x3)`: 4x4 outputs from 6x6 inputs, 36 points: 4x fewer
    /// multiplications than direct; error ~2-3x direct's.
    F4x4,
    /// `F(6x6, 3x3)`: 6x6 outputs from 8x8 inputs, 64 points, 5.06x fewer
    /// multiplications than direct; error ~5-10x direct's.
    F6x6,
}

impl WinogradTile {
    /// Both variants.
    pub const ALL: [WinogradTile; 2] = [WinogradTile::F4x4, WinogradTile::F6x6];

    /// Output tile side `m` (4 or 6).
    pub fn output_tile(self) -> usize {
        match self {
            WinogradTile::F4x4 => 4,
            WinogradTile::F6x6 => 6,
        }
    }

    /// Input tile side `n = m + 2` (6 or 8).
    pub fn input_tile(self) -> usize {
        self.output_tile() + 2
    }

    /// Transform points `n²` (36 or 64): the number of GEMMs.
    pub fn points(self) -> usize {
        self.input_tile() * self.input_tile()
    }

    /// `f4x4` or `f6x6`.
    pub fn name(self) -> &'static str {
        match self {
            WinogradTile::F4x4 => "f4x4",
            WinogradTile::F6x6 => "f6x6",
        }
    }

    /// The variant recommended for a layer, or `None` when Winograd is not
    /// applicable or not expected to beat the indirect-GEMM convolution.
    ///
    /// The rule (measured in `docs/KERNELS.md`, "Winograd"): [`applicable`],
    /// at least [`MIN_CHANNELS`] input and output channels, and either at
    /// least [`MIN_TILES`] `F(4x4)` tiles per sample or transformed weights
    /// of at most [`SMALL_WEIGHTS`] floats (each call streams them once per
    /// block: with few tiles and large weights that traffic, 4x the direct
    /// weights, eats the 4x saving in multiplications). Then `F(4x4)`.
    /// `F(6x6)` is never recommended: it is not faster on ResNet shapes
    /// here (more tile waste, more transform work) and its error is 3-5x
    /// that of `F(4x4)`.
    pub fn recommend(geometry: &Conv2dGeometry) -> Option<WinogradTile> {
        let g = geometry;
        let tiles = g.out_h.div_ceil(4).saturating_mul(g.out_w.div_ceil(4));
        let weights = 36usize
            .saturating_mul(g.in_channels)
            .saturating_mul(g.out_channels);
        (applicable(g)
            && g.in_channels >= MIN_CHANNELS
            && g.out_channels >= MIN_CHANNELS
            && (tiles >= MIN_TILES || weights <= SMALL_WEIGHTS))
            .then_some(WinogradTile::F4x4)
    }

    /// The transform entry points for a tier.
    fn transforms(self, tier: Tier) -> TransformFns {
        use transform::{portable, reference};
        match (tier, self) {
            (Tier::Reference, WinogradTile::F4x4) => reference::F4,
            (Tier::Reference, WinogradTile::F6x6) => reference::F6,
            (Tier::Portable, WinogradTile::F4x4) => portable::F4,
            (Tier::Portable, WinogradTile::F6x6) => portable::F6,
            #[cfg(target_arch = "x86_64")]
            (Tier::Avx2, WinogradTile::F4x4) => transform::avx2::F4,
            #[cfg(target_arch = "x86_64")]
            (Tier::Avx2, WinogradTile::F6x6) => transform::avx2::F6,
            #[cfg(target_arch = "x86_64")]
            (Tier::Avx512, WinogradTile::F4x4) => transform::avx512::F4,
            #[cfg(target_arch = "x86_64")]
            (Tier::Avx512, WinogradTile::F6x6) => transform::avx512::F6,
            #[cfg(not(target_arch = "x86_64"))]
            (Tier::Avx2 | Tier::Avx512, WinogradTile::F4x4) => portable::F4,
            #[cfg(not(target_arch = "x86_64"))]
            (Tier::Avx2 | Tier::Avx512, WinogradTile::F6x6) => portable::F6,
        }
    }

    /// The finite interpolation points.
    fn interpolation_points(self) -> &'static [f64] {
        match self {
            WinogradTile::F4x4 => &transform::POINTS_F4,
            WinogradTile::F6x6 => &transform::POINTS_F6,
        }
    }
}

/// [`WinogradTile::recommend`] wants at least this many input and output
/// channels.
pub const MIN_CHANNELS: usize = 16;

/// [`WinogradTile::recommend`] wants at least this many `F(4x4)` tiles per
/// sample (12x12 outputs), unless the weights are small.
pub const MIN_TILES: usize = 9;

/// Transformed `F(4x4)` weights (`36·C·O` floats) this small (1 MiB) make
/// Winograd worth it even with few tiles.
pub const SMALL_WEIGHTS: usize = 1 << 18;

/// Whether Winograd can compute the layer: a 3x3 kernel, stride 1,
/// dilation 1, one group (any padding, asymmetric included).
pub fn applicable(geometry: &Conv2dGeometry) -> bool {
    let g = geometry;
    g.kernel == [3, 3] && g.stride == [1, 1] && g.dilation == [1, 1] && g.groups == 1
}

/// Everything that defines a [`WinogradConv`] besides its weights: plain
/// data, written out by the code generator as a literal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WinogradSpec {
    /// The layer's geometry for **one** sample (`batch` must be 1; the batch
    /// is an argument of [`WinogradConv::run`]).
    pub geometry: Conv2dGeometry,
    /// The activation applied last.
    pub activation: Activation,
    /// Whether the layer adds a bias (packed into the constants).
    pub has_bias: bool,
    /// Whether `run` adds a residual tensor (shaped like the output) before
    /// the activation.
    pub has_residual: bool,
    /// The variant.
    pub tile: WinogradTile,
}

/// Sizes derived from a checked spec (never stored in the constants).
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Input channels, and rounded up to 16.
    c: usize,
    cpad: usize,
    /// Output channels, and rounded up to 16.
    o: usize,
    opad: usize,
    /// Input and output sizes of one sample.
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    /// Padding before the first row and column.
    pad: [usize; 2],
    /// Tiles per sample along the height and the width.
    tiles: [usize; 2],
    /// Transform points.
    points: usize,
    /// Floats of one point's packed matrix.
    panels: usize,
    /// Floats of the constants.
    constants: usize,
    /// Tiles per block at most.
    block_tiles: usize,
    /// Direct-equivalent multiply-accumulates of one sample.
    macs: u64,
    /// Floats of one sample's input and output.
    input_len: usize,
    output_len: usize,
}

fn spec_error(why: impl Into<String>) -> OpError {
    OpError::Spec(why.into())
}

fn too_large() -> OpError {
    spec_error("Winograd convolution sizes overflow")
}

impl Layout {
    fn new(spec: &WinogradSpec) -> Result<Layout, OpError> {
        let g = &spec.geometry;
        if g.batch != 1 {
            return Err(spec_error(format!(
                "a conv spec describes one sample (batch 1), got batch {}",
                g.batch
            )));
        }
        if !applicable(g) {
            return Err(spec_error(
                "Winograd needs a 3x3 kernel, stride 1, dilation 1 and one group",
            ));
        }
        if g.in_channels == 0 || g.out_channels == 0 {
            return Err(spec_error("convolution with zero channels"));
        }
        let [top, left, bottom, right] = g.padding;
        let expected = |len: usize, before: usize, after: usize| {
            len.checked_add(before)?.checked_add(after)?.checked_sub(2)
        };
        if expected(g.in_h, top, bottom) != Some(g.out_h)
            || expected(g.in_w, left, right) != Some(g.out_w)
            || g.out_h == 0
            || g.out_w == 0
        {
            return Err(spec_error(format!(
                "output {}x{} disagrees with input {}x{}, padding {:?} and a 3x3 kernel",
                g.out_h, g.out_w, g.in_h, g.in_w, g.padding
            )));
        }
        let mul = |a: usize, b: usize| a.checked_mul(b).ok_or_else(too_large);
        let tile = spec.tile;
        let (c, o) = (g.in_channels, g.out_channels);
        let cpad = mul(c.div_ceil(PANEL), PANEL)?;
        let opad = mul(o.div_ceil(PANEL), PANEL)?;
        let points = tile.points();
        let panels = mul(opad, c)?;
        let bias = if spec.has_bias { opad } else { 0 };
        let constants = mul(panels, points)?
            .checked_add(bias)
            .ok_or_else(too_large)?;
        let per_tile = mul(
            mul(points, cpad.checked_add(opad).ok_or_else(too_large)?)?,
            4,
        )?;
        let block_tiles = block_tiles(c, o, per_tile);
        let m = tile.output_tile();
        let tiles = [g.out_h.div_ceil(m), g.out_w.div_ceil(m)];
        let output_len = mul(mul(g.out_h, g.out_w)?, o)?;
        let input_len = mul(mul(g.in_h, g.in_w)?, c)?;
        let macs = (output_len as u64)
            .checked_mul(9 * c as u64)
            .ok_or_else(too_large)?;
        // The scratch of the largest split must be addressable too.
        mul(mul(block_tiles, per_tile)?, MAX_TASKS)?;
        Ok(Layout {
            c,
            cpad,
            o,
            opad,
            h: g.in_h,
            w: g.in_w,
            oh: g.out_h,
            ow: g.out_w,
            pad: [top, left],
            tiles,
            points,
            panels,
            constants,
            block_tiles,
            macs,
            input_len,
            output_len,
        })
    }

    /// How a call on `batch` samples with `threads` threads is cut.
    fn split(&self, batch: usize, threads: usize) -> Split {
        let total = batch.saturating_mul(self.tiles[0] * self.tiles[1]);
        let macs = self.macs.saturating_mul(batch as u64);
        let wanted = if threads <= 1 || macs < PARALLEL_MIN_MACS {
            1
        } else {
            threads.min(MAX_TASKS)
        };
        let row_parts = (total / MIN_TASK_TILES).clamp(1, wanted);
        let channel_units = self.o.div_ceil(CHANNEL_UNIT);
        let channel_parts = (wanted / row_parts).clamp(1, channel_units);
        Split {
            total,
            row_parts,
            channel_parts,
            channel_units,
        }
    }

    /// Tiles one slot holds for `batch` samples.
    fn slot_tiles(&self, batch: usize) -> usize {
        self.block_tiles
            .min(batch.saturating_mul(self.tiles[0] * self.tiles[1]))
    }

    /// Floats of the transformed tiles of a slot, and of the whole slot:
    /// `cpad` zeros (what padding taps read), the transformed tiles, the
    /// GEMM results.
    fn slot_lens(&self, batch: usize) -> (usize, usize) {
        let tiles = self.slot_tiles(batch);
        if tiles == 0 {
            return (0, 0);
        }
        let v = tiles * self.points * self.cpad;
        (v, self.cpad + v + tiles * self.points * self.opad)
    }
}

/// The cut of one call into tasks: `row_parts` runs of tiles times
/// `channel_parts` runs of output channels.
#[derive(Clone, Copy, Debug)]
struct Split {
    total: usize,
    row_parts: usize,
    channel_parts: usize,
    channel_units: usize,
}

impl Split {
    fn tasks(&self) -> usize {
        self.row_parts * self.channel_parts
    }

    /// The tiles and the output channels `[start, end)` of `task`.
    fn task(&self, task: usize, channels: usize) -> ([usize; 2], [usize; 2]) {
        let (row, col) = (task / self.channel_parts, task % self.channel_parts);
        let tiles = [
            row * self.total / self.row_parts,
            (row + 1) * self.total / self.row_parts,
        ];
        let unit = |part: usize| {
            (part * self.channel_units / self.channel_parts * CHANNEL_UNIT).min(channels)
        };
        (tiles, [unit(col), unit(col + 1)])
    }
}

/// A 3x3 stride-1 convolution by Winograd's algorithm (see the module doc).
#[derive(Debug)]
pub struct WinogradConv {
    spec: WinogradSpec,
    layout: Layout,
    constants: Buffer,
}

impl WinogradConv {
    /// Transforms (in `f64`) and packs PyTorch-layout weights `[O, C, 3, 3]`
    /// and the bias (`Some` exactly when `spec.has_bias`).
    pub fn pack(
        spec: WinogradSpec,
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<WinogradConv, OpError> {
        let layout = Layout::new(&spec)?;
        let (c, o) = (layout.c, layout.o);
        // Cannot overflow: `Layout::new` checked `36·⌈O/16⌉·16·C`.
        check_len("weight", weight.len(), o * c * 9)?;
        match (bias, spec.has_bias) {
            (Some(bias), true) => check_len("bias", bias.len(), o)?,
            (None, false) => {}
            (Some(_), false) => return Err(spec_error("a bias was given to a layer without bias")),
            (None, true) => return Err(spec_error("the layer has a bias but none was given")),
        }
        let mut constants = Buffer::zeroed(layout.constants);
        let out = constants.make_mut();
        let g = transform::filter_matrix(spec.tile.interpolation_points());
        let n = g.len();
        let panel_len = c * PANEL;
        let mut u = vec![0.0f64; n * n];
        for oc in 0..o {
            let panel_offset = (oc / PANEL) * panel_len + oc % PANEL;
            for ic in 0..c {
                let w = &weight[(oc * c + ic) * 9..][..9];
                // U = G w Gᵀ, in f64, rounded once.
                let mut gw = [[0.0f64; 3]; 8];
                for (row, g_row) in gw.iter_mut().zip(&g) {
                    for (l, value) in row.iter_mut().enumerate() {
                        *value = (0..3).map(|k| g_row[k] * f64::from(w[k * 3 + l])).sum();
                    }
                }
                for i in 0..n {
                    for j in 0..n {
                        u[i * n + j] = (0..3).map(|l| gw[i][l] * g[j][l]).sum();
                    }
                }
                for (p, &value) in u.iter().enumerate() {
                    out[p * layout.panels + panel_offset + ic * PANEL] = value as f32;
                }
            }
        }
        if let Some(bias) = bias {
            out[layout.points * layout.panels..][..o].copy_from_slice(bias);
        }
        WinogradConv::from_constants(spec, constants)
    }

    /// Rebuilds the operator from constants that [`WinogradConv::constants`]
    /// returned for the same spec (e.g. embedded in generated code), without
    /// repacking.
    pub fn from_constants(spec: WinogradSpec, constants: Buffer) -> Result<Self, OpError> {
        let layout = Layout::new(&spec)?;
        check_len("constants", constants.len(), layout.constants)?;
        Ok(WinogradConv {
            spec,
            layout,
            constants,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &WinogradSpec {
        &self.spec
    }

    /// All packed constants (what generated code embeds).
    pub fn constants(&self) -> &[f32] {
        &self.constants
    }

    /// Floats of scratch [`WinogradConv::run`] needs for `batch` samples:
    /// one slot of transformed tiles and GEMM results per task that a call
    /// may run (at most [`MAX_TASKS`]).
    pub fn scratch_len(&self, batch: usize) -> usize {
        let slot_len = self.layout.slot_lens(batch).1;
        if slot_len == 0 {
            return 0;
        }
        let slots = (1..=MAX_TASKS)
            .map(|threads| self.layout.split(batch, threads).tasks())
            .max()
            .unwrap_or(1);
        // Room to start the slots on a 64-byte boundary.
        slot_len
            .saturating_mul(slots)
            .saturating_add(ALIGN_FLOATS - 1)
    }

    /// Runs the layer on `batch` samples: `input` `[N, H, W, C]`,
    /// `residual` `[N, OH, OW, O]` (`Some` exactly when
    /// `spec.has_residual`), `output` `[N, OH, OW, O]` (overwritten),
    /// `scratch` at least [`WinogradConv::scratch_len`] floats. Allocates
    /// nothing.
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        residual: Option<&[f32]>,
        output: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), OpError> {
        let layout = &self.layout;
        RunBuffers {
            input: layout.input_len,
            output: layout.output_len,
            residual: self.spec.has_residual,
            scratch: self.scratch_len(batch),
        }
        .check(batch, input, residual, output, scratch)?;
        if batch == 0 {
            return Ok(());
        }
        let split = layout.split(batch, ctx.threads());
        let (v_len, slot_len) = layout.slot_lens(batch);
        let views = Views {
            constants: &self.constants,
            layout,
        };
        let transforms = self.spec.tile.transforms(ctx.kernels().tier());
        let bias = self
            .spec
            .has_bias
            .then(|| &self.constants[layout.points * layout.panels..]);
        // Slots start on a 64-byte boundary (each of their parts is a
        // multiple of 16 floats): whole-line vector stores, no splits.
        let misalign = (scratch.as_ptr() as usize / 4) % ALIGN_FLOATS;
        let skip = (ALIGN_FLOATS - misalign) % ALIGN_FLOATS;
        let shared = Shared {
            output: output.as_mut_ptr(),
            scratch: scratch[skip..].as_mut_ptr(),
        };
        let first_error = OnceLock::new();
        ctx.parallel_for(split.tasks(), |task| {
            let (tiles, channels) = split.task(task, layout.o);
            let (output, scratch) = shared.pointers();
            // SAFETY: task `task` is the only user of slot `task`
            // (`tasks ≤` the slots of `scratch_len`, checked above), and it
            // writes only the output pixels of its tiles in its channels,
            // disjoint from every other task's (the split partitions the
            // tiles × channel runs).
            let result = unsafe {
                let slot = core::slice::from_raw_parts_mut(scratch.add(task * slot_len), slot_len);
                let (zeros, rest) = slot.split_at_mut(layout.cpad);
                let (v, m) = rest.split_at_mut(v_len);
                zeros.fill(0.0);
                self.run_task(
                    ctx,
                    &transforms,
                    &views,
                    Io {
                        input,
                        zeros,
                        residual,
                        bias,
                        output,
                    },
                    tiles,
                    channels,
                    v,
                    m,
                )
            };
            if let Err(error) = result {
                let _ = first_error.set(error);
            }
        });
        match first_error.into_inner() {
            Some(error) => Err(OpError::Gemm(error)),
            None => Ok(()),
        }
    }

    /// One task: its tiles, block by block, for its output channels.
    ///
    /// # Safety
    /// `output` is valid for the whole output, and no other task writes the
    /// pixels of these tiles in these channels; `input`, `residual` and the
    /// sizes were checked against the layout.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_task(
        &self,
        ctx: &Context,
        transforms: &TransformFns,
        views: &Views<'_>,
        io: Io<'_>,
        tiles: [usize; 2],
        channels: [usize; 2],
        v: &mut [f32],
        m: &mut [f32],
    ) -> Result<(), GemmError> {
        let layout = &self.layout;
        let points = layout.points;
        let block_tiles = layout.block_tiles.min(v.len() / (points * layout.cpad));
        let mut first = tiles[0];
        while first < tiles[1] {
            let count = (tiles[1] - first).min(block_tiles);
            let input_args = InputArgs {
                input: io.input.as_ptr(),
                zeros: io.zeros.as_ptr(),
                h: layout.h,
                w: layout.w,
                c: layout.c,
                tiles: layout.tiles,
                pad: layout.pad,
                first,
                count,
                v: v.as_mut_ptr(),
                cpad: layout.cpad,
            };
            // SAFETY: the input holds the whole batch (checked by `run`) and
            // these tiles are inside it; `v` holds `block_tiles ≥ count`
            // tiles of `points · cpad` floats; the tier of `ctx` is one this
            // CPU runs (a `Kernels` table exists only for those).
            unsafe { (transforms.input)(&input_args) };
            let row_runs = row_runs(count, ctx.kernels().gemm_tile().0);
            for p in 0..points {
                let b = views.point(p)?;
                for rows in row_runs.iter().filter(|rows| !rows.is_empty()) {
                    let a =
                        MatRef::new(&v[p * layout.cpad..], count, layout.c, points * layout.cpad)?;
                    let c = MatMut::new(
                        &mut m[p * layout.opad..],
                        count,
                        layout.o,
                        points * layout.opad,
                    )?;
                    let tiles = Tiles {
                        rows: rows.clone(),
                        cols: channels[0]..channels[1],
                    };
                    gemm_tiles(ctx.kernels(), a, b, c, &Epilogue::default(), tiles)?;
                }
            }
            let output_args = OutputArgs {
                m: m.as_ptr(),
                opad: layout.opad,
                output: io.output,
                residual: io.residual.map_or(core::ptr::null(), <[f32]>::as_ptr),
                bias: io.bias.map_or(core::ptr::null(), <[f32]>::as_ptr),
                oh: layout.oh,
                ow: layout.ow,
                o: layout.o,
                tiles: layout.tiles,
                first,
                count,
                channels,
                activation: self.spec.activation,
            };
            // SAFETY: `m` holds these tiles' GEMM results in `channels`
            // (lanes past them are read but never stored); the output and
            // residual hold the whole batch, and only this task writes
            // these pixels in these channels (the caller's contract); the
            // bias is padded to `opad`; the tier as above.
            unsafe { (transforms.output)(&output_args) };
            first += count;
        }
        Ok(())
    }
}

/// The tensors a task reads and writes.
struct Io<'a> {
    /// The whole input.
    input: &'a [f32],
    /// `cpad` zeros.
    zeros: &'a [f32],
    /// The whole residual, if any.
    residual: Option<&'a [f32]>,
    /// The padded bias, if any.
    bias: Option<&'a [f32]>,
    /// The whole output (written in parts by several tasks).
    output: *mut f32,
}

/// The GEMM row ranges of a block of `count` tiles for register tiles of
/// `mr` rows: whole tiles, then the last `mr + rest` rows as two near-equal
/// tiles instead of a full one and a thin one (16 rows as 8 + 8, not 14 +
/// 2: a 2-row tile has too few accumulators to hide the FMA latency). The
/// GEMM's result does not depend on its tiling, so neither do the bits.
fn row_runs(count: usize, mr: usize) -> [core::ops::Range<usize>; 3] {
    let mr = mr.max(1);
    let rest = count % mr;
    if rest == 0 || count < mr {
        return [0..count, count..count, count..count];
    }
    let whole = count - rest - mr;
    let half = (mr + rest).div_ceil(2);
    [0..whole, whole..whole + half, whole + half..count]
}

/// The packed matrices inside the constants.
struct Views<'a> {
    constants: &'a [f32],
    layout: &'a Layout,
}

impl Views<'_> {
    /// The `[C × O]` matrix of point `p`.
    fn point(&self, p: usize) -> Result<PackedBRef<'_>, GemmError> {
        let panels = self.layout.panels;
        PackedBRef::new(
            self.layout.c,
            self.layout.o,
            &self.constants[p * panels..][..panels],
            None,
        )
    }
}

/// The output and the scratch, written by several tasks at once (each its
/// own part).
#[derive(Clone, Copy)]
struct Shared {
    output: *mut f32,
    scratch: *mut f32,
}

impl Shared {
    /// The output and the scratch (a method, so that closures capture the
    /// whole `Shared` and not its non-`Sync` fields).
    fn pointers(&self) -> (*mut f32, *mut f32) {
        (self.output, self.scratch)
    }
}

// SAFETY: tasks only write disjoint parts (see `WinogradConv::run`).
unsafe impl Send for Shared {}
// SAFETY: as for `Send`.
unsafe impl Sync for Shared {}
