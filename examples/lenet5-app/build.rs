// Compiles ../lenet5.cnn with its weights (../lenet5.safetensors, named by
// the network's `weights` statement) into $OUT_DIR/lenet5.rs and
// $OUT_DIR/lenet5.weights.bin.
//
// Environment variables read: OUT_DIR (set by cargo; cnnc-build writes there).

fn main() -> Result<(), cnnc_build::Error> {
    cnnc_build::compile("../lenet5.cnn")?;
    Ok(())
}
