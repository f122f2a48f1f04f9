//! Every PyTorch fixture of `tests/fixtures/`, compiled into Rust by
//! `cnnc-build` from this package's `build.rs`, exactly as a user crate
//! would: the generated modules live in [`nets`], one per case.
//!
//! The generated code must compile without any warning, here under
//! `#![deny(warnings)]`, and under clippy in CI. The checks are the tests
//! (`tests/generated.rs`): each network's output against PyTorch's within
//! the project's tolerance, bit for bit against the interpreter's fast mode,
//! and bit for bit between its embedded weights (`new()`) and the same
//! weights packed when loading (`from_safetensors`).
#![deny(warnings)]

/// The generated networks, one module per fixture (`conv-1x1` →
/// `conv_1x1`).
pub mod nets {
    include!(concat!(env!("OUT_DIR"), "/nets.rs"));
}
