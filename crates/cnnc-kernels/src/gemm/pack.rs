//! The packed weight side of a GEMM.

use core::fmt;

use super::{GemmError, PANEL};

/// Alignment of the packed panels in floats (64 bytes: one cache line per
/// panel row, so a k-step of a 16-lane tile is one aligned load).
const ALIGN_FLOATS: usize = 16;

/// `B[K×N]` packed once for every tier: panels of [`PANEL`] (16) columns,
/// laid out `[⌈N/16⌉][K][16]`, the last panel zero-padded, plus an optional
/// per-column bias padded the same way.
///
/// The layout is the same for every tier (a 32-wide AVX-512 tile reads two
/// neighbouring panels, an 8-wide portable tile half of one), so weights can
/// be packed at compile time and run on whatever CPU the program lands on.
/// The panels start on a 64-byte boundary.
///
/// For a convolution in NHWC, `K` is ordered `(kh, kw, Cin)` and `N` is the
/// output channels: see [`PackedB::from_fn`].
pub struct PackedB {
    k: usize,
    n: usize,
    /// Backing storage; the panels start at `start` (64-byte aligned).
    storage: Vec<f32>,
    start: usize,
    /// The bias padded to whole panels, if any.
    bias: Option<Vec<f32>>,
}

impl PackedB {
    /// Number of floats of the packed panels for `k × n` (`⌈n/16⌉·k·16`).
    pub fn packed_len(k: usize, n: usize) -> Option<usize> {
        n.div_ceil(PANEL).checked_mul(k)?.checked_mul(PANEL)
    }

    /// Packs the `k × n` matrix whose element `(kk, nn)` is `element(kk, nn)`.
    ///
    /// This is the general form: a conv weight `[Cout, Cin, kh, kw]` for an
    /// NHWC GEMM is `from_fn(kh*kw*Cin, Cout, bias, |kk, co| w[co][kk % Cin][kk / Cin / kw][kk / Cin % kw])`.
    /// `bias`, when given, must have `n` values.
    pub fn from_fn(
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
        mut element: impl FnMut(usize, usize) -> f32,
    ) -> Result<PackedB, GemmError> {
        let mut packed = PackedB::zeroed(k, n, bias)?;
        let panel_len = k * PANEL;
        let panels = packed.panels_mut();
        for nn in 0..n {
            let panel = &mut panels[(nn / PANEL) * panel_len..][..panel_len];
            for kk in 0..k {
                panel[kk * PANEL + nn % PANEL] = element(kk, nn);
            }
        }
        Ok(packed)
    }

    /// Packs a row-major `k × n` matrix (`b[kk * n + nn]`), e.g. weights
    /// already laid out `[K][Cout]`.
    pub fn from_kn(
        k: usize,
        n: usize,
        b: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PackedB, GemmError> {
        check_len("B", b.len(), k.checked_mul(n))?;
        PackedB::from_fn(k, n, bias, |kk, nn| b[kk * n + nn])
    }

    /// Packs the transpose of a row-major `n × k` matrix (`w[nn * k + kk]`):
    /// PyTorch's `Linear.weight` `[out, in]`, or a 1x1 conv weight.
    pub fn from_nk(
        k: usize,
        n: usize,
        w: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PackedB, GemmError> {
        check_len("B", w.len(), k.checked_mul(n))?;
        PackedB::from_fn(k, n, bias, |kk, nn| w[nn * k + kk])
    }

    /// Takes panels already in the packed layout (as [`PackedB::panels`]
    /// returns them; e.g. from a weight blob written at compile time).
    pub fn from_panels(
        k: usize,
        n: usize,
        panels: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PackedB, GemmError> {
        check_len("packed panels", panels.len(), PackedB::packed_len(k, n))?;
        let mut packed = PackedB::zeroed(k, n, bias)?;
        packed.panels_mut().copy_from_slice(panels);
        Ok(packed)
    }

    /// An all-zero packing with the bias in place.
    fn zeroed(k: usize, n: usize, bias: Option<&[f32]>) -> Result<PackedB, GemmError> {
        let len = PackedB::packed_len(k, n).ok_or(GemmError::TooLarge)?;
        let (storage, start) = aligned_zeros(len).ok_or(GemmError::TooLarge)?;
        let bias = match bias {
            None => None,
            Some(bias) => {
                check_len("bias", bias.len(), Some(n))?;
                let mut padded = vec![0.0f32; n.div_ceil(PANEL) * PANEL];
                padded[..n].copy_from_slice(bias);
                Some(padded)
            }
        };
        Ok(PackedB {
            k,
            n,
            storage,
            start,
            bias,
        })
    }

    fn panels_mut(&mut self) -> &mut [f32] {
        let len = self.storage.len() - ALIGN_FLOATS;
        &mut self.storage[self.start..self.start + len]
    }

    /// Rows of `B` (the GEMM's `K`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of `B` (the GEMM's `N`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The packed panels, `[⌈N/16⌉][K][16]` (what a weight blob stores).
    pub fn panels(&self) -> &[f32] {
        let len = self.storage.len() - ALIGN_FLOATS;
        &self.storage[self.start..self.start + len]
    }

    /// The bias (`N` values), if packed with one.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref().map(|bias| &bias[..self.n])
    }

    /// The bias padded to whole panels (what the microkernels read).
    pub(crate) fn padded_bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }
}

/// A packed `B` borrowed from storage someone else owns: the same layout as
/// [`PackedB`] (panels `[⌈N/16⌉][K][16]`, bias padded to whole panels), e.g.
/// one of several matrices packed into an operator's constants
/// [`Buffer`](crate::ops::Buffer), so that they need not be copied into
/// allocations of their own. Every GEMM entry point takes either form.
///
/// The panels may have any alignment (the kernels load unaligned); 64 bytes
/// is what [`PackedB`] and owned `Buffer`s give.
#[derive(Clone, Copy, Debug)]
pub struct PackedBRef<'a> {
    k: usize,
    n: usize,
    panels: &'a [f32],
    bias: Option<&'a [f32]>,
}

impl<'a> PackedBRef<'a> {
    /// Views `panels` (exactly [`PackedB::packed_len`]`(k, n)` floats) and
    /// `padded_bias` (exactly `⌈n/16⌉·16` floats: the bias, then zeros) as a
    /// packed `k × n` matrix.
    pub fn new(
        k: usize,
        n: usize,
        panels: &'a [f32],
        padded_bias: Option<&'a [f32]>,
    ) -> Result<PackedBRef<'a>, GemmError> {
        check_len("packed panels", panels.len(), PackedB::packed_len(k, n))?;
        if let Some(bias) = padded_bias {
            check_len(
                "padded bias",
                bias.len(),
                n.div_ceil(PANEL).checked_mul(PANEL),
            )?;
        }
        Ok(PackedBRef {
            k,
            n,
            panels,
            bias: padded_bias,
        })
    }

    /// Rows of `B` (the GEMM's `K`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of `B` (the GEMM's `N`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The packed panels, `[⌈N/16⌉][K][16]`.
    pub fn panels(&self) -> &'a [f32] {
        self.panels
    }

    /// The bias padded to whole panels (what the microkernels read).
    pub(crate) fn padded_bias(&self) -> Option<&'a [f32]> {
        self.bias
    }
}

impl<'a> From<&'a PackedB> for PackedBRef<'a> {
    fn from(packed: &'a PackedB) -> PackedBRef<'a> {
        PackedBRef {
            k: packed.k,
            n: packed.n,
            panels: packed.panels(),
            bias: packed.padded_bias(),
        }
    }
}

impl Clone for PackedB {
    fn clone(&self) -> PackedB {
        // Re-packing re-establishes the alignment of the new allocation.
        let (storage, start) = match aligned_zeros(self.panels().len()) {
            Some(aligned) => aligned,
            // The original allocation had this size plus the same slack.
            None => (self.storage.clone(), self.start),
        };
        let mut copy = PackedB {
            k: self.k,
            n: self.n,
            storage,
            start,
            bias: self.bias.clone(),
        };
        copy.panels_mut().copy_from_slice(self.panels());
        copy
    }
}

impl fmt::Debug for PackedB {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedB")
            .field("k", &self.k)
            .field("n", &self.n)
            .field("bias", &self.bias.is_some())
            .finish_non_exhaustive()
    }
}

/// `len` zeros starting on a 64-byte boundary: the storage and the start.
fn aligned_zeros(len: usize) -> Option<(Vec<f32>, usize)> {
    let storage = vec![0.0f32; len.checked_add(ALIGN_FLOATS)?];
    let misalignment = (storage.as_ptr() as usize / 4) % ALIGN_FLOATS;
    Some((storage, (ALIGN_FLOATS - misalignment) % ALIGN_FLOATS))
}

fn check_len(what: &'static str, len: usize, expected: Option<usize>) -> Result<(), GemmError> {
    match expected {
        None => Err(GemmError::TooLarge),
        Some(expected) if expected == len => Ok(()),
        Some(expected) => Err(GemmError::Length {
            what,
            len,
            expected,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_panels_of_16_columns_zero_padded() {
        let (k, n) = (3, 20);
        let b: Vec<f32> = (0..k * n).map(|i| i as f32 + 1.0).collect();
        let bias: Vec<f32> = (0..n).map(|i| -(i as f32)).collect();
        let packed = PackedB::from_kn(k, n, &b, Some(&bias)).unwrap();
        let panels = packed.panels();
        assert_eq!(panels.len(), 2 * k * 16);
        assert_eq!(panels.as_ptr() as usize % 64, 0);
        // Panel 0, k = 1, column 5 is b[1][5].
        assert_eq!(panels[16 + 5], b[n + 5]);
        // Panel 1 holds columns 16..20 then zeros.
        assert_eq!(panels[k * 16 + 2 * 16 + 3], b[2 * n + 19]);
        assert_eq!(panels[k * 16 + 2 * 16 + 4], 0.0);
        assert_eq!(packed.bias(), Some(&bias[..]));
        assert_eq!(packed.padded_bias().map(<[f32]>::len), Some(32));
        let transposed: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let from_nk = PackedB::from_nk(k, n, &transposed, Some(&bias)).unwrap();
        assert_eq!(from_nk.panels(), panels);
        let view = PackedBRef::new(k, n, panels, packed.padded_bias()).unwrap();
        assert_eq!((view.k(), view.n()), (k, n));
        assert_eq!(view.panels(), panels);
        assert_eq!(view.padded_bias(), packed.padded_bias());
        assert!(PackedBRef::new(k, n, &panels[1..], None).is_err());
        assert!(PackedBRef::new(k, n, panels, Some(&bias)).is_err());
        let copy = PackedB::from_panels(k, n, panels, Some(&bias))
            .unwrap()
            .clone();
        assert_eq!(copy.panels(), panels);
        assert_eq!(copy.bias(), packed.bias());
    }

    #[test]
    fn wrong_lengths_are_errors() {
        assert_eq!(
            PackedB::from_kn(2, 3, &[0.0; 5], None).unwrap_err(),
            GemmError::Length {
                what: "B",
                len: 5,
                expected: 6
            }
        );
        assert_eq!(
            PackedB::from_kn(2, 3, &[0.0; 6], Some(&[0.0; 2])).unwrap_err(),
            GemmError::Length {
                what: "bias",
                len: 2,
                expected: 3
            }
        );
        assert_eq!(
            PackedB::from_fn(usize::MAX, 17, None, |_, _| 0.0).unwrap_err(),
            GemmError::TooLarge
        );
    }
}
