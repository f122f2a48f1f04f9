//! The fully connected layer: `y = act(x · Wᵀ + bias + residual)`.
//!
//! The weights are packed once in the GEMM's panel layout
//! (`[⌈O/16⌉][F][16]`, see [`PackedB`]), which serves both paths:
//!
//! - **batch 1** is a matrix-vector product and **memory-bound**: every
//!   weight is used once per call, so the time is the time to stream the
//!   panels (2 MB for 512→1000, 16 MB for 4096→1000). The GEMV kernel walks
//!   [`GEMV_PANELS`] panels at once with [`GEMV_UNROLL`] independent
//!   accumulators per vector (even and odd `k`), so that enough FMA chains
//!   are in flight to hide their latency and enough streams are open for
//!   the prefetchers; the partial sums are added in a fixed order. Threads
//!   split the panels.
//! - **batch > 1** is the packed GEMM ([`crate::gemm`]) over a
//!   [`PackedBRef`] borrowed from the constants, with the same fused
//!   epilogue; threads split rows (or columns, for small batches).
//!
//! Constants, in one [`Buffer`]: the panels, then (with a bias) the bias
//! padded to whole panels — the layout [`PackedBRef::new`] takes.

use super::elementwise::{activate, load_n, store_n, tier_table, total, SimdMath};
use crate::activation::Activation;
use crate::gemm::{gemm_tiles_shared, Epilogue, MatMut, MatRef, PackedB, PackedBRef, Tiles, PANEL};
use crate::ops::{check_len, Buffer, Context, OpError};
use crate::threads::{part, task_count};

/// Panels of 16 outputs the GEMV reads at once.
pub const GEMV_PANELS: usize = 4;

/// Independent accumulators per output vector in the GEMV.
pub const GEMV_UNROLL: usize = 2;

/// A fully connected layer (`torch.nn.Linear`) with its fused epilogue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearSpec {
    /// Input features `F`.
    pub in_features: usize,
    /// Output features `O`.
    pub out_features: usize,
    /// Applied last ([`Activation::Identity`] for none).
    pub activation: Activation,
    /// Whether a bias is packed with the weights.
    pub has_bias: bool,
    /// Whether `run` adds a residual `[N, O]` before the activation.
    pub has_residual: bool,
}

/// A fully connected layer: see [`LinearSpec`] and the module doc.
#[derive(Clone, Debug)]
pub struct LinearOp {
    spec: LinearSpec,
    constants: Buffer,
    /// Floats of the packed panels (the bias follows).
    panels_len: usize,
}

impl LinearOp {
    /// Packs PyTorch's `weight` `[O, F]` and `bias` `[O]` (given exactly
    /// when `spec.has_bias`).
    pub fn pack(
        spec: LinearSpec,
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<LinearOp, OpError> {
        let (panels_len, constants_len) = sizes(&spec)?;
        let (f, o) = (spec.in_features, spec.out_features);
        check_len("linear weight", weight.len(), f * o)?;
        match (bias, spec.has_bias) {
            (Some(bias), true) => check_len("linear bias", bias.len(), o)?,
            (None, false) => {}
            (Some(_), false) => {
                return Err(OpError::Spec(
                    "a bias was given to a linear layer without bias".to_owned(),
                ))
            }
            (None, true) => {
                return Err(OpError::Spec(
                    "the linear layer has a bias but none was given".to_owned(),
                ))
            }
        }
        let packed = PackedB::from_nk(f, o, weight, None)?;
        let mut constants = Buffer::zeroed(constants_len);
        let values = constants.make_mut();
        values[..panels_len].copy_from_slice(packed.panels());
        if let Some(bias) = bias {
            values[panels_len..panels_len + o].copy_from_slice(bias);
        }
        LinearOp::from_constants(spec, constants)
    }

    /// Rebuilds the operator from [`LinearOp::constants`] (no repacking).
    pub fn from_constants(spec: LinearSpec, constants: Buffer) -> Result<LinearOp, OpError> {
        let (panels_len, constants_len) = sizes(&spec)?;
        check_len("linear constants", constants.len(), constants_len)?;
        Ok(LinearOp {
            spec,
            constants,
            panels_len,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &LinearSpec {
        &self.spec
    }

    /// The packed constants: panels `[⌈O/16⌉][F][16]`, then the padded bias.
    pub fn constants(&self) -> &[f32] {
        &self.constants
    }

    /// Floats of scratch `run` needs: none.
    pub fn scratch_len(&self, _batch: usize) -> usize {
        0
    }

    /// The weights as the GEMM sees them.
    fn packed(&self) -> Result<PackedBRef<'_>, OpError> {
        let bias = self
            .spec
            .has_bias
            .then(|| &self.constants[self.panels_len..]);
        Ok(PackedBRef::new(
            self.spec.in_features,
            self.spec.out_features,
            &self.constants[..self.panels_len],
            bias,
        )?)
    }

    /// Runs `batch` samples: `input` `[N, F]`, `residual` `[N, O]` (given
    /// exactly when `spec.has_residual`), `output` `[N, O]`.
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) -> Result<(), OpError> {
        let (f, o) = (self.spec.in_features, self.spec.out_features);
        check_len("linear input", input.len(), total(batch, f)?)?;
        check_len("linear output", output.len(), total(batch, o)?)?;
        match (residual, self.spec.has_residual) {
            (Some(residual), true) => check_len("linear residual", residual.len(), batch * o)?,
            (None, false) => {}
            (Some(_), false) => {
                return Err(OpError::Spec(
                    "a residual was given to a linear layer without one".to_owned(),
                ))
            }
            (None, true) => {
                return Err(OpError::Spec(
                    "the linear layer adds a residual but none was given".to_owned(),
                ))
            }
        }
        if batch == 0 || o == 0 {
            return Ok(());
        }
        if batch == 1 {
            self.gemv(ctx, input, residual, output);
            return Ok(());
        }
        let b = self.packed()?;
        let a = MatRef::new(input, batch, f, f)?;
        let residual = residual.map(|r| MatRef::new(r, batch, o, o)).transpose()?;
        let epilogue = Epilogue {
            activation: self.spec.activation,
            residual,
            accumulate: false,
        };
        let c = MatMut::new(output, batch, o, o)?.share();
        let kernels = ctx.kernels();
        let (mr, _) = kernels.gemm_tile();
        let macs = batch * f * o;
        let tasks = task_count(ctx.threads(), macs, 1 << 18);
        // Rows in whole register tiles while there are enough, else columns
        // in whole panels.
        let row_tiles = batch.div_ceil(mr.max(1));
        let split_rows = row_tiles >= tasks;
        let tasks = if split_rows {
            tasks
        } else {
            tasks.min(o.div_ceil(PANEL))
        };
        let failure = std::sync::Mutex::new(None);
        ctx.parallel_for(tasks, |task| {
            let tiles = if split_rows {
                let rows = part(row_tiles, tasks, 1, task);
                Tiles {
                    rows: rows.start * mr..(rows.end * mr).min(batch),
                    cols: 0..o,
                }
            } else {
                Tiles {
                    rows: 0..batch,
                    cols: part(o, tasks, PANEL, task),
                }
            };
            // SAFETY: the tasks' tiles are disjoint (row or column ranges
            // of a partition).
            let result = unsafe { gemm_tiles_shared(kernels, a, b, c, &epilogue, tiles) };
            if let Err(err) = result {
                *failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err);
            }
        });
        match failure
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(err) => Err(err.into()),
            None => Ok(()),
        }
    }

    /// Batch 1: the GEMV over the panels, split between threads by panels.
    fn gemv(&self, ctx: &Context, input: &[f32], residual: Option<&[f32]>, output: &mut [f32]) {
        #[derive(Clone, Copy)]
        struct Raw(*mut f32);
        // SAFETY: tasks write disjoint column ranges of `output`, which
        // outlives the parallel call.
        unsafe impl Sync for Raw {}
        impl Raw {
            fn get(&self) -> *mut f32 {
                self.0
            }
        }
        let (f, o) = (self.spec.in_features, self.spec.out_features);
        let panels = o.div_ceil(PANEL);
        let groups = panels.div_ceil(GEMV_PANELS);
        // At least ~256 KiB of weights per task.
        let tasks = task_count(ctx.threads(), panels * f * PANEL, 1 << 16).min(groups);
        let kernel = linear_tiers::table(ctx.kernels()).gemv;
        let out = Raw(output.as_mut_ptr());
        ctx.parallel_for(tasks, |task| {
            let cols = part(o, tasks, GEMV_PANELS * PANEL, task);
            if cols.is_empty() {
                return;
            }
            let first_panel = cols.start / PANEL;
            let out = out.get();
            let args = GemvArgs {
                x: input.as_ptr(),
                features: f,
                panels: self.constants[first_panel * f * PANEL..self.panels_len].as_ptr(),
                bias: if self.spec.has_bias {
                    self.constants[self.panels_len + cols.start..].as_ptr()
                } else {
                    core::ptr::null()
                },
                residual: residual.map_or(core::ptr::null(), |r| r[cols.start..].as_ptr()),
                output: out.wrapping_add(cols.start),
                cols: cols.len(),
                activation: self.spec.activation,
            };
            // SAFETY: `cols` starts on a panel boundary; the panels, padded
            // bias, residual and output hold every column of `cols` (and
            // the padded ones the kernel reads but never stores); the
            // column ranges of the tasks are disjoint; the table is of a
            // tier this CPU has.
            unsafe { kernel(&args) };
        });
    }
}

/// `(panels, constants)` lengths of a spec, refused if they overflow.
fn sizes(spec: &LinearSpec) -> Result<(usize, usize), OpError> {
    let overflow = || OpError::Spec(format!("linear layer {spec:?} overflows"));
    let panels_len =
        PackedB::packed_len(spec.in_features, spec.out_features).ok_or_else(overflow)?;
    let bias_len = if spec.has_bias {
        spec.out_features.div_ceil(PANEL) * PANEL
    } else {
        0
    };
    let constants_len = panels_len.checked_add(bias_len).ok_or_else(overflow)?;
    // The weight tensor's length too (checked once here, used unchecked).
    spec.in_features
        .checked_mul(spec.out_features)
        .ok_or_else(overflow)?;
    Ok((panels_len, constants_len))
}

/// Raw arguments of the GEMV over `cols` columns starting on a panel.
struct GemvArgs {
    /// The input vector, `features` values.
    x: *const f32,
    features: usize,
    /// The first panel of the columns (`⌈cols/16⌉` panels of `features × 16`).
    panels: *const f32,
    /// The padded bias at the first column, or null.
    bias: *const f32,
    /// The residual at the first column, or null.
    residual: *const f32,
    /// The output at the first column.
    output: *mut f32,
    cols: usize,
    activation: Activation,
}

struct LinearKernels {
    gemv: unsafe fn(&GemvArgs),
}

tier_table! {
    mod linear_tiers for LinearKernels {
        gemv: gemv_body::<V>(args: &GemvArgs);
    }
}

/// # Safety
/// As described on [`GemvArgs`]: the panels of every column of `cols`
/// (rounded up to whole panels) valid for reads, the bias (when not null)
/// for `⌈cols/16⌉·16` reads, the residual and output for `cols`; the
/// target-feature contract.
#[inline(always)]
unsafe fn gemv_body<V: SimdMath>(args: &GemvArgs) {
    // Vectors per group of GEMV_PANELS panels, and per single panel.
    // SAFETY: forwarded from the caller.
    unsafe {
        match V::LANES {
            16 => gemv_panels::<V, { GEMV_PANELS }, 1, GEMV_UNROLL>(args),
            8 => gemv_panels::<V, { 2 * GEMV_PANELS }, 2, GEMV_UNROLL>(args),
            _ => gemv_panels::<V, { 16 * GEMV_PANELS }, 16, GEMV_UNROLL>(args),
        }
    }
}

/// Walks the columns in groups of `NV` vectors (whole panels), then the
/// remaining panels one at a time (`PV` vectors: one panel).
///
/// # Safety
/// As [`gemv_body`]; `NV·LANES` and `PV·LANES` are multiples of 16.
#[inline(always)]
unsafe fn gemv_panels<V: SimdMath, const NV: usize, const PV: usize, const U: usize>(
    args: &GemvArgs,
) {
    let panel_len = args.features * PANEL;
    let group_cols = NV * V::LANES;
    let mut col = 0;
    // SAFETY: every group lies inside `cols` rounded up to whole panels.
    unsafe {
        while col + group_cols <= args.cols {
            gemv_group::<V, NV, U>(args, col, panel_len);
            col += group_cols;
        }
        while col < args.cols {
            gemv_group::<V, PV, U>(args, col, panel_len);
            col += PV * V::LANES;
        }
    }
}

/// `NV` vectors of outputs starting at column `col` (a panel boundary):
/// the dot products over all features, then the epilogue and the (masked)
/// store of the columns below `cols`.
///
/// # Safety
/// As [`gemv_body`], for the panels holding columns `col..col + NV·LANES`.
#[inline(always)]
unsafe fn gemv_group<V: SimdMath, const NV: usize, const U: usize>(
    args: &GemvArgs,
    col: usize,
    panel_len: usize,
) {
    let lanes = V::LANES;
    let features = args.features;
    // The address of vector `v` at k = 0.
    let base: [*const f32; NV] = core::array::from_fn(|v| {
        let column = col + v * lanes;
        args.panels
            .wrapping_add((column / PANEL) * panel_len + column % PANEL)
    });
    // SAFETY: `k < features` keeps every load inside its panel; the
    // epilogue touches columns below `cols` (bias: below the padded end).
    unsafe {
        let mut acc = [[V::zero(); NV]; U];
        let mut k = 0;
        while k + U <= features {
            for (u, acc) in acc.iter_mut().enumerate() {
                let x = V::splat(*args.x.add(k + u));
                for (v, acc) in acc.iter_mut().enumerate() {
                    *acc = V::load(base[v].add((k + u) * PANEL)).mul_add(x, *acc);
                }
            }
            k += U;
        }
        while k < features {
            let x = V::splat(*args.x.add(k));
            for (v, acc) in acc[0].iter_mut().enumerate() {
                *acc = V::load(base[v].add(k * PANEL)).mul_add(x, *acc);
            }
            k += 1;
        }
        for v in 0..NV {
            let column = col + v * lanes;
            if column >= args.cols {
                break;
            }
            let valid = args.cols - column;
            let mut y = acc[0][v];
            for acc in &acc[1..] {
                y = y.add(acc[v]);
            }
            if !args.bias.is_null() {
                y = y.add(V::load(args.bias.add(column)));
            }
            if !args.residual.is_null() {
                y = y.add(load_n::<V>(args.residual.add(column), valid));
            }
            store_n(activate(y, args.activation), args.output.add(column), valid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::layout::testing::*;
    use crate::reference;

    fn spec(
        f: usize,
        o: usize,
        activation: Activation,
        has_bias: bool,
        has_residual: bool,
    ) -> LinearSpec {
        LinearSpec {
            in_features: f,
            out_features: o,
            activation,
            has_bias,
            has_residual,
        }
    }

    /// The reference with the epilogue, in `f64` where it sums.
    fn expected(
        s: &LinearSpec,
        batch: usize,
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        r: Option<&[f32]>,
    ) -> Vec<f32> {
        let (f, o) = (s.in_features, s.out_features);
        let mut y = vec![0.0; batch * o];
        for n in 0..batch {
            for j in 0..o {
                let mut acc = b.map_or(0.0, |b| f64::from(b[j]));
                for k in 0..f {
                    acc += f64::from(x[n * f + k]) * f64::from(w[j * f + k]);
                }
                if let Some(r) = r {
                    acc += f64::from(r[n * o + j]);
                }
                y[n * o + j] = reference::activation_value(s.activation, acc as f32);
            }
        }
        y
    }

    #[test]
    fn matches_the_reference_for_every_shape_batch_and_epilogue() {
        for (f, o) in [
            (1, 1),
            (3, 17),
            (17, 33),
            (64, 10),
            (33, 100),
            (5, 129),
            (300, 70),
        ] {
            for batch in [1, 2, 3, 20] {
                for (activation, has_bias, has_residual) in [
                    (Activation::Identity, false, false),
                    (Activation::Relu, true, false),
                    (Activation::Sigmoid, true, true),
                    (Activation::Tanh, false, true),
                ] {
                    let s = spec(f, o, activation, has_bias, has_residual);
                    let (x, w) = (values(batch * f, 1), values(o * f, 2));
                    let b = has_bias.then(|| values(o, 3));
                    let r = has_residual.then(|| values(batch * o, 4));
                    let op = LinearOp::pack(s, &w, b.as_deref()).unwrap();
                    let want = expected(&s, batch, &x, &w, b.as_deref(), r.as_deref());
                    if !has_residual {
                        // Also the plain reference kernel.
                        let mut plain = vec![0.0; batch * o];
                        reference::linear(batch, f, o, &x, &w, b.as_deref(), &mut plain);
                        reference::activation(activation, &mut plain);
                        assert_close(&plain, &want, 1e-7, "oracles agree");
                    }
                    for kernels in tiers() {
                        let mut y = vec![f32::NAN; batch * o];
                        op.run(&Context::with(kernels, 1), batch, &x, r.as_deref(), &mut y)
                            .unwrap();
                        // Sums of f products of values in [-1, 1).
                        let tolerance = 1.5e-7 * (f as f32).sqrt().max(1.0) * 2.0;
                        assert_close(
                            &y,
                            &want,
                            tolerance,
                            &format!("{} {s:?} batch {batch}", kernels.tier()),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn thread_counts_are_bit_identical_and_constants_round_trip() {
        let (f, o) = (512, 1000);
        let w = values(o * f, 7);
        let b = values(o, 8);
        for batch in [1, 3, 40] {
            let x = values(batch * f, 9);
            let s = spec(f, o, Activation::Relu, true, false);
            let op = LinearOp::pack(s, &w, Some(&b)).unwrap();
            let copy = LinearOp::from_constants(s, Buffer::from_slice(op.constants())).unwrap();
            for kernels in tiers() {
                let mut first: Option<Vec<f32>> = None;
                for ctx in contexts(kernels) {
                    for op in [&op, &copy] {
                        let mut y = vec![0.0; batch * o];
                        op.run(&ctx, batch, &x, None, &mut y).unwrap();
                        match &first {
                            None => first = Some(y),
                            Some(y0) => assert!(
                                y == *y0,
                                "{} batch {batch} threads {}",
                                kernels.tier(),
                                ctx.threads()
                            ),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let s = spec(3, 2, Activation::Identity, true, true);
        assert_eq!(
            LinearOp::pack(s, &[0.0; 5], Some(&[0.0; 2])).unwrap_err(),
            OpError::Length {
                what: "linear weight",
                len: 5,
                expected: 6
            }
        );
        assert!(LinearOp::pack(s, &[0.0; 6], None).is_err());
        assert!(LinearOp::pack(
            LinearSpec {
                has_bias: false,
                ..s
            },
            &[0.0; 6],
            Some(&[0.0; 2])
        )
        .is_err());
        assert!(LinearOp::pack(s, &[0.0; 6], Some(&[0.0; 3])).is_err());
        assert!(LinearOp::from_constants(s, Buffer::zeroed(10)).is_err());
        assert!(LinearOp::from_constants(
            LinearSpec {
                in_features: usize::MAX,
                ..s
            },
            Buffer::zeroed(10)
        )
        .is_err());
        let op = LinearOp::pack(s, &[0.0; 6], Some(&[0.0; 2])).unwrap();
        let ctx = Context::with(crate::kernels(), 1);
        let mut y = [0.0; 4];
        assert!(op.run(&ctx, 2, &[0.0; 6], None, &mut y).is_err());
        assert!(op.run(&ctx, 2, &[0.0; 5], Some(&[0.0; 4]), &mut y).is_err());
        assert!(op.run(&ctx, 2, &[0.0; 6], Some(&[0.0; 3]), &mut y).is_err());
        assert!(op
            .run(&ctx, 2, &[0.0; 6], Some(&[0.0; 4]), &mut y[..3])
            .is_err());
        assert_eq!(op.run(&ctx, 2, &[0.0; 6], Some(&[1.0; 4]), &mut y), Ok(()));
        assert_eq!(y, [1.0; 4]);
    }
}
