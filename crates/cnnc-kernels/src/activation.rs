//! Element-wise activation functions, shared by standalone activation layers
//! and by the fused epilogues of convolutions and linear layers.

/// An element-wise activation, with PyTorch's exact definition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `x` (no activation).
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` if `x >= 0`, else `negative_slope * x`.
    LeakyRelu {
        /// The slope for negative inputs (PyTorch default 0.01).
        negative_slope: f32,
    },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `x * relu6(x + 3) / 6`.
    Hardswish,
}

impl Activation {
    /// Applies the activation to one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            // Written so that NaN propagates, as in PyTorch.
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::LeakyRelu { negative_slope } => {
                if x >= 0.0 {
                    x
                } else {
                    x * negative_slope
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        }
    }

    /// The name used in the `.cnn` language (`leaky_relu`, `hardswish`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Hardswish => "hardswish",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Activation;

    #[test]
    fn values_match_pytorch_definitions() {
        assert_eq!(Activation::Relu.apply(-2.0), 0.0);
        assert_eq!(Activation::Relu.apply(2.5), 2.5);
        assert!(Activation::Relu.apply(f32::NAN).is_nan());
        assert_eq!(Activation::Relu6.apply(7.0), 6.0);
        assert_eq!(Activation::Relu6.apply(-1.0), 0.0);
        assert_eq!(
            Activation::LeakyRelu {
                negative_slope: 0.1
            }
            .apply(-2.0),
            -0.2
        );
        assert_eq!(Activation::Sigmoid.apply(0.0), 0.5);
        assert_eq!(Activation::Tanh.apply(0.0), 0.0);
        // hardswish(1) = 1 * 4 / 6
        assert!((Activation::Hardswish.apply(1.0) - 4.0 / 6.0).abs() < 1e-7);
        assert_eq!(Activation::Hardswish.apply(-3.0), 0.0);
        assert_eq!(Activation::Hardswish.apply(3.0), 3.0);
    }
}
