//! cnnc-codegen
