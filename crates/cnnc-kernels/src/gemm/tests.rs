//! GEMM tests, run for every tier this CPU has (through `kernels_for`),
//! against a naive triple loop accumulating in `f64`.

use proptest::prelude::*;

use super::*;
use crate::tier::{kernels_for, Tier};

/// The tiers this machine can run.
fn tiers() -> Vec<&'static Kernels> {
    Tier::ALL.into_iter().filter_map(kernels_for).collect()
}

fn activation_f64(activation: Activation, x: f64) -> f64 {
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

/// Deterministic pseudo-random values in [-1, 1) (xorshift), so failures
/// reproduce from the case parameters alone.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// One GEMM problem with every option.
#[derive(Clone, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    lda_extra: usize,
    ldc_extra: usize,
    ldr_extra: usize,
    bias: bool,
    residual: bool,
    accumulate: bool,
    activation: Activation,
    seed: u64,
}

impl Case {
    fn lda(&self) -> usize {
        self.k + self.lda_extra
    }
    fn ldc(&self) -> usize {
        self.n + self.ldc_extra
    }
    fn ldr(&self) -> usize {
        self.n + self.ldr_extra
    }
}

/// The operands of a case: A, B (row-major K×N), bias, residual, initial C.
struct Operands {
    a: Vec<f32>,
    b: Vec<f32>,
    bias: Vec<f32>,
    residual: Vec<f32>,
    c0: Vec<f32>,
}

fn operands(case: &Case) -> Operands {
    let a_len = span(case.m, case.k, case.lda()).unwrap();
    Operands {
        a: values(a_len, case.seed),
        b: values(case.k * case.n, case.seed + 1),
        bias: values(case.n, case.seed + 2),
        residual: values(span(case.m, case.n, case.ldr()).unwrap(), case.seed + 3),
        c0: values(span(case.m, case.n, case.ldc()).unwrap(), case.seed + 4),
    }
}

/// Runs the case on `kernels`; returns C (with its stride padding).
fn run_case(kernels: &Kernels, case: &Case, ops: &Operands) -> Vec<f32> {
    let packed =
        PackedB::from_kn(case.k, case.n, &ops.b, case.bias.then_some(&ops.bias[..])).unwrap();
    let a = MatRef::new(&ops.a, case.m, case.k, case.lda()).unwrap();
    let mut c = ops.c0.clone();
    let residual = case
        .residual
        .then(|| MatRef::new(&ops.residual, case.m, case.n, case.ldr()).unwrap());
    let epilogue = Epilogue {
        activation: case.activation,
        residual,
        accumulate: case.accumulate,
    };
    gemm(
        kernels,
        a,
        &packed,
        MatMut::new(&mut c, case.m, case.n, case.ldc()).unwrap(),
        &epilogue,
    )
    .unwrap();
    c
}

/// Checks C against the f64 oracle, and that padding between rows is untouched.
fn check_case(kernels: &Kernels, case: &Case) {
    let ops = operands(case);
    let c = run_case(kernels, case, &ops);
    for i in 0..case.m {
        for j in 0..case.n {
            let mut sum = 0.0f64;
            let mut scale = 0.0f64;
            for kk in 0..case.k {
                let product =
                    f64::from(ops.a[i * case.lda() + kk]) * f64::from(ops.b[kk * case.n + j]);
                sum += product;
                scale += product.abs();
            }
            let mut extra = Vec::new();
            if case.accumulate {
                extra.push(f64::from(ops.c0[i * case.ldc() + j]));
            }
            if case.bias {
                extra.push(f64::from(ops.bias[j]));
            }
            if case.residual {
                extra.push(f64::from(ops.residual[i * case.ldr() + j]));
            }
            for x in extra {
                sum += x;
                scale += x.abs();
            }
            let expected = activation_f64(case.activation, sum);
            // Activations are at most 1.5-Lipschitz (hardswish near 3).
            let tolerance =
                1.5 * 1e-5 * (case.k.max(1) as f64).sqrt() * scale + 1e-6 * expected.abs();
            let got = f64::from(c[i * case.ldc() + j]);
            assert!(
                (got - expected).abs() <= tolerance,
                "{}: C[{i}][{j}] = {got}, expected {expected} (tolerance {tolerance:e}) in {case:?}",
                kernels.tier()
            );
        }
        for j in case.n..case.ldc() {
            if i * case.ldc() + j < c.len() {
                assert_eq!(
                    c[i * case.ldc() + j],
                    ops.c0[i * case.ldc() + j],
                    "stride padding written"
                );
            }
        }
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (1usize..40, 1usize..80, 0usize..70),
        (0usize..3, 0usize..5, 0usize..3),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (0usize..ACTIVATIONS.len(), any::<u64>()),
    )
        .prop_map(
            |(
                (m, n, k),
                (lda_extra, ldc_extra, ldr_extra),
                (bias, residual, accumulate),
                (act, seed),
            )| Case {
                m,
                n,
                k,
                lda_extra,
                ldc_extra,
                ldr_extra,
                bias,
                residual,
                accumulate,
                activation: ACTIVATIONS[act],
                seed,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_tier_matches_the_f64_oracle(case in case_strategy()) {
        for kernels in tiers() {
            check_case(kernels, &case);
        }
    }
}

fn plain_case(m: usize, n: usize, k: usize) -> Case {
    Case {
        m,
        n,
        k,
        lda_extra: 1,
        ldc_extra: 3,
        ldr_extra: 0,
        bias: true,
        residual: true,
        accumulate: false,
        activation: Activation::Relu,
        seed: (m * 31 + n * 7 + k) as u64,
    }
}

#[test]
fn every_activation_on_every_tier_with_ragged_edges() {
    for kernels in tiers() {
        for (index, activation) in ACTIVATIONS.into_iter().enumerate() {
            // 29 rows and 45 columns are ragged for every tile size.
            let case = Case {
                activation,
                seed: index as u64,
                ..plain_case(29, 45, 19)
            };
            check_case(kernels, &case);
        }
    }
}

#[test]
fn k_blocks_and_cache_blocks_are_exact() {
    for kernels in tiers() {
        // K above KC (two K blocks, C stored and reloaded in between).
        check_case(kernels, &plain_case(17, 40, 1030));
        check_case(
            kernels,
            &Case {
                accumulate: true,
                ..plain_case(5, 33, 1100)
            },
        );
        // M and N above MC and NC.
        let (mc, nc) = (kernels.gemm.mc, kernels.gemm.nc);
        check_case(kernels, &plain_case(mc + 5, nc + 20, 3));
        // K = 0 leaves act(bias + residual).
        check_case(kernels, &plain_case(7, 21, 0));
    }
}

#[test]
fn splitting_into_tiles_is_bit_identical() {
    for kernels in tiers() {
        let case = Case {
            activation: Activation::Hardswish,
            ..plain_case(53, 77, 1030)
        };
        let ops = operands(&case);
        let whole = run_case(kernels, &case, &ops);
        let packed = PackedB::from_kn(case.k, case.n, &ops.b, Some(&ops.bias)).unwrap();
        let a = MatRef::new(&ops.a, case.m, case.k, case.lda()).unwrap();
        let residual = Some(MatRef::new(&ops.residual, case.m, case.n, case.ldr()).unwrap());
        let epilogue = Epilogue {
            activation: case.activation,
            residual,
            accumulate: false,
        };
        let mut split = ops.c0.clone();
        // Uneven row splits (not multiples of MR) and panel-aligned columns.
        for rows in [0..5, 5..6, 6..31, 31..53] {
            for cols in [0..16, 16..48, 48..77] {
                let c = MatMut::new(&mut split, case.m, case.n, case.ldc()).unwrap();
                let tiles = Tiles {
                    rows: rows.clone(),
                    cols,
                };
                gemm_tiles(kernels, a, &packed, c, &epilogue, tiles).unwrap();
            }
        }
        assert!(
            whole
                .iter()
                .zip(&split)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{}",
            kernels.tier()
        );
    }
}

/// A small NHWC convolution as an indirect GEMM must equal the direct GEMM
/// over its explicit im2col matrix bit for bit (same products, same order).
#[test]
fn indirect_gemm_equals_direct_gemm_over_im2col() {
    let (height, width, channels, out_channels) = (7, 6, 5, 37);
    let (kernel, pad) = (3, 1);
    let taps = kernel * kernel;
    let input = values(height * width * channels, 11);
    let weights = values(taps * channels * out_channels, 12);
    let bias = values(out_channels, 13);
    let zero = vec![0.0f32; channels];
    let mut offsets = Vec::new();
    let mut im2col = Vec::new();
    for oy in 0..height {
        for ox in 0..width {
            for ky in 0..kernel {
                for kx in 0..kernel {
                    let iy = (oy + ky).checked_sub(pad).filter(|&y| y < height);
                    let ix = (ox + kx).checked_sub(pad).filter(|&x| x < width);
                    match (iy, ix) {
                        (Some(iy), Some(ix)) => {
                            let offset = (iy * width + ix) * channels;
                            offsets.push(offset);
                            im2col.extend_from_slice(&input[offset..offset + channels]);
                        }
                        _ => {
                            offsets.push(PAD_OFFSET);
                            im2col.extend_from_slice(&zero);
                        }
                    }
                }
            }
        }
    }
    let m = height * width;
    let k = taps * channels;
    let packed = PackedB::from_kn(k, out_channels, &weights, Some(&bias)).unwrap();
    let epilogue = Epilogue::activation(Activation::Relu6);
    for kernels in tiers() {
        let mut direct = vec![0.0f32; m * out_channels];
        let a = MatRef::new(&im2col, m, k, k).unwrap();
        let c = MatMut::new(&mut direct, m, out_channels, out_channels).unwrap();
        gemm(kernels, a, &packed, c, &epilogue).unwrap();
        let mut indirect = vec![0.0f32; m * out_channels];
        let a = IndirectA::new(&input, &offsets, &zero, taps, channels).unwrap();
        let c = MatMut::new(&mut indirect, m, out_channels, out_channels).unwrap();
        indirect_gemm(kernels, &a, &packed, c, &epilogue).unwrap();
        // The same panels borrowed from inside a larger buffer give the same
        // bits as the owned packing.
        let mut blob = vec![7.0f32; 5];
        blob.extend_from_slice(packed.panels());
        let mut padded_bias = bias.clone();
        padded_bias.resize(out_channels.div_ceil(PANEL) * PANEL, 0.0);
        let view = PackedBRef::new(k, out_channels, &blob[5..], Some(&padded_bias)).unwrap();
        let mut borrowed = vec![0.0f32; m * out_channels];
        let a_rows = MatRef::new(&im2col, m, k, k).unwrap();
        let c = MatMut::new(&mut borrowed, m, out_channels, out_channels).unwrap();
        gemm(kernels, a_rows, view, c, &epilogue).unwrap();
        assert!(direct
            .iter()
            .zip(&borrowed)
            .all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(
            direct
                .iter()
                .zip(&indirect)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{}",
            kernels.tier()
        );
        // And the direct result is right (the f64 oracle on the same data).
        let expected: Vec<f64> = (0..m * out_channels)
            .map(|idx| {
                let (row, col) = (idx / out_channels, idx % out_channels);
                let sum: f64 = (0..k)
                    .map(|kk| {
                        f64::from(im2col[row * k + kk])
                            * f64::from(weights[kk * out_channels + col])
                    })
                    .sum();
                (sum + f64::from(bias[col])).clamp(0.0, 6.0)
            })
            .collect();
        for (got, want) in direct.iter().zip(&expected) {
            assert!(
                (f64::from(*got) - want).abs() < 1e-5,
                "{}: {got} vs {want}",
                kernels.tier()
            );
        }
    }
}

#[test]
fn indirect_k_blocks_split_on_whole_taps() {
    // 600 channels per tap: each K block of at most KC = 512 is one tap.
    let (taps, channels, m, n) = (3, 600, 9, 20);
    let input = values(4 * channels, 21);
    let weights = values(taps * channels * n, 22);
    let zero = vec![0.0f32; channels];
    let offsets: Vec<usize> = (0..m * taps)
        .map(|i| {
            if i % 4 == 3 {
                PAD_OFFSET
            } else {
                (i % 4) * channels
            }
        })
        .collect();
    let im2col: Vec<f32> = offsets
        .iter()
        .flat_map(|&offset| {
            if offset == PAD_OFFSET {
                &zero[..]
            } else {
                &input[offset..offset + channels]
            }
        })
        .copied()
        .collect();
    let packed = PackedB::from_kn(taps * channels, n, &weights, None).unwrap();
    for kernels in tiers() {
        let mut direct = vec![0.0f32; m * n];
        let a = MatRef::new(&im2col, m, taps * channels, taps * channels).unwrap();
        gemm(
            kernels,
            a,
            &packed,
            MatMut::new(&mut direct, m, n, n).unwrap(),
            &Epilogue::default(),
        )
        .unwrap();
        let mut indirect = vec![0.0f32; m * n];
        let a = IndirectA::new(&input, &offsets, &zero, taps, channels).unwrap();
        let c = MatMut::new(&mut indirect, m, n, n).unwrap();
        indirect_gemm(kernels, &a, &packed, c, &Epilogue::default()).unwrap();
        assert!(
            direct
                .iter()
                .zip(&indirect)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{}",
            kernels.tier()
        );
        // The same table checked once gives the same bits.
        let table = IndirectTable::new(offsets.clone(), taps, channels).unwrap();
        assert_eq!(table.min_input_len(), 3 * channels);
        let mut tabled = vec![0.0f32; m * n];
        let a = IndirectA::with_table(&input, &table, &zero).unwrap();
        let c = MatMut::new(&mut tabled, m, n, n).unwrap();
        indirect_gemm(kernels, &a, &packed, c, &Epilogue::default()).unwrap();
        assert!(indirect
            .iter()
            .zip(&tabled)
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

#[test]
fn checked_tables_and_submatrices_refuse_bad_sizes() {
    let table = IndirectTable::new(vec![0, PAD_OFFSET, 8, 4], 2, 4).unwrap();
    assert_eq!((table.rows(), table.taps(), table.channels()), (2, 2, 4));
    assert_eq!(table.min_input_len(), 12);
    assert_eq!(table.offsets(), &[0, PAD_OFFSET, 8, 4]);
    let zero = [0.0f32; 4];
    assert!(IndirectA::with_table(&[0.0; 12], &table, &zero).is_ok());
    assert_eq!(
        IndirectA::with_table(&[0.0; 11], &table, &zero).unwrap_err(),
        GemmError::Length {
            what: "indirect input",
            len: 11,
            expected: 12
        }
    );
    assert!(IndirectA::with_table(&[0.0; 12], &table, &zero[..3]).is_err());
    let a = IndirectA::with_table(&[0.0; 12], &table, &zero).unwrap();
    assert_eq!(a.sub_rows(1..2).unwrap().rows(), 1);
    assert_eq!(a.sub_rows(1..3).unwrap_err(), GemmError::Tiles);
    assert!(IndirectTable::new(vec![0, 1, 2], 2, 4).is_err());
    assert!(IndirectTable::new(vec![0], 0, 4).is_err());
    assert_eq!(
        IndirectTable::new(vec![usize::MAX - 1], 1, 4).unwrap_err(),
        GemmError::TooLarge
    );

    // A sub-matrix is computed exactly as the same tiles of the whole.
    let kernels = crate::tier::kernels();
    let (m, k, n) = (10, 5, 40);
    let a_data = values(m * k, 31);
    let packed = PackedB::from_kn(k, 16, &values(k * 16, 32), None).unwrap();
    let mut whole = vec![0.0f32; m * n];
    let c = MatMut::new(&mut whole, m, n, n).unwrap().share();
    assert_eq!(c.submatrix(0..11, 0..16).unwrap_err(), GemmError::Tiles);
    assert_eq!(c.submatrix(0..10, 30..41).unwrap_err(), GemmError::Tiles);
    assert!(c.submatrix(0..2, 0..n).unwrap().reshape(4, 20, 20).is_ok());
    assert!(c.submatrix(0..2, 0..n).unwrap().reshape(4, 20, 21).is_err());
    assert!(c
        .submatrix(0..2, 0..16)
        .unwrap()
        .reshape(1, 32, 32)
        .is_err());
    let sub = c.submatrix(3..9, 20..36).unwrap();
    let a = MatRef::new(&a_data[3 * k..], 6, k, k).unwrap();
    let tiles = Tiles {
        rows: 0..6,
        cols: 0..16,
    };
    // SAFETY: the only writer of `whole`.
    unsafe { gemm_tiles_shared(kernels, a, &packed, sub, &Epilogue::default(), tiles).unwrap() };
    let mut alone = vec![0.0f32; 6 * 16];
    let a = MatRef::new(&a_data[3 * k..], 6, k, k).unwrap();
    gemm(
        kernels,
        a,
        &packed,
        MatMut::new(&mut alone, 6, 16, 16).unwrap(),
        &Epilogue::default(),
    )
    .unwrap();
    for (index, y) in whole.iter().enumerate() {
        let (row, col) = (index / n, index % n);
        if (3..9).contains(&row) && (20..36).contains(&col) {
            assert_eq!(y.to_bits(), alone[(row - 3) * 16 + col - 20].to_bits());
        } else {
            assert_eq!(*y, 0.0, "outside the sub-matrix");
        }
    }
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let kernels = crate::tier::kernels();
    let packed = PackedB::from_kn(4, 3, &[1.0; 12], None).unwrap();
    let a_data = [1.0f32; 20];
    let mut c_data = [0.0f32; 20];
    assert_eq!(
        MatRef::new(&a_data, 5, 4, 3).unwrap_err(),
        GemmError::Stride {
            what: "matrix",
            stride: 3,
            cols: 4
        }
    );
    assert_eq!(
        MatRef::new(&a_data, 6, 4, 4).unwrap_err(),
        GemmError::Length {
            what: "matrix",
            len: 20,
            expected: 24
        }
    );
    assert_eq!(
        MatRef::new(&a_data, usize::MAX, 4, usize::MAX).unwrap_err(),
        GemmError::TooLarge
    );
    let a = MatRef::new(&a_data, 4, 5, 5).unwrap();
    let c = MatMut::new(&mut c_data, 4, 3, 3).unwrap();
    assert_eq!(
        gemm(kernels, a, &packed, c, &Epilogue::default()).unwrap_err(),
        GemmError::Mismatch {
            what: "K",
            left: 5,
            right: 4
        }
    );
    let a = MatRef::new(&a_data, 5, 4, 4).unwrap();
    let c = MatMut::new(&mut c_data, 4, 3, 3).unwrap();
    assert_eq!(
        gemm(kernels, a, &packed, c, &Epilogue::default()).unwrap_err(),
        GemmError::Mismatch {
            what: "M",
            left: 5,
            right: 4
        }
    );
    let a = MatRef::new(&a_data, 4, 4, 4).unwrap();
    let c = MatMut::new(&mut c_data, 4, 3, 3).unwrap();
    let tiles = Tiles {
        rows: 0..4,
        cols: 1..3,
    };
    assert_eq!(
        gemm_tiles(kernels, a, &packed, c, &Epilogue::default(), tiles).unwrap_err(),
        GemmError::Tiles
    );
    let residual = MatRef::new(&a_data, 4, 4, 4).unwrap();
    let c = MatMut::new(&mut c_data, 4, 3, 3).unwrap();
    let epilogue = Epilogue {
        residual: Some(residual),
        ..Epilogue::default()
    };
    assert!(matches!(
        gemm(kernels, a, &packed, c, &epilogue),
        Err(GemmError::Mismatch { .. })
    ));
    let zero = [0.0f32; 4];
    assert_eq!(
        IndirectA::new(&a_data, &[0, 17], &zero, 2, 4).unwrap_err(),
        GemmError::Offset {
            index: 1,
            offset: 17
        }
    );
    assert_eq!(
        IndirectA::new(&a_data, &[0, 16, 4], &zero, 2, 4).unwrap_err(),
        GemmError::Length {
            what: "indirection table",
            len: 3,
            expected: 2
        }
    );
    assert!(IndirectA::new(&a_data, &[0, PAD_OFFSET, 16, 8], &zero, 2, 4).is_ok());
}

#[test]
fn blocks_are_near_equal_and_cover_everything() {
    assert_eq!(
        blocks(10, 4).collect::<Vec<_>>(),
        vec![(0, 4), (4, 3), (7, 3)]
    );
    assert_eq!(blocks(8, 8).collect::<Vec<_>>(), vec![(0, 8)]);
    assert_eq!(blocks(0, 8).collect::<Vec<_>>(), vec![(0, 0)]);
    assert_eq!(blocks(1, 512).collect::<Vec<_>>(), vec![(0, 1)]);
}

#[test]
fn nan_propagates_through_every_activation_on_every_tier() {
    // Row 0 of A is NaN, row 1 finite: C's row 0 must be NaN whatever the
    // activation (PyTorch's relu(NaN) is NaN), row 1 untouched by it.
    let (m, k, n) = (2, 3, 20);
    let mut a = values(m * k, 41);
    a[1] = f32::NAN;
    let packed = PackedB::from_kn(k, n, &values(k * n, 42), Some(&values(n, 43))).unwrap();
    for kernels in tiers() {
        for activation in ACTIVATIONS {
            let mut c = vec![0.0f32; m * n];
            let a_view = MatRef::new(&a, m, k, k).unwrap();
            let c_view = MatMut::new(&mut c, m, n, n).unwrap();
            gemm(
                kernels,
                a_view,
                &packed,
                c_view,
                &Epilogue::activation(activation),
            )
            .unwrap();
            let what = format!("{} {}", kernels.tier(), activation.name());
            assert!(c[..n].iter().all(|y| y.is_nan()), "{what}: {:?}", &c[..n]);
            assert!(c[n..].iter().all(|y| !y.is_nan()), "{what}");
        }
    }
}
