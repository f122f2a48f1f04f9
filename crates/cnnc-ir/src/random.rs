//! Seeded random weights, for timing a network that has none: speed does
//! not depend on the values, only on their being finite and of a sane
//! magnitude (no denormals, no zero variances).
//!
//! [`random_weights`] writes a safetensors file holding every tensor a
//! network expects ([`expected_weights`](crate::expected_weights)); it is
//! what `cnnc bench` binds when it is given no weights, and what the
//! criterion benches and the generated-code bench compile against.
//! [`random_values`] is its generator, also used for random inputs.

use std::collections::{BTreeMap, TryReserveError};
use std::fmt::Write as _;

use crate::infer::WeightSpec;

/// `len` deterministic values uniform in `[-scale, scale)`, from an
/// xorshift64* stream seeded by `seed` (every seed, 0 included, gives a
/// stream; the same seed always gives the same values).
pub fn random_values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    stream(seed, scale).take(len).collect()
}

/// A safetensors file (`F32`, little-endian) holding seeded random values
/// for every tensor of `specs`, each once by name (as
/// [`expected_weights`](crate::expected_weights) lists them):
///
/// - batch-norm running variances (`*.running_var`) and the other rank-1
///   `*.weight` tensors (batch-norm scales) in `[0.5, 1.5)`: positive, so
///   `1 / √(var + eps)` stays finite;
/// - the other rank-1 tensors (biases, batch-norm shifts and means) in
///   `[-0.1, 0.1)`;
/// - every other tensor (convolution and linear weights) in `±√(3 /
///   fan-in)`, fan-in being the product of the dimensions after the first,
///   so outputs keep the input's magnitude and no denormals appear.
///
/// Tensor `i` of `specs` draws from [`random_values`] seeded with
/// `seed.wrapping_add(i + 1)`, so the same `seed` gives the same bytes. The
/// header lists the tensors sorted by name (the data is in the order of
/// `specs`). Fails only when the data cannot be allocated.
pub fn random_weights(specs: &[WeightSpec], seed: u64) -> Result<Vec<u8>, TryReserveError> {
    let lens: Vec<usize> = specs
        .iter()
        .map(|spec| spec.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d)))
        .collect();
    let total = lens.iter().fold(0usize, |sum, &len| {
        sum.saturating_add(len.saturating_mul(4))
    });
    let mut data: Vec<u8> = Vec::new();
    data.try_reserve_exact(total)?;
    let mut entries = BTreeMap::new();
    for (index, (spec, &len)) in specs.iter().zip(&lens).enumerate() {
        let tensor_seed = seed.wrapping_add(index as u64 + 1);
        let name = spec.name.as_str();
        let rank1 = spec.shape.len() == 1;
        let start = data.len();
        if name.ends_with(".running_var") || (rank1 && name.ends_with(".weight")) {
            let values = stream(tensor_seed, 0.5).map(|v| v + 1.0);
            data.extend(values.take(len).flat_map(f32::to_le_bytes));
        } else {
            let scale = if rank1 {
                0.1
            } else {
                let fan_in: usize = spec.shape.iter().skip(1).product::<usize>().max(1);
                (3.0 / fan_in as f32).sqrt()
            };
            data.extend(
                stream(tensor_seed, scale)
                    .take(len)
                    .flat_map(f32::to_le_bytes),
            );
        }
        entries.insert(name, (&spec.shape, start, data.len()));
    }

    // The header as `serde_json` writes a map: keys sorted, no spaces,
    // padded with spaces to a multiple of 8 bytes.
    let mut header = String::from("{");
    for (index, (name, (shape, start, end))) in entries.iter().enumerate() {
        if index > 0 {
            header.push(',');
        }
        push_json_string(&mut header, name);
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        let _ = write!(
            header,
            r#":{{"data_offsets":[{start},{end}],"dtype":"F32","shape":[{}]}}"#,
            dims.join(",")
        );
    }
    header.push('}');
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(8 + header.len() + data.len())?;
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    Ok(bytes)
}

/// The endless stream behind [`random_values`].
fn stream(seed: u64, scale: f32) -> impl Iterator<Item = f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    if state == 0 {
        state = 1;
    }
    std::iter::repeat_with(move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        (bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    })
}

/// Appends `text` as a JSON string literal.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A network with every kind of tensor: convolution weights and bias,
    /// batch-norm scale, shift and running statistics, linear weights and
    /// bias.
    const NET: &str = "network tiny {
    input x: [3, 8, 8]
    conv = conv2d(4, 3, padding=1)
    bn = batchnorm2d()
    relu
    flatten
    fc = linear(10)
}
";

    fn specs() -> Vec<WeightSpec> {
        let file = cnnc_syntax::SourceFile::new("tiny.cnn", NET);
        let checked = match crate::check(&file) {
            Ok(checked) => checked,
            Err(errors) => panic!("{}", errors.render(&file, cnnc_syntax::RenderStyle::Plain)),
        };
        crate::expected_weights(&checked.graph, &checked.info)
    }

    /// Each tensor of a safetensors file: name, dtype, shape and values.
    fn read(bytes: &[u8]) -> Vec<(String, String, Vec<usize>, Vec<f32>)> {
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        assert_eq!(header_len % 8, 0);
        let header: serde_json::Value =
            serde_json::from_slice(&bytes[8..8 + header_len]).expect("a JSON header");
        let data = &bytes[8 + header_len..];
        let mut tensors: Vec<_> = header
            .as_object()
            .expect("a JSON object")
            .iter()
            .map(|(name, entry)| {
                let dtype = entry["dtype"].as_str().expect("dtype").to_string();
                let shape: Vec<usize> = entry["shape"]
                    .as_array()
                    .expect("shape")
                    .iter()
                    .map(|d| d.as_u64().expect("a dimension") as usize)
                    .collect();
                let offsets = entry["data_offsets"].as_array().expect("data_offsets");
                let start = offsets[0].as_u64().expect("start") as usize;
                let end = offsets[1].as_u64().expect("end") as usize;
                let values: Vec<f32> = data[start..end]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect();
                (start, (name.clone(), dtype, shape, values))
            })
            .collect();
        // Back to the data's order (the header is sorted by name).
        tensors.sort_by_key(|(start, _)| *start);
        let end = tensors.last().map_or(0, |(start, t)| start + 4 * t.3.len());
        assert_eq!(end, data.len(), "data past the last tensor");
        tensors.into_iter().map(|(_, tensor)| tensor).collect()
    }

    #[test]
    fn random_weights_hold_every_expected_tensor_with_sane_values() {
        let specs = specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "conv.weight",
                "conv.bias",
                "bn.weight",
                "bn.bias",
                "bn.running_mean",
                "bn.running_var",
                "fc.weight",
                "fc.bias"
            ]
        );
        let bytes = random_weights(&specs, 0).expect("allocates");
        let tensors = read(&bytes);
        assert_eq!(tensors.len(), specs.len());
        for (spec, (name, dtype, shape, values)) in specs.iter().zip(&tensors) {
            assert_eq!((name, shape), (&spec.name, &spec.shape));
            assert_eq!(dtype, "F32");
            assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}");
            let (low, high) = match name.as_str() {
                "bn.weight" | "bn.running_var" => (0.5, 1.5),
                "conv.weight" => (-(3.0f32 / 27.0).sqrt(), (3.0f32 / 27.0).sqrt()),
                "fc.weight" => (-(3.0f32 / 256.0).sqrt(), (3.0f32 / 256.0).sqrt()),
                _ => (-0.1, 0.1),
            };
            assert!(
                values.iter().all(|v| (low..high).contains(v)),
                "{name}: {values:?} not in [{low}, {high})"
            );
            // Spread over the range, not stuck near one value.
            let (min, max) = values
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            assert!(max - min > (high - low) / 4.0, "{name}: {min}..{max}");
        }
        let var = &tensors[5].3;
        assert!(var.iter().all(|v| *v > 0.0), "{var:?}");
        // The scheme is pinned: `cnnc bench` figures of a network without
        // weights compare across versions only if its values stay the same.
        assert_eq!(tensors[0].3[..2], [-0.21226919, -0.17767176]);
        assert_eq!(tensors[5].3[..2], [1.3525672, 1.0739937]);
    }

    #[test]
    fn random_weights_are_seeded() {
        let specs = specs();
        let a = random_weights(&specs, 7).expect("allocates");
        assert_eq!(a, random_weights(&specs, 7).expect("allocates"));
        let b = random_weights(&specs, 8).expect("allocates");
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
        // Every tensor differs, not only the first.
        for (x, y) in read(&a).iter().zip(&read(&b)) {
            assert_ne!(x.3, y.3, "{}", x.0);
        }
        assert_eq!(random_weights(&[], 0).expect("allocates"), {
            let mut empty = 8u64.to_le_bytes().to_vec();
            empty.extend_from_slice(b"{}      ");
            empty
        });
    }

    #[test]
    fn random_values_are_seeded_and_in_range() {
        let a = random_values(1000, 7, 0.5);
        assert_eq!(a, random_values(1000, 7, 0.5));
        assert_ne!(a, random_values(1000, 8, 0.5));
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
        let mean: f32 = a.iter().sum::<f32>() / 1000.0;
        assert!(mean.abs() < 0.05, "{mean}");
        assert_eq!(random_values(3, 0, 1.0).len(), 3);
    }
}
