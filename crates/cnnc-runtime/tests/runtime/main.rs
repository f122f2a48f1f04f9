//! Integration tests of `cnnc-runtime`, one binary with a module per topic.
//!
//! Run the `.npy` tests with `cargo test -p cnnc-runtime --features npy`
//! (a workspace-wide `cargo test` enables the feature through the CLI).

// Helpers: building safetensors files in memory, scratch directories, a
// global allocator that records each thread's largest allocation.
mod support;

// WeightFile: lookups, conversions, unused tensors, one test per error.
mod weights;

// The weight faults of `../shared/conformance/run.py` (`weight_faults`),
// reproduced one by one with their messages.
mod conformance_faults;

// `.npy` reading and atomic writing, and their faults.
#[cfg(feature = "npy")]
mod npy;

// Property tests: random valid files agree with the `safetensors` crate, and
// random corruptions never panic.
mod robustness;
