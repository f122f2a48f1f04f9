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

/// Seeded random weights (seed 0) for every tensor the network expects:
/// `cnnc_ir::random_weights`, the values `cnnc bench` gives a network
/// without weights.
fn random_safetensors(net: &Path) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(net)?;
    let file = cnnc_syntax::SourceFile::new(net.display().to_string(), text);
    let checked = cnnc_ir::check(&file)
        .map_err(|errors| errors.render(&file, cnnc_syntax::RenderStyle::Short))?;
    let specs = cnnc_ir::expected_weights(&checked.graph, &checked.info);
    Ok(cnnc_ir::random_weights(&specs, 0)?)
}
