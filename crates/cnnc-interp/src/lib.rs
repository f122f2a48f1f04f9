//! cnnc-interp
