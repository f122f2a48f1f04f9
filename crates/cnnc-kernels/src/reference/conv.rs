//! 2-D convolution (PyTorch `Conv2d`), the textbook way.

use crate::geometry::Conv2dGeometry;

/// 2-D convolution over NCHW data: stride, asymmetric zero padding, dilation
/// and groups (depthwise with any channel multiplier included).
///
/// - `input`: `[batch, in_channels, in_h, in_w]`.
/// - `weight`: `[out_channels, in_channels / groups, kh, kw]` (PyTorch's layout).
/// - `bias`: `[out_channels]`, or `None` for a convolution without bias.
/// - `flip_kernel`: `false` computes cross-correlation, like every deep-learning
///   framework; `true` rotates each kernel by 180° first (textbook convolution),
///   so tap `(ky, kx)` uses `weight[.., kh-1-ky, kw-1-kx]`.
/// - `output`: `[batch, out_channels, out_h, out_w]`, every element overwritten.
///
/// Output channel `oc` belongs to group `oc / (out_channels / groups)` and reads
/// only that group's `in_channels / groups` input channels. Output `(oy, ox)`
/// reads input row `oy*sh + ky*dh - top` and column `ox*sw + kx*dw - left`; taps
/// that fall into the padding are skipped (they would add an exact zero).
///
/// **Accumulation:** for each output element, in `f64`: start from the bias (or
/// 0), add `input * weight` for the group's input channels in increasing order,
/// then `ky`, then `kx`; round to `f32` once.
///
/// # Panics
///
/// If `groups` is 0 or does not divide both channel counts, or if a slice
/// length disagrees with `g` (`input_len`, `weight_len`, `out_channels`,
/// `output_len`).
pub fn conv2d(
    g: &Conv2dGeometry,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    flip_kernel: bool,
    output: &mut [f32],
) {
    assert!(
        g.groups > 0
            && g.in_channels.is_multiple_of(g.groups)
            && g.out_channels.is_multiple_of(g.groups),
        "conv2d: groups {} must divide in_channels {} and out_channels {}",
        g.groups,
        g.in_channels,
        g.out_channels
    );
    assert_eq!(input.len(), g.input_len(), "conv2d: input length");
    assert_eq!(weight.len(), g.weight_len(), "conv2d: weight length");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), g.out_channels, "conv2d: bias length");
    }
    assert_eq!(output.len(), g.output_len(), "conv2d: output length");

    let [kernel_h, kernel_w] = g.kernel;
    let [stride_h, stride_w] = g.stride;
    let [dilation_h, dilation_w] = g.dilation;
    let [pad_top, pad_left, _, _] = g.padding;
    let in_per_group = g.in_channels_per_group();
    let out_per_group = g.out_channels_per_group();

    for n in 0..g.batch {
        for oc in 0..g.out_channels {
            let group = oc / out_per_group;
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let mut acc = bias.map_or(0.0, |bias| f64::from(bias[oc]));
                    for icg in 0..in_per_group {
                        let ic = group * in_per_group + icg;
                        for ky in 0..kernel_h {
                            let Some(iy) =
                                input_coordinate(oy, stride_h, ky, dilation_h, pad_top, g.in_h)
                            else {
                                continue;
                            };
                            for kx in 0..kernel_w {
                                let Some(ix) = input_coordinate(
                                    ox, stride_w, kx, dilation_w, pad_left, g.in_w,
                                ) else {
                                    continue;
                                };
                                let (wy, wx) = if flip_kernel {
                                    (kernel_h - 1 - ky, kernel_w - 1 - kx)
                                } else {
                                    (ky, kx)
                                };
                                let x =
                                    input[((n * g.in_channels + ic) * g.in_h + iy) * g.in_w + ix];
                                let w = weight
                                    [((oc * in_per_group + icg) * kernel_h + wy) * kernel_w + wx];
                                acc += f64::from(x) * f64::from(w);
                            }
                        }
                    }
                    output[((n * g.out_channels + oc) * g.out_h + oy) * g.out_w + ox] = acc as f32;
                }
            }
        }
    }
}

/// The input coordinate read by output position `out` at kernel tap `tap`,
/// or `None` when it falls into the padding (before the start or past the end).
fn input_coordinate(
    out: usize,
    stride: usize,
    tap: usize,
    dilation: usize,
    pad_before: usize,
    in_len: usize,
) -> Option<usize> {
    (out * stride + tap * dilation)
        .checked_sub(pad_before)
        .filter(|&coordinate| coordinate < in_len)
}

#[cfg(test)]
mod tests {
    use super::conv2d;
    use crate::geometry::Conv2dGeometry;
    use crate::reference::linear;
    use crate::reference::testutil::{assert_same, SplitMix64};
    use proptest::prelude::*;

    /// A geometry with PyTorch's output size (computed here, in the test only).
    #[allow(clippy::too_many_arguments)]
    fn geometry(
        batch: usize,
        in_channels: usize,
        [in_h, in_w]: [usize; 2],
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        padding: [usize; 4],
        groups: usize,
    ) -> Conv2dGeometry {
        let out_size = |len: usize, pad: usize, k: usize, s: usize, d: usize| {
            (len + pad - d * (k - 1) - 1) / s + 1
        };
        Conv2dGeometry {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            out_h: out_size(
                in_h,
                padding[0] + padding[2],
                kernel[0],
                stride[0],
                dilation[0],
            ),
            out_w: out_size(
                in_w,
                padding[1] + padding[3],
                kernel[1],
                stride[1],
                dilation[1],
            ),
            kernel,
            stride,
            dilation,
            padding,
            groups,
        }
    }

    /// A plain geometry: one sample, stride 1, no dilation, no groups.
    fn simple(
        in_channels: usize,
        in_hw: [usize; 2],
        out_channels: usize,
        kernel: [usize; 2],
        padding: [usize; 4],
    ) -> Conv2dGeometry {
        geometry(
            1,
            in_channels,
            in_hw,
            out_channels,
            kernel,
            [1, 1],
            [1, 1],
            padding,
            1,
        )
    }

    fn run(
        g: &Conv2dGeometry,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        flip: bool,
    ) -> Vec<f32> {
        let mut output = vec![f32::NAN; g.output_len()];
        conv2d(g, input, weight, bias, flip, &mut output);
        output
    }

    fn iota(len: usize, start: f32) -> Vec<f32> {
        (0..len).map(|i| start + i as f32).collect()
    }

    #[test]
    fn cross_correlation_with_bias() {
        // 3x3 input 1..9, 2x2 kernel [1 2; 3 4]: out[0][0] = 1*1 + 2*2 + 4*3 + 5*4 = 37.
        let g = simple(1, [3, 3], 1, [2, 2], [0; 4]);
        let output = run(
            &g,
            &iota(9, 1.0),
            &[1.0, 2.0, 3.0, 4.0],
            Some(&[0.5]),
            false,
        );
        assert_same(&output, &[37.5, 47.5, 67.5, 77.5]);
    }

    #[test]
    fn flip_kernel_is_textbook_convolution() {
        // The rotated kernel is [4 3; 2 1]: out[0][0] = 1*4 + 2*3 + 4*2 + 5*1 = 23.
        let g = simple(1, [3, 3], 1, [2, 2], [0; 4]);
        let output = run(&g, &iota(9, 1.0), &[1.0, 2.0, 3.0, 4.0], None, true);
        assert_same(&output, &[23.0, 33.0, 53.0, 63.0]);
    }

    #[test]
    fn asymmetric_padding_sides_are_distinct() {
        // Input [1 2; 3 4], 2x2 ones kernel.
        let input = [1.0, 2.0, 3.0, 4.0];
        let ones = [1.0; 4];
        // "same" for an even kernel: the extra row/column at the bottom/right.
        let bottom_right = simple(1, [2, 2], 1, [2, 2], [0, 0, 1, 1]);
        assert_same(
            &run(&bottom_right, &input, &ones, None, false),
            &[10.0, 6.0, 7.0, 4.0],
        );
        let top_left = simple(1, [2, 2], 1, [2, 2], [1, 1, 0, 0]);
        assert_same(
            &run(&top_left, &input, &ones, None, false),
            &[1.0, 3.0, 4.0, 10.0],
        );
        // Top only: out is 2 rows x 1 column.
        let top = simple(1, [2, 2], 1, [2, 2], [1, 0, 0, 0]);
        assert_eq!((top.out_h, top.out_w), (2, 1));
        assert_same(&run(&top, &input, &ones, None, false), &[3.0, 10.0]);
    }

    #[test]
    fn stride_with_padding() {
        // 4x4 input 1..16, 3x3 ones, stride 2, padding 1: window sums.
        let g = geometry(1, 1, [4, 4], 1, [3, 3], [2, 2], [1, 1], [1; 4], 1);
        assert_eq!((g.out_h, g.out_w), (2, 2));
        let output = run(&g, &iota(16, 1.0), &[1.0; 9], None, false);
        assert_same(&output, &[14.0, 30.0, 57.0, 99.0]);
    }

    #[test]
    fn rectangular_stride_and_kernel() {
        // 1x7 input 0..6, kernel 1x3 [1 10 100], stride (1, 3): windows start at 0 and 3.
        let g = geometry(1, 1, [1, 7], 1, [1, 3], [1, 3], [1, 1], [0; 4], 1);
        assert_eq!(g.out_w, 2);
        let output = run(&g, &iota(7, 0.0), &[1.0, 10.0, 100.0], None, false);
        assert_same(&output, &[210.0, 543.0]);
    }

    #[test]
    fn dilation() {
        // 5x5 input 0..24, 2x2 ones with dilation 2: in[y][x] + in[y][x+2] + in[y+2][x] + in[y+2][x+2].
        let g = geometry(1, 1, [5, 5], 1, [2, 2], [1, 1], [2, 2], [0; 4], 1);
        let output = run(&g, &iota(25, 0.0), &[1.0; 4], None, false);
        let expected: Vec<f32> = (0..3)
            .flat_map(|y| (0..3).map(move |x| (4 * (5 * y + x) + 24) as f32))
            .collect();
        assert_same(&output, &expected);
        // Rectangular dilation (1, 3) on one row: taps x and x+3.
        let g = geometry(1, 1, [1, 5], 1, [1, 2], [1, 1], [1, 3], [0; 4], 1);
        let output = run(&g, &iota(5, 1.0), &[1.0, 10.0], None, false);
        assert_same(&output, &[41.0, 52.0]);
    }

    #[test]
    fn groups_read_only_their_channels() {
        // Channels hold 1, 2, 3, 4; group 0 = channels 0-1, group 1 = channels 2-3.
        let g = geometry(1, 4, [1, 1], 2, [1, 1], [1, 1], [1, 1], [0; 4], 2);
        let output = run(
            &g,
            &[1.0, 2.0, 3.0, 4.0],
            &[1.0, 10.0, 100.0, 1000.0],
            None,
            false,
        );
        assert_same(&output, &[21.0, 4300.0]);
    }

    #[test]
    fn depthwise_with_multiplier_two() {
        // 2 input channels, groups 2, 4 outputs: outputs 0-1 read channel 0, 2-3 channel 1.
        let g = geometry(1, 2, [1, 2], 4, [1, 1], [1, 1], [1, 1], [0; 4], 2);
        let output = run(
            &g,
            &[1.0, 2.0, 3.0, 4.0],
            &[1.0, 10.0, 100.0, -1.0],
            Some(&[0.0, 0.5, 0.0, 0.0]),
            false,
        );
        assert_same(&output, &[1.0, 2.0, 10.5, 20.5, 300.0, 400.0, -3.0, -4.0]);
    }

    #[test]
    fn batch_samples_are_independent() {
        // Two samples of a 1x1x2 input, kernel 1x1 weight 2, bias 1.
        let g = geometry(2, 1, [1, 2], 1, [1, 1], [1, 1], [1, 1], [0; 4], 1);
        let output = run(&g, &[1.0, 2.0, 30.0, 40.0], &[2.0], Some(&[1.0]), false);
        assert_same(&output, &[3.0, 5.0, 61.0, 81.0]);
    }

    #[test]
    fn accumulates_in_f64_and_rounds_once() {
        // 1 + 2^-24 + 2^-24 is 1 + 2^-23 exactly; summing in f32 would lose both halves.
        let tiny = f32::EPSILON / 2.0;
        let g = simple(3, [1, 1], 1, [1, 1], [0; 4]);
        let output = run(&g, &[1.0, tiny, tiny], &[1.0, 1.0, 1.0], None, false);
        assert_same(&output, &[1.0 + f32::EPSILON]);
    }

    #[test]
    fn nan_and_infinity_propagate() {
        let g = simple(1, [1, 3], 1, [1, 2], [0; 4]);
        let output = run(
            &g,
            &[1.0, f32::NAN, f32::INFINITY],
            &[1.0, 1.0],
            None,
            false,
        );
        assert!(output[0].is_nan() && output[1].is_nan());
    }

    /// Rotates every `kh x kw` kernel of a weight tensor by 180 degrees.
    fn rotate_180(weight: &[f32], kernel_area: usize) -> Vec<f32> {
        weight
            .chunks(kernel_area)
            .flat_map(|kernel| kernel.iter().rev().copied())
            .collect()
    }

    /// Random conv geometries with at least one output position, up to 3 groups.
    fn arbitrary_geometry() -> impl Strategy<Value = Conv2dGeometry> {
        (
            1usize..=2,                           // batch
            (1usize..=3, 1usize..=3, 1usize..=3), // groups, in/group, out/group
            (
                [1usize..=3, 1usize..=3],
                [1usize..=2, 1usize..=2],
                [1usize..=2, 1usize..=2],
            ),
            [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
            [0usize..=4, 0usize..=4], // extra input size beyond the window
        )
            .prop_map(
                |(batch, (groups, in_g, out_g), (kernel, stride, dilation), padding, extra)| {
                    let span = |axis: usize| dilation[axis] * (kernel[axis] - 1) + 1;
                    // The smallest input that fits one window once padded, plus some.
                    let in_h = span(0).saturating_sub(padding[0] + padding[2]).max(1) + extra[0];
                    let in_w = span(1).saturating_sub(padding[1] + padding[3]).max(1) + extra[1];
                    geometry(
                        batch,
                        groups * in_g,
                        [in_h, in_w],
                        groups * out_g,
                        kernel,
                        stride,
                        dilation,
                        padding,
                        groups,
                    )
                },
            )
    }

    fn random_operands(g: &Conv2dGeometry, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut rng = SplitMix64::new(seed);
        (
            rng.vec(g.input_len()),
            rng.vec(g.weight_len()),
            rng.vec(g.out_channels),
        )
    }

    proptest! {
        #[test]
        fn grouped_conv_is_per_group_convs_concatenated(g in arbitrary_geometry(), seed: u64) {
            let (input, weight, bias) = random_operands(&g, seed);
            let output = run(&g, &input, &weight, Some(&bias), false);
            let (in_g, out_g) = (g.in_channels_per_group(), g.out_channels_per_group());
            let plane_in = g.in_h * g.in_w;
            let plane_out = g.out_h * g.out_w;
            let weights_per_group = g.weight_len() / g.groups;
            let single = Conv2dGeometry { in_channels: in_g, out_channels: out_g, groups: 1, batch: 1, ..g };
            for n in 0..g.batch {
                for group in 0..g.groups {
                    let start = (n * g.in_channels + group * in_g) * plane_in;
                    let group_input = &input[start..start + in_g * plane_in];
                    let group_weight = &weight[group * weights_per_group..(group + 1) * weights_per_group];
                    let group_bias = &bias[group * out_g..(group + 1) * out_g];
                    let expected = run(&single, group_input, group_weight, Some(group_bias), false);
                    let start = (n * g.out_channels + group * out_g) * plane_out;
                    assert_same(&output[start..start + out_g * plane_out], &expected);
                }
            }
        }

        #[test]
        fn flip_equals_rotated_weights(g in arbitrary_geometry(), seed: u64) {
            let (input, weight, bias) = random_operands(&g, seed);
            let rotated = rotate_180(&weight, g.kernel[0] * g.kernel[1]);
            assert_same(&run(&g, &input, &weight, Some(&bias), true), &run(&g, &input, &rotated, Some(&bias), false));
            // Flipping the rotated kernel gives the original cross-correlation back.
            assert_same(&run(&g, &input, &rotated, Some(&bias), true), &run(&g, &input, &weight, Some(&bias), false));
        }

        #[test]
        fn padding_equals_explicitly_zero_padded_input(g in arbitrary_geometry(), seed: u64) {
            let (input, weight, bias) = random_operands(&g, seed);
            let [top, left, bottom, right] = g.padding;
            let (padded_h, padded_w) = (g.in_h + top + bottom, g.in_w + left + right);
            let mut padded = vec![0.0; g.batch * g.in_channels * padded_h * padded_w];
            for plane in 0..g.batch * g.in_channels {
                for y in 0..g.in_h {
                    for x in 0..g.in_w {
                        padded[(plane * padded_h + y + top) * padded_w + x + left] = input[(plane * g.in_h + y) * g.in_w + x];
                    }
                }
            }
            let unpadded = Conv2dGeometry { in_h: padded_h, in_w: padded_w, padding: [0; 4], ..g };
            assert_same(&run(&g, &input, &weight, Some(&bias), false), &run(&unpadded, &padded, &weight, Some(&bias), false));
        }

        #[test]
        fn dilation_equals_zero_inserted_kernel(g in arbitrary_geometry(), seed: u64) {
            let (input, weight, bias) = random_operands(&g, seed);
            let [kh, kw] = g.kernel;
            let [dh, dw] = g.dilation;
            let (big_h, big_w) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1);
            let mut big = vec![0.0; g.weight_len() / (kh * kw) * big_h * big_w];
            for (kernel_index, kernel) in weight.chunks(kh * kw).enumerate() {
                for ky in 0..kh {
                    for kx in 0..kw {
                        big[(kernel_index * big_h + ky * dh) * big_w + kx * dw] = kernel[ky * kw + kx];
                    }
                }
            }
            let undilated = Conv2dGeometry { kernel: [big_h, big_w], dilation: [1, 1], ..g };
            assert_same(&run(&g, &input, &weight, Some(&bias), false), &run(&undilated, &input, &big, Some(&bias), false));
        }

        #[test]
        fn batch_is_samples_one_after_another(g in arbitrary_geometry(), seed: u64) {
            let (input, weight, bias) = random_operands(&g, seed);
            let output = run(&g, &input, &weight, Some(&bias), false);
            let one = Conv2dGeometry { batch: 1, ..g };
            for (sample_in, sample_out) in input.chunks(one.input_len()).zip(output.chunks(one.output_len())) {
                assert_same(sample_out, &run(&one, sample_in, &weight, Some(&bias), false));
            }
        }

        #[test]
        fn pointwise_conv_is_linear_per_pixel(
            batch in 1usize..=3, in_channels in 1usize..=9, out_channels in 1usize..=9,
            h in 1usize..=4, w in 1usize..=4, seed: u64,
        ) {
            let g = geometry(batch, in_channels, [h, w], out_channels, [1, 1], [1, 1], [1, 1], [0; 4], 1);
            let (input, weight, bias) = random_operands(&g, seed);
            let output = run(&g, &input, &weight, Some(&bias), false);
            // Gather every pixel's channel vector into rows [pixels, in_channels].
            let pixels = batch * h * w;
            let mut rows = vec![0.0; pixels * in_channels];
            for n in 0..batch {
                for c in 0..in_channels {
                    for p in 0..h * w {
                        rows[(n * h * w + p) * in_channels + c] = input[(n * in_channels + c) * h * w + p];
                    }
                }
            }
            let mut linear_out = vec![0.0; pixels * out_channels];
            linear(pixels, in_channels, out_channels, &rows, &weight, Some(&bias), &mut linear_out);
            for n in 0..batch {
                for oc in 0..out_channels {
                    for p in 0..h * w {
                        let conv_value = output[(n * out_channels + oc) * h * w + p];
                        let linear_value = linear_out[(n * h * w + p) * out_channels + oc];
                        prop_assert_eq!(conv_value.to_bits(), linear_value.to_bits());
                    }
                }
            }
        }
    }
}
