//! Concatenation along one dimension (PyTorch `torch.cat`).

/// Concatenates tensors along one dimension.
///
/// Every tensor is seen as `[outer, inner_k]`: `outer` is the product of the
/// dimensions before the concatenation dimension (the batch included, the same
/// for every part), and `inner_k` the product of the concatenated dimension and
/// those after it, for part `k`. Each entry of `parts` is `(data, inner_k)`.
/// For NCHW along channels, `outer = N` and `inner_k = C_k * H * W`; along
/// height, `outer = N * C` and `inner_k = H_k * W`.
///
/// The output is `[outer, Σ inner_k]`: for each outer index, the parts' rows
/// one after another, in order. Only copies; no arithmetic.
///
/// # Panics
///
/// If a part is not `outer * inner_k` long, or if `output` is not
/// `outer * Σ inner_k` long.
pub fn concat(parts: &[(&[f32], usize)], outer: usize, output: &mut [f32]) {
    let total_inner: usize = parts.iter().map(|&(_, inner)| inner).sum();
    for (index, &(data, inner)) in parts.iter().enumerate() {
        assert_eq!(data.len(), outer * inner, "concat: part {index} length");
    }
    assert_eq!(output.len(), outer * total_inner, "concat: output length");

    let mut destination = 0;
    for o in 0..outer {
        for &(data, inner) in parts {
            output[destination..destination + inner]
                .copy_from_slice(&data[o * inner..(o + 1) * inner]);
            destination += inner;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::concat;
    use crate::reference::testutil::assert_same;

    #[test]
    fn along_channels_per_sample() {
        // Batch 2: a is [2, 1, 1, 2], b is [2, 2, 1, 2] -> [2, 3, 1, 2].
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [10.0, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0];
        let mut output = [f32::NAN; 12];
        concat(&[(&a, 2), (&b, 4)], 2, &mut output);
        assert_same(
            &output,
            &[
                1.0, 2.0, 10.0, 11.0, 12.0, 13.0, 3.0, 4.0, 20.0, 21.0, 22.0, 23.0,
            ],
        );
    }

    #[test]
    fn along_height_and_three_parts() {
        // [1, 2, H_k, 1] with heights 1, 2, 1 along dim 2: outer = N * C = 2.
        let a = [1.0, 2.0];
        let b = [10.0, 11.0, 20.0, 21.0];
        let c = [100.0, 200.0];
        let mut output = [f32::NAN; 8];
        concat(&[(&a, 1), (&b, 2), (&c, 1)], 2, &mut output);
        assert_same(&output, &[1.0, 10.0, 11.0, 100.0, 2.0, 20.0, 21.0, 200.0]);
    }

    #[test]
    fn empty_part_is_skipped() {
        let mut output = [f32::NAN; 2];
        concat(&[(&[], 0), (&[5.0, 6.0], 1)], 2, &mut output);
        assert_same(&output, &[5.0, 6.0]);
    }
}
