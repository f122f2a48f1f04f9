//! Lowering and inference of valid networks: defaults, resolved parameters,
//! graph structure and shapes, through one `check(source)` helper.

use cnnc_ir::{Checked, Op};
use cnnc_kernels::Activation;
use cnnc_syntax::{RenderStyle, SourceFile};

fn check(body: &str) -> Checked {
    let text = format!("network t {{\n{body}\n}}\n");
    let file = SourceFile::new("t.cnn", text);
    match cnnc_ir::check(&file) {
        Ok(checked) => checked,
        Err(errors) => panic!("{}", errors.render(&file, RenderStyle::Plain)),
    }
}

/// The op and output shape of the layer named `name`.
fn layer<'a>(checked: &'a Checked, name: &str) -> (&'a Op, Vec<usize>) {
    let node = checked
        .graph
        .node_ids()
        .find(|&id| checked.graph[id].name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no layer {name}"));
    (&checked.graph[node].op, checked.info.shape(node).to_vec())
}

#[test]
fn conv_defaults_and_pytorch_sizes() {
    let checked = check(
        "input x: [16, 50, 100]
         a = conv2d(33, 3, stride=2) from x
         b = conv2d(33, (3, 5), stride=(2, 1), padding=(4, 2)) from x
         c = conv2d(33, (3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1)) from x
         output c",
    );
    let (op, shape) = layer(&checked, "a");
    assert_eq!(shape, [33, 24, 49]);
    let Op::Conv2d(conv) = op else {
        panic!("not a conv")
    };
    assert_eq!(conv.padding, [0; 4]);
    assert_eq!(conv.dilation, [1, 1]);
    assert_eq!(conv.groups, 1);
    assert!(conv.bias);
    assert!(!conv.flip_kernel);
    assert!(conv.epilogue.is_empty());
    assert_eq!(conv.weights.module, "a");
    assert_eq!(layer(&checked, "b").1, [33, 28, 100]);
    assert_eq!(layer(&checked, "c").1, [33, 26, 100]);
}

#[test]
fn same_padding_puts_the_odd_extra_bottom_right() {
    let checked = check(
        "input x: [3, 9, 10]
         even = conv2d(4, 4, padding=\"same\") from x
         dilated = conv2d(4, (3, 2), padding=\"same\", dilation=2) from x
         valid = conv2d(4, 3, padding=\"valid\") from x
         output even",
    );
    let (Op::Conv2d(even), shape) = layer(&checked, "even") else {
        panic!()
    };
    assert_eq!(even.padding, [1, 1, 2, 2]);
    assert_eq!(shape, [4, 9, 10]);
    let (Op::Conv2d(dilated), shape) = layer(&checked, "dilated") else {
        panic!()
    };
    // Total padding d*(k-1): 4 rows, 2 columns.
    assert_eq!(dilated.padding, [2, 1, 2, 1]);
    assert_eq!(shape, [4, 9, 10]);
    let (Op::Conv2d(valid), shape) = layer(&checked, "valid") else {
        panic!()
    };
    assert_eq!(valid.padding, [0; 4]);
    assert_eq!(shape, [4, 7, 8]);
}

#[test]
fn pool_stride_defaults_to_kernel() {
    let checked = check(
        "input x: [4, 50, 32]
         a = maxpool2d(3, stride=2, padding=1) from x
         b = maxpool2d(2) from x
         c = avgpool2d((2, 4)) from x
         d = maxpool2d(3, stride=2, ceil_mode=true) from x
         e = avgpool2d(2, padding=1, ceil_mode=true, count_include_pad=false) from x
         output a",
    );
    assert_eq!(layer(&checked, "a").1, [4, 25, 16]);
    let (Op::MaxPool2d(b), shape) = layer(&checked, "b") else {
        panic!()
    };
    assert_eq!(b.stride, [2, 2]);
    assert_eq!(b.dilation, [1, 1]);
    assert_eq!(shape, [4, 25, 16]);
    let (Op::AvgPool2d(c), shape) = layer(&checked, "c") else {
        panic!()
    };
    assert_eq!(c.stride, [2, 4]);
    assert!(c.count_include_pad);
    assert_eq!(shape, [4, 25, 8]);
    // ceil: (50-3+1)/2+1 = 25, (32-3+1)/2+1 = 16.
    assert_eq!(layer(&checked, "d").1, [4, 25, 16]);
    // k=2, s=2, p=1, ceil on 50: ceil(50/2)+1 = 26, the 26th window starts
    // at 50 >= 50 + 1? no, so kept: 26; on 32: 17.
    assert_eq!(layer(&checked, "e").1, [4, 26, 17]);
}

#[test]
fn activations_and_misc_ops() {
    let checked = check(
        "input x: [8, 5, 5]
         a = leaky_relu(negative_slope=0.1)
         b = leaky_relu
         c = relu6
         d = hardswish
         e = sigmoid
         f = tanh
         g = dropout(p=0.2)
         h = adaptive_avgpool2d((2, 3))
         i = flatten
         j = softmax(dim=-1)
         output j",
    );
    assert_eq!(
        layer(&checked, "a").0,
        &Op::Activation(Activation::LeakyRelu {
            negative_slope: 0.1
        })
    );
    assert_eq!(
        layer(&checked, "b").0,
        &Op::Activation(Activation::LeakyRelu {
            negative_slope: 0.01
        })
    );
    assert_eq!(layer(&checked, "c").0, &Op::Activation(Activation::Relu6));
    assert_eq!(
        layer(&checked, "d").0,
        &Op::Activation(Activation::Hardswish)
    );
    assert_eq!(layer(&checked, "h").1, [8, 2, 3]);
    assert_eq!(layer(&checked, "i").1, [48]);
    assert_eq!(layer(&checked, "j").1, [48]);
}

#[test]
fn flatten_of_rank_one_is_identity() {
    let checked = check("input x: [20]\n flat = flatten");
    assert_eq!(layer(&checked, "flat").1, [20]);
}

#[test]
fn multi_input_ops_keep_slot_order() {
    let checked = check(
        "input x: [4, 8, 8]
         p = conv2d(3, 1)
         q = conv2d(5, 3, padding=1) from x
         cat = concat(q, p, x, dim=-3)
         s = add(p, p)
         output cat",
    );
    let graph = &checked.graph;
    let find = |name: &str| {
        graph
            .node_ids()
            .find(|&id| graph[id].name.as_deref() == Some(name))
            .expect("layer exists")
    };
    assert_eq!(graph.inputs(find("cat")), [find("q"), find("p"), find("x")]);
    assert_eq!(layer(&checked, "cat").1, [12, 8, 8]);
    assert_eq!(graph.inputs(find("s")), [find("p"), find("p")]);
    assert_eq!(graph.output(), find("cat"));
    // `s` is unused, so there is a warning.
    assert_eq!(checked.warnings.len(), 1);
}

#[test]
fn statements_may_span_lines_and_carry_comments() {
    let checked = check(
        "weights \"w.safetensors\"   # before the input
         input x: [
             3, 8, 8,   # trailing comma
         ]
         c = conv2d(
             4,          # out_channels
             (3,
              3),
             bias=false,
         ) from x
         bn = batchnorm2d(4, eps=1e-3)
         relu()",
    );
    let (Op::Conv2d(conv), shape) = layer(&checked, "c") else {
        panic!()
    };
    assert!(!conv.bias);
    assert_eq!(shape, [4, 6, 6]);
    let (Op::BatchNorm2d(bn), _) = layer(&checked, "bn") else {
        panic!()
    };
    assert_eq!(bn.eps, 1e-3);
    assert_eq!(bn.num_features, Some(4));
    assert_eq!(
        checked.graph.weights_path().map(|(p, _)| p),
        Some("w.safetensors")
    );
    assert_eq!(checked.info.total_params, 4 * 3 * 3 * 3 + 2 * 4);
}

#[test]
fn default_output_is_the_last_layer_and_order_is_source_order() {
    let checked = check("input x: [3, 8, 8]\n c = conv2d(4, 3)\n relu\n flatten");
    let graph = &checked.graph;
    let names: Vec<String> = checked
        .info
        .order()
        .iter()
        .map(|&n| graph.display_name(n))
        .collect();
    assert_eq!(names, ["x", "c", "#2 relu", "#3 flatten"]);
    assert_eq!(checked.info.shape(graph.output()), [144]);
}

#[test]
fn expected_weights_follow_pytorch_names() {
    let checked = check(
        "input x: [3, 8, 8]
         layer1.0.conv1 = conv2d(4, 3, groups=1, bias=false)
         layer1.0.bn1 = batchnorm2d
         relu
         flatten
         fc = linear(10)",
    );
    let weights: Vec<(String, Vec<usize>)> =
        cnnc_ir::expected_weights(&checked.graph, &checked.info)
            .into_iter()
            .map(|w| (w.name, w.shape))
            .collect();
    let expected: Vec<(String, Vec<usize>)> = [
        ("layer1.0.conv1.weight", vec![4, 3, 3, 3]),
        ("layer1.0.bn1.weight", vec![4]),
        ("layer1.0.bn1.bias", vec![4]),
        ("layer1.0.bn1.running_mean", vec![4]),
        ("layer1.0.bn1.running_var", vec![4]),
        ("fc.weight", vec![10, 144]),
        ("fc.bias", vec![10]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(weights, expected);
}

#[test]
fn geometry_for_kernels() {
    let checked = check(
        "input x: [8, 10, 10]
         c = conv2d(12, 3, groups=4, padding=1, stride=2)
         p = maxpool2d(3, stride=2, padding=1, ceil_mode=true)",
    );
    let graph = &checked.graph;
    let conv = graph
        .node_ids()
        .find(|&n| graph[n].name.as_deref() == Some("c"))
        .expect("c");
    let geometry = checked
        .info
        .conv2d_geometry(graph, conv, 2)
        .expect("conv geometry");
    assert_eq!(
        (geometry.in_channels, geometry.out_channels, geometry.groups),
        (8, 12, 4)
    );
    assert_eq!((geometry.out_h, geometry.out_w), (5, 5));
    assert_eq!(geometry.macs(), 2 * 12 * 25 * 2 * 9);
    let pool = graph
        .node_ids()
        .find(|&n| graph[n].name.as_deref() == Some("p"))
        .expect("p");
    let geometry = checked
        .info
        .pool2d_geometry(graph, pool, 1)
        .expect("pool geometry");
    assert_eq!((geometry.in_h, geometry.out_h), (5, 3));
    assert!(checked.info.conv2d_geometry(graph, pool, 1).is_none());
}
