//! Kernel specs written out as Rust literals.
//!
//! Every spec of `cnnc_kernels::ops` is plain data with public fields; each
//! is printed as a struct expression naming every field, read from the
//! value by an exhaustive destructuring, so a field added to a spec breaks
//! this file's build instead of being silently left out of generated code.
//! Paths are absolute (`::cnnc_runtime::kernels::…`) so that the generated
//! module works wherever it is included.

use cnnc_kernels::ops::concat::ConcatSpec;
use cnnc_kernels::ops::conv::{Algorithm, BottleneckSpec, Conv2dSpec};
use cnnc_kernels::ops::elementwise::{ActivationSpec, AddSpec};
use cnnc_kernels::ops::layout::{Layout, Reorder, ReorderSpec};
use cnnc_kernels::ops::linear::LinearSpec;
use cnnc_kernels::ops::norm::BatchNormSpec;
use cnnc_kernels::ops::pool::{AdaptiveAvgPoolSpec, AvgPoolSpec, MaxPoolSpec};
use cnnc_kernels::ops::softmax::SoftmaxSpec;
use cnnc_kernels::ops::winograd::WinogradTile;
use cnnc_kernels::{Activation, Conv2dGeometry, Pool2dGeometry};
use proc_macro2::{Literal, TokenStream};
use quote::quote;

/// A value that prints as a Rust expression.
pub(crate) trait ToLiteral {
    /// The expression.
    fn literal(&self) -> TokenStream;
}

/// `usize` as an unsuffixed integer (the field types say `usize`).
pub(crate) fn int(value: usize) -> Literal {
    Literal::usize_unsuffixed(value)
}

/// An `f32` that reads back to the same bits: the shortest decimal that
/// round-trips, suffixed; non-finite values as `f32::` constants.
pub(crate) fn float32(value: f32) -> TokenStream {
    if value.is_nan() {
        quote!(f32::NAN)
    } else if value == f32::INFINITY {
        quote!(f32::INFINITY)
    } else if value == f32::NEG_INFINITY {
        quote!(f32::NEG_INFINITY)
    } else if value.is_sign_negative() {
        let magnitude = Literal::f32_suffixed(-value);
        quote!(-#magnitude)
    } else {
        let literal = Literal::f32_suffixed(value);
        quote!(#literal)
    }
}

/// An `f64`, as [`float32`].
pub(crate) fn float64(value: f64) -> TokenStream {
    if !value.is_finite() {
        if value.is_nan() {
            quote!(f64::NAN)
        } else if value > 0.0 {
            quote!(f64::INFINITY)
        } else {
            quote!(f64::NEG_INFINITY)
        }
    } else if value.is_sign_negative() {
        let magnitude = Literal::f64_suffixed(-value);
        quote!(-#magnitude)
    } else {
        let literal = Literal::f64_suffixed(value);
        quote!(#literal)
    }
}

fn pair(values: [usize; 2]) -> TokenStream {
    let [a, b] = values.map(int);
    quote!([#a, #b])
}

fn quad(values: [usize; 4]) -> TokenStream {
    let [a, b, c, d] = values.map(int);
    quote!([#a, #b, #c, #d])
}

impl ToLiteral for usize {
    fn literal(&self) -> TokenStream {
        let literal = int(*self);
        quote!(#literal)
    }
}

impl ToLiteral for bool {
    fn literal(&self) -> TokenStream {
        if *self {
            quote!(true)
        } else {
            quote!(false)
        }
    }
}

impl ToLiteral for Activation {
    fn literal(&self) -> TokenStream {
        let variant = match *self {
            Activation::Identity => quote!(Identity),
            Activation::Relu => quote!(Relu),
            Activation::Relu6 => quote!(Relu6),
            Activation::LeakyRelu { negative_slope } => {
                let slope = float32(negative_slope);
                quote!(LeakyRelu { negative_slope: #slope })
            }
            Activation::Sigmoid => quote!(Sigmoid),
            Activation::Tanh => quote!(Tanh),
            Activation::Hardswish => quote!(Hardswish),
        };
        quote!(::cnnc_runtime::kernels::Activation::#variant)
    }
}

impl ToLiteral for Algorithm {
    fn literal(&self) -> TokenStream {
        let variant = match self {
            Algorithm::Gemm1x1 => quote!(Gemm1x1),
            Algorithm::Indirect => quote!(Indirect),
            Algorithm::RowIndirect => quote!(RowIndirect),
            Algorithm::Depthwise => quote!(Depthwise),
            Algorithm::Grouped => quote!(Grouped),
            Algorithm::PlanarDepthwise => quote!(PlanarDepthwise),
            Algorithm::PlanarDirect => quote!(PlanarDirect),
            Algorithm::Winograd(tile) => {
                let tile = match tile {
                    WinogradTile::F4x4 => quote!(F4x4),
                    WinogradTile::F6x6 => quote!(F6x6),
                };
                quote!(Winograd(::cnnc_runtime::kernels::ops::winograd::WinogradTile::#tile))
            }
        };
        quote!(::cnnc_runtime::kernels::ops::conv::Algorithm::#variant)
    }
}

impl ToLiteral for Conv2dGeometry {
    fn literal(&self) -> TokenStream {
        let Conv2dGeometry {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            out_h,
            out_w,
            kernel,
            stride,
            dilation,
            padding,
            groups,
        } = *self;
        let [batch, in_channels, in_h, in_w, out_channels, out_h, out_w, groups] = [
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            out_h,
            out_w,
            groups,
        ]
        .map(int);
        let (kernel, stride, dilation, padding) =
            (pair(kernel), pair(stride), pair(dilation), quad(padding));
        quote! {
            ::cnnc_runtime::kernels::Conv2dGeometry {
                batch: #batch,
                in_channels: #in_channels,
                in_h: #in_h,
                in_w: #in_w,
                out_channels: #out_channels,
                out_h: #out_h,
                out_w: #out_w,
                kernel: #kernel,
                stride: #stride,
                dilation: #dilation,
                padding: #padding,
                groups: #groups,
            }
        }
    }
}

impl ToLiteral for Pool2dGeometry {
    fn literal(&self) -> TokenStream {
        let Pool2dGeometry {
            batch,
            channels,
            in_h,
            in_w,
            out_h,
            out_w,
            kernel,
            stride,
            dilation,
            padding,
        } = *self;
        let [batch, channels, in_h, in_w, out_h, out_w] =
            [batch, channels, in_h, in_w, out_h, out_w].map(int);
        let (kernel, stride, dilation, padding) =
            (pair(kernel), pair(stride), pair(dilation), pair(padding));
        quote! {
            ::cnnc_runtime::kernels::Pool2dGeometry {
                batch: #batch,
                channels: #channels,
                in_h: #in_h,
                in_w: #in_w,
                out_h: #out_h,
                out_w: #out_w,
                kernel: #kernel,
                stride: #stride,
                dilation: #dilation,
                padding: #padding,
            }
        }
    }
}

impl ToLiteral for Conv2dSpec {
    fn literal(&self) -> TokenStream {
        let Conv2dSpec {
            geometry,
            activation,
            has_bias,
            has_residual,
            algorithm,
        } = self;
        let geometry = geometry.literal();
        let activation = activation.literal();
        let (has_bias, has_residual) = (has_bias.literal(), has_residual.literal());
        let algorithm = algorithm.literal();
        quote! {
            ::cnnc_runtime::kernels::ops::conv::Conv2dSpec {
                geometry: #geometry,
                activation: #activation,
                has_bias: #has_bias,
                has_residual: #has_residual,
                algorithm: #algorithm,
            }
        }
    }
}

impl ToLiteral for BottleneckSpec {
    fn literal(&self) -> TokenStream {
        let BottleneckSpec {
            expand,
            depthwise,
            project,
        } = self;
        let expand = match expand {
            Some(expand) => {
                let expand = expand.literal();
                quote!(Some(#expand))
            }
            None => quote!(None),
        };
        let (depthwise, project) = (depthwise.literal(), project.literal());
        quote! {
            ::cnnc_runtime::kernels::ops::conv::BottleneckSpec {
                expand: #expand,
                depthwise: #depthwise,
                project: #project,
            }
        }
    }
}

impl ToLiteral for LinearSpec {
    fn literal(&self) -> TokenStream {
        let LinearSpec {
            in_features,
            out_features,
            activation,
            has_bias,
            has_residual,
        } = *self;
        let (in_features, out_features) = (int(in_features), int(out_features));
        let activation = activation.literal();
        let (has_bias, has_residual) = (has_bias.literal(), has_residual.literal());
        quote! {
            ::cnnc_runtime::kernels::ops::linear::LinearSpec {
                in_features: #in_features,
                out_features: #out_features,
                activation: #activation,
                has_bias: #has_bias,
                has_residual: #has_residual,
            }
        }
    }
}

impl ToLiteral for BatchNormSpec {
    fn literal(&self) -> TokenStream {
        let BatchNormSpec {
            channels,
            pixels,
            activation,
        } = *self;
        let (channels, pixels) = (int(channels), int(pixels));
        let activation = activation.literal();
        quote! {
            ::cnnc_runtime::kernels::ops::norm::BatchNormSpec {
                channels: #channels,
                pixels: #pixels,
                activation: #activation,
            }
        }
    }
}

impl ToLiteral for MaxPoolSpec {
    fn literal(&self) -> TokenStream {
        let MaxPoolSpec {
            geometry,
            activation,
            layout,
        } = *self;
        let geometry = geometry.literal();
        let activation = activation.literal();
        let layout = layout.literal();
        quote! {
            ::cnnc_runtime::kernels::ops::pool::MaxPoolSpec {
                geometry: #geometry,
                activation: #activation,
                layout: #layout,
            }
        }
    }
}

impl ToLiteral for AvgPoolSpec {
    fn literal(&self) -> TokenStream {
        let AvgPoolSpec {
            geometry,
            count_include_pad,
            activation,
            layout,
        } = *self;
        let geometry = geometry.literal();
        let count_include_pad = count_include_pad.literal();
        let activation = activation.literal();
        let layout = layout.literal();
        quote! {
            ::cnnc_runtime::kernels::ops::pool::AvgPoolSpec {
                geometry: #geometry,
                count_include_pad: #count_include_pad,
                activation: #activation,
                layout: #layout,
            }
        }
    }
}

impl ToLiteral for AdaptiveAvgPoolSpec {
    fn literal(&self) -> TokenStream {
        let AdaptiveAvgPoolSpec {
            channels,
            input,
            output,
        } = *self;
        let channels = int(channels);
        let (input, output) = (pair(input), pair(output));
        quote! {
            ::cnnc_runtime::kernels::ops::pool::AdaptiveAvgPoolSpec {
                channels: #channels,
                input: #input,
                output: #output,
            }
        }
    }
}

impl ToLiteral for Layout {
    fn literal(&self) -> TokenStream {
        let layout = match self {
            Layout::Nhwc => quote!(Nhwc),
            Layout::Nchw => quote!(Nchw),
        };
        quote!(::cnnc_runtime::kernels::ops::layout::Layout::#layout)
    }
}

impl ToLiteral for ReorderSpec {
    fn literal(&self) -> TokenStream {
        let ReorderSpec {
            reorder,
            channels,
            height,
            width,
        } = *self;
        let reorder = match reorder {
            Reorder::NchwToNhwc => quote!(NchwToNhwc),
            Reorder::NhwcToNchw => quote!(NhwcToNchw),
        };
        let [channels, height, width] = [channels, height, width].map(int);
        quote! {
            ::cnnc_runtime::kernels::ops::layout::ReorderSpec {
                reorder: ::cnnc_runtime::kernels::ops::layout::Reorder::#reorder,
                channels: #channels,
                height: #height,
                width: #width,
            }
        }
    }
}

impl ToLiteral for ActivationSpec {
    fn literal(&self) -> TokenStream {
        let ActivationSpec { len, activation } = *self;
        let len = int(len);
        let activation = activation.literal();
        quote! {
            ::cnnc_runtime::kernels::ops::elementwise::ActivationSpec {
                len: #len,
                activation: #activation,
            }
        }
    }
}

impl ToLiteral for AddSpec {
    fn literal(&self) -> TokenStream {
        let AddSpec { len, activation } = *self;
        let len = int(len);
        let activation = activation.literal();
        quote! {
            ::cnnc_runtime::kernels::ops::elementwise::AddSpec {
                len: #len,
                activation: #activation,
            }
        }
    }
}

impl ToLiteral for SoftmaxSpec {
    fn literal(&self) -> TokenStream {
        let SoftmaxSpec { outer, dim, inner } = *self;
        let [outer, dim, inner] = [outer, dim, inner].map(int);
        quote! {
            ::cnnc_runtime::kernels::ops::softmax::SoftmaxSpec {
                outer: #outer,
                dim: #dim,
                inner: #inner,
            }
        }
    }
}

impl ToLiteral for ConcatSpec {
    fn literal(&self) -> TokenStream {
        let ConcatSpec { outer } = *self;
        let outer = int(outer);
        quote! {
            ::cnnc_runtime::kernels::ops::concat::ConcatSpec { outer: #outer }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_back_to_the_same_bits() {
        for value in [0.01f32, 0.1, 1.0 / 3.0, 1e-5, 2.5e-38, -0.2, 0.0, 1e30] {
            let text = float32(value).to_string().replace(' ', "");
            let parsed: f32 = text.trim_end_matches("f32").parse().expect("a float");
            assert_eq!(parsed.to_bits(), value.to_bits(), "{text}");
        }
        assert_eq!(float32(f32::NAN).to_string(), "f32 :: NAN");
        assert_eq!(float64(1e-5).to_string(), "0.00001f64");
        assert_eq!(float64(-0.5).to_string(), "- 0.5f64");
    }

    #[test]
    fn activations_name_their_variant() {
        assert_eq!(
            Activation::LeakyRelu {
                negative_slope: 0.2
            }
            .literal()
            .to_string(),
            ":: cnnc_runtime :: kernels :: Activation :: LeakyRelu { negative_slope : 0.2f32 }"
        );
    }
}
