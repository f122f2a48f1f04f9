//! Generated networks for the latency bench (`benches/generated.rs`):
//! ResNet-18 and MobileNetV2 in optimized builds, LeNet-5 otherwise (see
//! `build.rs`).

/// `examples/resnet18.cnn` with seeded random weights.
#[cfg(cnnc_full_bench)]
pub mod resnet18 {
    cnnc_runtime::include_net!("resnet18");
}

/// `examples/mobilenet_v2.cnn` with seeded random weights.
#[cfg(cnnc_full_bench)]
pub mod mobilenet_v2 {
    cnnc_runtime::include_net!("mobilenet_v2");
}

/// `examples/lenet5.cnn` with seeded random weights (debug builds).
#[cfg(not(cnnc_full_bench))]
pub mod lenet5 {
    cnnc_runtime::include_net!("lenet5");
}
