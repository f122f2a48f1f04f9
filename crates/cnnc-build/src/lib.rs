//! cnnc-build
