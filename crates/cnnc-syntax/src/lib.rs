//! cnnc-syntax
