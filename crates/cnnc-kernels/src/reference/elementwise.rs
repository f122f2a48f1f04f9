//! Element-wise operators: activations and the residual `add`.

use crate::activation::Activation;

/// One activation value, with PyTorch's definition evaluated in `f64` and
/// rounded to `f32` once.
///
/// Beyond [`Activation::apply`] (the `f32` formula the fast epilogues use),
/// this is the oracle: correctly rounded up to the `f64` library functions'
/// error, and faithful to PyTorch at the edges:
///
/// - NaN propagates through every activation (`relu(NaN)` is NaN);
/// - `relu(-0.0)` and `leaky_relu(-0.0)` are `-0.0`, like PyTorch's;
/// - `sigmoid` saturates to exactly 0 and 1 and never produces NaN for finite
///   or infinite inputs.
pub fn activation_value(act: Activation, x: f32) -> f32 {
    let x64 = f64::from(x);
    match act {
        Activation::Identity => x,
        // Comparisons with NaN are false, so NaN falls through unchanged.
        Activation::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        // `clamp` keeps NaN (and -0.0).
        Activation::Relu6 => x.clamp(0.0, 6.0),
        Activation::LeakyRelu { negative_slope } => {
            if x < 0.0 {
                (x64 * f64::from(negative_slope)) as f32
            } else {
                x
            }
        }
        Activation::Sigmoid => (1.0 / (1.0 + (-x64).exp())) as f32,
        Activation::Tanh => x64.tanh() as f32,
        Activation::Hardswish => (x64 * (x64 + 3.0).clamp(0.0, 6.0) / 6.0) as f32,
    }
}

/// Applies `act` to every element of `data`, in place (see
/// [`activation_value`] for the arithmetic). Activations are shape-blind, so
/// this serves NCHW and flat data alike.
pub fn activation(act: Activation, data: &mut [f32]) {
    for value in data {
        *value = activation_value(act, *value);
    }
}

/// `output = a + b`, element by element (the residual connection; both
/// operands have the same shape). One `f32` addition per element, which is
/// already correctly rounded.
///
/// # Panics
///
/// If the three slices do not all have the same length.
pub fn add(a: &[f32], b: &[f32], output: &mut [f32]) {
    assert_eq!(a.len(), b.len(), "add: operand lengths");
    assert_eq!(a.len(), output.len(), "add: output length");
    for ((y, &x1), &x2) in output.iter_mut().zip(a).zip(b) {
        *y = x1 + x2;
    }
}

#[cfg(test)]
mod tests {
    use super::{activation, activation_value, add};
    use crate::activation::Activation;
    use crate::reference::testutil::{assert_same, SplitMix64};

    const ALL: [Activation; 7] = [
        Activation::Identity,
        Activation::Relu,
        Activation::Relu6,
        Activation::LeakyRelu {
            negative_slope: 0.01,
        },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Hardswish,
    ];

    fn apply(act: Activation, input: &[f32]) -> Vec<f32> {
        let mut data = input.to_vec();
        activation(act, &mut data);
        data
    }

    #[test]
    fn piecewise_linear_activations() {
        let input = [-7.0, -3.0, -0.5, 0.0, 0.5, 3.0, 7.0];
        assert_same(&apply(Activation::Identity, &input), &input);
        assert_same(
            &apply(Activation::Relu, &input),
            &[0.0, 0.0, 0.0, 0.0, 0.5, 3.0, 7.0],
        );
        assert_same(
            &apply(Activation::Relu6, &input),
            &[0.0, 0.0, 0.0, 0.0, 0.5, 3.0, 6.0],
        );
        let slope = 0.2f32;
        let leaky = apply(
            Activation::LeakyRelu {
                negative_slope: slope,
            },
            &input,
        );
        assert_same(
            &leaky,
            &[-7.0 * slope, -3.0 * slope, -0.5 * slope, 0.0, 0.5, 3.0, 7.0],
        );
        // hardswish: 0 below -3, x below 3 and above, x(x+3)/6 between.
        let hardswish = apply(Activation::Hardswish, &input);
        let middle = |x: f64| (x * (x + 3.0) / 6.0) as f32;
        assert_same(
            &hardswish,
            &[0.0, 0.0, middle(-0.5), 0.0, middle(0.5), 3.0, 7.0],
        );
        assert_eq!(
            activation_value(Activation::Hardswish, 1.0),
            (2.0f64 / 3.0) as f32
        );
    }

    #[test]
    fn smooth_activations() {
        assert_eq!(activation_value(Activation::Sigmoid, 0.0), 0.5);
        assert_eq!(
            activation_value(Activation::Sigmoid, 1.0),
            (1.0 / (1.0 + (-1.0f64).exp())) as f32
        );
        assert_eq!(activation_value(Activation::Sigmoid, -200.0), 0.0);
        assert_eq!(activation_value(Activation::Sigmoid, 200.0), 1.0);
        assert_eq!(
            activation_value(Activation::Sigmoid, f32::NEG_INFINITY),
            0.0
        );
        assert_eq!(activation_value(Activation::Sigmoid, f32::INFINITY), 1.0);
        assert_eq!(
            activation_value(Activation::Tanh, 0.5),
            0.5f64.tanh() as f32
        );
        assert_eq!(activation_value(Activation::Tanh, -30.0), -1.0);
        assert_eq!(activation_value(Activation::Tanh, f32::INFINITY), 1.0);
    }

    #[test]
    fn nan_propagates_and_negative_zero_is_kept() {
        for act in ALL {
            assert!(activation_value(act, f32::NAN).is_nan(), "{}", act.name());
        }
        for act in [
            Activation::Identity,
            Activation::Relu,
            Activation::LeakyRelu {
                negative_slope: 0.5,
            },
        ] {
            assert!(
                activation_value(act, -0.0).is_sign_negative(),
                "{}",
                act.name()
            );
        }
    }

    #[test]
    fn agrees_with_the_f32_definitions_on_finite_values() {
        // Activation::apply is the f32 formula; the oracle may differ by a few ulps only.
        let mut rng = SplitMix64::new(7);
        let values: Vec<f32> = (0..2000).map(|_| rng.next_f32() * 10.0).collect();
        for act in ALL {
            for &x in &values {
                let (oracle, fast) = (activation_value(act, x), act.apply(x));
                let allowed = 4.0 * f32::EPSILON * oracle.abs().max(f32::MIN_POSITIVE);
                assert!(
                    (oracle - fast).abs() <= allowed,
                    "{}({x}): {oracle} vs {fast}",
                    act.name()
                );
            }
        }
    }

    #[test]
    fn add_elementwise() {
        let mut output = [f32::NAN; 3];
        add(&[1.0, -2.0, 0.5], &[10.0, 2.0, f32::INFINITY], &mut output);
        assert_same(&output, &[11.0, 0.0, f32::INFINITY]);
    }
}
