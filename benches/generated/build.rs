// Compiles examples/resnet18.cnn and examples/mobilenet_v2.cnn into this
// crate with seeded random weights (speed does not depend on their values),
// embedding ResNet-18's 45 MB blob: the crate is also the measure of how
// long a crate embedding a generated ResNet-18 takes to build. Writes
// $OUT_DIR/{resnet18,mobilenet_v2}.{rs,weights.bin,safetensors}.
//
// Only in optimized builds (`cargo bench`, `--release`): a debug build (the
// workspace's `cargo test --all-targets`) compiles LeNet-5 alone, to keep
// CI fast, and sets no `cnnc_full_bench` cfg.
//
// Environment variables read: OUT_DIR, CARGO_MANIFEST_DIR and PROFILE (set
// by cargo).

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rustc-check-cfg=cfg(cnnc_full_bench)");
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let examples = Path::new(&manifest).join("../../examples");
    let full = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let nets: &[&str] = if full {
        println!("cargo:rustc-cfg=cnnc_full_bench");
        &["resnet18", "mobilenet_v2"]
    } else {
        &["lenet5"]
    };
    for name in nets {
        let net = examples.join(format!("{name}.cnn"));
        let weights = out_dir.join(format!("{name}.safetensors"));
        let bytes = random_safetensors(&net)?;
        // Rewritten only when it changes, and not watched: it is ours.
        if std::fs::read(&weights).ok().as_deref() != Some(&bytes[..]) {
            std::fs::write(&weights, bytes)?;
        }
        println!("cargo:rerun-if-changed={}", net.display());
        cnnc_build::Builder::new()
            .weights(&weights)
            .emit_rerun_if_changed(false)
            .compile(&net)?;
    }
    Ok(())
}

/// Seeded random weights for every tensor the network expects, scaled by
/// fan-in, batch-norm variances and scales in `[0.5, 1.5)`.
fn random_safetensors(net: &Path) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(net)?;
    let file = cnnc_syntax::SourceFile::new(net.display().to_string(), text);
    let checked = cnnc_ir::check(&file)
        .map_err(|errors| errors.render(&file, cnnc_syntax::RenderStyle::Short))?;
    let mut header = String::from("{");
    let mut data: Vec<u8> = Vec::new();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for (index, spec) in cnnc_ir::expected_weights(&checked.graph, &checked.info)
        .iter()
        .enumerate()
    {
        let len: usize = spec.shape.iter().product();
        let rank1 = spec.shape.len() == 1;
        let positive =
            spec.name.ends_with(".running_var") || (rank1 && spec.name.ends_with(".weight"));
        let fan_in: usize = spec.shape.iter().skip(1).product::<usize>().max(1);
        let scale = if rank1 {
            0.1
        } else {
            (3.0 / fan_in as f32).sqrt()
        };
        let start = data.len();
        for _ in 0..len {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let unit =
                (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            let value = if positive {
                0.5 + unit
            } else {
                (unit * 2.0 - 1.0) * scale
            };
            data.extend_from_slice(&value.to_le_bytes());
        }
        if index > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{}\":{{\"dtype\":\"F32\",\"shape\":{:?},\"data_offsets\":[{start},{}]}}",
            spec.name,
            spec.shape,
            data.len()
        ));
    }
    header.push('}');
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    Ok(bytes)
}
