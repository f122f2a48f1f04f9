//! cnnc-runtime
