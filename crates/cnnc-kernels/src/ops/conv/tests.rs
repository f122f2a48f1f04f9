//! `Conv2dOp` tests: every algorithm that applies, on every tier this CPU
//! has, against [`reference::conv2d`] (NCHW, `f64` accumulation) on data
//! transposed to NHWC.
//!
//! **Tolerance.** `|y - y_ref| ≤ tol · max(1, max |z_ref|)`, where `z` is
//! the pre-activation value (conv + bias + residual): the activations are
//! at most 1.5-Lipschitz, so this bounds the output's error by the sum's.
//! `tol` is 1e-5 for the direct algorithms: they accumulate `K ≤ 5·5·33`
//! products of values in `[-1, 1)` in `f32`, whose rounding error grows
//! like `√K · 2⁻²⁴ · Σ|x·w|`, a few `1e-7` of the scale here, so 1e-5
//! leaves room for unlucky cancellation while any real bug (a wrong tap,
//! channel or edge: an error of the order of one product, ~1e-1) fails by
//! four orders of magnitude. Winograd's transforms add error (measured in
//! `ops::winograd`'s tests: F(4x4) ~2e-6, F(6x6) ~7.5e-6 of the scale at
//! these sizes), so its bounds are 2e-5 and 5e-5.

use proptest::prelude::*;

use super::*;
use crate::ops::winograd::WinogradTile;
use crate::reference;
use crate::tier::{kernels_for, Kernels, Tier};

/// A deterministic generator of values in `[-1, 1)` (SplitMix64), so a
/// failure reproduces from the case's seed.
struct Values(u64);

impl Values {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        2.0 * ((z >> 40) as f32 / (1u64 << 24) as f32) - 1.0
    }

    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next()).collect()
    }
}

/// The tiers this machine can run.
fn tiers() -> Vec<&'static Kernels> {
    Tier::ALL.into_iter().filter_map(kernels_for).collect()
}

/// The best tier of this machine.
fn best() -> &'static Kernels {
    kernels_for(Tier::best_available()).expect("the best tier is available")
}

const ACTIVATIONS: [Activation; 7] = [
    Activation::Identity,
    Activation::Relu,
    Activation::Relu6,
    Activation::LeakyRelu {
        negative_slope: 0.1,
    },
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Hardswish,
];

/// A one-sample geometry with PyTorch's output size (computed here, in the
/// tests only).
#[allow(clippy::too_many_arguments)]
fn geometry(
    in_channels: usize,
    [in_h, in_w]: [usize; 2],
    out_channels: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: [usize; 4],
    groups: usize,
) -> Conv2dGeometry {
    let out = |len: usize, before: usize, after: usize, axis: usize| {
        (len + before + after - dilation[axis] * (kernel[axis] - 1) - 1) / stride[axis] + 1
    };
    Conv2dGeometry {
        batch: 1,
        in_channels,
        in_h,
        in_w,
        out_channels,
        out_h: out(in_h, padding[0], padding[2], 0),
        out_w: out(in_w, padding[1], padding[3], 1),
        kernel,
        stride,
        dilation,
        padding,
        groups,
    }
}

/// A plain layer: stride 1, no dilation, one group, symmetric padding.
fn plain(
    in_channels: usize,
    size: usize,
    out_channels: usize,
    kernel: usize,
    pad: usize,
) -> Conv2dGeometry {
    geometry(
        in_channels,
        [size, size],
        out_channels,
        [kernel, kernel],
        [1, 1],
        [1, 1],
        [pad; 4],
        1,
    )
}

/// `[n, c, h, w]` → `[n, h, w, c]`.
fn to_nhwc(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..h * w {
                y[(b * h * w + i) * c + ch] = x[(b * c + ch) * h * w + i];
            }
        }
    }
    y
}

/// `[n, h, w, c]` → `[n, c, h, w]`.
fn to_nchw(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..h * w {
                y[(b * c + ch) * h * w + i] = x[(b * h * w + i) * c + ch];
            }
        }
    }
    y
}

/// PyTorch's activations in `f64` (every one propagates NaN).
fn activation_f64(activation: Activation, x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    match activation {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::Relu6 => x.clamp(0.0, 6.0),
        Activation::LeakyRelu { negative_slope } => {
            if x >= 0.0 {
                x
            } else {
                x * f64::from(negative_slope)
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
    }
}

/// One layer with its data: NHWC input and residual, PyTorch weight and
/// bias.
#[derive(Clone, Debug)]
struct Case {
    spec: Conv2dSpec,
    batch: usize,
    input: Vec<f32>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    residual: Option<Vec<f32>>,
}

impl Case {
    fn new(
        geometry: Conv2dGeometry,
        batch: usize,
        activation: Activation,
        has_bias: bool,
        has_residual: bool,
        seed: u64,
    ) -> Case {
        let g = geometry;
        let mut rng = Values(seed);
        let input = rng.vec(batch * g.input_len());
        let weight = rng.vec(g.weight_len());
        let bias = has_bias.then(|| rng.vec(g.out_channels));
        let residual = has_residual.then(|| rng.vec(batch * g.output_len()));
        Case {
            spec: Conv2dSpec::new(g, activation, has_bias, has_residual),
            batch,
            input,
            weight,
            bias,
            residual,
        }
    }

    /// The reference result, NHWC, and the scale of its pre-activation
    /// values (`max(1, max |z|)`).
    fn expected(&self) -> (Vec<f32>, f32) {
        let g = Conv2dGeometry {
            batch: self.batch,
            ..self.spec.geometry
        };
        let input = to_nchw(&self.input, g.batch, g.in_channels, g.in_h, g.in_w);
        let mut output = vec![0.0; g.output_len()];
        reference::conv2d(
            &g,
            &input,
            &self.weight,
            self.bias.as_deref(),
            false,
            &mut output,
        );
        let mut output = to_nhwc(&output, g.batch, g.out_channels, g.out_h, g.out_w);
        let mut scale = 1.0f64;
        for (index, y) in output.iter_mut().enumerate() {
            let r = self.residual.as_ref().map_or(0.0, |r| f64::from(r[index]));
            let z = f64::from(*y) + r;
            scale = scale.max(z.abs());
            *y = activation_f64(self.spec.activation, z) as f32;
        }
        (output, scale as f32)
    }

    fn op(&self, algorithm: Algorithm) -> Conv2dOp {
        let spec = Conv2dSpec {
            algorithm,
            ..self.spec
        };
        Conv2dOp::pack(spec, &self.weight, self.bias.as_deref()).expect("valid case")
    }

    fn run(&self, op: &Conv2dOp, ctx: &Context) -> Vec<f32> {
        let mut output = vec![f32::NAN; self.batch * self.spec.geometry.output_len()];
        let mut scratch = vec![f32::NAN; op.scratch_len(self.batch)];
        op.run(
            ctx,
            self.batch,
            &self.input,
            self.residual.as_deref(),
            &mut output,
            &mut scratch,
        )
        .expect("valid run");
        output
    }

    /// The algorithms that apply to this case.
    fn algorithms(&self) -> Vec<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(|a| a.is_applicable(&self.spec.geometry))
            .collect()
    }
}

/// The error bound of an algorithm relative to the scale (module doc).
fn tolerance(algorithm: Algorithm) -> f32 {
    match algorithm {
        Algorithm::Winograd(WinogradTile::F4x4) => 2e-5,
        Algorithm::Winograd(WinogradTile::F6x6) => 5e-5,
        _ => 1e-5,
    }
}

/// Asserts `|actual - expected| ≤ tolerance(algorithm) · scale` (see the
/// module doc).
#[track_caller]
fn assert_close(
    actual: &[f32],
    (expected, scale): &(Vec<f32>, f32),
    algorithm: Algorithm,
    what: &str,
) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let tolerance = tolerance(algorithm) * scale;
    for (index, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        if e.is_nan() {
            assert!(a.is_nan(), "{what}: element {index}: got {a}, expected NaN");
            continue;
        }
        let error = (a - e).abs();
        assert!(
            error <= tolerance,
            "{what}: element {index}: got {a}, expected {e} (error {error}, allowed {tolerance})"
        );
    }
}

#[track_caller]
fn assert_bits(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (index, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            a.to_bits() == e.to_bits(),
            "{what}: element {index}: {a} vs {e}"
        );
    }
}

/// Runs every applicable algorithm on every tier and compares with the
/// reference.
fn check_case(case: &Case) {
    let expected = case.expected();
    for kernels in tiers() {
        let ctx = Context::with(kernels, 1);
        for algorithm in case.algorithms() {
            let op = case.op(algorithm);
            let actual = case.run(&op, &ctx);
            let what = format!(
                "{} on {}: {:?}",
                algorithm.name(),
                kernels.tier(),
                case.spec
            );
            assert_close(&actual, &expected, algorithm, &what);
        }
    }
    check_planar(case, &expected);
}

/// The planar forms of a case without residual (depthwise with
/// multiplier 1; one group), on the NCHW planes of its data, against the
/// reference (`expected`, NHWC), on every tier, and bit-identical on 1
/// and 3 threads. The scratch starts as NaN: the planar direct algorithm
/// must write every float of it that it reads.
fn check_planar(case: &Case, (expected, scale): &(Vec<f32>, f32)) {
    let g = &case.spec.geometry;
    if case.residual.is_some() {
        return;
    }
    let batch = case.batch;
    let input = to_nchw(&case.input, batch, g.in_channels, g.in_h, g.in_w);
    let expected = (
        to_nchw(expected, batch, g.out_channels, g.out_h, g.out_w),
        *scale,
    );
    for algorithm in [Algorithm::PlanarDepthwise, Algorithm::PlanarDirect] {
        if !algorithm.is_applicable(g) {
            continue;
        }
        let op = case.op(algorithm);
        for kernels in tiers() {
            let mut first: Option<Vec<f32>> = None;
            for threads in [1, 3] {
                let ctx = Context::with(kernels, threads);
                let mut output = vec![f32::NAN; batch * g.output_len()];
                let mut scratch = vec![f32::NAN; op.scratch_len(batch)];
                op.run(&ctx, batch, &input, None, &mut output, &mut scratch)
                    .expect("valid run");
                let what = format!(
                    "{} on {} ({threads} threads): {:?}",
                    algorithm.name(),
                    kernels.tier(),
                    case.spec
                );
                assert_close(&output, &expected, algorithm, &what);
                match &first {
                    None => first = Some(output),
                    Some(first) => assert_bits(&output, first, &what),
                }
            }
        }
    }
}

/// Channel counts per group: ragged against 16-lane vectors and 32-wide tiles.
const CHANNELS: [usize; 7] = [1, 2, 3, 5, 8, 17, 33];

/// Random layers of every kind: plain, grouped, depthwise (multiplier 1-2);
/// kernels 1-5 with every stride (1-3), dilation (1-2) and asymmetric
/// padding (0-2 per side); widths that fill no vector or tile.
fn arbitrary_case() -> impl Strategy<Value = Case> {
    (
        (
            0usize..3,
            0usize..CHANNELS.len(),
            0usize..CHANNELS.len(),
            2usize..=3,
            1usize..=2,
        ),
        (
            [
                prop::sample::select(vec![1usize, 2, 3, 5]),
                prop::sample::select(vec![1usize, 2, 3, 5]),
            ],
            [1usize..=3, 1usize..=3],
            [1usize..=2, 1usize..=2],
        ),
        [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        [0usize..=9, 0usize..=9],
        (
            prop::sample::select(vec![1usize, 3]),
            0usize..ACTIVATIONS.len(),
            any::<bool>(),
            any::<bool>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (kind, in_index, out_index, group_count, multiplier),
                (kernel, stride, dilation),
                padding,
                extra,
                (batch, activation, bias, residual, seed),
            )| {
                let (in_per_group, out_per_group) = (CHANNELS[in_index], CHANNELS[out_index]);
                let (in_channels, out_channels, groups) = match kind {
                    0 => (in_per_group, out_per_group, 1),
                    1 => (
                        group_count * in_per_group,
                        group_count * out_per_group,
                        group_count,
                    ),
                    _ => (in_per_group, in_per_group * multiplier, in_per_group),
                };
                let span = |axis: usize| dilation[axis] * (kernel[axis] - 1) + 1;
                // The smallest input that one window fits once padded, plus some.
                let in_h = span(0).saturating_sub(padding[0] + padding[2]).max(1) + extra[0];
                let in_w = span(1).saturating_sub(padding[1] + padding[3]).max(1) + extra[1];
                let g = geometry(
                    in_channels,
                    [in_h, in_w],
                    out_channels,
                    kernel,
                    stride,
                    dilation,
                    padding,
                    groups,
                );
                Case::new(g, batch, ACTIVATIONS[activation], bias, residual, seed)
            },
        )
}

proptest! {
    #[test]
    fn every_algorithm_on_every_tier_matches_the_reference(case in arbitrary_case()) {
        check_case(&case);
    }
}

#[test]
fn fixed_layers_of_every_kind_match_the_reference() {
    let layers = [
        // Stem-like: 3 channels, 7x7 stride 2 padding 3; LeNet's 1-channel 5x5.
        geometry(3, [23, 21], 16, [7, 7], [2, 2], [1, 1], [3; 4], 1),
        plain(1, 12, 6, 5, 0),
        // 3x3 with padding, ragged channels; "same" padding of an even kernel.
        plain(17, 9, 33, 3, 1),
        geometry(5, [8, 7], 18, [2, 2], [1, 1], [1, 1], [0, 0, 1, 1], 1),
        // 1x1 stride 1 (one GEMM), 1x1 stride 2 (indirect), 1x1 padded.
        plain(33, 7, 40, 1, 0),
        geometry(24, [9, 9], 20, [1, 1], [2, 2], [1, 1], [0; 4], 1),
        geometry(6, [4, 5], 7, [1, 1], [1, 1], [1, 1], [1, 0, 2, 1], 1),
        // Dilated, rectangular.
        geometry(4, [11, 13], 9, [3, 2], [1, 2], [2, 3], [2, 1, 0, 3], 1),
        // Depthwise 3x3 stride 1 and 2 (MobileNet), multiplier 2, 5x5 dilated.
        geometry(40, [10, 9], 40, [3, 3], [1, 1], [1, 1], [1; 4], 40),
        geometry(40, [10, 9], 40, [3, 3], [2, 2], [1, 1], [1; 4], 40),
        // Planar depthwise: planes padded whole (wide rows, dilated,
        // stride 3), padded row by row (too large), and a kernel of more
        // rows than the planar kernel batches (output by output).
        geometry(3, [4, 1100], 3, [3, 3], [2, 2], [1, 1], [1; 4], 3),
        geometry(2, [3, 700], 2, [2, 5], [1, 3], [1, 40], [0, 2, 1, 3], 2),
        geometry(2, [12, 1100], 2, [3, 3], [2, 2], [1, 1], [1; 4], 2),
        geometry(2, [12, 800], 2, [3, 4], [1, 1], [1, 1], [1, 2, 1, 1], 2),
        geometry(2, [12, 9], 2, [9, 3], [1, 1], [1, 1], [4, 1, 4, 1], 2),
        // Rows wide enough for 8- and 4-pixel sliding blocks (asymmetric
        // padding; row stride 3 with column stride 1).
        geometry(37, [13, 21], 37, [3, 3], [1, 1], [1, 1], [1; 4], 37),
        geometry(20, [15, 40], 20, [3, 3], [2, 2], [1, 1], [1, 0, 0, 1], 20),
        geometry(17, [16, 12], 17, [3, 3], [3, 1], [1, 1], [0, 1, 2, 1], 17),
        geometry(7, [6, 8], 14, [3, 3], [1, 1], [1, 1], [1; 4], 7),
        geometry(18, [12, 11], 18, [5, 5], [1, 2], [2, 1], [2, 3, 1, 0], 18),
        // Planar direct: a stem large enough to be cut into tasks, with
        // rows wider than a tile (whole vectors and pieces); stride 1
        // with asymmetric padding; stride 3 dilated (9 phases, some
        // unused); channels not a whole block.
        geometry(3, [41, 70], 16, [7, 7], [2, 2], [1, 1], [3; 4], 1),
        geometry(2, [6, 100], 5, [3, 3], [1, 1], [1, 1], [1, 0, 2, 1], 1),
        geometry(1, [20, 53], 9, [3, 2], [3, 3], [2, 3], [2, 1, 0, 2], 1),
        // Grouped 1x1 and 3x3 (ResNeXt-like), output channels per group ragged.
        geometry(32, [6, 6], 40, [1, 1], [1, 1], [1, 1], [0; 4], 4),
        geometry(12, [7, 6], 9, [3, 3], [2, 1], [1, 1], [1, 0, 1, 2], 3),
    ];
    for (index, g) in layers.into_iter().enumerate() {
        for (activation_index, &activation) in ACTIVATIONS.iter().enumerate() {
            let flags = activation_index + index;
            let case = Case::new(
                g,
                1 + 2 * (flags % 2),
                activation,
                flags % 3 != 0,
                flags % 4 < 2,
                index as u64 * 31 + activation_index as u64,
            );
            check_case(&case);
        }
    }
}

#[test]
fn nan_propagates_like_the_reference() {
    // A NaN input pixel makes exactly the outputs whose window holds it NaN,
    // through every activation (PyTorch's relu(NaN) is NaN). Winograd is
    // left out: its tile transforms spread a NaN to the whole output tile.
    let layers = [
        plain(5, 7, 20, 3, 1),
        plain(3, 9, 8, 1, 0),
        geometry(3, [11, 9], 16, [5, 5], [2, 2], [1, 1], [2; 4], 1),
        geometry(20, [6, 7], 20, [3, 3], [1, 1], [1, 1], [1; 4], 20),
        geometry(8, [6, 6], 12, [3, 3], [1, 1], [1, 1], [1; 4], 2),
    ];
    for (index, g) in layers.into_iter().enumerate() {
        for activation in ACTIVATIONS {
            let mut case = Case::new(g, 2, activation, true, index % 2 == 0, index as u64);
            let pixel = (g.in_h / 2 * g.in_w + g.in_w / 2) * g.in_channels;
            case.input[pixel + g.in_channels - 1] = f32::NAN;
            let expected = case.expected();
            assert!(expected.0.iter().any(|y| y.is_nan()));
            assert!(expected.0.iter().any(|y| !y.is_nan()));
            for kernels in tiers() {
                let ctx = Context::with(kernels, 1);
                for algorithm in case.algorithms() {
                    if let Algorithm::Winograd(_) = algorithm {
                        continue;
                    }
                    let actual = case.run(&case.op(algorithm), &ctx);
                    let what = format!(
                        "{} on {} with {activation:?}",
                        algorithm.name(),
                        kernels.tier()
                    );
                    assert_close(&actual, &expected, algorithm, &what);
                    // Finite outputs stay finite.
                    for (a, e) in actual.iter().zip(&expected.0) {
                        assert_eq!(a.is_nan(), e.is_nan(), "{what}");
                    }
                }
            }
        }
    }
}

/// Layers big enough to be split between threads (above
/// `PARALLEL_MIN_MACS`), one per algorithm, with few pixel tiles (so the
/// output channels are split too) and many.
fn parallel_cases() -> Vec<Case> {
    let layers = [
        plain(64, 12, 80, 1, 0),
        geometry(48, [7, 7], 96, [3, 3], [1, 1], [1, 1], [1; 4], 1),
        plain(32, 20, 40, 3, 1),
        geometry(3, [40, 38], 24, [7, 7], [2, 2], [1, 1], [3; 4], 1),
        geometry(96, [30, 30], 96, [3, 3], [1, 1], [1, 1], [1; 4], 96),
        geometry(64, [14, 14], 64, [3, 3], [1, 1], [1, 1], [1; 4], 4),
    ];
    layers
        .into_iter()
        .enumerate()
        .map(|(index, g)| {
            assert!(
                g.macs() >= PARALLEL_MIN_MACS,
                "layer {index} is too small to be split"
            );
            Case::new(
                g,
                1 + index % 2,
                Activation::Relu,
                true,
                index % 2 == 0,
                index as u64,
            )
        })
        .collect()
}

#[test]
fn every_thread_count_gives_the_same_bits() {
    let contexts: Vec<Context> = (1..=3)
        .map(|threads| Context::with(best(), threads))
        .collect();
    for case in parallel_cases() {
        let expected = case.expected();
        for algorithm in case.algorithms() {
            let op = case.op(algorithm);
            let single = case.run(&op, &contexts[0]);
            assert_close(&single, &expected, algorithm, algorithm.name());
            for ctx in &contexts[1..] {
                let what = format!("{} with {} threads", algorithm.name(), ctx.threads());
                assert_bits(&case.run(&op, ctx), &single, &what);
            }
        }
    }
}

#[test]
fn rebuilding_from_constants_gives_the_same_bits() {
    let ctx = Context::with(best(), 1);
    for case in parallel_cases().into_iter().take(3).chain([Case::new(
        geometry(10, [6, 6], 20, [3, 3], [1, 1], [1, 1], [1; 4], 10),
        2,
        Activation::Hardswish,
        true,
        true,
        7,
    )]) {
        for algorithm in case.algorithms() {
            let op = case.op(algorithm);
            let copy = Conv2dOp::from_constants(op.spec, Buffer::from_slice(op.constants()))
                .expect("same constants");
            assert_eq!(copy.spec(), op.spec());
            assert_bits(
                &case.run(&copy, &ctx),
                &case.run(&op, &ctx),
                algorithm.name(),
            );
        }
    }
}

#[test]
fn the_split_covers_every_output_once() {
    for threads in [1, 2, 3, 5] {
        let ctx = Context::with(best(), threads);
        let (mr, _) = best().gemm_tile();
        for (outer, rows, cols) in [
            (1, 1, 1),
            (1, 3136, 64),
            (3, 49, 512),
            (2, 5, 2048),
            (7, 1, 17),
        ] {
            for split_cols in [false, true] {
                let split = Split::new(&ctx, outer, rows, cols, u64::MAX, 64, split_cols);
                let mut seen = vec![0u8; outer * rows * cols];
                for task in 0..split.tasks() {
                    split.for_each(task, |matrix, rows_range, cols_range| {
                        assert!(rows_range.start % mr == 0);
                        assert!(cols_range.start % PANEL == 0);
                        for r in rows_range {
                            for c in cols_range.clone() {
                                seen[(matrix * rows + r) * cols + c] += 1;
                            }
                        }
                    });
                }
                assert!(
                    seen.iter().all(|&count| count == 1),
                    "{outer}x{rows}x{cols}"
                );
                let row_tiles = outer * rows.div_ceil(mr);
                if threads == 1 {
                    assert_eq!(split.tasks(), 1);
                } else if row_tiles > 1 {
                    assert!(split.tasks() > 1, "{outer}x{rows}x{cols}");
                }
            }
        }
    }
    // Small layers run as one task.
    let split = Split::new(&Context::with(best(), 4), 1, 3136, 64, 1000, 64, true);
    assert_eq!(split.tasks(), 1);
}

#[test]
fn the_choice_rule() {
    let resnet_stem = geometry(3, [224, 224], 64, [7, 7], [2, 2], [1, 1], [3; 4], 1);
    let lenet = plain(1, 28, 6, 5, 0);
    let resnet_3x3 = plain(64, 56, 64, 3, 1);
    let downsample_3x3 = geometry(64, [56, 56], 128, [3, 3], [2, 2], [1, 1], [1; 4], 1);
    let downsample_1x1 = geometry(64, [56, 56], 128, [1, 1], [2, 2], [1, 1], [0; 4], 1);
    let pointwise = plain(256, 14, 1024, 1, 0);
    let depthwise = geometry(144, [56, 56], 144, [3, 3], [2, 2], [1, 1], [1; 4], 144);
    let grouped = geometry(128, [28, 28], 128, [3, 3], [1, 1], [1, 1], [1; 4], 32);
    let small_map_3x3 = plain(512, 4, 512, 3, 1);
    let few_channels_3x3 = plain(8, 56, 64, 3, 1);
    let dilated_small = geometry(3, [20, 20], 8, [3, 3], [1, 1], [1, 2], [1; 4], 1);
    let pointwise_small = plain(3, 20, 8, 1, 0);
    let cases = [
        (resnet_stem, Algorithm::RowIndirect),
        (lenet, Algorithm::RowIndirect),
        (dilated_small, Algorithm::Indirect),
        (pointwise_small, Algorithm::Gemm1x1),
        (resnet_3x3, Algorithm::Winograd(WinogradTile::F4x4)),
        (small_map_3x3, Algorithm::Indirect),
        (few_channels_3x3, Algorithm::Indirect),
        (downsample_3x3, Algorithm::Indirect),
        (downsample_1x1, Algorithm::Indirect),
        (pointwise, Algorithm::Gemm1x1),
        (depthwise, Algorithm::Depthwise),
        (grouped, Algorithm::Grouped),
    ];
    for (g, algorithm) in cases {
        assert_eq!(Algorithm::choose(&g), algorithm, "{g:?}");
        assert!(algorithm.is_applicable(&g));
        assert!(check_geometry(&g).is_ok());
    }
    assert!(!Algorithm::Gemm1x1.is_applicable(&resnet_3x3));
    assert!(!Algorithm::Indirect.is_applicable(&grouped));
    assert!(!Algorithm::Depthwise.is_applicable(&grouped));
    assert!(Algorithm::Grouped.is_applicable(&resnet_3x3));
    assert!(!Algorithm::RowIndirect.is_applicable(&dilated_small));
    assert!(!Algorithm::Winograd(WinogradTile::F6x6).is_applicable(&downsample_3x3));
    assert!(Algorithm::Winograd(WinogradTile::F6x6).is_applicable(&few_channels_3x3));
}

#[test]
fn bad_specs_and_sizes_are_errors_not_panics() {
    let g = plain(4, 5, 6, 3, 1);
    let case = Case::new(g, 2, Activation::Relu, true, true, 1);
    let spec = case.spec;
    let weight = &case.weight;
    let bias = case.bias.as_deref();
    let is_spec_error = |result: Result<Conv2dOp, OpError>| matches!(result, Err(OpError::Spec(_)));

    // Construction.
    assert!(matches!(
        Conv2dOp::pack(spec, &weight[1..], bias),
        Err(OpError::Length { what: "weight", .. })
    ));
    assert!(matches!(
        Conv2dOp::pack(spec, weight, Some(&[0.0; 5])),
        Err(OpError::Length { what: "bias", .. })
    ));
    assert!(is_spec_error(Conv2dOp::pack(spec, weight, None)));
    let no_bias = Conv2dSpec {
        has_bias: false,
        ..spec
    };
    assert!(is_spec_error(Conv2dOp::pack(no_bias, weight, bias)));
    for algorithm in [Algorithm::Gemm1x1, Algorithm::Depthwise] {
        assert!(is_spec_error(Conv2dOp::pack(
            Conv2dSpec { algorithm, ..spec },
            weight,
            bias
        )));
    }
    let strided = Conv2dSpec {
        geometry: geometry(4, [5, 5], 6, [3, 3], [2, 2], [1, 1], [1; 4], 1),
        algorithm: Algorithm::Winograd(WinogradTile::F4x4),
        ..spec
    };
    let strided_weight = vec![0.0; strided.geometry.weight_len()];
    assert!(is_spec_error(Conv2dOp::pack(
        strided,
        &strided_weight,
        bias
    )));
    let bad_geometries = [
        Conv2dGeometry { batch: 2, ..g },
        Conv2dGeometry { out_h: 6, ..g },
        Conv2dGeometry { out_w: 4, ..g },
        Conv2dGeometry { groups: 3, ..g },
        Conv2dGeometry { groups: 0, ..g },
        Conv2dGeometry {
            stride: [0, 1],
            ..g
        },
        Conv2dGeometry {
            dilation: [1, 0],
            ..g
        },
        Conv2dGeometry {
            kernel: [0, 3],
            ..g
        },
        Conv2dGeometry {
            in_channels: 0,
            ..g
        },
        Conv2dGeometry {
            in_h: usize::MAX,
            ..g
        },
        Conv2dGeometry {
            in_channels: usize::MAX / 2,
            out_channels: usize::MAX / 2,
            in_h: 4,
            in_w: 4,
            out_h: 4,
            out_w: 4,
            kernel: [1, 1],
            padding: [0; 4],
            ..g
        },
    ];
    for bad in bad_geometries {
        let spec = Conv2dSpec {
            geometry: bad,
            ..spec
        };
        assert!(is_spec_error(Conv2dOp::pack(spec, weight, bias)), "{bad:?}");
        assert!(is_spec_error(Conv2dOp::from_constants(
            spec,
            Buffer::zeroed(0)
        )));
    }
    assert!(matches!(
        Conv2dOp::from_constants(spec, Buffer::zeroed(3)),
        Err(OpError::Length {
            what: "constants",
            ..
        })
    ));

    // Runs.
    let op = case.op(Algorithm::RowIndirect);
    let ctx = Context::with(best(), 1);
    let out_len = 2 * g.output_len();
    let mut output = vec![0.0; out_len];
    let mut scratch = vec![0.0; op.scratch_len(2)];
    let residual = case.residual.as_deref();
    let input = &case.input;
    assert!(matches!(
        op.run(&ctx, 2, &input[1..], residual, &mut output, &mut scratch),
        Err(OpError::Length { what: "input", .. })
    ));
    assert!(matches!(
        op.run(&ctx, 3, input, residual, &mut output, &mut scratch),
        Err(OpError::Length { what: "input", .. })
    ));
    assert!(matches!(
        op.run(&ctx, 2, input, residual, &mut output[1..], &mut scratch),
        Err(OpError::Length { what: "output", .. })
    ));
    assert!(matches!(
        op.run(&ctx, 2, input, Some(&input[..3]), &mut output, &mut scratch),
        Err(OpError::Length {
            what: "residual",
            ..
        })
    ));
    assert!(matches!(
        op.run(&ctx, 2, input, None, &mut output, &mut scratch),
        Err(OpError::Spec(_))
    ));
    assert!(matches!(
        op.run(&ctx, usize::MAX, input, residual, &mut output, &mut scratch),
        Err(OpError::Spec(_))
    ));
    // A batch of zero is an empty call.
    assert_eq!(
        op.run(&ctx, 0, &[], residual.map(|_| &[][..]), &mut [], &mut []),
        Ok(())
    );
    let without = Conv2dOp::pack(
        Conv2dSpec {
            has_residual: false,
            ..spec
        },
        weight,
        bias,
    )
    .expect("valid");
    assert!(matches!(
        without.run(&ctx, 2, input, residual, &mut output, &mut scratch),
        Err(OpError::Spec(_))
    ));
    // Nothing was written by the refused calls.
    assert!(output.iter().all(|&y| y == 0.0));
}

#[test]
fn only_winograd_needs_scratch() {
    let g = plain(16, 12, 16, 3, 1);
    let case = Case::new(g, 1, Activation::Identity, false, false, 3);
    for algorithm in case.algorithms() {
        let op = case.op(algorithm);
        if let Algorithm::Winograd(_) = algorithm {
            assert!(op.scratch_len(1) > 0);
        } else {
            assert_eq!(op.scratch_len(5), 0, "{}", algorithm.name());
        }
    }
}

/// A random inverted-residual block: its three layers packed alone, and
/// its input and residual.
#[derive(Debug)]
struct BlockCase {
    batch: usize,
    expand: Option<Conv2dSpec>,
    depthwise: Conv2dSpec,
    project: Conv2dSpec,
    seed: u64,
}

impl BlockCase {
    /// The three layers, packed from seeded random weights.
    fn layers(&self) -> (Option<Conv2dOp>, Conv2dOp, Conv2dOp) {
        let mut values = Values(self.seed);
        let mut pack = |spec: Conv2dSpec| {
            let sizes = check_geometry(&spec.geometry).expect("a valid geometry");
            let weight = values.vec(sizes.weight);
            let bias = spec
                .has_bias
                .then(|| values.vec(spec.geometry.out_channels));
            Conv2dOp::pack(spec, &weight, bias.as_deref()).expect("packs")
        };
        (
            self.expand.map(&mut pack),
            pack(self.depthwise),
            pack(self.project),
        )
    }

    fn input(&self) -> Vec<f32> {
        let g = self.expand.as_ref().unwrap_or(&self.depthwise).geometry;
        Values(self.seed ^ 1).vec(self.batch * g.in_h * g.in_w * g.in_channels)
    }

    fn residual(&self) -> Option<Vec<f32>> {
        let g = &self.project.geometry;
        let len = self.batch * g.out_h * g.out_w * g.out_channels;
        self.project
            .has_residual
            .then(|| Values(self.seed ^ 2).vec(len))
    }

    /// The three layers run one after the other.
    fn unfused(&self, ctx: &Context) -> Vec<f32> {
        let (expand, depthwise, project) = self.layers();
        let run = |op: &Conv2dOp, x: &[f32], residual: Option<&[f32]>| {
            let g = &op.spec().geometry;
            let mut y = vec![0.0; self.batch * g.out_h * g.out_w * g.out_channels];
            let mut scratch = vec![0.0; op.scratch_len(self.batch)];
            op.run(ctx, self.batch, x, residual, &mut y, &mut scratch)
                .expect("runs");
            y
        };
        let mut x = self.input();
        if let Some(expand) = &expand {
            x = run(expand, &x, None);
        }
        let x = run(&depthwise, &x, None);
        run(&project, &x, self.residual().as_deref())
    }

    /// The fused operator with bands of `band_rows`.
    fn fused(&self, ctx: &Context, band_rows: usize) -> Vec<f32> {
        let (expand, depthwise, project) = self.layers();
        let op = BottleneckOp::from_layers(expand.as_ref(), &depthwise, &project)
            .expect("the layers chain")
            .with_band_rows(band_rows);
        let g = &self.project.geometry;
        let mut y = vec![0.0; self.batch * g.out_h * g.out_w * g.out_channels];
        let mut scratch = vec![0.0; op.scratch_len(self.batch)];
        let (input, residual) = (self.input(), self.residual());
        op.run(
            ctx,
            self.batch,
            &input,
            residual.as_deref(),
            &mut y,
            &mut scratch,
        )
        .expect("runs");
        y
    }
}

/// Random blocks: with and without expansion, ragged channels, every
/// stride, dilation and padding of the depthwise layer (rows and columns
/// apart), activations, bias or not, a residual or not.
fn arbitrary_block() -> impl Strategy<Value = BlockCase> {
    (
        (
            1usize..=3,
            1usize..=20,
            proptest::option::of(1usize..=40),
            1usize..=20,
        ),
        (
            1usize..=13,
            1usize..=13,
            prop::sample::select(vec![1usize, 3, 5]),
            1usize..=3,
        ),
        (
            [1usize..=2, 1usize..=2],
            [1usize..=2, 1usize..=2],
            [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        ),
        (
            0usize..ACTIVATIONS.len(),
            0usize..ACTIVATIONS.len(),
            0usize..ACTIVATIONS.len(),
        ),
        (any::<[bool; 4]>(), any::<u64>()),
    )
        .prop_filter_map(
            "the depthwise layer has an output",
            |(
                (batch, cin, expanded, cout),
                (h, w, kh, kw),
                (stride, dilation, pad),
                acts,
                (flags, seed),
            )| {
                let channels = expanded.unwrap_or(cin);
                let out = |len: usize, axis: usize, k: usize| {
                    let padded = len + pad[axis] + pad[axis + 2];
                    let span = dilation[axis] * (k - 1) + 1;
                    (padded >= span && pad[axis].max(pad[axis + 2]) < span)
                        .then(|| (padded - span) / stride[axis] + 1)
                };
                let (oh, ow) = (out(h, 0, kh)?, out(w, 1, kw)?);
                let pointwise = |cin: usize, [h, w]: [usize; 2], cout: usize| {
                    geometry(cin, [h, w], cout, [1, 1], [1, 1], [1, 1], [0; 4], 1)
                };
                let spec =
                    |geometry: Conv2dGeometry, activation: usize, bias: bool, residual: bool| {
                        Conv2dSpec::new(geometry, ACTIVATIONS[activation], bias, residual)
                    };
                let depthwise = geometry(
                    channels,
                    [h, w],
                    channels,
                    [kh, kw],
                    stride,
                    dilation,
                    pad,
                    channels,
                );
                if depthwise.out_h != oh || depthwise.out_w != ow {
                    return None;
                }
                Some(BlockCase {
                    batch,
                    expand: expanded
                        .map(|_| spec(pointwise(cin, [h, w], channels), acts.0, flags[0], false)),
                    // (With one channel the rule would pick a plain GEMM.)
                    depthwise: Conv2dSpec {
                        algorithm: Algorithm::Depthwise,
                        ..spec(depthwise, acts.1, flags[1], false)
                    },
                    project: spec(
                        pointwise(channels, [oh, ow], cout),
                        acts.2,
                        flags[2],
                        flags[3],
                    ),
                    seed,
                })
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// The fused block gives the bits of its three layers run alone, for
    /// every band size, thread count and tier.
    #[test]
    fn a_fused_block_gives_the_bits_of_its_layers(case in arbitrary_block()) {
        for kernels in tiers() {
            let expected = case.unfused(&Context::with(kernels, 1));
            let out_h = case.depthwise.geometry.out_h;
            for band_rows in [1, 2, 3, out_h] {
                for threads in [1, 3] {
                    let ctx = Context::with(kernels, threads);
                    let what = format!("{:?}, bands of {band_rows}, {threads} threads", kernels.tier());
                    assert_bits(&case.fused(&ctx, band_rows), &expected, &what);
                }
            }
        }
    }
}

#[test]
fn a_mobilenet_block_fused_gives_the_bits_of_its_layers() {
    // MobileNetV2's features.2 (16 → 96 → 96/2 → 24) and features.3 (24 →
    // 144 → 144 → 24 + residual), at their real sizes: several bands, the
    // budget's own band size.
    let pointwise =
        |cin, size, cout| geometry(cin, [size, size], cout, [1, 1], [1, 1], [1, 1], [0; 4], 1);
    let dw = |c, size, stride| geometry(c, [size, size], c, [3, 3], [stride; 2], [1, 1], [1; 4], c);
    let cases = [
        BlockCase {
            batch: 1,
            expand: Some(Conv2dSpec::new(
                pointwise(16, 112, 96),
                Activation::Relu6,
                true,
                false,
            )),
            depthwise: Conv2dSpec::new(dw(96, 112, 2), Activation::Relu6, true, false),
            project: Conv2dSpec::new(pointwise(96, 56, 24), Activation::Identity, true, false),
            seed: 7,
        },
        BlockCase {
            batch: 2,
            expand: Some(Conv2dSpec::new(
                pointwise(24, 56, 144),
                Activation::Relu6,
                true,
                false,
            )),
            depthwise: Conv2dSpec::new(dw(144, 56, 1), Activation::Relu6, true, false),
            project: Conv2dSpec::new(pointwise(144, 56, 24), Activation::Identity, true, true),
            seed: 8,
        },
    ];
    for case in cases {
        let (expand, depthwise, project) = case.layers();
        let op = BottleneckOp::from_layers(expand.as_ref(), &depthwise, &project).expect("chains");
        assert!(op.spec().worth_fusing());
        let band_rows = op.band_rows();
        assert!(
            band_rows > 1 && band_rows < case.depthwise.geometry.out_h,
            "{band_rows}"
        );
        let expected = case.unfused(&Context::with(best(), 1));
        for threads in [1, 2] {
            let ctx = Context::with(best(), threads);
            assert_bits(&case.fused(&ctx, band_rows), &expected, "mobilenet block");
        }
    }
}

#[test]
fn layers_that_do_not_chain_are_refused() {
    let pointwise =
        |cin, size, cout| geometry(cin, [size, size], cout, [1, 1], [1, 1], [1, 1], [0; 4], 1);
    let dw = geometry(8, [6, 6], 8, [3, 3], [1, 1], [1, 1], [1; 4], 8);
    let spec = |g| Conv2dSpec::new(g, Activation::Identity, false, false);
    let good = BottleneckSpec {
        expand: Some(spec(pointwise(4, 6, 8))),
        depthwise: spec(dw),
        project: spec(pointwise(8, 6, 5)),
    };
    let constants = |spec: &BottleneckSpec| {
        let len = [spec.expand, Some(spec.depthwise), Some(spec.project)]
            .iter()
            .flatten()
            .map(|s| constants_len(s, &check_geometry(&s.geometry).expect("valid")).expect("fits"))
            .sum::<usize>();
        Buffer::zeroed(len)
    };
    assert!(BottleneckOp::from_constants(good, constants(&good)).is_ok());
    // Too small to be worth fusing.
    assert!(!good.worth_fusing());
    let mut wrong_channels = good;
    wrong_channels.project = spec(pointwise(7, 6, 5));
    let mut not_depthwise = good;
    not_depthwise.depthwise = spec(geometry(8, [6, 6], 8, [3, 3], [1, 1], [1, 1], [1; 4], 1));
    let mut residual_in_the_middle = good;
    residual_in_the_middle.depthwise.has_residual = true;
    let mut wrong_size = good;
    wrong_size.expand = Some(spec(pointwise(4, 5, 8)));
    for bad in [
        wrong_channels,
        not_depthwise,
        residual_in_the_middle,
        wrong_size,
    ] {
        assert!(
            BottleneckOp::from_constants(bad, Buffer::zeroed(10_000)).is_err(),
            "{bad:?}"
        );
        assert!(!bad.worth_fusing());
    }
    // Wrong constants and buffer sizes are errors too.
    assert!(BottleneckOp::from_constants(good, Buffer::zeroed(3)).is_err());
    let op = BottleneckOp::from_constants(good, constants(&good)).expect("valid");
    let ctx = Context::with(best(), 1);
    let mut scratch = vec![0.0; op.scratch_len(1)];
    let mut y = vec![0.0; 6 * 6 * 5];
    assert!(op
        .run(&ctx, 1, &[0.0; 10], None, &mut y, &mut scratch)
        .is_err());
    assert!(op
        .run(
            &ctx,
            1,
            &[0.0; 4 * 36],
            Some(&y.clone()),
            &mut y,
            &mut scratch
        )
        .is_err());
    assert!(op
        .run(&ctx, 1, &[0.0; 4 * 36], None, &mut y, &mut [])
        .is_err());
    assert!(op
        .run(&ctx, 1, &[0.0; 4 * 36], None, &mut y, &mut scratch)
        .is_ok());
}
