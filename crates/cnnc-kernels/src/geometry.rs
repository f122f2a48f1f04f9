//! Fully resolved layer geometries: every size a kernel needs, already
//! computed by the compiler's shape inference with PyTorch's rules.
//!
//! Sizes are per batch: a kernel call processes `batch` samples stored one
//! after another (NCHW for the reference kernels).

/// The geometry of one 2-D convolution call.
///
/// **Invariant:** `in_channels` and `out_channels` are multiples of `groups`;
/// `out_h`/`out_w` are the PyTorch output sizes for these parameters, so every
/// output position has at least one tap inside the padded input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dGeometry {
    /// Number of samples.
    pub batch: usize,
    /// Input channels (all groups together).
    pub in_channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output channels (all groups together).
    pub out_channels: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Kernel size `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Zero padding `[top, left, bottom, right]` ("same" padding may be asymmetric).
    pub padding: [usize; 4],
    /// Number of groups.
    pub groups: usize,
}

impl Conv2dGeometry {
    /// The input row that kernel row `ky` of output row `oy` reads, or
    /// `None` in the padding.
    pub fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride[0] + ky * self.dilation[0])
            .checked_sub(self.padding[0])
            .filter(|&iy| iy < self.in_h)
    }

    /// The input column that kernel column `kx` of output column `ox`
    /// reads, or `None` in the padding.
    pub fn input_column(&self, ox: usize, kx: usize) -> Option<usize> {
        (ox * self.stride[1] + kx * self.dilation[1])
            .checked_sub(self.padding[1])
            .filter(|&ix| ix < self.in_w)
    }

    /// Input channels per group.
    pub fn in_channels_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    /// Output channels per group.
    pub fn out_channels_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    /// Elements of the weight tensor `[out_channels, in_channels / groups, kh, kw]`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.in_channels_per_group() * self.kernel[0] * self.kernel[1]
    }

    /// Elements of the whole input (all samples).
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_h * self.in_w
    }

    /// Elements of the whole output (all samples).
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_h * self.out_w
    }

    /// Multiply-accumulates of the whole call.
    pub fn macs(&self) -> u64 {
        (self.output_len() as u64)
            * (self.in_channels_per_group() * self.kernel[0] * self.kernel[1]) as u64
    }
}

/// The geometry of one 2-D pooling call (max or average).
///
/// Padding is symmetric as in PyTorch (`[top/bottom, left/right]`); with
/// `ceil_mode` the last window may also run past the bottom/right edge, and
/// `out_h`/`out_w` already include PyTorch's rule that drops a last window
/// starting in the padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dGeometry {
    /// Number of samples.
    pub batch: usize,
    /// Channels.
    pub channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Window size `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Dilation `[dh, dw]` (max pooling only; 1 for average pooling).
    pub dilation: [usize; 2],
    /// Padding `[ph, pw]`, applied on both sides.
    pub padding: [usize; 2],
}

impl Pool2dGeometry {
    /// Elements of the whole input (all samples).
    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.in_h * self.in_w
    }

    /// Elements of the whole output (all samples).
    pub fn output_len(&self) -> usize {
        self.batch * self.channels * self.out_h * self.out_w
    }
}
