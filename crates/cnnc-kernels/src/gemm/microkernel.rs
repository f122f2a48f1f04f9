//! The one generic microkernel body, instantiated per tier and tile size.
//!
//! A microkernel computes one `MR × (NV·LANES)` tile of `C` over one block of
//! `K`, holding the whole tile in `MR·NV` accumulator registers:
//!
//! ```text
//! for k in block:                      // one "k-step"
//!     b[v]   = load(B panel, k, v)     // NV vector loads of packed B
//!     for r in 0..MR:
//!         a  = splat(A[r][k])          // one broadcast per row
//!         acc[r][v] = a * b[v] + acc[r][v]
//! ```
//!
//! then, on the last block of `K`, the fused epilogue in registers (bias,
//! residual, activation) and the (masked) store. `A` is read in place, either
//! as rows at a stride (direct GEMM) or through an indirection table of row
//! offsets per kernel tap (indirect GEMM, [`indirect`]); both share
//! [`accumulate`] and [`finish`].
//!
//! **Invariant:** every element of `C` goes through the same sequence of
//! `mul_add`s in `k` order whatever the tile variant (`MR`, `NV`) that
//! computes it, and `K` blocks store and reload exact `f32` partial sums, so a
//! result never depends on how the tile grid is split between calls or threads.

use super::simd::Simd;
use super::PANEL;
use crate::Activation;

/// Marks a padding tap in an indirection table: the row reads the zero
/// vector instead of the input.
pub const PAD_OFFSET: usize = usize::MAX;

/// Everything one microkernel call needs, as raw pointers already offset to
/// the tile (built by the driver in `gemm/mod.rs`, which checked every bound).
pub(crate) struct MicroArgs {
    /// Length of this `K` block (direct) or channels per tap (indirect).
    pub kc: usize,
    /// Direct: `A` at (first row of the tile, first `k` of the block).
    /// Indirect: the input base pointer that offsets are relative to.
    pub a: *const f32,
    /// Direct: row stride of `A`. Indirect: unused.
    pub lda: usize,
    /// Indirect: the offsets of the tile's first row at the block's first
    /// tap; row `r`, tap `t` is at `offsets[r * taps_total + t]`.
    pub offsets: *const usize,
    /// Indirect: taps per output row in the whole table.
    pub taps_total: usize,
    /// Indirect: taps in this block.
    pub taps: usize,
    /// Indirect: a zero vector of at least `kc` values (padding rows).
    pub zero: *const f32,
    /// Packed `B` at the tile's first column and the block's first `k`.
    pub b: *const f32,
    /// Distance in floats between consecutive `B` panels (`K · PANEL`).
    pub b_panel_stride: usize,
    /// `B` of the next column tile at the same `k`, to prefetch into L2
    /// while this tile computes, or null. Never dereferenced (a prefetch
    /// does not fault), so it may point past the panels.
    pub b_prefetch: *const f32,
    /// `C` at the tile's first element.
    pub c: *mut f32,
    /// Row stride of `C`.
    pub ldc: usize,
    /// Valid columns of the tile (`1..=NV·LANES`); the rest is masked.
    pub cols: usize,
    /// Start from the values in `C` instead of zero.
    pub load_c: bool,
    /// Apply the epilogue and activation (last block of `K`).
    pub last: bool,
    /// Bias at the tile's first column (padded to whole panels), or null.
    pub bias: *const f32,
    /// Residual at the tile's first element, or null.
    pub residual: *const f32,
    /// Row stride of the residual.
    pub ldr: usize,
    /// The activation of the epilogue.
    pub activation: Activation,
}

/// The type of every microkernel entry point in a tier's table.
pub(crate) type MicroFn = unsafe fn(&MicroArgs);

/// The pointer to vector `v` of a tile's `B` columns, in the layout of
/// [`PackedB`](super::PackedB): panels of [`PANEL`] columns, `K` rows each.
///
/// A tile either starts on a panel boundary, or lies inside one panel.
#[inline(always)]
fn b_vector<V: Simd>(b: *const f32, panel_stride: usize, v: usize) -> *const f32 {
    let column = v * V::LANES;
    b.wrapping_add((column / PANEL) * panel_stride + column % PANEL)
}

/// Accumulates `kc` k-steps of the tile into `acc`, reading row `r` of `A`
/// from `rows[r]` onwards and `B` from `b` onwards.
///
/// # Safety
/// Every `rows[r]` valid for `kc` reads; `b` valid for `kc` k-steps of the
/// tile's panels; the target-feature contract of [`Simd`].
#[inline(always)]
pub(crate) unsafe fn accumulate<V: Simd, const MR: usize, const NV: usize>(
    acc: &mut [[V; NV]; MR],
    rows: &[*const f32; MR],
    b: *const f32,
    b_panel_stride: usize,
    kc: usize,
    b_prefetch: *const f32,
) {
    if !b_prefetch.is_null() {
        // The next column tile's `B` lines at each k-step (one 64-byte line
        // per panel): it then comes from L2, not memory, when that tile
        // starts (its first row tile would otherwise stream `B` from
        // memory at the full FMA rate).
        let next: [*const f32; NV] =
            core::array::from_fn(|v| b_vector::<V>(b_prefetch, b_panel_stride, v));
        for k in 0..kc {
            for (v, next) in next.iter().enumerate() {
                if v * V::LANES % PANEL == 0 {
                    prefetch::<TO_L2>(next.wrapping_add(k * PANEL));
                }
            }
            // SAFETY: as below.
            unsafe { step::<V, MR, NV>(acc, rows, b, b_panel_stride, k) };
        }
    } else {
        for k in 0..kc {
            // SAFETY: as below.
            unsafe { step::<V, MR, NV>(acc, rows, b, b_panel_stride, k) };
        }
    }
}

/// [`prefetch`] into L1 (`_MM_HINT_T0`).
pub(crate) const TO_L1: i32 = 3;
/// [`prefetch`] into L2 (`_MM_HINT_T1`).
pub(crate) const TO_L2: i32 = 2;
#[cfg(target_arch = "x86_64")]
const _: () =
    assert!(TO_L1 == core::arch::x86_64::_MM_HINT_T0 && TO_L2 == core::arch::x86_64::_MM_HINT_T1);

/// Asks for the cache line at `p` in the cache `LEVEL` ([`TO_L1`],
/// [`TO_L2`]): a hint, which never faults, whatever `p` is.
#[inline(always)]
pub(crate) fn prefetch<const LEVEL: i32>(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no architectural effect and never faults;
    // SSE is part of the x86-64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<LEVEL>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// One k-step of [`accumulate`].
///
/// # Safety
/// As [`accumulate`], with `k < kc`.
#[inline(always)]
unsafe fn step<V: Simd, const MR: usize, const NV: usize>(
    acc: &mut [[V; NV]; MR],
    rows: &[*const f32; MR],
    b: *const f32,
    b_panel_stride: usize,
    k: usize,
) {
    let b_vectors: [*const f32; NV] = core::array::from_fn(|v| b_vector::<V>(b, b_panel_stride, v));
    // SAFETY: `k < kc` keeps every read inside the ranges the caller
    // guarantees; the target-feature contract is the caller's.
    unsafe {
        let b_k: [V; NV] = core::array::from_fn(|v| V::load(b_vectors[v].add(k * PANEL)));
        for r in 0..MR {
            let a = V::splat(*rows[r].add(k));
            for v in 0..NV {
                acc[r][v] = a.mul_add(b_k[v], acc[r][v]);
            }
        }
    }
}

/// Loads `LANES` or fewer values (the tile's ragged right edge).
///
/// # Safety
/// `p` valid for `min(valid, LANES)` reads, `valid > 0`.
#[inline(always)]
unsafe fn load_edge<V: Simd>(p: *const f32, valid: usize) -> V {
    // SAFETY: forwarded from the caller.
    unsafe {
        if valid >= V::LANES {
            V::load(p)
        } else {
            V::load_partial(p, valid)
        }
    }
}

/// The tile's starting accumulators: zero, or `C`'s current values.
///
/// # Safety
/// With `args.load_c`, `C` valid for the tile's `MR × cols` elements.
#[inline(always)]
pub(crate) unsafe fn init<V: Simd, const MR: usize, const NV: usize>(
    args: &MicroArgs,
) -> [[V; NV]; MR] {
    // SAFETY: the target-feature contract is the caller's.
    let mut acc = [[unsafe { V::zero() }; NV]; MR];
    if args.load_c {
        let tail = tail::<V, NV>(args.cols);
        for (r, acc_row) in acc.iter_mut().enumerate() {
            for (v, acc_v) in acc_row.iter_mut().enumerate() {
                let valid = if v + 1 == NV { tail } else { V::LANES };
                // SAFETY: row `r < MR` and columns below `cols` of the tile
                // are inside `C` (the caller's contract).
                *acc_v = unsafe { load_edge::<V>(args.c.add(r * args.ldc + v * V::LANES), valid) };
            }
        }
    }
    acc
}

/// Evaluates `$body` with `$f` bound to a closure that applies `$activation`
/// to one register of type `$V`: identity, ReLU and ReLU6 each get their own
/// copy of `$body`, with their bounds in registers and no test per
/// register; the others go through [`activate`]. For epilogues, whose store
/// loops must stay free of per-register branches for LLVM to keep the
/// accumulators in registers.
///
/// Used inside an `unsafe` block whose target-feature contract covers `$V`.
macro_rules! with_activation {
    ($V:ty, $activation:expr, |$f:ident| $body:expr) => {
        match $activation {
            $crate::Activation::Identity => {
                let $f = |x: $V| x;
                $body
            }
            $crate::Activation::Relu => {
                let zero = <$V as $crate::gemm::simd::Simd>::zero();
                let $f = move |x: $V| zero.max(x);
                $body
            }
            $crate::Activation::Relu6 => {
                let zero = <$V as $crate::gemm::simd::Simd>::zero();
                let six = <$V as $crate::gemm::simd::Simd>::splat(6.0);
                let $f = move |x: $V| six.min(zero.max(x));
                $body
            }
            other => {
                let $f = move |x: $V| $crate::gemm::microkernel::activate(x, other);
                $body
            }
        }
    };
}
pub(crate) use with_activation;

/// Applies the vectorizable activations to one register.
///
/// NaN propagates as in PyTorch: `max`/`min` return their second operand
/// when either is NaN (`maxps`), so `x` always goes second.
///
/// # Safety
/// The target-feature contract of [`Simd`].
#[inline(always)]
pub(crate) unsafe fn activate<V: Simd>(x: V, activation: Activation) -> V {
    // SAFETY: pure register arithmetic under the caller's contract.
    unsafe {
        match activation {
            Activation::Relu => V::zero().max(x),
            Activation::Relu6 => V::splat(6.0).min(V::zero().max(x)),
            Activation::LeakyRelu { negative_slope } => {
                // max(x, 0) + slope * min(x, 0): exactly x for x >= 0 and
                // exactly slope * x for x < 0 (adding a zero is exact).
                let positive = V::zero().max(x);
                let negative = V::zero().min(x);
                V::splat(negative_slope).mul_add(negative, positive)
            }
            Activation::Hardswish => {
                // x * relu6(x + 3) / 6, with a true division as PyTorch.
                let gate = V::splat(6.0).min(V::zero().max(x.add(V::splat(3.0))));
                x.mul(gate).div(V::splat(6.0))
            }
            // Identity, and the two applied by the scalar pass after the
            // store (see `finish`).
            Activation::Identity | Activation::Sigmoid | Activation::Tanh => x,
        }
    }
}

/// The epilogue and the store: on the last `K` block adds the bias and the
/// residual and applies the activation, in registers; then stores the valid
/// part of the tile.
///
/// Sigmoid and tanh have no vectorized implementation yet: they are applied
/// by a scalar pass over the freshly stored tile, which is still in L1.
///
/// # Safety
/// `C` (and the residual, when not null) valid for the tile's `MR × cols`
/// elements; the bias (when not null) valid for `NV·LANES` reads; the
/// target-feature contract of [`Simd`].
#[inline(always)]
pub(crate) unsafe fn finish<V: Simd, const MR: usize, const NV: usize>(
    acc: &mut [[V; NV]; MR],
    args: &MicroArgs,
) {
    // SAFETY (all calls below): forwarded from the caller.
    unsafe {
        if !args.last {
            return store_tile::<V, MR, NV>(acc, args, |x| x);
        }
        with_activation!(V, args.activation, |f| epilogue::<V, MR, NV>(acc, args, f));
        if matches!(args.activation, Activation::Sigmoid | Activation::Tanh) {
            for r in 0..MR {
                let row = core::slice::from_raw_parts_mut(args.c.add(r * args.ldc), args.cols);
                for x in row {
                    *x = args.activation.apply(*x);
                }
            }
        }
    }
}

/// The last block's epilogue: bias, residual, then `activation`, fused into
/// the store of each register.
///
/// # Safety
/// As [`finish`].
#[inline(always)]
unsafe fn epilogue<V: Simd, const MR: usize, const NV: usize>(
    acc: &mut [[V; NV]; MR],
    args: &MicroArgs,
    activation: impl Fn(V) -> V,
) {
    // SAFETY: the bias is valid for `NV·LANES` reads, the residual for the
    // tile's valid columns (the caller's contract); the target-feature
    // contract is the caller's.
    unsafe {
        if !args.bias.is_null() {
            for v in 0..NV {
                let bias = V::load(args.bias.add(v * V::LANES));
                for acc_row in acc.iter_mut() {
                    acc_row[v] = acc_row[v].add(bias);
                }
            }
        }
        if !args.residual.is_null() {
            let tail = tail::<V, NV>(args.cols);
            for (r, acc_row) in acc.iter_mut().enumerate() {
                for (v, acc_v) in acc_row.iter_mut().enumerate() {
                    let p = args.residual.add(r * args.ldr + v * V::LANES);
                    let valid = if v + 1 == NV { tail } else { V::LANES };
                    *acc_v = acc_v.add(load_edge::<V>(p, valid));
                }
            }
        }
        store_tile::<V, MR, NV>(acc, args, activation);
    }
}

/// The valid columns of a tile's last vector (`1..=LANES`): the drivers
/// pick the variant with `NV = ⌈cols / LANES⌉`, so only the last vector can
/// be partial.
#[inline(always)]
fn tail<V: Simd, const NV: usize>(cols: usize) -> usize {
    debug_assert!(cols > (NV - 1) * V::LANES && cols <= NV * V::LANES);
    cols - (NV - 1) * V::LANES
}

/// Stores the tile (only the valid lanes of its last vector), each
/// register through `f` first.
///
/// Every loop runs to a constant (`MR`, `NV`) so that LLVM unrolls it and
/// keeps the tile in registers, and the one run-time test (is the last
/// vector whole?) is outside the loops.
///
/// # Safety
/// `C` valid for the tile's `MR × cols` elements; the target-feature
/// contract of [`Simd`].
#[inline(always)]
unsafe fn store_tile<V: Simd, const MR: usize, const NV: usize>(
    acc: &[[V; NV]; MR],
    args: &MicroArgs,
    f: impl Fn(V) -> V,
) {
    let tail = tail::<V, NV>(args.cols);
    // SAFETY: rows `< MR` and columns below `cols` are inside `C`.
    unsafe {
        if tail == V::LANES {
            for (r, acc_row) in acc.iter().enumerate() {
                for (v, acc_v) in acc_row.iter().enumerate() {
                    f(*acc_v).store(args.c.add(r * args.ldc + v * V::LANES));
                }
            }
        } else {
            for (r, acc_row) in acc.iter().enumerate() {
                for (v, acc_v) in acc_row.iter().enumerate() {
                    let p = args.c.add(r * args.ldc + v * V::LANES);
                    if v + 1 == NV {
                        f(*acc_v).store_partial(p, tail);
                    } else {
                        f(*acc_v).store(p);
                    }
                }
            }
        }
    }
}

/// The direct microkernel: `A` rows at stride `lda`.
///
/// # Safety
/// The bounds in [`MicroArgs`] hold for this tile (`MR` rows of `A` with
/// `kc` values each from `a`); the target-feature contract of [`Simd`].
#[inline(always)]
pub(crate) unsafe fn direct<V: Simd, const MR: usize, const NV: usize>(args: &MicroArgs) {
    // SAFETY: forwarded from the caller; the row pointers stay inside `A`.
    unsafe {
        let mut acc = init::<V, MR, NV>(args);
        // The row pointers go through `black_box` so that LLVM keeps them
        // as opaque bases (in registers, or reloaded from the stack: load
        // ports) instead of rebuilding each row address from `lda` every
        // k-step with integer adds that compete with the FMAs for ports.
        let rows: [*const f32; MR] =
            core::hint::black_box(core::array::from_fn(|r| args.a.add(r * args.lda)));
        accumulate::<V, MR, NV>(
            &mut acc,
            &rows,
            args.b,
            args.b_panel_stride,
            args.kc,
            args.b_prefetch,
        );
        finish::<V, MR, NV>(&mut acc, args);
    }
}

/// The indirect microkernel: for each tap of the block, row `r` of `A` is the
/// `kc`-vector at `a + offsets[r * taps_total + tap]`, or the zero vector
/// where the offset is [`PAD_OFFSET`].
///
/// # Safety
/// The bounds in [`MicroArgs`] hold for this tile (every non-padding offset
/// plus `kc` inside the input; `zero` valid for `kc` reads; `B` valid for
/// `taps · kc` k-steps); the target-feature contract of [`Simd`].
#[inline(always)]
pub(crate) unsafe fn indirect<V: Simd, const MR: usize, const NV: usize>(args: &MicroArgs) {
    // SAFETY: forwarded from the caller; the offsets were validated when the
    // indirection table was checked.
    unsafe {
        let mut acc = init::<V, MR, NV>(args);
        let mut b = args.b;
        let mut prefetch = args.b_prefetch;
        for tap in 0..args.taps {
            let rows: [*const f32; MR] = core::array::from_fn(|r| {
                let offset = *args.offsets.add(r * args.taps_total + tap);
                if offset == PAD_OFFSET {
                    args.zero
                } else {
                    args.a.add(offset)
                }
            });
            accumulate::<V, MR, NV>(&mut acc, &rows, b, args.b_panel_stride, args.kc, prefetch);
            b = b.add(args.kc * PANEL);
            if !prefetch.is_null() {
                prefetch = prefetch.wrapping_add(args.kc * PANEL);
            }
        }
        finish::<V, MR, NV>(&mut acc, args);
    }
}
