//! Shared harness for cnnc end-to-end tests.
//!
//! A **case** is a folder of `tests/fixtures/` (or of the conformance suite,
//! same layout): `net.cnn`, `weights.safetensors` (absent when the network
//! has no parameters), `input.npy` (`[N, ...per-sample shape]`) and
//! `expected.npy` (PyTorch's output, computed in `float64`). [`Case::load`]
//! reads and checks all four; [`Case::run_interpreter`] runs the network;
//! [`compare`] measures the result against PyTorch with the project's
//! tolerance.
//!
//! The same cases will run through generated code; whatever runs them should
//! go through [`Case`] and [`compare`], so that every engine is held to the
//! same bar.

use std::fmt;
use std::path::{Path, PathBuf};

use cnnc_interp::{Interpreter, Mode, Options};
use cnnc_ir::Checked;
use cnnc_runtime::WeightFile;
use cnnc_syntax::{RenderStyle, SourceFile};

/// The relative tolerance: a result passes when its largest absolute error
/// is at most `TOLERANCE * max(1, max |expected|)`.
pub const TOLERANCE: f64 = 1e-4;

/// The repository's root directory.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// `tests/fixtures/`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The names of the case folders in `dir` (those holding a `net.cnn`),
/// sorted.
pub fn case_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("net.cnn").is_file())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// A tensor: its shape and its values in C order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The shape, batch first.
    pub shape: Vec<usize>,
    /// The values.
    pub data: Vec<f32>,
}

impl Tensor {
    /// Reads a float `.npy` file.
    pub fn read(path: &Path) -> Result<Tensor, String> {
        let (shape, data) = cnnc_runtime::npy::read(path).map_err(|e| e.to_string())?;
        Ok(Tensor { shape, data })
    }
}

/// A loaded case, ready to run.
pub struct Case {
    /// The folder's name (`conv-1x1`).
    pub name: String,
    /// The folder.
    pub dir: PathBuf,
    /// `net.cnn`.
    pub source: SourceFile,
    /// The checked network.
    pub checked: Checked,
    /// `weights.safetensors`, if present.
    pub weights: Option<WeightFile<'static>>,
    /// `input.npy`.
    pub input: Tensor,
    /// `expected.npy`.
    pub expected: Tensor,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Case {
    /// Loads the case `name` of `tests/fixtures/`.
    pub fn fixture(name: &str) -> Result<Case, String> {
        Case::load(&fixtures_dir().join(name))
    }

    /// Loads and checks the case in `dir`; the error says which file is
    /// wrong and how (diagnostics rendered).
    pub fn load(dir: &Path) -> Result<Case, String> {
        let name = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let net = dir.join("net.cnn");
        let text = std::fs::read_to_string(&net)
            .map_err(|e| format!("cannot read {}: {e}", net.display()))?;
        let source = SourceFile::new(net.display().to_string(), text);
        let checked =
            cnnc_ir::check(&source).map_err(|errors| errors.render(&source, RenderStyle::Plain))?;
        let weights_path = dir.join("weights.safetensors");
        let weights = if weights_path.exists() {
            Some(WeightFile::from_path(&weights_path).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let input = Tensor::read(&dir.join("input.npy"))?;
        let expected = Tensor::read(&dir.join("expected.npy"))?;
        Ok(Case {
            name,
            dir: dir.to_path_buf(),
            source,
            checked,
            weights,
            input,
            expected,
        })
    }

    /// Builds the interpreter in the default mode (weights bound; bind
    /// errors rendered against `net.cnn`).
    pub fn interpreter(&self) -> Result<Interpreter, String> {
        self.interpreter_in(Mode::default())
    }

    /// Builds the interpreter in `mode`.
    pub fn interpreter_in(&self, mode: Mode) -> Result<Interpreter, String> {
        let options = Options::new().mode(mode);
        Interpreter::with_options(
            &self.checked.graph,
            &self.checked.info,
            self.weights.as_ref(),
            &options,
        )
        .map_err(|errors| {
            errors
                .to_diagnostics()
                .render(&self.source, RenderStyle::Plain)
        })
    }

    /// Runs the case's input through the interpreter in the default mode;
    /// the output has the shape `[N, ...output shape]`.
    pub fn run_interpreter(&self) -> Result<Tensor, String> {
        self.run_in(Mode::default())
    }

    /// Runs the case's input through the interpreter in `mode`.
    pub fn run_in(&self, mode: Mode) -> Result<Tensor, String> {
        let mut interpreter = self.interpreter_in(mode)?;
        let batch = cnnc_runtime::check_per_sample_shape(
            &self.input.shape,
            interpreter.input_shape(),
            "input.npy",
        )
        .map_err(|e| e.to_string())?;
        let data = interpreter
            .run(&self.input.data)
            .map_err(|e| e.to_string())?;
        let mut shape = vec![batch];
        shape.extend_from_slice(interpreter.output_shape());
        Ok(Tensor { shape, data })
    }
}

/// How far a result is from the expected one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// The largest absolute error (`NaN` if a value is NaN on one side
    /// only; infinite if the lengths differ).
    pub max_abs_error: f64,
    /// Where it is (flat index).
    pub worst_index: usize,
    /// `max(1, max |expected|)`.
    pub scale: f64,
}

impl Comparison {
    /// The largest error allowed: `TOLERANCE * scale`.
    pub fn allowed(&self) -> f64 {
        TOLERANCE * self.scale
    }

    /// Whether the error is within tolerance (NaN never is).
    pub fn passed(&self) -> bool {
        self.max_abs_error <= self.allowed()
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max abs error {:.3e} at {} (allowed {:.3e}, max |expected| scale {:.3})",
            self.max_abs_error,
            self.worst_index,
            self.allowed(),
            self.scale
        )
    }
}

/// Compares `got` with `expected` element by element. Values that are
/// equal (NaN included, or the same infinity) count as no error.
pub fn compare(got: &[f32], expected: &[f32]) -> Comparison {
    let scale = expected
        .iter()
        .map(|v| f64::from(v.abs()))
        .fold(1.0f64, f64::max);
    if got.len() != expected.len() {
        return Comparison {
            max_abs_error: f64::INFINITY,
            worst_index: got.len().min(expected.len()),
            scale,
        };
    }
    let mut worst = (0.0f64, 0usize);
    for (index, (&a, &b)) in got.iter().zip(expected).enumerate() {
        let same = a == b || (a.is_nan() && b.is_nan());
        let error = if same {
            0.0
        } else {
            (f64::from(a) - f64::from(b)).abs()
        };
        if error.is_nan() {
            return Comparison {
                max_abs_error: f64::NAN,
                worst_index: index,
                scale,
            };
        }
        if error > worst.0 {
            worst = (error, index);
        }
    }
    Comparison {
        max_abs_error: worst.0,
        worst_index: worst.1,
        scale,
    }
}

/// Loads the fixture `name`, runs it through the interpreter in `mode` and
/// compares with PyTorch; the error explains what failed.
pub fn check_fixture(name: &str, mode: Mode) -> Result<Comparison, String> {
    let case = Case::fixture(name)?;
    let got = case.run_in(mode)?;
    if got.shape != case.expected.shape {
        return Err(format!(
            "output shape {:?}, expected {:?}",
            got.shape, case.expected.shape
        ));
    }
    let comparison = compare(&got.data, &case.expected.data);
    if comparison.passed() {
        Ok(comparison)
    } else {
        Err(comparison.to_string())
    }
}

/// A safetensors file holding `tensors` (`name`, safetensors dtype, shape,
/// little-endian data bytes), in that order.
pub fn safetensors_raw(tensors: &[(&str, &str, &[usize], &[u8])]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        entries.push(format!(
            r#"{}:{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{},{}]}}"#,
            json_string(name),
            dims.join(","),
            data.len(),
            data.len() + bytes.len()
        ));
        data.extend_from_slice(bytes);
    }
    let header = format!("{{{}}}", entries.join(","));
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    file
}

/// A safetensors file of `F32` tensors.
pub fn safetensors_f32(tensors: &[(&str, &[usize], &[f32])]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let raw: Vec<(&str, &str, &[usize], &[u8])> = tensors
        .iter()
        .zip(&bytes)
        .map(|(&(name, shape, _), data)| (name, "F32", shape, data.as_slice()))
        .collect();
    safetensors_raw(&raw)
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::{compare, safetensors_f32};

    #[test]
    fn comparison_uses_the_relative_scale() {
        let c = compare(&[1.0, 2.0], &[1.0, 2.0001]);
        assert_eq!(c.max_abs_error, f64::from(2.0001f32) - 2.0);
        assert_eq!(c.worst_index, 1);
        assert_eq!(c.scale, f64::from(2.0001f32));
        assert!(c.passed());
        assert!(!compare(&[0.0], &[0.00011]).passed());
        // Large outputs allow proportionally larger errors.
        assert!(compare(&[1000.0], &[1000.05]).passed());
        assert!(!compare(&[1000.0], &[1000.2]).passed());
        assert!(!compare(&[f32::NAN], &[0.0]).passed());
        assert!(compare(&[f32::NAN], &[f32::NAN]).passed());
        assert!(!compare(&[1.0], &[1.0, 2.0]).passed());
    }

    #[test]
    fn safetensors_files_parse() {
        let bytes = safetensors_f32(&[("a.weight", &[2], &[1.0, 2.0]), ("b", &[], &[3.0])]);
        let file = cnnc_runtime::WeightFile::from_bytes(&bytes).expect("valid");
        assert_eq!(file.tensor("a.weight", &[2]).expect("a"), [1.0, 2.0]);
        assert_eq!(file.tensor("b", &[]).expect("b"), [3.0]);
    }
}
