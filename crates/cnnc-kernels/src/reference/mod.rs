//! Naive reference kernels: the oracle.
//!
//! One plain, obviously-correct function per operator of the `.cnn` language,
//! over NCHW `f32` slices, for any batch size. Every fast kernel, the
//! interpreter and the generated code are tested against these functions, so
//! they are written for clarity and never for speed: nested loops in the
//! order of the mathematical definition, no packing, no SIMD, no threads.
//!
//! # Layout
//!
//! Tensors are dense row-major NCHW (or `[N, F]` for flat features), exactly
//! as PyTorch stores a contiguous tensor. Sizes come from the caller: conv and
//! pool take the resolved geometries of [`crate::geometry`]; the other kernels
//! take their few sizes as arguments. Output sizes are never recomputed here
//! (PyTorch's size rules live in the compiler's shape inference only).
//!
//! # Numbers
//!
//! **Every reduction accumulates in `f64` and rounds to `f32` once, at the
//! end.** The products of two `f32` values are exact in `f64` (24 + 24
//! significant bits fit in 53), and an `f64` sum of a few thousand such terms
//! has a relative error around 1e-13, far below half an `f32` ulp (3e-8). So
//! for anything short of catastrophic cancellation the reference returns the
//! exact result correctly rounded to `f32`, whatever the summation order. That
//! makes it a better oracle than an `f32` loop in some fixed order: the error
//! measured against it is the fast kernel's own error, not the sum of two
//! kernels' errors, and it stays within a hair of PyTorch computing in
//! `float64` (how the fixtures in `tests/fixtures/` were made).
//!
//! Element-wise functions (activations, batch-norm, softmax) are evaluated in
//! `f64` too and rounded once. `add` is a single `f32` addition (already
//! correctly rounded); `concat` only copies.
//!
//! Each function documents the order in which it adds its terms, so that a
//! failing comparison can be reproduced by hand.
//!
//! # Operators without a function
//!
//! `flatten` and `dropout` (at inference) are identities on contiguous NCHW
//! data: `flatten` reinterprets `[N, C, H, W]` as `[N, C*H*W]` in the same
//! memory order, and `dropout` returns its input unchanged. A caller that
//! needs a separate buffer copies the slice.
//!
//! # Panics
//!
//! The caller (shape inference, the interpreter, a test) validates every size
//! before calling a kernel. The functions here check that the slice lengths
//! agree with the sizes they are given and `assert!` it, because a mismatch
//! is a bug in the caller, not a user error; each function lists these checks
//! under `# Panics`. No value of the data (NaN, infinities, huge numbers) makes
//! any of them panic.

mod concat;
mod conv;
mod elementwise;
mod linear;
mod norm;
mod pool;
mod softmax;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod testutil;

pub use concat::concat;
pub use conv::conv2d;
pub use elementwise::{activation, activation_value, add};
pub use linear::linear;
pub use norm::{batch_norm2d, BatchNorm2dParams};
pub use pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d};
pub use softmax::softmax;
