//! Property test of the optimizer end to end: randomly generated valid
//! networks (chains and residual branches of convolutions, batch-norms,
//! activations, pools, `add`, `concat`, `dropout`, `flatten`, linear layers,
//! with random parameters and random weights) give the same outputs through
//! the optimized mode (passes, batch-norms folded into the weights) as
//! through the reference mode on the graph as written, and the memory plan
//! of the optimized graph passes the independent verifier.
//!
//! "The same" is the conformance suite's measure, ten times tighter: the
//! largest absolute difference is at most `1e-5 × max(1, max|reference|)`.
//! The fast mode (execution plan, NHWC SIMD kernels over one arena) runs
//! the same networks and is held to the conformance measure itself
//! (`1e-4 × max(1, max|reference|)`).

#[path = "../../cnnc-ir/tests/support/plan_verifier.rs"]
mod plan_verifier;

use cnnc_interp::{Interpreter, Mode, Options};
use cnnc_ir::Checked;
use cnnc_runtime::WeightFile;
use cnnc_syntax::{RenderStyle, SourceFile};
use proptest::prelude::*;

/// splitmix64: a small deterministic generator driven by proptest's seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn int(&mut self, low: usize, high: usize) -> usize {
        low + (self.next() % (high - low + 1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// Uniform in `[low, high)`.
    fn float(&mut self, low: f32, high: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.int(0, items.len() - 1)]
    }
}

/// Writes a random valid network, statement by statement, tracking the
/// shape of every named value.
struct NetWriter {
    rng: Rng,
    lines: Vec<String>,
    /// Every value so far with its per-sample shape.
    values: Vec<(String, Vec<usize>)>,
}

impl NetWriter {
    fn current(&self) -> (String, Vec<usize>) {
        self.values.last().cloned().expect("the input is a value")
    }

    /// Adds `name = STATEMENT` and records its shape.
    fn emit(&mut self, statement: String, shape: Vec<usize>) -> String {
        let name = format!("v{}", self.values.len());
        self.lines.push(format!("    {name} = {statement}"));
        self.values.push((name.clone(), shape));
        name
    }

    fn activation(&mut self) -> String {
        let slope = self.rng.float(0.01, 0.5);
        self.rng
            .pick(&[
                "relu".to_string(),
                "relu6".to_string(),
                format!("leaky_relu({slope})"),
                "hardswish".to_string(),
                "sigmoid".to_string(),
                "tanh".to_string(),
            ])
            .clone()
    }

    /// A convolution of the current value (or of `from`).
    fn conv(&mut self, from: Option<&str>, out: Option<usize>, same: bool) -> String {
        let (input, shape) = match from {
            Some(name) => self
                .values
                .iter()
                .find(|(n, _)| n == name)
                .cloned()
                .expect("known value"),
            None => self.current(),
        };
        let [c, h, w] = shape[..] else {
            unreachable!("convolutions only in the spatial part")
        };
        let out = out.unwrap_or_else(|| self.rng.int(1, 6));
        let (kernel, stride, padding, dilation) = if same {
            (3, 1, 1, 1)
        } else {
            let kernel = *self.rng.pick(&[1, 3]);
            let stride = if h >= 4 && w >= 4 {
                self.rng.int(1, 2)
            } else {
                1
            };
            let padding = self.rng.int(0, kernel / 2);
            let dilation = if kernel == 3 && self.rng.chance(15) {
                2
            } else {
                1
            };
            (kernel, stride, padding, dilation)
        };
        let window = dilation * (kernel - 1) + 1;
        if h + 2 * padding < window || w + 2 * padding < window {
            return self.conv(from, Some(out), true);
        }
        let groups = if c > 1 && out.is_multiple_of(c) && self.rng.chance(30) {
            c
        } else {
            1
        };
        let bias = self.rng.chance(50);
        let size = |x: usize| (x + 2 * padding - window) / stride + 1;
        let from_text = from.map_or(String::new(), |_| format!(" from {input}"));
        self.emit(
            format!(
                "conv2d({out}, {kernel}, stride={stride}, padding={padding}, dilation={dilation}, groups={groups}, bias={bias}){from_text}"
            ),
            vec![out, size(h), size(w)],
        )
    }

    fn batchnorm(&mut self) -> String {
        let (_, shape) = self.current();
        let eps = self.rng.pick(&["1e-5", "0.001"]).to_string();
        self.emit(format!("batchnorm2d(eps={eps})"), shape)
    }

    fn spatial_step(&mut self) {
        let (current, shape) = self.current();
        let [c, h, w] = shape[..] else { return };
        match self.rng.int(0, 9) {
            0 => {
                self.conv(None, None, false);
            }
            1 => {
                self.batchnorm();
            }
            2 => {
                let activation = self.activation();
                self.emit(activation, shape);
            }
            3 => {
                // conv → bn → activation, the block every pass folds.
                self.conv(None, None, false);
                self.batchnorm();
                if self.rng.chance(70) {
                    let activation = self.activation();
                    let (_, shape) = self.current();
                    self.emit(activation, shape);
                }
            }
            4 => {
                // A residual block: conv(s) back to the input's shape, add.
                self.conv(None, Some(c), true);
                if self.rng.chance(70) {
                    self.batchnorm();
                }
                if self.rng.chance(50) {
                    let activation = self.activation();
                    self.emit(activation, shape.clone());
                    self.conv(None, Some(c), true);
                }
                let (branch, _) = self.current();
                let add = if self.rng.chance(50) {
                    format!("add({branch}, {current})")
                } else {
                    format!("add({current}, {branch})")
                };
                self.emit(add, shape.clone());
                if self.rng.chance(60) {
                    let activation = self.activation();
                    self.emit(activation, shape);
                }
            }
            5 => {
                // Two convolutions of one value, added: both could take the
                // other as their residual.
                let out = self.rng.int(1, 5);
                let a = self.conv(Some(&current), Some(out), true);
                let b = self.conv(Some(&current), Some(out), true);
                self.emit(format!("add({a}, {b})"), vec![out, h, w]);
            }
            6 if h >= 2 && w >= 2 => {
                if self.rng.chance(50) {
                    self.emit("maxpool2d(2)".into(), vec![c, h / 2, w / 2]);
                } else {
                    self.emit("avgpool2d(3, stride=1, padding=1)".into(), vec![c, h, w]);
                }
            }
            7 => {
                // Concatenate with an earlier value of the same size.
                let partners: Vec<(String, Vec<usize>)> = self
                    .values
                    .iter()
                    .filter(|(_, s)| s.len() == 3 && s[1] == h && s[2] == w)
                    .cloned()
                    .collect();
                let (other, other_shape) = self.rng.pick(&partners).clone();
                self.emit(
                    format!("concat({current}, {other})"),
                    vec![c + other_shape[0], h, w],
                );
            }
            8 => {
                self.emit("dropout(0.3)".into(), shape);
            }
            _ => {
                let activation = self.activation();
                self.emit(activation, shape);
            }
        }
    }

    fn tail(&mut self) {
        let (_, shape) = self.current();
        if self.rng.chance(30) {
            self.emit("adaptive_avgpool2d(1)".into(), vec![shape[0], 1, 1]);
        }
        let (_, shape) = self.current();
        let features: usize = shape.iter().product();
        self.emit("flatten".into(), vec![features]);
        let hidden = self.rng.int(2, 8);
        let first = self.emit(format!("linear({hidden})"), vec![hidden]);
        if self.rng.chance(60) {
            let activation = self.activation();
            self.emit(activation, vec![hidden]);
        }
        if self.rng.chance(50) {
            // A residual linear layer.
            let bias = self.rng.chance(50);
            let second = self.emit(format!("linear({hidden}, bias={bias})"), vec![hidden]);
            self.emit(format!("add({second}, {first})"), vec![hidden]);
            if self.rng.chance(50) {
                let activation = self.activation();
                self.emit(activation, vec![hidden]);
            }
        }
        let out = self.rng.int(1, 5);
        self.emit(format!("linear({out})"), vec![out]);
        if self.rng.chance(30) {
            self.emit("dropout".into(), vec![out]);
        }
    }
}

/// The text of a random valid network.
fn random_network(seed: u64) -> String {
    let mut rng = Rng(seed);
    let input = vec![rng.int(1, 4), rng.int(3, 9), rng.int(3, 9)];
    let mut writer = NetWriter {
        rng,
        lines: vec![format!(
            "    input x: [{}, {}, {}]",
            input[0], input[1], input[2]
        )],
        values: vec![("x".into(), input)],
    };
    let steps = writer.rng.int(1, 9);
    for _ in 0..steps {
        writer.spatial_step();
    }
    if writer.rng.chance(60) {
        writer.tail();
    }
    format!("network random {{\n{}\n}}\n", writer.lines.join("\n"))
}

/// A safetensors file of random `F32` values for every tensor the network
/// expects: running variances and batch-norm scales kept away from zero,
/// convolution and linear weights scaled by their fan-in.
fn random_weights(checked: &Checked, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed ^ 0x5EED);
    let mut header = String::from("{");
    let mut data: Vec<u8> = Vec::new();
    let specs = cnnc_ir::expected_weights(&checked.graph, &checked.info);
    for (i, spec) in specs.iter().enumerate() {
        let len: usize = spec.shape.iter().product();
        let fan_in: usize = spec.shape.iter().skip(1).product::<usize>().max(1);
        let bound = 1.0 / (fan_in as f32).sqrt();
        let values: Vec<f32> = (0..len)
            .map(|_| {
                if spec.name.ends_with("running_var") {
                    rng.float(0.3, 2.0)
                } else if spec.name.ends_with("running_mean") {
                    rng.float(-0.5, 0.5)
                } else if spec.shape.len() == 1 && spec.name.ends_with(".weight") {
                    rng.float(0.5, 1.5) * if rng.chance(20) { -1.0 } else { 1.0 }
                } else if spec.shape.len() == 1 {
                    rng.float(-0.5, 0.5)
                } else {
                    rng.float(-1.5, 1.5) * bound
                }
            })
            .collect();
        if i > 0 {
            header.push(',');
        }
        let dims: Vec<String> = spec.shape.iter().map(usize::to_string).collect();
        header.push_str(&format!(
            r#""{}":{{"dtype":"F32","shape":[{}],"data_offsets":[{},{}]}}"#,
            spec.name,
            dims.join(","),
            data.len(),
            data.len() + 4 * len
        ));
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    file
}

fn run(checked: &Checked, weights: &WeightFile<'_>, mode: Mode, input: &[f32]) -> Vec<f32> {
    let options = Options::new().mode(mode);
    let mut interpreter =
        Interpreter::with_options(&checked.graph, &checked.info, Some(weights), &options)
            .unwrap_or_else(|errors| panic!("{mode:?}: {errors}"));
    interpreter
        .run(input)
        .unwrap_or_else(|error| panic!("{mode:?}: {error}"))
}

/// Checks one random network; panics with the network's text on failure.
fn check_network(seed: u64) -> (usize, usize) {
    let text = random_network(seed);
    let file = SourceFile::new("random.cnn", text.clone());
    let checked = match cnnc_ir::check(&file) {
        Ok(checked) => checked,
        Err(errors) => panic!(
            "generated an invalid network:\n{text}\n{}",
            errors.render(&file, RenderStyle::Plain)
        ),
    };
    let bytes = random_weights(&checked, seed);
    let weights = WeightFile::from_bytes(&bytes).expect("valid safetensors");
    let input_len: usize = checked.info.shape(checked.graph.input()).iter().product();
    let mut rng = Rng(seed ^ 0x1A7E);
    let input: Vec<f32> = (0..2 * input_len).map(|_| rng.float(-1.0, 1.0)).collect();

    let reference = run(&checked, &weights, Mode::Reference, &input);
    let optimized = run(&checked, &weights, Mode::Optimized, &input);
    assert_eq!(reference.len(), optimized.len());
    let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let worst = reference
        .iter()
        .zip(&optimized)
        .map(|(r, o)| (r - o).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-5 * scale,
        "optimized differs by {worst} (scale {scale}) on:\n{text}"
    );

    // The fast path (execution plan, NHWC SIMD kernels, one arena) is held
    // to the conformance suite's bar against the reference.
    let fast = run(&checked, &weights, Mode::Fast, &input);
    assert_eq!(reference.len(), fast.len());
    let worst = reference
        .iter()
        .zip(&fast)
        .map(|(r, f)| (r - f).abs())
        .fold(0.0f32, |m, d| {
            if m.is_nan() || d.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        });
    assert!(
        worst <= 1e-4 * scale,
        "fast differs by {worst} (scale {scale}) on:\n{text}"
    );

    let result = cnnc_ir::optimize(checked.graph.clone(), &checked.info)
        .unwrap_or_else(|errors| panic!("{}", errors.render(&file, RenderStyle::Plain)));
    let plan = cnnc_ir::plan_memory(&result.graph, &result.info).expect("plan");
    if let Err(error) = plan_verifier::verify_plan(&result.graph, &result.info, &plan) {
        panic!("memory plan: {error}\n{text}");
    }
    let plan = cnnc_ir::plan_memory(&checked.graph, &checked.info).expect("plan");
    if let Err(error) = plan_verifier::verify_plan(&checked.graph, &checked.info, &plan) {
        panic!("memory plan (unoptimized): {error}\n{text}");
    }
    (checked.graph.len(), result.graph.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn optimized_equals_reference(seed in any::<u64>()) {
        check_network(seed);
    }
}

/// The generator reaches what the passes rewrite: across a fixed set of
/// seeds, the optimizer removes nodes from most networks.
#[test]
fn the_generator_exercises_the_passes() {
    let mut shrunk = 0;
    let mut total_removed = 0;
    for seed in 0..64 {
        let (before, after) = check_network(seed);
        if after < before {
            shrunk += 1;
        }
        total_removed += before - after;
    }
    assert!(shrunk >= 48, "only {shrunk} of 64 networks were optimized");
    assert!(total_removed >= 150, "only {total_removed} nodes removed");
}
