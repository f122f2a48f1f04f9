//! cnnc-ir
