//! Winograd tests: the matrices against the Cook–Toom construction (exact
//! rationals), and the operator on every tier against the `f64` reference
//! convolution, on ragged shapes with every option.

use super::transform::{self, Transform, F4, F6};
use super::*;
use crate::reference;
use crate::tier::kernels_for;
use crate::Kernels;

/// Exact rationals, just enough for the Cook–Toom construction.
mod rational {
    use core::ops::{Add, Div, Mul, Neg, Sub};

    /// `num / den`, reduced, `den > 0`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Q {
        num: i128,
        den: i128,
    }

    fn gcd(a: i128, b: i128) -> i128 {
        if b == 0 {
            a.abs()
        } else {
            gcd(b, a % b)
        }
    }

    impl Q {
        pub fn new(num: i128, den: i128) -> Q {
            let g = gcd(num, den).max(1) * den.signum();
            Q {
                num: num / g,
                den: den / g,
            }
        }

        pub fn int(x: i128) -> Q {
            Q::new(x, 1)
        }

        pub fn to_f64(self) -> f64 {
            self.num as f64 / self.den as f64
        }

        pub fn pow(self, k: usize) -> Q {
            (0..k).fold(Q::int(1), |acc, _| acc * self)
        }
    }

    impl Add for Q {
        type Output = Q;
        fn add(self, b: Q) -> Q {
            Q::new(self.num * b.den + b.num * self.den, self.den * b.den)
        }
    }

    impl Sub for Q {
        type Output = Q;
        fn sub(self, b: Q) -> Q {
            self + (-b)
        }
    }

    impl Neg for Q {
        type Output = Q;
        fn neg(self) -> Q {
            Q::new(-self.num, self.den)
        }
    }

    impl Mul for Q {
        type Output = Q;
        fn mul(self, b: Q) -> Q {
            Q::new(self.num * b.num, self.den * b.den)
        }
    }

    impl Div for Q {
        type Output = Q;
        fn div(self, b: Q) -> Q {
            Q::new(self.num * b.den, self.den * b.num)
        }
    }
}

use rational::Q;

/// A matrix of exact rationals, row-major.
type Matrix = Vec<Vec<Q>>;

/// The Cook–Toom matrices `(Aᵀ [m×n], G [n×3], Bᵀ [n×n])` for the finite
/// `points` (and ∞), built independently of the library from the
/// definition: Lagrange interpolation of the product polynomial.
fn cook_toom(points: &[Q], m: usize) -> (Matrix, Matrix, Matrix) {
    let n = points.len() + 1;
    assert_eq!(n, m + 2);
    let poly_times_linear = |poly: &[Q], root: Q| {
        // poly · (x − root), lowest power first.
        let mut out = vec![Q::int(0); poly.len() + 1];
        for (i, &c) in poly.iter().enumerate() {
            out[i] = out[i] - c * root;
            out[i + 1] = out[i + 1] + c;
        }
        out
    };
    let mut at = vec![vec![Q::int(0); n]; m];
    for (i, row) in at.iter_mut().enumerate() {
        for (j, &a) in points.iter().enumerate() {
            row[j] = a.pow(i);
        }
        row[n - 1] = Q::int(i128::from(i == m - 1));
    }
    let mut g = vec![vec![Q::int(0); 3]; n];
    let mut bt = vec![vec![Q::int(0); n]; n];
    for (j, &a) in points.iter().enumerate() {
        let mut f = Q::int(1);
        let mut poly = vec![Q::int(1)];
        for (l, &b) in points.iter().enumerate() {
            if l != j {
                f = f * (a - b);
                poly = poly_times_linear(&poly, b);
            }
        }
        for (k, value) in g[j].iter_mut().enumerate() {
            *value = a.pow(k) / f;
        }
        poly.resize(n, Q::int(0));
        bt[j] = poly;
    }
    g[n - 1][2] = Q::int(1);
    bt[n - 1] = points
        .iter()
        .fold(vec![Q::int(1)], |poly, &b| poly_times_linear(&poly, b));
    (at, g, bt)
}

fn f4_points() -> Vec<Q> {
    [(0, 1), (-1, 1), (1, 1), (1, 2), (-2, 1)]
        .map(|(num, den)| Q::new(num, den))
        .to_vec()
}

fn f6_points() -> Vec<Q> {
    [(0, 1), (1, 1), (-1, 1), (2, 1), (-2, 1), (1, 2), (-1, 2)]
        .map(|(num, den)| Q::new(num, den))
        .to_vec()
}

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `[-1, 1)`.
    fn value(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn values(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.value()).collect()
    }

    /// A small integer in `-8..8`, as both types.
    fn small(&mut self) -> i128 {
        self.below(16) as i128 - 8
    }
}

#[test]
fn the_construction_computes_the_correlation_exactly() {
    let mut rng = Rng(1);
    for (points, m) in [(f4_points(), 4), (f6_points(), 6)] {
        let (at, g, bt) = cook_toom(&points, m);
        let n = m + 2;
        for _ in 0..20 {
            let d: Vec<Q> = (0..n).map(|_| Q::int(rng.small())).collect();
            let w: Vec<Q> = (0..3).map(|_| Q::int(rng.small())).collect();
            let gw: Vec<Q> = (0..n)
                .map(|j| (0..3).fold(Q::int(0), |s, k| s + g[j][k] * w[k]))
                .collect();
            let bd: Vec<Q> = (0..n)
                .map(|j| (0..n).fold(Q::int(0), |s, t| s + bt[j][t] * d[t]))
                .collect();
            for i in 0..m {
                let y = (0..n).fold(Q::int(0), |s, j| s + at[i][j] * gw[j] * bd[j]);
                let direct = (0..3).fold(Q::int(0), |s, k| s + d[i + k] * w[k]);
                assert_eq!(y, direct, "F({m}) output {i}");
            }
        }
    }
}

#[test]
fn the_library_points_and_filter_matrices_are_the_constructions() {
    for (points, library, m) in [
        (f4_points(), &transform::POINTS_F4[..], 4),
        (f6_points(), &transform::POINTS_F6[..], 6),
    ] {
        let as_f64: Vec<f64> = points.iter().map(|q| q.to_f64()).collect();
        assert_eq!(as_f64, library);
        let (_, g, _) = cook_toom(&points, m);
        let computed = transform::filter_matrix(library);
        assert_eq!(computed.len(), g.len());
        for (row, exact) in computed.iter().zip(&g) {
            for (&x, q) in row.iter().zip(exact) {
                // One division in f64: within one rounding of the exact value.
                let expected = q.to_f64();
                assert!(
                    (x - expected).abs() <= expected.abs() * f64::EPSILON,
                    "{x} vs {q:?}"
                );
            }
        }
    }
}

/// Applies a rational matrix to small integers: exact in `f64`.
fn apply(matrix: &[Vec<Q>], x: &[f32]) -> Vec<f64> {
    matrix
        .iter()
        .map(|row| {
            row.iter()
                .zip(x)
                .map(|(q, &v)| q.to_f64() * f64::from(v))
                .sum()
        })
        .collect()
}

#[test]
fn the_hand_written_transforms_are_the_construction() {
    let mut rng = Rng(2);
    let (at4, _, bt4) = cook_toom(&f4_points(), 4);
    let (at6, _, bt6) = cook_toom(&f6_points(), 6);
    for _ in 0..200 {
        // Small integers: every intermediate value of the transforms is a
        // dyadic rational with few bits, so f32 arithmetic is exact and the
        // results must be equal, not close.
        let d6: [f32; 6] = core::array::from_fn(|_| rng.small() as f32);
        let d8: [f32; 8] = core::array::from_fn(|_| rng.small() as f32);
        // SAFETY: scalar `f32` needs no CPU feature.
        let (b4, a4, b6, a6) = unsafe {
            (
                <F4 as Transform<6, 4>>::input(d6),
                <F4 as Transform<6, 4>>::output(d6),
                <F6 as Transform<8, 6>>::input(d8),
                <F6 as Transform<8, 6>>::output(d8),
            )
        };
        let widen = |x: &[f32]| x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
        assert_eq!(widen(&b4), apply(&bt4, &d6), "F4 input of {d6:?}");
        assert_eq!(widen(&a4), apply(&at4, &d6), "F4 output of {d6:?}");
        assert_eq!(widen(&b6), apply(&bt6, &d8), "F6 input of {d8:?}");
        assert_eq!(widen(&a6), apply(&at6, &d8), "F6 output of {d8:?}");
    }
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

fn tiers() -> Vec<&'static Kernels> {
    Tier::ALL.into_iter().filter_map(kernels_for).collect()
}

/// One layer with data.
struct Case {
    spec: WinogradSpec,
    batch: usize,
    /// NCHW input, PyTorch weight, bias, NCHW residual.
    input: Vec<f32>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    residual: Option<Vec<f32>>,
}

#[allow(clippy::too_many_arguments)]
fn geometry(c: usize, o: usize, h: usize, w: usize, padding: [usize; 4]) -> Conv2dGeometry {
    Conv2dGeometry {
        batch: 1,
        in_channels: c,
        in_h: h,
        in_w: w,
        out_channels: o,
        out_h: h + padding[0] + padding[2] - 2,
        out_w: w + padding[1] + padding[3] - 2,
        kernel: [3, 3],
        stride: [1, 1],
        dilation: [1, 1],
        padding,
        groups: 1,
    }
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn new(
        geometry: Conv2dGeometry,
        tile: WinogradTile,
        batch: usize,
        activation: Activation,
        has_bias: bool,
        has_residual: bool,
        seed: u64,
    ) -> Case {
        let mut rng = Rng(seed);
        let g = &geometry;
        let spec = WinogradSpec {
            geometry,
            activation,
            has_bias,
            has_residual,
            tile,
        };
        Case {
            spec,
            batch,
            input: rng.values(batch * g.in_channels * g.in_h * g.in_w),
            weight: rng.values(g.out_channels * g.in_channels * 9),
            bias: has_bias.then(|| rng.values(g.out_channels)),
            residual: has_residual.then(|| rng.values(batch * g.out_channels * g.out_h * g.out_w)),
        }
    }

    /// The expected NHWC output: the `f64` reference convolution, then the
    /// residual and the activation; and the scale of the errors, the
    /// largest `|conv + bias + residual|` (at least 1).
    fn expected(&self) -> (Vec<f32>, f64) {
        let mut g = self.spec.geometry;
        g.batch = self.batch;
        let mut conv = vec![0.0f32; g.output_len()];
        reference::conv2d(
            &g,
            &self.input,
            &self.weight,
            self.bias.as_deref(),
            false,
            &mut conv,
        );
        if let Some(residual) = &self.residual {
            for (y, r) in conv.iter_mut().zip(residual) {
                *y += r;
            }
        }
        let scale = conv.iter().fold(1.0f64, |m, &y| m.max(f64::from(y).abs()));
        for y in conv.iter_mut() {
            *y = reference::activation_value(self.spec.activation, *y);
        }
        let expected = nchw_to_nhwc(&conv, self.batch, g.out_channels, g.out_h, g.out_w);
        (expected, scale)
    }

    fn op(&self) -> WinogradConv {
        WinogradConv::pack(self.spec, &self.weight, self.bias.as_deref()).unwrap()
    }

    /// Runs `op` with `ctx`; NHWC output.
    fn run(&self, op: &WinogradConv, ctx: &Context) -> Vec<f32> {
        let g = &self.spec.geometry;
        let input = nchw_to_nhwc(&self.input, self.batch, g.in_channels, g.in_h, g.in_w);
        let residual = self
            .residual
            .as_ref()
            .map(|r| nchw_to_nhwc(r, self.batch, g.out_channels, g.out_h, g.out_w));
        let mut output = vec![f32::NAN; self.batch * g.out_channels * g.out_h * g.out_w];
        // Scratch full of garbage: nothing may depend on its contents.
        let mut scratch = vec![f32::NAN; op.scratch_len(self.batch)];
        op.run(
            ctx,
            self.batch,
            &input,
            residual.as_deref(),
            &mut output,
            &mut scratch,
        )
        .unwrap();
        output
    }
}

fn nchw_to_nhwc(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    out[((b * h + y) * w + xx) * c + ch] = x[((b * c + ch) * h + y) * w + xx];
                }
            }
        }
    }
    out
}

/// The largest error relative to `scale`.
fn relative_error(actual: &[f32], expected: &[f32], scale: f64) -> f64 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| {
            if a.is_nan() || e.is_nan() {
                f64::INFINITY
            } else {
                (f64::from(a) - f64::from(e)).abs() / scale
            }
        })
        .fold(0.0, f64::max)
}

/// Error bounds of these tests (channels ≤ 40, values in [-1, 1)), relative
/// to the largest pre-activation value: 2-3x the largest error measured on
/// every tier over four seeds (F(4x4) 2.2e-6, F(6x6) 7.5e-6). A wrong tap,
/// point or border costs orders of magnitude more.
fn tolerance(tile: WinogradTile) -> f64 {
    match tile {
        WinogradTile::F4x4 => 5e-6,
        WinogradTile::F6x6 => 2e-5,
    }
}

#[test]
fn every_tier_matches_the_reference_on_ragged_shapes() {
    let paddings = [[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 2, 1], [2, 0, 1, 2]];
    let mut rng = Rng(3);
    let mut cases = 0;
    for index in 0..56 {
        let tile = WinogradTile::ALL[index % 2];
        let activation = ACTIVATIONS[index % 7];
        let padding = paddings[(index / 2) % 4];
        let has_bias = (index / 3) % 2 == 0;
        let has_residual = (index / 5) % 2 == 1;
        let batch = if index % 4 == 3 { 3 } else { 1 };
        let c = [1, 3, 17, 33, 40][rng.below(5)];
        let o = [1, 5, 16, 19, 40][rng.below(5)];
        // Ragged sizes: mostly not multiples of 4 or 6, at least 1 output.
        let h = 3 + rng.below(12) - usize::from(padding[0] + padding[2] > 0);
        let w = 3 + rng.below(12) - usize::from(padding[1] + padding[3] > 1);
        let case = Case::new(
            geometry(c, o, h, w, padding),
            tile,
            batch,
            activation,
            has_bias,
            has_residual,
            index as u64,
        );
        let (expected, scale) = case.expected();
        let op = case.op();
        for kernels in tiers() {
            let actual = case.run(&op, &Context::with(kernels, 1));
            let error = relative_error(&actual, &expected, scale);
            assert!(
                error <= tolerance(tile),
                "{} {} c={c} o={o} {h}x{w} pad {padding:?} batch {batch} {activation:?} bias {has_bias} residual {has_residual}: error {error:e}",
                kernels.tier(),
                tile.name(),
            );
        }
        cases += 1;
    }
    assert_eq!(cases, 56);
}

#[test]
fn constants_round_trip_bit_identically() {
    for tile in WinogradTile::ALL {
        let case = Case::new(
            geometry(20, 18, 9, 7, [1, 1, 1, 1]),
            tile,
            2,
            Activation::Relu,
            true,
            true,
            7,
        );
        let op = case.op();
        let ctx = Context::with(crate::kernels(), 1);
        let expected = case.run(&op, &ctx);
        static_constants_round_trip(&case, &op, &ctx, &expected);
        let copy =
            WinogradConv::from_constants(case.spec, Buffer::from_slice(op.constants())).unwrap();
        assert_eq!(copy.constants(), op.constants());
        let actual = case.run(&copy, &ctx);
        assert!(actual
            .iter()
            .zip(&expected)
            .all(|(a, e)| a.to_bits() == e.to_bits()));
    }
}

/// From constants borrowed as `'static` (as generated code embeds them), at
/// an odd alignment.
fn static_constants_round_trip(case: &Case, op: &WinogradConv, ctx: &Context, expected: &[f32]) {
    let mut blob = vec![0.0f32; op.constants().len() + 1];
    blob[1..].copy_from_slice(op.constants());
    let blob: &'static [f32] = Vec::leak(blob);
    let copy = WinogradConv::from_constants(case.spec, Buffer::from_static(&blob[1..])).unwrap();
    let actual = case.run(&copy, ctx);
    assert!(actual
        .iter()
        .zip(expected)
        .all(|(a, e)| a.to_bits() == e.to_bits()));
}

#[test]
fn every_thread_count_gives_the_same_bits() {
    // Many tiles (cut along tiles, and channels with 4 threads), and few
    // tiles with many channels (cut along channels only).
    let layers = [
        (geometry(40, 40, 20, 19, [1, 1, 1, 1]), 3),
        (geometry(64, 70, 8, 8, [1, 1, 1, 1]), 1),
    ];
    for (g, batch) in layers {
        for tile in WinogradTile::ALL {
            let case = Case::new(g, tile, batch, Activation::Relu6, true, true, 11);
            let op = case.op();
            for kernels in tiers() {
                let single = case.run(&op, &Context::with(kernels, 1));
                for threads in 2..=5 {
                    let layout = &op.layout;
                    assert!(
                        threads <= 1 || layout.split(batch, threads).tasks() > 1,
                        "the layer must actually be split"
                    );
                    let multi = case.run(&op, &Context::with(kernels, threads));
                    assert!(
                        single
                            .iter()
                            .zip(&multi)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{} {} threads {threads}",
                        kernels.tier(),
                        tile.name()
                    );
                }
            }
        }
    }
}

#[test]
fn the_split_covers_every_tile_and_channel_once() {
    let op = Case::new(
        geometry(64, 100, 30, 30, [1, 1, 1, 1]),
        WinogradTile::F4x4,
        1,
        Activation::Identity,
        false,
        false,
        1,
    )
    .op();
    for batch in [1, 2, 5] {
        for threads in 1..=8 {
            let split = op.layout.split(batch, threads);
            assert!(split.tasks() <= MAX_TASKS.max(1));
            let mut covered = vec![0u8; split.total * 100];
            for task in 0..split.tasks() {
                let (tiles, channels) = split.task(task, 100);
                assert_eq!(channels[0] % PANEL, 0);
                for tile in tiles[0]..tiles[1] {
                    for channel in channels[0]..channels[1] {
                        covered[tile * 100 + channel] += 1;
                    }
                }
            }
            assert!(
                covered.iter().all(|&n| n == 1),
                "batch {batch} threads {threads}"
            );
        }
    }
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let g = geometry(8, 8, 6, 6, [1, 1, 1, 1]);
    let spec = WinogradSpec {
        geometry: g,
        activation: Activation::Identity,
        has_bias: true,
        has_residual: false,
        tile: WinogradTile::F4x4,
    };
    let weight = vec![0.5f32; 8 * 8 * 9];
    let bias = vec![0.0f32; 8];
    assert!(matches!(
        WinogradConv::pack(spec, &weight[1..], Some(&bias)),
        Err(OpError::Length { what: "weight", .. })
    ));
    assert!(matches!(
        WinogradConv::pack(spec, &weight, None),
        Err(OpError::Spec(_))
    ));
    for broken in [
        Conv2dGeometry {
            stride: [2, 2],
            ..g
        },
        Conv2dGeometry {
            kernel: [5, 5],
            ..g
        },
        Conv2dGeometry {
            dilation: [2, 1],
            ..g
        },
        Conv2dGeometry { groups: 2, ..g },
        Conv2dGeometry { out_h: 5, ..g },
        Conv2dGeometry { batch: 2, ..g },
        Conv2dGeometry {
            in_channels: 0,
            ..g
        },
        Conv2dGeometry {
            in_h: usize::MAX,
            out_h: usize::MAX,
            ..g
        },
        Conv2dGeometry {
            in_channels: usize::MAX - 3,
            ..g
        },
        Conv2dGeometry {
            in_channels: 1 << 40,
            out_channels: 1 << 40,
            ..g
        },
    ] {
        let spec = WinogradSpec {
            geometry: broken,
            ..spec
        };
        assert!(
            matches!(
                WinogradConv::pack(spec, &weight, Some(&bias)),
                Err(OpError::Spec(_) | OpError::Length { .. })
            ),
            "{broken:?}"
        );
    }
    let op = WinogradConv::pack(spec, &weight, Some(&bias)).unwrap();
    assert!(matches!(
        WinogradConv::from_constants(spec, Buffer::from_slice(&op.constants()[1..])),
        Err(OpError::Length {
            what: "constants",
            ..
        })
    ));
    let ctx = Context::with(crate::kernels(), 1);
    let input = vec![1.0f32; 2 * 8 * 36];
    let mut output = vec![0.0f32; 2 * 8 * 36];
    let mut scratch = vec![0.0f32; op.scratch_len(2)];
    let residual = vec![0.0f32; 2 * 8 * 36];
    let run = |input: &[f32], residual: Option<&[f32]>, output: &mut [f32], scratch: &mut [f32]| {
        op.run(&ctx, 2, input, residual, output, scratch)
    };
    assert!(matches!(
        run(&input[1..], None, &mut output, &mut scratch),
        Err(OpError::Length { what: "input", .. })
    ));
    assert!(matches!(
        run(&input, None, &mut output[1..], &mut scratch),
        Err(OpError::Length { what: "output", .. })
    ));
    assert!(matches!(
        run(&input, Some(&residual), &mut output, &mut scratch),
        Err(OpError::Spec(_))
    ));
    let short = scratch.len() - 1;
    assert!(matches!(
        run(&input, None, &mut output, &mut scratch[..short]),
        Err(OpError::Length {
            what: "scratch",
            ..
        })
    ));
    // More scratch than needed is fine, and a batch of 0 does nothing.
    let mut more = vec![0.0f32; scratch.len() + 5];
    run(&input, None, &mut output, &mut more).unwrap();
    // Pixel (1, 1) of the second image sees all 9 taps of 8 channels.
    let center = ((36 + 6 + 1) * 8) + 3;
    assert!((output[center] - 36.0).abs() < 1e-4, "{}", output[center]);
    // A corner sees 4 taps.
    assert!((output[36 * 8] - 16.0).abs() < 1e-4, "{}", output[36 * 8]);
    op.run(&ctx, 0, &[], None, &mut [], &mut []).unwrap();
}

#[test]
fn the_recommendation_follows_the_rule() {
    let resnet = [
        (geometry(64, 64, 56, 56, [1, 1, 1, 1]), true),
        (geometry(128, 128, 28, 28, [1, 1, 1, 1]), true),
        (geometry(256, 256, 14, 14, [1, 1, 1, 1]), true),
        (geometry(512, 512, 14, 14, [1, 1, 1, 1]), true),
        // Few tiles: only with small weights.
        (geometry(64, 64, 7, 7, [1, 1, 1, 1]), true),
        (geometry(128, 128, 7, 7, [1, 1, 1, 1]), false),
        (geometry(512, 512, 7, 7, [1, 1, 1, 1]), false),
        // Too few channels.
        (geometry(3, 64, 56, 56, [1, 1, 1, 1]), false),
        (geometry(64, 8, 56, 56, [1, 1, 1, 1]), false),
    ];
    for (g, wanted) in resnet {
        assert!(applicable(&g));
        assert_eq!(
            WinogradTile::recommend(&g),
            wanted.then_some(WinogradTile::F4x4),
            "{g:?}"
        );
    }
    let strided = Conv2dGeometry {
        stride: [2, 2],
        out_h: 28,
        out_w: 28,
        ..geometry(64, 64, 56, 56, [1, 1, 1, 1])
    };
    assert!(!applicable(&strided));
    assert_eq!(WinogradTile::recommend(&strided), None);
}
