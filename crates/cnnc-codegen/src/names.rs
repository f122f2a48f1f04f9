//! Rust names for the things a plan names: the network's struct and one
//! field per step.
//!
//! Layer names are PyTorch module paths (`layer1.0.conv1`) or display names
//! of anonymous layers (`#3 relu`); fields become `layer1_0_conv1` and
//! `relu_3`. Keywords and the struct's own fields get a trailing `_`, and a
//! name already taken gets `_2`, `_3`, … so every field is a valid,
//! distinct identifier.

use std::collections::HashSet;

use proc_macro2::{Ident, Span};

/// The struct's own fields, and the names whose upper case is one of its
/// public constants (a step's spec constant is its field name in upper
/// case): steps must not take them.
pub(crate) const RESERVED_FIELDS: [&str; 7] = [
    "context",
    "arena",
    "input_shape",
    "output_shape",
    "input_len",
    "output_len",
    "arena_len",
];

/// Words that cannot be identifiers (strict and reserved keywords of the
/// 2021 edition; `_` included).
const KEYWORDS: [&str; 52] = [
    "_", "abstract", "as", "async", "await", "become", "box", "break", "const", "continue",
    "crate", "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if",
    "impl", "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub",
    "ref", "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "union", "unsafe", "unsized", "use", "virtual", "where", "while",
];

/// The struct's name: the network's name in UpperCamelCase (`lenet5` →
/// `Lenet5`, `mobilenet_v2` → `MobilenetV2`, `resnet-18` → `Resnet18`).
/// A name that does not start with a letter gets a `Net` prefix.
pub fn type_name(network: &str) -> String {
    let mut name = String::new();
    for part in network.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(chars);
        }
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "Net");
    }
    if name == "Self" {
        name.push_str("Net");
    }
    name
}

/// A snake_case identifier for a layer's display name, before keywords
/// and duplicates are handled.
fn snake(display: &str) -> String {
    // `#3 relu` (an anonymous layer) → `relu_3`.
    let display = match display
        .strip_prefix('#')
        .and_then(|rest| rest.split_once(' '))
    {
        Some((number, op)) if number.chars().all(|c| c.is_ascii_digit()) => {
            format!("{op}_{number}")
        }
        _ => display.to_string(),
    };
    let mut ident = String::new();
    for c in display.chars() {
        if c.is_ascii_alphanumeric() {
            ident.push(c.to_ascii_lowercase());
        } else if !ident.ends_with('_') {
            ident.push('_');
        }
    }
    let ident = ident.trim_matches('_');
    if ident.starts_with(|c: char| c.is_ascii_alphabetic()) {
        ident.to_string()
    } else {
        format!("layer_{ident}")
    }
}

/// Hands out distinct field identifiers.
#[derive(Debug, Default)]
pub(crate) struct FieldNames {
    taken: HashSet<String>,
}

impl FieldNames {
    /// A field name for a step, distinct from every name handed out before
    /// and from [`RESERVED_FIELDS`].
    pub(crate) fn field(&mut self, display: &str) -> Ident {
        let mut base = snake(display);
        if KEYWORDS.contains(&base.as_str()) || RESERVED_FIELDS.contains(&base.as_str()) {
            base.push('_');
        }
        let mut name = base.clone();
        let mut counter = 2;
        while self.taken.contains(&name) {
            name = format!("{base}_{counter}");
            counter += 1;
        }
        self.taken.insert(name.clone());
        Ident::new(&name, Span::call_site())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_names_are_upper_camel_case() {
        assert_eq!(type_name("lenet5"), "Lenet5");
        assert_eq!(type_name("mobilenet_v2"), "MobilenetV2");
        assert_eq!(type_name("resnet18"), "Resnet18");
        assert_eq!(type_name("my-net.v2"), "MyNetV2");
        assert_eq!(type_name("_x"), "X");
        assert_eq!(type_name("3d"), "Net3d");
        assert_eq!(type_name("self"), "SelfNet");
    }

    #[test]
    fn fields_are_distinct_identifiers() {
        let mut names = FieldNames::default();
        let fields: Vec<String> = [
            "conv1",
            "layer1.0.conv1",
            "#3 relu",
            "#12 maxpool2d",
            "input",
            "type",
            "arena",
            "layer1.0.conv1",
            "layer1_0_conv1",
            "features.0",
            "0",
            "output",
            "input_len",
        ]
        .iter()
        .map(|name| names.field(name).to_string())
        .collect();
        assert_eq!(
            fields,
            [
                "conv1",
                "layer1_0_conv1",
                "relu_3",
                "maxpool2d_12",
                "input",
                "type_",
                "arena_",
                "layer1_0_conv1_2",
                "layer1_0_conv1_3",
                "features_0",
                "layer_0",
                "output",
                "input_len_",
            ]
        );
    }
}
