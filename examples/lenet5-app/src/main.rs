//! LeNet-5, compiled into this program by `build.rs`, reads ten digits.
//!
//! The network is `examples/lenet5.cnn`; its weights
//! (`examples/lenet5.safetensors`) were trained by `train.py` on synthetic
//! hand-drawn digits and are embedded pre-packed: `Lenet5::new()` parses
//! and packs nothing. The ten samples (`data/digits.f32`, the digits 0 to 9
//! drawn by the same script) are embedded too.
//!
//! ```text
//! cargo run --release -p lenet5-app
//! ```

mod lenet5 {
    cnnc_runtime::include_net!("lenet5");
}

use lenet5::Lenet5;

/// Ten 1x28x28 samples, little-endian `f32`, the digits 0 to 9 in order.
const DIGITS: &[u8] = include_bytes!("../data/digits.f32");

/// Little-endian `f32` bytes to floats.
fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect()
}

/// Softmax of logits, in `f64`.
fn probabilities(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// A sample as ASCII art, two characters per pixel column, every other row.
fn ascii(sample: &[f32]) -> Vec<String> {
    sample
        .chunks_exact(28)
        .step_by(2)
        .map(|row| {
            row.iter()
                .map(|&v| match v {
                    v if v > 0.66 => '#',
                    v if v > 0.33 => '+',
                    v if v > 0.1 => '.',
                    _ => ' ',
                })
                .collect()
        })
        .collect()
}

fn main() -> Result<(), cnnc_runtime::Error> {
    let input = floats(DIGITS);
    let batch = input.len() / Lenet5::INPUT_LEN;
    let mut net = Lenet5::new();
    let mut logits = vec![0.0f32; batch * Lenet5::OUTPUT_LEN];
    // The first call grows the activation arena; time the second.
    net.forward(&input, &mut logits)?;
    let start = std::time::Instant::now();
    net.forward(&input, &mut logits)?;
    let elapsed = start.elapsed();

    println!(
        "LeNet-5 (examples/lenet5.cnn), compiled by cnnc-build: {batch} digits in {:.3} ms",
        elapsed.as_secs_f64() * 1e3
    );
    for (index, (sample, row)) in input
        .chunks_exact(Lenet5::INPUT_LEN)
        .zip(logits.chunks_exact(Lenet5::OUTPUT_LEN))
        .enumerate()
    {
        let p = probabilities(row);
        let (best, confidence) =
            p.iter()
                .copied()
                .enumerate()
                .fold((0, 0.0), |acc, (i, v)| if v > acc.1 { (i, v) } else { acc });
        println!();
        for (line, art) in ascii(sample).iter().enumerate() {
            match line {
                5 => println!("  {art}   sample {index}: read as {best}"),
                7 => println!("  {art}   confidence {:.1}%", confidence * 100.0),
                _ => println!("  {art}"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's logits for the ten samples (float64, stored as `f32`).
    const EXPECTED: &[u8] = include_bytes!("../data/expected.f32");

    #[test]
    fn reads_every_digit_as_pytorch_does() {
        let input = floats(DIGITS);
        let expected = floats(EXPECTED);
        let mut net = Lenet5::new();
        let mut logits = vec![0.0f32; expected.len()];
        net.forward(&input, &mut logits).expect("forward");
        let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (i, (got, want)) in logits.iter().zip(&expected).enumerate() {
            assert!(
                (got - want).abs() <= 1e-4 * scale,
                "logit {i}: {got} vs PyTorch {want}"
            );
        }
        for (digit, row) in logits.chunks_exact(10).enumerate() {
            let best = (0..10)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .expect("ten logits");
            assert_eq!(best, digit);
        }
    }

    #[test]
    fn the_embedded_weights_are_the_safetensors_packed() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../lenet5.safetensors"
        ))
        .expect("the weights file");
        let mut loaded = Lenet5::from_safetensors(&bytes).expect("loads");
        let mut embedded = Lenet5::new();
        let input = floats(DIGITS);
        let (mut a, mut b) = (vec![0.0f32; 100], vec![0.0f32; 100]);
        loaded.forward(&input, &mut a).expect("forward");
        embedded.forward(&input, &mut b).expect("forward");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b));
    }
}
