//! Kernel tiers and their run-time selection.
//!
//! A *tier* is one implementation of every fast kernel for one family of
//! CPUs. Each tier is a static [`Kernels`] table of function pointers; the
//! best one the CPU supports is chosen once, at the first call of
//! [`kernels`], and every later call goes through the stored pointer (the
//! pattern of memchr's `unsafe_ifunc!` and tract's `plug`):
//!
//! | tier | code | on x86-64 |
//! |---|---|---|
//! | [`Tier::Reference`] | scalar `f32`, same driver | always |
//! | [`Tier::Portable`] | `wide::f32x8` | always (SSE2 in a plain build) |
//! | [`Tier::Avx2`] | `std::arch` AVX2 + FMA | `avx2` and `fma` detected |
//! | [`Tier::Avx512`] | `std::arch` AVX-512 | `avx512f` detected |
//!
//! **Forcing a tier.** The environment variable `CNNC_KERNELS`
//! (`reference`, `portable`, `avx2` or `avx512`; read once) forces a tier. A
//! tier this CPU lacks, or an unknown name, is never an error: cnnc prints
//! one warning on stderr and falls back to the best available tier at or
//! below the one asked for (for an unknown name: the best available). A
//! forced tier is a debugging and benchmarking aid; a program keeps working
//! when it is copied to an older machine with the variable set.
//!
//! Tests and benches get a specific tier's table with [`kernels_for`], which
//! returns `None` where the CPU lacks the tier.

use core::fmt;
use core::str::FromStr;
use std::sync::OnceLock;

use crate::gemm::GemmKernels;

/// The environment variable that forces a tier.
pub const ENV_VAR: &str = "CNNC_KERNELS";

/// One implementation level of the kernels, ordered from slowest to fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// Scalar `f32` code through the same blocking driver; works everywhere.
    Reference,
    /// `wide` vectors, whose width is fixed at compile time (SSE2 on a
    /// baseline x86-64 build, NEON on aarch64); works everywhere.
    Portable,
    /// AVX2 + FMA intrinsics (`std::arch`), 6x16 GEMM tiles.
    Avx2,
    /// AVX-512F intrinsics (`std::arch`), 14x32 GEMM tiles.
    Avx512,
}

impl Tier {
    /// Every tier, slowest first.
    pub const ALL: [Tier; 4] = [Tier::Reference, Tier::Portable, Tier::Avx2, Tier::Avx512];

    /// The tier's name, as accepted by `CNNC_KERNELS`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Reference => "reference",
            Tier::Portable => "portable",
            Tier::Avx2 => "avx2",
            Tier::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the tier.
    pub fn is_available(self) -> bool {
        match self {
            Tier::Reference | Tier::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Tier::Avx2 | Tier::Avx512 => false,
        }
    }

    /// The fastest tier this CPU can run.
    pub fn best_available() -> Tier {
        Tier::ALL
            .into_iter()
            .rev()
            .find(|tier| tier.is_available())
            .unwrap_or(Tier::Reference)
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a tier name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownTier(pub String);

impl fmt::Display for UnknownTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown kernel tier `{}` (expected reference, portable, avx2 or avx512)",
            self.0
        )
    }
}

impl std::error::Error for UnknownTier {}

impl FromStr for Tier {
    type Err = UnknownTier;

    fn from_str(name: &str) -> Result<Tier, UnknownTier> {
        let name = name.trim();
        Tier::ALL
            .into_iter()
            .find(|tier| tier.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownTier(name.to_owned()))
    }
}

/// The kernels of one tier: what every caller of a fast kernel goes through.
#[derive(Debug)]
pub struct Kernels {
    tier: Tier,
    pub(crate) gemm: &'static GemmKernels,
}

impl Kernels {
    /// The tier these kernels belong to.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The GEMM register tile `(MR, NR)`: rows of `A` and columns of `B` per
    /// microkernel call. Splitting work between threads along multiples of
    /// these avoids ragged tiles inside the matrix.
    pub fn gemm_tile(&self) -> (usize, usize) {
        (self.gemm.mr, self.gemm.nr())
    }

    /// The name of the GEMM microkernel, `{tier}_mmm_f32_{MR}x{NR}`.
    pub fn gemm_kernel_name(&self) -> &'static str {
        self.gemm.name
    }
}

static REFERENCE: Kernels = Kernels {
    tier: Tier::Reference,
    gemm: &crate::gemm::reference::GEMM,
};
static PORTABLE: Kernels = Kernels {
    tier: Tier::Portable,
    gemm: &crate::gemm::portable::GEMM,
};
#[cfg(target_arch = "x86_64")]
static AVX2: Kernels = Kernels {
    tier: Tier::Avx2,
    gemm: &crate::gemm::avx2::GEMM,
};
#[cfg(target_arch = "x86_64")]
static AVX512: Kernels = Kernels {
    tier: Tier::Avx512,
    gemm: &crate::gemm::avx512::GEMM,
};

/// The table of `tier`, or `None` where this CPU cannot run it.
///
/// This is how tests and benches run every tier the machine has.
pub fn kernels_for(tier: Tier) -> Option<&'static Kernels> {
    if !tier.is_available() {
        return None;
    }
    match tier {
        Tier::Reference => Some(&REFERENCE),
        Tier::Portable => Some(&PORTABLE),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 => Some(&AVX2),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 => Some(&AVX512),
        #[cfg(not(target_arch = "x86_64"))]
        Tier::Avx2 | Tier::Avx512 => None,
    }
}

/// Chooses the tier from the value of `CNNC_KERNELS` (if set) and the CPU;
/// returns the warning to print when the request cannot be honoured.
pub fn select_tier(requested: Option<&str>) -> (Tier, Option<String>) {
    let best = Tier::best_available();
    let Some(requested) = requested else {
        return (best, None);
    };
    match requested.parse::<Tier>() {
        Ok(tier) if tier.is_available() => (tier, None),
        Ok(tier) => {
            let fallback = Tier::ALL
                .into_iter()
                .rev()
                .find(|candidate| *candidate <= tier && candidate.is_available())
                .unwrap_or(Tier::Reference);
            let warning = format!(
                "cnnc: {ENV_VAR}={requested}: this CPU cannot run the {tier} kernels; using {fallback}"
            );
            (fallback, Some(warning))
        }
        Err(unknown) => (
            best,
            Some(format!("cnnc: {ENV_VAR}: {unknown}; using {best}")),
        ),
    }
}

/// The active kernels: the best tier of this CPU, or the one forced by
/// `CNNC_KERNELS`. Detected once; later calls are a load.
pub fn kernels() -> &'static Kernels {
    static ACTIVE: OnceLock<&'static Kernels> = OnceLock::new();
    ACTIVE.get_or_init(|| {
        let requested = std::env::var(ENV_VAR).ok();
        let (tier, warning) = select_tier(requested.as_deref());
        if let Some(warning) = warning {
            eprintln!("{warning}");
        }
        // `select_tier` only returns available tiers, and the reference tier
        // is always available.
        kernels_for(tier).unwrap_or(&REFERENCE)
    })
}

/// The tier of [`kernels`].
pub fn active_tier() -> Tier {
    kernels().tier()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for tier in Tier::ALL {
            assert_eq!(tier.name().parse::<Tier>(), Ok(tier));
            assert_eq!(tier.to_string(), tier.name());
        }
        assert_eq!(" AVX512 ".parse::<Tier>(), Ok(Tier::Avx512));
        assert_eq!("sse".parse::<Tier>(), Err(UnknownTier("sse".to_owned())));
    }

    #[test]
    fn selection_honours_available_requests_and_falls_back_otherwise() {
        assert_eq!(select_tier(None), (Tier::best_available(), None));
        assert_eq!(select_tier(Some("reference")), (Tier::Reference, None));
        assert_eq!(select_tier(Some("portable")), (Tier::Portable, None));
        let (tier, warning) = select_tier(Some("nonsense"));
        assert_eq!(tier, Tier::best_available());
        assert!(warning.is_some_and(|w| w.contains("unknown kernel tier `nonsense`")));
        for requested in [Tier::Avx2, Tier::Avx512] {
            let (tier, warning) = select_tier(Some(requested.name()));
            if requested.is_available() {
                assert_eq!((tier, warning), (requested, None));
            } else {
                assert!(tier < requested && tier.is_available());
                assert!(warning.is_some());
            }
        }
    }

    #[test]
    fn tables_exist_exactly_for_available_tiers() {
        for tier in Tier::ALL {
            let table = kernels_for(tier);
            assert_eq!(table.is_some(), tier.is_available(), "{tier}");
            if let Some(table) = table {
                assert_eq!(table.tier(), tier);
                assert!(table.gemm_kernel_name().starts_with(tier.name()));
            }
        }
        assert!(kernels_for(active_tier()).is_some());
    }
}
