//! What the subcommands share: reading and checking a `.cnn` file, printing
//! diagnostics, writing output files atomically.

use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use cnnc_ir::{Checked, Graph, GraphInfo, Optimized};
use cnnc_syntax::{Diagnostics, RenderStyle, SourceFile, MAX_SOURCE_LEN};

use crate::{ErrorFormat, Options};

/// Reads a `.cnn` file (at most a little over the parser's size limit, so
/// a huge file is reported rather than read whole).
pub fn read_source(path: &Path) -> Result<SourceFile> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_SOURCE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(SourceFile::from_bytes(path.display().to_string(), bytes))
}

/// Prints diagnostics on stderr in the chosen style (colored on a terminal
/// unless `NO_COLOR` is set).
pub fn print_diagnostics(diagnostics: &Diagnostics, file: &SourceFile, options: &Options) {
    if diagnostics.is_empty() {
        return;
    }
    let style = match options.error_format {
        ErrorFormat::Short => RenderStyle::Short,
        ErrorFormat::Rich
            if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() =>
        {
            RenderStyle::Colored
        }
        ErrorFormat::Rich => RenderStyle::Plain,
    };
    let mut text = diagnostics.render(file, style);
    let errors = diagnostics.error_count();
    if errors > 0 && options.error_format == ErrorFormat::Rich {
        let plural = if errors == 1 { "" } else { "s" };
        text.push_str(&format!(
            "error: could not compile `{}` due to {errors} previous error{plural}\n",
            file.name()
        ));
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Reads, parses, lowers and checks a network, printing every diagnostic.
/// `None` means errors were printed.
pub fn load_checked(path: &Path, options: &Options) -> Result<(SourceFile, Option<Checked>)> {
    let file = read_source(path)?;
    match cnnc_ir::check(&file) {
        Ok(checked) => {
            print_diagnostics(&checked.warnings, &file, options);
            Ok((file, Some(checked)))
        }
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, &file, options);
            Ok((file, None))
        }
    }
}

/// Runs the optimizer on a checked network, printing its warnings (or,
/// on an internal error, its diagnostics). `None` means errors were printed.
pub fn optimize_checked(
    file: &SourceFile,
    graph: Graph,
    info: &GraphInfo,
    options: &Options,
) -> Option<Optimized> {
    match cnnc_ir::optimize(graph, info) {
        Ok(optimized) => {
            print_diagnostics(&optimized.report.warnings, file, options);
            Some(optimized)
        }
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, file, options);
            None
        }
    }
}

/// Writes `bytes` to `path` atomically: into a temporary file in the same
/// directory, then renamed over `path`. On any failure the temporary file is
/// removed and `path` is left as it was: never a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    if !dir.is_dir() {
        anyhow::bail!(
            "cannot write `{}`: the directory `{}` does not exist",
            path.display(),
            dir.display()
        );
    }
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        // Errors name the file asked for; the temporary file is ours.
        let context = || format!("cannot write `{}`", path.display());
        let mut file = fs::File::create(&temp).with_context(context)?;
        file.write_all(bytes).with_context(context)?;
        file.sync_all().with_context(context)?;
        fs::rename(&temp, path).with_context(context)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// `11689512` → `11,689,512`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(11_689_512), "11,689,512");
    }
}
