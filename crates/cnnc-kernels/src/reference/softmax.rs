//! Softmax along one dimension (PyTorch `Softmax(dim)`).

/// Softmax along one dimension of a tensor seen as `[outer, dim_len, inner]`:
/// `outer` is the product of the dimensions before `dim` (the batch included),
/// `inner` the product of those after it. For `[N, F]` with `dim = 1` that is
/// `(N, F, 1)`; for `[N, C, H, W]` with `dim = 1` it is `(N, C, H*W)`.
///
/// **Arithmetic (numerically stable):** for each of the `outer * inner`
/// slices, in `f64`: `m = max(x)`, `e_i = exp(x_i - m)`, `s = Σ e_i` (in
/// increasing `i`), `y_i = e_i / s`, rounded to `f32` once. Subtracting the
/// maximum keeps every `exp` at most 1, so large inputs (`1e4`) neither
/// overflow nor produce NaN. A slice that contains a NaN, or whose maximum is
/// `+inf`, or that is all `-inf`, gives NaN throughout, as PyTorch's does; a
/// `-inf` element next to finite ones gives 0.
///
/// # Panics
///
/// If `input` or `output` is not `outer * dim_len * inner` long.
pub fn softmax(outer: usize, dim_len: usize, inner: usize, input: &[f32], output: &mut [f32]) {
    assert_eq!(
        input.len(),
        outer * dim_len * inner,
        "softmax: input length"
    );
    assert_eq!(
        output.len(),
        outer * dim_len * inner,
        "softmax: output length"
    );

    let index = |o: usize, d: usize, i: usize| (o * dim_len + d) * inner + i;
    for o in 0..outer {
        for i in 0..inner {
            // NaN-propagating maximum: one NaN makes the whole slice NaN below.
            let mut max = f64::NEG_INFINITY;
            for d in 0..dim_len {
                let x = f64::from(input[index(o, d, i)]);
                if x > max || x.is_nan() {
                    max = x;
                }
            }
            let mut sum = 0.0f64;
            for d in 0..dim_len {
                sum += (f64::from(input[index(o, d, i)]) - max).exp();
            }
            for d in 0..dim_len {
                let e = (f64::from(input[index(o, d, i)]) - max).exp();
                output[index(o, d, i)] = (e / sum) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::softmax;
    use crate::reference::testutil::assert_same;

    fn run(outer: usize, dim_len: usize, inner: usize, input: &[f32]) -> Vec<f32> {
        let mut output = vec![f32::NAN; input.len()];
        softmax(outer, dim_len, inner, input, &mut output);
        output
    }

    /// softmax([0, 1, 2]) and softmax([0, 1]), correctly rounded (computed with numpy in float64).
    const SOFTMAX_012: [f32; 3] = [0.09003057, 0.24472848, 0.66524094];
    const SOFTMAX_01: [f32; 2] = [0.26894143, 0.7310586];

    #[test]
    fn flat_features_per_sample() {
        // Batch 2 of 3 features, dim = 1.
        let output = run(2, 3, 1, &[0.0, 1.0, 2.0, 5.0, 5.0, 5.0]);
        let mut expected = SOFTMAX_012.to_vec();
        expected.extend([1.0 / 3.0; 3]);
        assert_same(&output, &expected);
    }

    #[test]
    fn along_channels_of_nchw() {
        // [1, 2, 1, 2] with dim = 1: pairs (x[c=0][p], x[c=1][p]) for each pixel p.
        let output = run(1, 2, 2, &[0.0, 3.0, 1.0, 3.0]);
        assert_same(&output, &[SOFTMAX_01[0], 0.5, SOFTMAX_01[1], 0.5]);
    }

    #[test]
    fn large_values_are_stable() {
        let output = run(1, 3, 1, &[10_000.0, 10_001.0, 10_002.0]);
        assert_same(&output, &SOFTMAX_012);
        let output = run(1, 2, 1, &[-1e30, 1e30]);
        assert_same(&output, &[0.0, 1.0]);
    }

    #[test]
    fn infinities_and_nan() {
        // -inf next to finite values is 0.
        assert_same(&run(1, 2, 1, &[f32::NEG_INFINITY, 3.0]), &[0.0, 1.0]);
        // All -inf, a +inf maximum, or a NaN: NaN throughout, as in PyTorch.
        for input in [
            [f32::NEG_INFINITY; 2],
            [f32::INFINITY, 0.0],
            [1.0, f32::NAN],
            [f32::NAN, 1.0],
        ] {
            assert!(run(1, 2, 1, &input).iter().all(|y| y.is_nan()), "{input:?}");
        }
    }

    #[test]
    fn each_slice_sums_to_one() {
        let input: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        // [2, 3, 4] along the middle dimension.
        let output = run(2, 3, 4, &input);
        for o in 0..2 {
            for i in 0..4 {
                let sum: f64 = (0..3).map(|d| f64::from(output[(o * 3 + d) * 4 + i])).sum();
                assert!((sum - 1.0).abs() < 2e-7, "slice ({o}, {i}) sums to {sum}");
            }
        }
    }
}
