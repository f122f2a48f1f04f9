//! Numeric kernels for cnnc.
//!
//! Everything numeric that a network does lives here, and nothing else: this
//! crate knows no graph, no source text and no file format. It has two layers:
//!
//! - [`reference`](mod@reference): one naive, obviously-correct implementation per operator
//!   over NCHW `f32` tensors. It is the oracle that every fast kernel, the
//!   interpreter and the generated code are tested against.
//! - fast tiers: packed, SIMD kernels chosen per layer and per CPU. The
//!   [`tier`] module detects the CPU once and hands out a [`Kernels`] table
//!   (`CNNC_KERNELS` forces a tier); [`gemm`] is the packed GEMM (direct and
//!   indirect, fused epilogue) that convolutions and linear layers build on.
//!
//! The shapes a kernel works on are described by the plain structs of
//! [`geometry`]; they hold fully resolved sizes (every default filled, output
//! sizes already computed by the compiler's shape inference), so a kernel never
//! re-derives PyTorch's size rules.
#![deny(missing_docs)]

pub mod activation;
pub mod gemm;
pub mod geometry;
pub mod ops;
pub mod peak;
pub mod reference;
pub mod threads;
pub mod tier;

pub use activation::Activation;
pub use geometry::{Conv2dGeometry, Pool2dGeometry};
pub use tier::{active_tier, kernels, kernels_for, Kernels, Tier};
