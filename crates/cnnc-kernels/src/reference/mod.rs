//! Naive reference kernels (the oracle).
