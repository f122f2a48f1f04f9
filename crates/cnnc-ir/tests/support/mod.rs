//! Test support shared by this crate's integration tests.

pub mod plan_verifier;
