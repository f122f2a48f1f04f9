//! Concatenation along one dimension: strided row copies.
//!
//! Every part is seen per sample as `[outer, inner_k]`: `outer` is the
//! product of the dimensions before the concatenated one (the same for every
//! part), `inner_k` the product of the concatenated dimension and those
//! after it. The output row `o` is the parts' rows `o` one after another.
//! Over NHWC samples `[H, W, C_k]`:
//!
//! | along | `outer` | `inner_k` |
//! |---|---|---|
//! | channels | `H·W` | `C_k` (a strided copy per pixel) |
//! | width | `H` | `W_k·C` |
//! | height | `1` | `H_k·W·C` (whole blocks) |
//! | features `[F_k]` | `1` | `F_k` |
//!
//! Only copies (no arithmetic), so the result is exact on every tier; rows
//! are split between threads.

use super::elementwise::total;
use crate::ops::{check_len, Context, OpError};
use crate::threads::{part, task_count, Disjoint};

/// Concatenation of parts `[outer, inner_k]` into `[outer, Σ inner_k]`
/// (per sample; the parts' `inner_k` are given to `run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConcatSpec {
    /// Product of the per-sample dimensions before the concatenated one.
    pub outer: usize,
}

/// Concatenation: see [`ConcatSpec`].
#[derive(Clone, Debug)]
pub struct ConcatOp {
    spec: ConcatSpec,
}

impl ConcatOp {
    /// The operator for `spec` (every spec is valid).
    pub fn new(spec: ConcatSpec) -> Result<ConcatOp, OpError> {
        Ok(ConcatOp { spec })
    }

    /// The spec.
    pub fn spec(&self) -> &ConcatSpec {
        &self.spec
    }

    /// Floats of scratch `run` needs: none.
    pub fn scratch_len(&self, _batch: usize) -> usize {
        0
    }

    /// Concatenates `batch` samples of `parts`, each given as `(data,
    /// inner_k)` with `data` of `batch · outer · inner_k` elements, into
    /// `output` (`batch · outer · Σ inner_k`).
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        parts: &[(&[f32], usize)],
        output: &mut [f32],
    ) -> Result<(), OpError> {
        let rows = total(batch, self.spec.outer)?;
        let mut row_len = 0usize;
        for &(data, inner) in parts {
            check_len("concat part", data.len(), total(rows, inner)?)?;
            row_len = row_len
                .checked_add(inner)
                .ok_or_else(|| OpError::Spec("concat row length overflows".to_owned()))?;
        }
        check_len("concat output", output.len(), total(rows, row_len)?)?;
        if output.is_empty() {
            return Ok(());
        }
        let tasks = task_count(ctx.threads(), output.len(), 1 << 15).min(rows);
        let output = Disjoint::new(output);
        ctx.parallel_for(tasks, |task| {
            let range = part(rows, tasks, 1, task);
            // SAFETY: the output rows `range` belong to this task only.
            let out = unsafe { output.part(range.start * row_len..range.end * row_len) };
            let mut destination = out.chunks_exact_mut(row_len);
            for row in range {
                let Some(out_row) = destination.next() else {
                    return;
                };
                let mut at = 0;
                for &(data, inner) in parts {
                    out_row[at..at + inner].copy_from_slice(&data[row * inner..(row + 1) * inner]);
                    at += inner;
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::layout::testing::*;
    use crate::reference;

    #[test]
    fn every_axis_of_nhwc_matches_the_reference_in_nchw() {
        let (h, w) = (3, 5);
        let channels = [1, 3, 17, 33];
        for batch in [1, 3] {
            let nchw: Vec<Vec<f32>> = channels
                .iter()
                .enumerate()
                .map(|(k, &c)| values(batch * c * h * w, k as u64))
                .collect();
            let nhwc: Vec<Vec<f32>> = nchw
                .iter()
                .zip(channels)
                .map(|(x, c)| to_nhwc(batch, [c, h, w], x))
                .collect();
            let total_c: usize = channels.iter().sum();
            // Along channels: NCHW outer = N, inner = C_k·H·W; NHWC outer = H·W, inner = C_k.
            let parts: Vec<(&[f32], usize)> = nchw
                .iter()
                .zip(channels)
                .map(|(x, c)| (&x[..], c * h * w))
                .collect();
            let mut expected = vec![0.0; batch * total_c * h * w];
            reference::concat(&parts, batch, &mut expected);
            for ctx in contexts(crate::kernels()) {
                let parts: Vec<(&[f32], usize)> = nhwc
                    .iter()
                    .zip(channels)
                    .map(|(x, c)| (&x[..], c))
                    .collect();
                let mut output = vec![f32::NAN; expected.len()];
                ConcatOp::new(ConcatSpec { outer: h * w })
                    .unwrap()
                    .run(&ctx, batch, &parts, &mut output)
                    .unwrap();
                assert_eq!(to_nchw(batch, [total_c, h, w], &output), expected);
            }
        }
        // Along height and width, three parts of 4 channels.
        let c = 4;
        let heights = [1, 2, 3];
        for batch in [1, 3] {
            let nchw: Vec<Vec<f32>> = heights
                .iter()
                .map(|&hk| values(batch * c * hk * w, hk as u64))
                .collect();
            let parts: Vec<(&[f32], usize)> = nchw
                .iter()
                .zip(heights)
                .map(|(x, hk)| (&x[..], hk * w))
                .collect();
            let total_h: usize = heights.iter().sum();
            let mut expected = vec![0.0; batch * c * total_h * w];
            reference::concat(&parts, batch * c, &mut expected);
            let nhwc: Vec<Vec<f32>> = nchw
                .iter()
                .zip(heights)
                .map(|(x, hk)| to_nhwc(batch, [c, hk, w], x))
                .collect();
            let parts: Vec<(&[f32], usize)> = nhwc
                .iter()
                .zip(heights)
                .map(|(x, hk)| (&x[..], hk * w * c))
                .collect();
            let mut output = vec![f32::NAN; expected.len()];
            ConcatOp::new(ConcatSpec { outer: 1 })
                .unwrap()
                .run(
                    &Context::with(crate::kernels(), 2),
                    batch,
                    &parts,
                    &mut output,
                )
                .unwrap();
            assert_eq!(to_nchw(batch, [c, total_h, w], &output), expected, "height");

            // Width: parts [h, W_k, c] with widths 1, 2, 3.
            let widths = heights;
            let nchw: Vec<Vec<f32>> = widths
                .iter()
                .map(|&wk| values(batch * c * h * wk, 9 + wk as u64))
                .collect();
            let parts: Vec<(&[f32], usize)> = nchw
                .iter()
                .zip(widths)
                .map(|(x, wk)| (&x[..], wk))
                .collect();
            let total_w: usize = widths.iter().sum();
            let mut expected = vec![0.0; batch * c * h * total_w];
            reference::concat(&parts, batch * c * h, &mut expected);
            let nhwc: Vec<Vec<f32>> = nchw
                .iter()
                .zip(widths)
                .map(|(x, wk)| to_nhwc(batch, [c, h, wk], x))
                .collect();
            let parts: Vec<(&[f32], usize)> = nhwc
                .iter()
                .zip(widths)
                .map(|(x, wk)| (&x[..], wk * c))
                .collect();
            let mut output = vec![f32::NAN; expected.len()];
            ConcatOp::new(ConcatSpec { outer: h })
                .unwrap()
                .run(
                    &Context::with(crate::kernels(), 3),
                    batch,
                    &parts,
                    &mut output,
                )
                .unwrap();
            assert_eq!(to_nchw(batch, [c, h, total_w], &output), expected, "width");
        }
    }

    #[test]
    fn features_empty_parts_and_errors() {
        let ctx = Context::with(crate::kernels(), 1);
        let op = ConcatOp::new(ConcatSpec { outer: 1 }).unwrap();
        let mut output = [0.0; 6];
        op.run(
            &ctx,
            2,
            &[(&[1.0, 2.0], 1), (&[], 0), (&[3.0, 4.0, 5.0, 6.0], 2)],
            &mut output,
        )
        .unwrap();
        assert_eq!(output, [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
        assert_eq!(
            op.run(&ctx, 2, &[(&[1.0], 1)], &mut [0.0; 2]),
            Err(OpError::Length {
                what: "concat part",
                len: 1,
                expected: 2
            })
        );
        assert!(op.run(&ctx, 1, &[(&[1.0], 1)], &mut [0.0; 2]).is_err());
        assert!(op
            .run(&ctx, 1, &[(&[], usize::MAX), (&[], usize::MAX)], &mut [])
            .is_err());
        assert_eq!(op.run(&ctx, 0, &[(&[], 3)], &mut []), Ok(()));
    }
}
