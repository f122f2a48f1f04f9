//! Tokens → formatted source: prettyplease over a `syn::File`, then the
//! step comments put back.
//!
//! Token streams cannot carry `//` comments, so an emitter that wants one
//! writes the statement `__cnnc_comment!("text");` (see [`comment`]) and
//! [`format_file`] turns every such line into `// text` after formatting.

use proc_macro2::TokenStream;
use quote::quote;

use crate::CodegenError;

/// The placeholder statement of a `//` comment: the text must be one line.
pub(crate) fn comment(text: &str) -> TokenStream {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    quote!(__cnnc_comment!(#text);)
}

/// Formats a file's tokens and restores its comments.
pub(crate) fn format_file(tokens: TokenStream) -> Result<String, CodegenError> {
    let file: syn::File = syn::parse2(tokens).map_err(|error| {
        CodegenError::Internal(format!("generated tokens do not parse: {error}"))
    })?;
    let text = prettyplease::unparse(&file);
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        // One line, or split by prettyplease over three when long.
        let literal = match trimmed.strip_prefix("__cnnc_comment!(") {
            Some("") => {
                let literal = lines.next().map(str::trim).unwrap_or_default();
                let close = lines.next().map(str::trim);
                (close == Some(");")).then_some(literal)
            }
            Some(rest) => rest.strip_suffix(");"),
            None => None,
        };
        match literal.and_then(|literal| syn::parse_str::<syn::LitStr>(literal).ok()) {
            Some(literal) => {
                out.push_str(indent);
                out.push_str("// ");
                out.push_str(&literal.value());
            }
            None if literal.is_some() => {
                return Err(CodegenError::Internal(format!(
                    "a comment did not survive formatting: {trimmed}"
                )))
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_come_back_as_line_comments() {
        let note = comment("conv1: \"5x5\"\nrelu");
        let tokens = quote! {
            fn f() {
                #note
                let x = 1;
            }
        };
        let text = format_file(tokens).expect("formats");
        assert_eq!(
            text,
            "fn f() {\n    // conv1: \"5x5\" relu\n    let x = 1;\n}\n"
        );
    }

    #[test]
    fn tokens_that_do_not_parse_are_an_internal_error() {
        let error = format_file(quote!(fn)).unwrap_err();
        assert!(matches!(error, CodegenError::Internal(_)));
    }
}
