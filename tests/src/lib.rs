//! Shared harness for cnnc end-to-end tests.
