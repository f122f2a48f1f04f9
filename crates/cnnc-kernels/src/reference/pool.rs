//! Pooling: max (`MaxPool2d`), average (`AvgPool2d`) and adaptive average
//! (`AdaptiveAvgPool2d`), with PyTorch's window and divisor rules.

use crate::geometry::Pool2dGeometry;

/// 2-D max pooling over NCHW data, as PyTorch's `MaxPool2d`.
///
/// Window `(oy, ox)` covers rows `oy*sh - ph + ky*dh` for `ky` in `0..kh` (and
/// the same for columns). Positions in the padding count as `-inf`, so they
/// never win; positions past the bottom/right edge (the last window of
/// `ceil_mode`) are clipped away the same way. A window whose every position is
/// `-inf` gives `-inf`. **NaN propagates**: a window that contains a NaN gives
/// NaN, as in PyTorch.
///
/// Scans the window in `(ky, kx)` order; the result is exact (no arithmetic).
///
/// # Panics
///
/// If `input.len() != g.input_len()` or `output.len() != g.output_len()`.
pub fn max_pool2d(g: &Pool2dGeometry, input: &[f32], output: &mut [f32]) {
    assert_eq!(input.len(), g.input_len(), "max_pool2d: input length");
    assert_eq!(output.len(), g.output_len(), "max_pool2d: output length");

    let [kernel_h, kernel_w] = g.kernel;
    let [stride_h, stride_w] = g.stride;
    let [dilation_h, dilation_w] = g.dilation;
    let [pad_h, pad_w] = g.padding;

    for plane in 0..g.batch * g.channels {
        let plane_input = &input[plane * g.in_h * g.in_w..(plane + 1) * g.in_h * g.in_w];
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let mut best = f32::NEG_INFINITY;
                for ky in 0..kernel_h {
                    let Some(iy) = (oy * stride_h + ky * dilation_h)
                        .checked_sub(pad_h)
                        .filter(|&iy| iy < g.in_h)
                    else {
                        continue;
                    };
                    for kx in 0..kernel_w {
                        let Some(ix) = (ox * stride_w + kx * dilation_w)
                            .checked_sub(pad_w)
                            .filter(|&ix| ix < g.in_w)
                        else {
                            continue;
                        };
                        let value = plane_input[iy * g.in_w + ix];
                        // Once `best` is NaN, no comparison replaces it.
                        if value > best || value.is_nan() {
                            best = value;
                        }
                    }
                }
                output[(plane * g.out_h + oy) * g.out_w + ox] = best;
            }
        }
    }
}

/// 2-D average pooling over NCHW data, as PyTorch's `AvgPool2d` (no divisor
/// override).
///
/// For output row `oy` (columns alike), with `H = in_h`, `p = ph`, `k = kh`:
///
/// ```text
/// start = oy*sh - p;   end = min(start + k, H + p);   pool_h = end - start
/// then clip to the input: start = max(start, 0);   end = min(end, H)
/// ```
///
/// The sum runs over the clipped window. The divisor is `pool_h * pool_w`
/// (the window clipped to the *padded* input, so padding counts but a
/// `ceil_mode` window running past the padding does not) when
/// `count_include_pad`, and the clipped window's size otherwise. This is
/// PyTorch's rule (`aten/src/ATen/native/cpu/AvgPoolKernel.cpp`), checked
/// against `torch.nn.functional.avg_pool2d`. A window left empty by clipping
/// gives 0, as in PyTorch.
///
/// **Accumulation:** in `f64`, rows then columns, divided in `f64` and
/// rounded to `f32` once.
///
/// # Panics
///
/// If `g.dilation` is not `[1, 1]` (average pooling has no dilation), or if
/// `input.len() != g.input_len()` or `output.len() != g.output_len()`.
pub fn avg_pool2d(g: &Pool2dGeometry, count_include_pad: bool, input: &[f32], output: &mut [f32]) {
    assert_eq!(
        g.dilation,
        [1, 1],
        "avg_pool2d: average pooling has no dilation"
    );
    assert_eq!(input.len(), g.input_len(), "avg_pool2d: input length");
    assert_eq!(output.len(), g.output_len(), "avg_pool2d: output length");

    for plane in 0..g.batch * g.channels {
        let plane_input = &input[plane * g.in_h * g.in_w..(plane + 1) * g.in_h * g.in_w];
        for oy in 0..g.out_h {
            let rows = AvgWindow::new(oy, g.stride[0], g.kernel[0], g.padding[0], g.in_h);
            for ox in 0..g.out_w {
                let columns = AvgWindow::new(ox, g.stride[1], g.kernel[1], g.padding[1], g.in_w);
                let mut sum = 0.0f64;
                for iy in rows.start..rows.end {
                    for ix in columns.start..columns.end {
                        sum += f64::from(plane_input[iy * g.in_w + ix]);
                    }
                }
                let clipped = (rows.end - rows.start) * (columns.end - columns.start);
                let value = if clipped == 0 {
                    0.0
                } else if count_include_pad {
                    sum / (rows.padded_len * columns.padded_len) as f64
                } else {
                    sum / clipped as f64
                };
                output[(plane * g.out_h + oy) * g.out_w + ox] = value as f32;
            }
        }
    }
}

/// One axis of an average-pooling window: the clipped input range and the
/// length of the window clipped to the padded input only.
struct AvgWindow {
    start: usize,
    end: usize,
    padded_len: usize,
}

impl AvgWindow {
    fn new(out: usize, stride: usize, kernel: usize, pad: usize, in_len: usize) -> Self {
        // Coordinates shifted by `pad`, so that the padded input is `0..in_len + 2*pad`
        // and the arithmetic stays unsigned.
        let shifted_start = out * stride;
        let shifted_end = (shifted_start + kernel).min(in_len + 2 * pad);
        let padded_len = shifted_end.saturating_sub(shifted_start);
        let start = shifted_start.saturating_sub(pad).min(in_len);
        let end = shifted_end.saturating_sub(pad).min(in_len).max(start);
        Self {
            start,
            end,
            padded_len,
        }
    }
}

/// 2-D adaptive average pooling over NCHW data, as PyTorch's
/// `AdaptiveAvgPool2d`.
///
/// `input_shape` is `[batch, channels, in_h, in_w]`; `output_size` is
/// `[out_h, out_w]` (larger than the input is allowed: windows then overlap
/// and repeat). Output row `i` averages input rows
/// `floor(i*in_h/out_h) .. ceil((i+1)*in_h/out_h)` (end exclusive), and the
/// same for columns; the divisor is the window's size.
///
/// **Accumulation:** in `f64`, rows then columns, divided in `f64` and
/// rounded to `f32` once.
///
/// # Panics
///
/// If `out_h` or `out_w` is 0 while the input is not empty, or if a slice
/// length disagrees with the shapes.
pub fn adaptive_avg_pool2d(
    input_shape: [usize; 4],
    output_size: [usize; 2],
    input: &[f32],
    output: &mut [f32],
) {
    let [batch, channels, in_h, in_w] = input_shape;
    let [out_h, out_w] = output_size;
    assert_eq!(
        input.len(),
        batch * channels * in_h * in_w,
        "adaptive_avg_pool2d: input length"
    );
    assert_eq!(
        output.len(),
        batch * channels * out_h * out_w,
        "adaptive_avg_pool2d: output length"
    );

    for plane in 0..batch * channels {
        let plane_input = &input[plane * in_h * in_w..(plane + 1) * in_h * in_w];
        for oy in 0..out_h {
            let (row_start, row_end) = adaptive_window(oy, in_h, out_h);
            for ox in 0..out_w {
                let (column_start, column_end) = adaptive_window(ox, in_w, out_w);
                let mut sum = 0.0f64;
                for iy in row_start..row_end {
                    for ix in column_start..column_end {
                        sum += f64::from(plane_input[iy * in_w + ix]);
                    }
                }
                let count = (row_end - row_start) * (column_end - column_start);
                output[(plane * out_h + oy) * out_w + ox] = (sum / count as f64) as f32;
            }
        }
    }
}

/// Input range `[floor(i*len/out), ceil((i+1)*len/out))` of adaptive window `i`.
fn adaptive_window(i: usize, in_len: usize, out_len: usize) -> (usize, usize) {
    let start = i * in_len / out_len;
    let end = ((i + 1) * in_len).div_ceil(out_len);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::{adaptive_avg_pool2d, adaptive_window, avg_pool2d, max_pool2d};
    use crate::geometry::Pool2dGeometry;
    use crate::reference::testutil::{assert_same, SplitMix64};
    use proptest::prelude::*;

    /// A geometry for one single-channel plane; output sizes given by the test.
    fn plane(
        in_hw: [usize; 2],
        out_hw: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Pool2dGeometry {
        Pool2dGeometry {
            batch: 1,
            channels: 1,
            in_h: in_hw[0],
            in_w: in_hw[1],
            out_h: out_hw[0],
            out_w: out_hw[1],
            kernel,
            stride,
            dilation: [1, 1],
            padding,
        }
    }

    fn max(g: &Pool2dGeometry, input: &[f32]) -> Vec<f32> {
        let mut output = vec![f32::NAN; g.output_len()];
        max_pool2d(g, input, &mut output);
        output
    }

    fn avg(g: &Pool2dGeometry, count_include_pad: bool, input: &[f32]) -> Vec<f32> {
        let mut output = vec![f32::NAN; g.output_len()];
        avg_pool2d(g, count_include_pad, input, &mut output);
        output
    }

    fn adaptive(shape: [usize; 4], out: [usize; 2], input: &[f32]) -> Vec<f32> {
        let mut output = vec![f32::NAN; shape[0] * shape[1] * out[0] * out[1]];
        adaptive_avg_pool2d(shape, out, input, &mut output);
        output
    }

    fn iota(len: usize, start: f32) -> Vec<f32> {
        (0..len).map(|i| start + i as f32).collect()
    }

    #[test]
    fn max_pool_basic_windows_and_channels() {
        // Two channels, 2x4 each, 2x2 windows.
        let g = Pool2dGeometry {
            channels: 2,
            ..plane([2, 4], [1, 2], [2, 2], [2, 2], [0, 0])
        };
        let input = [
            1.0, 5.0, 2.0, 0.0, 3.0, 4.0, 8.0, 7.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0,
        ];
        assert_same(&max(&g, &input), &[5.0, 8.0, -1.0, -3.0]);
    }

    #[test]
    fn max_pool_pads_with_negative_infinity() {
        // All-negative 2x2 input, 2x2 windows, stride 2, padding 1: each window sees one value.
        let g = plane([2, 2], [2, 2], [2, 2], [2, 2], [1, 1]);
        let input = [-1.0, -2.0, -3.0, -4.0];
        assert_same(&max(&g, &input), &input);
    }

    #[test]
    fn max_pool_ceil_mode_clips_the_last_window() {
        // 1x5 row, window 2, stride 2, ceil_mode: out 3, the last window holds only x[4].
        let g = plane([1, 5], [1, 3], [1, 2], [1, 2], [0, 0]);
        assert_same(&max(&g, &[1.0, 0.0, -1.0, -2.0, -9.0]), &[1.0, -1.0, -9.0]);
    }

    #[test]
    fn max_pool_dilation() {
        // 1x7 row 0..6 reversed in the middle, window 3 dilated by 2: x[i], x[i+2], x[i+4].
        let mut g = plane([1, 7], [1, 3], [1, 3], [1, 1], [0, 0]);
        g.dilation = [1, 2];
        let input = [0.0, 9.0, 4.0, -1.0, 1.0, 3.0, 2.0];
        assert_same(&max(&g, &input), &[4.0, 9.0, 4.0]);
    }

    #[test]
    fn max_pool_propagates_nan() {
        let g = plane([1, 4], [1, 2], [1, 2], [1, 2], [0, 0]);
        // NaN first or last in the window: both give NaN.
        let output = max(&g, &[f32::NAN, 1.0, 1.0, f32::NAN]);
        assert!(output[0].is_nan() && output[1].is_nan());
        // -inf everywhere stays -inf.
        assert_same(&max(&g, &[f32::NEG_INFINITY; 4]), &[f32::NEG_INFINITY; 2]);
    }

    #[test]
    fn avg_pool_basic_and_batch() {
        // Two samples of a 2x2 plane, one 2x2 window each.
        let g = Pool2dGeometry {
            batch: 2,
            ..plane([2, 2], [1, 1], [2, 2], [2, 2], [0, 0])
        };
        assert_same(
            &avg(&g, true, &[1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 50.0]),
            &[2.5, 27.5],
        );
    }

    #[test]
    fn avg_pool_count_include_pad_both_ways() {
        // 3x3 ones, window 3, stride 2, padding 1: out 2x2, each window covers a 2x2 corner.
        let g = plane([3, 3], [2, 2], [3, 3], [2, 2], [1, 1]);
        let ones = [1.0; 9];
        assert_same(&avg(&g, true, &ones), &[4.0 / 9.0; 4]);
        assert_same(&avg(&g, false, &ones), &[1.0; 4]);
    }

    #[test]
    fn avg_pool_ceil_mode_window_past_the_padding() {
        // PyTorch: avg_pool2d(ones(6, 6), 3, stride=2, padding=1, ceil_mode=True) is 4x4 with
        // corners 4/9 (top-left), 2/6, 2/6 and 1/4 (bottom-right): the last window is clipped
        // to the padded input (2 rows) for its divisor and to the input (1 row) for its sum.
        let g = plane([6, 6], [4, 4], [3, 3], [2, 2], [1, 1]);
        let ones = [1.0; 36];
        let output = avg(&g, true, &ones);
        let third = 1.0 / 3.0;
        #[rustfmt::skip]
        let expected = [
            4.0 / 9.0, 6.0 / 9.0, 6.0 / 9.0, third,
            6.0 / 9.0, 1.0,       1.0,       0.5,
            6.0 / 9.0, 1.0,       1.0,       0.5,
            third,     0.5,       0.5,       0.25,
        ];
        // Quotients rounded from f64 equal the correctly rounded f32 quotients.
        assert_same(&output, &expected);
        // Without count_include_pad every window of ones averages to 1.
        assert_same(&avg(&g, false, &ones), &[1.0; 16]);
    }

    #[test]
    fn avg_pool_ceil_mode_without_padding_divides_by_clipped_size() {
        // 1x6 row 0..5, window 4, stride 3, ceil_mode: windows [0,4) and [3,6) (clipped).
        let g = plane([1, 6], [1, 2], [1, 4], [1, 3], [0, 0]);
        let input = iota(6, 0.0);
        assert_same(&avg(&g, true, &input), &[1.5, 4.0]);
        assert_same(&avg(&g, false, &input), &[1.5, 4.0]);
    }

    #[test]
    fn avg_pool_rectangular() {
        // 2x4 plane 0..7, window (2, 1), stride (2, 2), padding (0, 0): column pairs.
        let g = plane([2, 4], [1, 2], [2, 1], [2, 2], [0, 0]);
        assert_same(&avg(&g, true, &iota(8, 0.0)), &[2.0, 4.0]);
    }

    #[test]
    fn adaptive_windows_follow_floor_and_ceil() {
        // 5 -> 3: [0,2), [1,4), [3,5).
        assert_eq!(adaptive_window(0, 5, 3), (0, 2));
        assert_eq!(adaptive_window(1, 5, 3), (1, 4));
        assert_eq!(adaptive_window(2, 5, 3), (3, 5));
        // 2 -> 3 (upsampling): [0,1), [0,2), [1,2).
        assert_eq!(adaptive_window(0, 2, 3), (0, 1));
        assert_eq!(adaptive_window(1, 2, 3), (0, 2));
        assert_eq!(adaptive_window(2, 2, 3), (1, 2));
    }

    #[test]
    fn adaptive_non_divisible() {
        // 1x5 row 0..4 -> 1x3: means of [0,1], [1,2,3], [3,4].
        let output = adaptive([1, 1, 1, 5], [1, 3], &iota(5, 0.0));
        assert_same(&output, &[0.5, 2.0, 3.5]);
    }

    #[test]
    fn adaptive_to_one_is_global_mean() {
        // Two samples x two channels of 2x3.
        let input = iota(24, 0.0);
        let output = adaptive([2, 2, 2, 3], [1, 1], &input);
        assert_same(&output, &[2.5, 8.5, 14.5, 20.5]);
    }

    #[test]
    fn adaptive_larger_than_input() {
        // 2x2 [1 2; 3 4] -> 3x3: rows/columns [0,1), [0,2), [1,2).
        let output = adaptive([1, 1, 2, 2], [3, 3], &[1.0, 2.0, 3.0, 4.0]);
        assert_same(&output, &[1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0]);
    }

    proptest! {
        #[test]
        fn adaptive_with_divisible_sizes_is_avg_pool(
            batch in 1usize..=2, channels in 1usize..=3,
            out_h in 1usize..=4, out_w in 1usize..=4, kh in 1usize..=3, kw in 1usize..=3, seed: u64,
        ) {
            let (in_h, in_w) = (out_h * kh, out_w * kw);
            let input = SplitMix64::new(seed).vec(batch * channels * in_h * in_w);
            let g = Pool2dGeometry { batch, channels, ..plane([in_h, in_w], [out_h, out_w], [kh, kw], [kh, kw], [0, 0]) };
            assert_same(&adaptive([batch, channels, in_h, in_w], [out_h, out_w], &input), &avg(&g, true, &input));
        }

        #[test]
        fn max_pool_padding_never_wins(
            h in 1usize..=6, w in 1usize..=6, k in 2usize..=3, seed: u64,
        ) {
            // Values all below -10: a zero-padded max pool would return 0 at the borders.
            let input: Vec<f32> = SplitMix64::new(seed).vec(h * w).iter().map(|v| v - 11.0).collect();
            let pad = k / 2;
            let out = |len: usize| (len + 2 * pad - k) + 1;
            let g = plane([h, w], [out(h), out(w)], [k, k], [1, 1], [pad, pad]);
            for value in max(&g, &input) {
                prop_assert!(value < -10.0 && input.contains(&value));
            }
        }
    }
}
