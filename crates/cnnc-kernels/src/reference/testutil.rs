//! Helpers shared by the reference kernels' tests: a seeded generator and
//! element-wise comparisons that report the first differing index.

/// A small deterministic generator (SplitMix64), so tests need no `rand`.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value uniform in `[-1, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        // 24 random bits give every representable step of [0, 1).
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        2.0 * unit - 1.0
    }

    /// `len` values uniform in `[-1, 1)`.
    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next_f32()).collect()
    }
}

/// Asserts `actual == expected` element by element, bit for bit except that
/// NaN equals NaN and `-0.0` equals `0.0`.
#[track_caller]
pub fn assert_same(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    for (index, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let same = a == e || (a.is_nan() && e.is_nan());
        assert!(same, "element {index}: got {a:?}, expected {e:?}");
    }
}

/// Asserts that every element is within `tolerance * max(1, max|expected|)`.
#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let scale = expected.iter().fold(1.0f32, |m, &e| m.max(e.abs()));
    for (index, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let error = (a - e).abs();
        assert!(
            error <= tolerance * scale,
            "element {index}: got {a}, expected {e} (error {error}, allowed {})",
            tolerance * scale
        );
    }
}
