//! The reference kernels against PyTorch: the single-operator cases of
//! `tests/fixtures/` (and a LeNet), run directly through the kernels.
//!
//! The geometry of each case is written here by hand from its `net.cnn`
//! (output sizes read from `expected.npy`); the interpreter's tests run the
//! same fixtures through the whole compiler. The reference rounds once per
//! operator, PyTorch (in `float64`) once per network, so a single operator
//! agrees to one `f32` rounding and a chain of them to a few.

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

use crate::activation::Activation;
use crate::geometry::{Conv2dGeometry, Pool2dGeometry};
use crate::reference::testutil::assert_close;
use crate::reference::{
    activation, adaptive_avg_pool2d, add, avg_pool2d, batch_norm2d, concat, conv2d, linear,
    max_pool2d, softmax, BatchNorm2dParams,
};

/// One rounding to `f32` relative to the output's scale: the bound for one operator.
const ONE_ROUNDING: f32 = f32::EPSILON;
/// The bound for a short chain of operators, each rounding once.
const CHAIN: f32 = 8.0 * f32::EPSILON;

/// A dense `f32` tensor.
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// One fixture folder: input, expected output, weights by state_dict name.
struct Fixture {
    input: Tensor,
    expected: Tensor,
    weights: HashMap<String, Tensor>,
}

impl Fixture {
    fn load(case: &str) -> Self {
        let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures")
            .join(case);
        let read_npy = |file: &str| {
            let bytes = std::fs::read(folder.join(file)).expect("fixture file");
            let npy = npyz::NpyFile::new(&bytes[..]).expect("npy header");
            let shape = npy.shape().iter().map(|&d| d as usize).collect();
            Tensor {
                shape,
                data: npy.into_vec::<f32>().expect("f32 npy data"),
            }
        };
        let mut weights = HashMap::new();
        if let Ok(bytes) = std::fs::read(folder.join("weights.safetensors")) {
            let file = SafeTensors::deserialize(&bytes).expect("safetensors");
            for (name, view) in file.tensors() {
                if view.dtype() != Dtype::F32 {
                    continue; // num_batches_tracked (I64) is ignored, as the language says.
                }
                let data = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                weights.insert(
                    name,
                    Tensor {
                        shape: view.shape().to_vec(),
                        data,
                    },
                );
            }
        }
        Self {
            input: read_npy("input.npy"),
            expected: read_npy("expected.npy"),
            weights,
        }
    }

    fn weight(&self, name: &str) -> &[f32] {
        &self
            .weights
            .get(name)
            .unwrap_or_else(|| panic!("missing tensor {name}"))
            .data
    }

    fn optional(&self, name: &str) -> Option<&[f32]> {
        self.weights.get(name).map(|t| t.data.as_slice())
    }

    fn batch(&self) -> usize {
        self.input.shape[0]
    }
}

/// Convolution parameters of one layer, as written in `net.cnn`.
#[derive(Clone, Copy)]
struct Conv {
    kernel: [usize; 2],
    stride: [usize; 2],
    /// `[top, left, bottom, right]`.
    padding: [usize; 4],
    dilation: [usize; 2],
    groups: usize,
    flip: bool,
}

impl Conv {
    fn new(kernel: [usize; 2]) -> Self {
        Self {
            kernel,
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 1],
            groups: 1,
            flip: false,
        }
    }
    fn stride(self, stride: [usize; 2]) -> Self {
        Self { stride, ..self }
    }
    fn pad(self, [h, w]: [usize; 2]) -> Self {
        Self {
            padding: [h, w, h, w],
            ..self
        }
    }
    fn pad4(self, padding: [usize; 4]) -> Self {
        Self { padding, ..self }
    }
    fn dilation(self, dilation: [usize; 2]) -> Self {
        Self { dilation, ..self }
    }
    fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }
    fn flip(self) -> Self {
        Self { flip: true, ..self }
    }
}

/// Runs `conv` named `layer` on an NCHW tensor; the output size is `out_hw`.
fn run_conv(fx: &Fixture, layer: &str, conv: Conv, input: &Tensor, out_hw: [usize; 2]) -> Tensor {
    let weight = &fx.weights[&format!("{layer}.weight")];
    let g = Conv2dGeometry {
        batch: input.shape[0],
        in_channels: input.shape[1],
        in_h: input.shape[2],
        in_w: input.shape[3],
        out_channels: weight.shape[0],
        out_h: out_hw[0],
        out_w: out_hw[1],
        kernel: conv.kernel,
        stride: conv.stride,
        dilation: conv.dilation,
        padding: conv.padding,
        groups: conv.groups,
    };
    let mut data = vec![0.0; g.output_len()];
    let bias = fx.optional(&format!("{layer}.bias"));
    conv2d(&g, &input.data, &weight.data, bias, conv.flip, &mut data);
    Tensor {
        shape: vec![g.batch, g.out_channels, g.out_h, g.out_w],
        data,
    }
}

/// A single-conv case: the output size comes from `expected.npy`.
fn check_conv(case: &str, layer: &str, conv: Conv) {
    let fx = Fixture::load(case);
    let out_hw = [fx.expected.shape[2], fx.expected.shape[3]];
    let output = run_conv(&fx, layer, conv, &fx.input, out_hw);
    assert_eq!(output.shape, fx.expected.shape, "{case}");
    assert_close(&output.data, &fx.expected.data, ONE_ROUNDING);
}

fn batch_norm(fx: &Fixture, layer: &str, eps: f64, x: &mut Tensor) {
    let params = BatchNorm2dParams {
        running_mean: fx.weight(&format!("{layer}.running_mean")),
        running_var: fx.weight(&format!("{layer}.running_var")),
        weight: fx.weight(&format!("{layer}.weight")),
        bias: fx.weight(&format!("{layer}.bias")),
        eps,
    };
    let hw = x.shape[2..].iter().product();
    let input = x.data.clone();
    batch_norm2d(x.shape[0], x.shape[1], hw, &params, &input, &mut x.data);
}

#[test]
fn convolutions() {
    check_conv("conv-basic-b3", "c", Conv::new([3, 3]));
    check_conv(
        "conv-stride2-pad1",
        "c",
        Conv::new([3, 3]).stride([2, 2]).pad([1, 1]),
    );
    check_conv(
        "conv-rect",
        "c",
        Conv::new([3, 5]).stride([2, 3]).pad([1, 2]),
    );
    check_conv(
        "conv-dilation",
        "c",
        Conv::new([3, 3]).pad([2, 2]).dilation([2, 2]),
    );
    check_conv(
        "conv-dilation-rect",
        "c",
        Conv::new([2, 3]).stride([2, 1]).dilation([1, 3]),
    );
    check_conv("conv-groups", "c", Conv::new([3, 3]).pad([1, 1]).groups(3));
    check_conv(
        "conv-groups-uneven",
        "c",
        Conv::new([3, 3]).stride([2, 2]).pad([1, 1]).groups(2),
    );
    check_conv(
        "conv-depthwise",
        "dw",
        Conv::new([3, 3]).pad([1, 1]).groups(5),
    );
    check_conv(
        "conv-depthwise-mult2",
        "dw",
        Conv::new([3, 3]).stride([2, 2]).pad([1, 1]).groups(5),
    );
    check_conv(
        "conv-depthwise-5x5-s2",
        "dw",
        Conv::new([5, 5]).stride([2, 2]).pad([2, 2]).groups(24),
    );
    // "same": total padding dilation*(k-1), the odd extra one at the bottom/right.
    check_conv("conv-same-even", "c", Conv::new([4, 4]).pad4([1, 1, 2, 2]));
    check_conv(
        "conv-same-rect-dilated",
        "c",
        Conv::new([2, 3]).dilation([1, 2]).pad4([0, 2, 1, 2]),
    );
    check_conv("conv-valid", "c", Conv::new([3, 3]));
    check_conv("conv-flip", "c", Conv::new([2, 3]).flip());
    check_conv(
        "conv-flip-groups-stride",
        "c",
        Conv::new([3, 3])
            .stride([2, 2])
            .pad([1, 1])
            .groups(2)
            .flip(),
    );
    check_conv("conv-nobias", "c", Conv::new([3, 3]));
    check_conv("conv-1x1", "pw", Conv::new([1, 1]));
    check_conv("conv-1x1-stride2", "pw", Conv::new([1, 1]).stride([2, 2]));
    check_conv("conv-ragged-width", "c", Conv::new([3, 3]).pad([1, 1]));
    check_conv("conv-1-channel", "c", Conv::new([3, 3]));
    check_conv(
        "conv-stem-7x7s2",
        "c",
        Conv::new([7, 7]).stride([2, 2]).pad([3, 3]),
    );
    check_conv(
        "conv-explicit-in-channels",
        "c",
        Conv::new([3, 3]).pad([1, 1]),
    );
    check_conv("conv-winograd-ragged", "c", Conv::new([3, 3]).pad([1, 1]));
}

#[test]
fn convolutions_with_batch_norm_and_activation() {
    // conv + relu.
    let fx = Fixture::load("conv-winograd-32");
    let mut y = run_conv(&fx, "c", Conv::new([3, 3]).pad([1, 1]), &fx.input, [16, 16]);
    activation(Activation::Relu, &mut y.data);
    assert_close(&y.data, &fx.expected.data, ONE_ROUNDING);

    // conv (bias) + batchnorm: two roundings.
    let fx = Fixture::load("conv-bias-bn");
    let mut y = run_conv(
        &fx,
        "conv",
        Conv::new([3, 3]).pad([1, 1]),
        &fx.input,
        [8, 8],
    );
    batch_norm(&fx, "bn", 1e-5, &mut y);
    assert_close(&y.data, &fx.expected.data, CHAIN);

    // conv (no bias) + batchnorm + relu.
    for (case, conv, out_hw) in [
        (
            "conv-bn-relu-b3",
            Conv::new([3, 3]).stride([2, 2]).pad([1, 1]),
            [4, 4],
        ),
        ("conv-winograd-valid-b3", Conv::new([3, 3]), [8, 8]),
    ] {
        let fx = Fixture::load(case);
        let mut y = run_conv(&fx, "conv", conv, &fx.input, out_hw);
        batch_norm(&fx, "bn", 1e-5, &mut y);
        activation(Activation::Relu, &mut y.data);
        assert_eq!(y.shape, fx.expected.shape, "{case}");
        assert_close(&y.data, &fx.expected.data, CHAIN);
    }
}

/// A pooling geometry for a case's input and expected output shapes.
fn pool_geometry(
    fx: &Fixture,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> Pool2dGeometry {
    let (i, o) = (&fx.input.shape, &fx.expected.shape);
    Pool2dGeometry {
        batch: i[0],
        channels: i[1],
        in_h: i[2],
        in_w: i[3],
        out_h: o[2],
        out_w: o[3],
        kernel,
        stride,
        dilation,
        padding,
    }
}

#[test]
fn max_pooling() {
    for (case, kernel, stride, padding, dilation) in [
        ("maxpool-basic-b3", [2, 2], [2, 2], [0, 0], [1, 1]),
        ("maxpool-s2p1-negative", [3, 3], [2, 2], [1, 1], [1, 1]),
        ("maxpool-ceil-dropped", [2, 2], [2, 2], [1, 1], [1, 1]),
        ("maxpool-ceil-clipped", [3, 3], [2, 2], [0, 0], [1, 1]),
        ("maxpool-dilation", [3, 3], [1, 1], [1, 1], [2, 2]),
        ("maxpool-dilation-ceil", [2, 2], [2, 2], [0, 0], [2, 1]),
        ("maxpool-rect", [2, 3], [1, 2], [1, 1], [1, 1]),
    ] {
        let fx = Fixture::load(case);
        let g = pool_geometry(&fx, kernel, stride, padding, dilation);
        let mut output = vec![0.0; g.output_len()];
        max_pool2d(&g, &fx.input.data, &mut output);
        // Max pooling does no arithmetic: the values are PyTorch's exactly.
        assert_eq!(output, fx.expected.data, "{case}");
    }
}

#[test]
fn average_pooling() {
    for (case, kernel, stride, padding, count_include_pad) in [
        ("avgpool-basic-b3", [2, 2], [2, 2], [0, 0], true),
        ("avgpool-pad-include", [3, 3], [2, 2], [1, 1], true),
        ("avgpool-pad-exclude", [3, 3], [2, 2], [1, 1], false),
        ("avgpool-ceil-include", [3, 3], [2, 2], [1, 1], true),
        ("avgpool-ceil-exclude", [3, 3], [2, 2], [1, 1], false),
        ("avgpool-ceil-nopad", [3, 3], [2, 2], [0, 0], true),
        ("avgpool-rect", [3, 2], [2, 1], [1, 0], true),
    ] {
        let fx = Fixture::load(case);
        let g = pool_geometry(&fx, kernel, stride, padding, [1, 1]);
        let mut output = vec![0.0; g.output_len()];
        avg_pool2d(&g, count_include_pad, &fx.input.data, &mut output);
        assert_close(&output, &fx.expected.data, ONE_ROUNDING);
    }
    for case in [
        "adaptive-nondivisible",
        "adaptive-global-b3",
        "adaptive-upsample",
        "adaptive-int",
    ] {
        let fx = Fixture::load(case);
        let (i, o) = (&fx.input.shape, &fx.expected.shape);
        let mut output = vec![0.0; fx.expected.data.len()];
        adaptive_avg_pool2d(
            [i[0], i[1], i[2], i[3]],
            [o[2], o[3]],
            &fx.input.data,
            &mut output,
        );
        assert_close(&output, &fx.expected.data, ONE_ROUNDING);
    }
}

#[test]
fn batch_norm_linear_flatten() {
    for (case, eps) in [("batchnorm-b3", 1e-5), ("batchnorm-eps", 1e-3)] {
        let fx = Fixture::load(case);
        let mut y = Tensor {
            shape: fx.input.shape.clone(),
            data: fx.input.data.clone(),
        };
        batch_norm(&fx, "bn", eps, &mut y);
        assert_close(&y.data, &fx.expected.data, ONE_ROUNDING);
    }
    // flatten is the identity on the data.
    let fx = Fixture::load("flatten");
    assert_eq!(fx.input.data, fx.expected.data);
    assert_eq!(fx.expected.shape, [3, 60]);
    for case in ["linear-b3", "linear-nobias", "flatten-linear"] {
        let fx = Fixture::load(case);
        let (batch, out_features) = (fx.batch(), fx.expected.shape[1]);
        let in_features = fx.input.data.len() / batch;
        let mut output = vec![0.0; batch * out_features];
        linear(
            batch,
            in_features,
            out_features,
            &fx.input.data,
            fx.weight("fc.weight"),
            fx.optional("fc.bias"),
            &mut output,
        );
        assert_close(&output, &fx.expected.data, ONE_ROUNDING);
    }
}

#[test]
fn activations_and_softmax() {
    for (case, act) in [
        ("act-relu", Activation::Relu),
        ("act-relu6", Activation::Relu6),
        ("act-sigmoid", Activation::Sigmoid),
        ("act-tanh", Activation::Tanh),
        ("act-hardswish", Activation::Hardswish),
        (
            "act-leaky-relu",
            Activation::LeakyRelu {
                negative_slope: 0.01,
            },
        ),
        (
            "act-leaky-relu-slope",
            Activation::LeakyRelu {
                negative_slope: 0.2,
            },
        ),
    ] {
        let fx = Fixture::load(case);
        let mut data = fx.input.data.clone();
        activation(act, &mut data);
        assert_close(&data, &fx.expected.data, ONE_ROUNDING);
    }
    // (case, outer, dim_len, inner) for the softmax dimension of each case.
    for (case, outer, dim_len, inner) in [
        ("softmax-flat-b3", 3, 10, 1),
        ("softmax-chw-dim1", 1, 5, 12),
        ("softmax-chw-dim3", 3 * 2 * 3, 6, 1),
        ("softmax-large", 1, 8, 1),
        ("softmax-negative-dim", 3, 9, 1),
    ] {
        let fx = Fixture::load(case);
        let mut output = vec![0.0; fx.expected.data.len()];
        softmax(outer, dim_len, inner, &fx.input.data, &mut output);
        assert_close(&output, &fx.expected.data, ONE_ROUNDING);
    }
}

#[test]
fn add_and_concat() {
    let fx = Fixture::load("add-residual");
    let c = run_conv(&fx, "c", Conv::new([3, 3]).pad([1, 1]), &fx.input, [7, 7]);
    let mut sum = vec![0.0; c.data.len()];
    add(&c.data, &fx.input.data, &mut sum);
    assert_close(&sum, &fx.expected.data, CHAIN);

    // Three branches along channels: outer = N, inner = C_k * H * W.
    let fx = Fixture::load("concat-dim1");
    let p = run_conv(&fx, "p", Conv::new([1, 1]), &fx.input, [6, 6]);
    let q = run_conv(&fx, "q", Conv::new([3, 3]).pad([1, 1]), &fx.input, [6, 6]);
    let r = run_conv(&fx, "r", Conv::new([1, 1]), &fx.input, [6, 6]);
    let mut output = vec![0.0; fx.expected.data.len()];
    concat(
        &[(&p.data, 3 * 36), (&q.data, 5 * 36), (&r.data, 2 * 36)],
        1,
        &mut output,
    );
    assert_close(&output, &fx.expected.data, ONE_ROUNDING);

    // Along height: outer = N * C, inner = H_k * W.
    let fx = Fixture::load("concat-dim2");
    let p = run_conv(&fx, "p", Conv::new([3, 1]).pad([1, 0]), &fx.input, [4, 5]);
    let mut output = vec![0.0; fx.expected.data.len()];
    concat(
        &[(&fx.input.data, 4 * 5), (&p.data, 4 * 5)],
        3 * 3,
        &mut output,
    );
    assert_close(&output, &fx.expected.data, ONE_ROUNDING);

    // Along width of max and average pools: outer = N * C * H, inner = W_k.
    let fx = Fixture::load("concat-dim3");
    let g = Pool2dGeometry {
        out_h: 2,
        out_w: 3,
        ..pool_geometry(&fx, [2, 1], [2, 1], [0, 0], [1, 1])
    };
    let (mut p, mut q) = (vec![0.0; g.output_len()], vec![0.0; g.output_len()]);
    max_pool2d(&g, &fx.input.data, &mut p);
    avg_pool2d(&g, true, &fx.input.data, &mut q);
    let mut output = vec![0.0; fx.expected.data.len()];
    concat(&[(&p, 3), (&q, 3)], 2 * 2, &mut output);
    assert_close(&output, &fx.expected.data, ONE_ROUNDING);
}

#[test]
fn lenet_end_to_end() {
    let fx = Fixture::load("lenet");
    let batch = fx.batch();
    let mut x = run_conv(
        &fx,
        "conv1",
        Conv::new([5, 5]).pad([2, 2]),
        &fx.input,
        [20, 20],
    );
    activation(Activation::Relu, &mut x.data);
    let pool = |x: &Tensor, out: usize| {
        let g = Pool2dGeometry {
            batch,
            channels: x.shape[1],
            in_h: x.shape[2],
            in_w: x.shape[3],
            out_h: out,
            out_w: out,
            kernel: [2, 2],
            stride: [2, 2],
            dilation: [1, 1],
            padding: [0, 0],
        };
        let mut data = vec![0.0; g.output_len()];
        max_pool2d(&g, &x.data, &mut data);
        Tensor {
            shape: vec![batch, x.shape[1], out, out],
            data,
        }
    };
    let x = pool(&x, 10);
    let mut x = run_conv(&fx, "conv2", Conv::new([5, 5]), &x, [6, 6]);
    activation(Activation::Relu, &mut x.data);
    let mut features = pool(&x, 3).data; // flatten: [batch, 144], same memory.
    for (layer, act) in [
        ("fc1", Activation::Relu),
        ("fc2", Activation::Relu),
        ("fc3", Activation::Identity),
    ] {
        let weight = &fx.weights[&format!("{layer}.weight")];
        let (out_features, in_features) = (weight.shape[0], weight.shape[1]);
        let mut y = vec![0.0; batch * out_features];
        linear(
            batch,
            in_features,
            out_features,
            &features,
            &weight.data,
            fx.optional(&format!("{layer}.bias")),
            &mut y,
        );
        activation(act, &mut y);
        features = y;
    }
    assert_close(&features, &fx.expected.data, CHAIN);
}
