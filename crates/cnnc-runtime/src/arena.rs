//! The activation arena: one allocation holding every intermediate value of
//! a network, and safe split borrows of it for each layer.
//!
//! A compiled network's memory plan (`cnnc_ir::memory`) gives every value a
//! [`Region`] of the arena, in floats **per sample**; for a batch of `N` the
//! region is `[offset·N, (offset + len)·N)` and the arena holds
//! `per_sample · N` floats. Every plan offset is a multiple of 16 floats and
//! the arena starts on a 64-byte boundary, so every region is 64-byte
//! aligned for any `N`.
//!
//! The arena also owns the layers' scratch (Winograd's transformed tiles),
//! a separate block as large as the largest layer needs.
//!
//! **Growth.** [`Arena::reserve`] grows both blocks to a batch (with
//! `try_reserve`, so an impossible batch is an [`Error::BatchTooLarge`], not
//! an abort) and never shrinks them: once a network has run a batch of `N`,
//! running any batch up to `N` allocates nothing.
//!
//! **Borrows.** A layer writes one region and reads others.
//! [`Arena::split`] cuts the arena around the written region with
//! `split_at_mut`, so the output is a `&mut [f32]` and every read is a
//! `&[f32]` of the memory before or after it, checked to lie entirely on
//! one side: a region overlapping the output cannot be read (an in-place
//! layer reads its input through the output borrow instead). There is no
//! `unsafe` here: the borrow checker sees two disjoint slices.
//!
//! ```
//! use cnnc_runtime::arena::{Arena, Region};
//!
//! let mut arena = Arena::new(48);
//! arena.reserve(2, 0)?; // a batch of 2: 96 floats
//! let a = Region { offset: 0, len: 16 };
//! let b = Region { offset: 16, len: 32 };
//! {
//!     let split = arena.split(2, a)?;
//!     split.output.fill(1.0); // floats 0..32
//! }
//! let split = arena.split(2, b)?;
//! let input = split.reads.get(a)?;
//! split.output[..32].copy_from_slice(input);
//! assert_eq!(split.output[31], 1.0);
//! // The output region itself cannot also be read.
//! assert!(split.reads.get(b).is_err());
//! # Ok::<(), cnnc_runtime::Error>(())
//! ```

use crate::Error;

/// A region of the arena, in floats per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// Offset per sample.
    pub offset: usize,
    /// Length per sample.
    pub len: usize,
}

impl Region {
    /// The float range of the region for a batch of `batch` (`None` on
    /// overflow).
    pub fn range(self, batch: usize) -> Option<core::ops::Range<usize>> {
        let start = self.offset.checked_mul(batch)?;
        let end = self.offset.checked_add(self.len)?.checked_mul(batch)?;
        Some(start..end)
    }
}

/// Floats of alignment of the arena's start (64 bytes).
const ALIGN_FLOATS: usize = 16;

/// An owned, 64-byte aligned, growable block of floats.
#[derive(Debug, Default)]
struct Block {
    storage: Vec<f32>,
    start: usize,
    len: usize,
}

impl Block {
    /// Makes room for `len` floats (keeping nothing: the contents are
    /// scratch); never shrinks.
    fn grow(&mut self, len: usize) -> Result<(), ()> {
        if len <= self.len {
            return Ok(());
        }
        let total = len.checked_add(ALIGN_FLOATS).ok_or(())?;
        let mut storage: Vec<f32> = Vec::new();
        storage.try_reserve_exact(total).map_err(|_| ())?;
        storage.resize(total, 0.0);
        let misalign = (storage.as_ptr() as usize / 4) % ALIGN_FLOATS;
        self.start = (ALIGN_FLOATS - misalign) % ALIGN_FLOATS;
        self.storage = storage;
        self.len = len;
        Ok(())
    }

    fn get_mut(&mut self, len: usize) -> Option<&mut [f32]> {
        if len > self.len {
            return None;
        }
        self.storage.get_mut(self.start..self.start + len)
    }
}

/// The activation memory of a network (see the [module documentation](self)).
#[derive(Debug)]
pub struct Arena {
    per_sample: usize,
    /// The batch the blocks have room for.
    batch: usize,
    activations: Block,
    scratch: Block,
}

/// Why a split or read was refused: the plan's regions are inconsistent.
fn arena_error(reason: String) -> Error {
    Error::Layer {
        layer: "(arena)".to_string(),
        reason,
    }
}

impl Arena {
    /// An empty arena for a plan of `per_sample` floats per sample (no
    /// allocation until [`reserve`](Self::reserve)).
    pub fn new(per_sample: usize) -> Arena {
        Arena {
            per_sample,
            batch: 0,
            activations: Block::default(),
            scratch: Block::default(),
        }
    }

    /// Floats per sample.
    pub fn per_sample(&self) -> usize {
        self.per_sample
    }

    /// The largest batch the arena has room for without allocating.
    pub fn batch_capacity(&self) -> usize {
        self.batch
    }

    /// Floats of scratch available.
    pub fn scratch_len(&self) -> usize {
        self.scratch.len
    }

    /// Grows the arena to a batch of `batch` and the scratch to `scratch`
    /// floats, if it is smaller; allocates nothing otherwise.
    ///
    /// Errors: [`Error::BatchTooLarge`] when the memory cannot be allocated
    /// or its size overflows.
    pub fn reserve(&mut self, batch: usize, scratch: usize) -> Result<(), Error> {
        let too_large = |floats: Option<usize>| Error::BatchTooLarge {
            batch,
            bytes: floats
                .and_then(|floats| floats.checked_add(scratch))
                .and_then(|floats| (floats as u64).checked_mul(4)),
        };
        let floats = self.per_sample.checked_mul(batch);
        let Some(len) = floats else {
            return Err(too_large(None));
        };
        if batch > self.batch {
            self.activations.grow(len).map_err(|()| too_large(floats))?;
            self.batch = batch;
        }
        self.scratch.grow(scratch).map_err(|()| too_large(floats))?;
        Ok(())
    }

    /// The arena of `batch` samples cut around `output`: the output region
    /// as `&mut`, the rest readable through [`Reads`], and the scratch.
    ///
    /// Errors ([`Error::Layer`]): `batch` beyond what was reserved, or the
    /// region outside the arena.
    pub fn split(&mut self, batch: usize, output: Region) -> Result<Split<'_>, Error> {
        let (activations, scratch) = self.parts(batch)?;
        let range = output
            .range(batch)
            .filter(|range| range.end <= activations.len())
            .ok_or_else(|| {
                arena_error(format!(
                    "region {output:?} is outside an arena of {} floats per sample",
                    activations.len() / batch.max(1)
                ))
            })?;
        // The output is `activations[range]`; what lies before and after it
        // stays readable. Two `split_at_mut`s make the three borrows
        // disjoint.
        let (before, rest) = activations.split_at_mut(range.start);
        let (output, after) = rest.split_at_mut(range.end - range.start);
        Ok(Split {
            reads: Reads {
                before,
                after,
                after_start: range.end,
                batch,
            },
            output,
            scratch,
        })
    }

    /// The whole arena of `batch` samples, readable (for a layer that writes
    /// outside it: the caller's output buffer), and the scratch.
    pub fn read_all(&mut self, batch: usize) -> Result<(Reads<'_>, &mut [f32]), Error> {
        let (activations, scratch) = self.parts(batch)?;
        let after_start = activations.len();
        Ok((
            Reads {
                before: activations,
                after: &[],
                after_start,
                batch,
            },
            scratch,
        ))
    }

    /// The activations of `batch` samples and the whole scratch.
    fn parts(&mut self, batch: usize) -> Result<(&mut [f32], &mut [f32]), Error> {
        if batch > self.batch {
            return Err(arena_error(format!(
                "a batch of {batch} runs in an arena reserved for {}",
                self.batch
            )));
        }
        let len = self.per_sample * batch; // ≤ the reserved length: no overflow.
        let scratch_len = self.scratch.len;
        let activations = self
            .activations
            .get_mut(len)
            .ok_or_else(|| arena_error("the activations are shorter than reserved".into()))?;
        let scratch = self
            .scratch
            .get_mut(scratch_len)
            .ok_or_else(|| arena_error("the scratch is shorter than reserved".into()))?;
        Ok((activations, scratch))
    }
}

/// The arena cut around one layer's output (see [`Arena::split`]).
#[derive(Debug)]
pub struct Split<'a> {
    /// Every region that does not overlap the output.
    pub reads: Reads<'a>,
    /// The output region (for a batch).
    pub output: &'a mut [f32],
    /// The scratch.
    pub scratch: &'a mut [f32],
}

/// Read access to the parts of the arena a layer does not write.
#[derive(Debug)]
pub struct Reads<'a> {
    /// Floats `0..before.len()`.
    before: &'a [f32],
    /// Floats `after_start..after_start + after.len()`.
    after: &'a [f32],
    after_start: usize,
    batch: usize,
}

impl<'a> Reads<'a> {
    /// The floats of `region` (for the batch), if it lies entirely before or
    /// entirely after the written region and inside the arena.
    ///
    /// Errors ([`Error::Layer`]): the region overlaps the written one or
    /// leaves the arena (a bug in the plan).
    pub fn get(&self, region: Region) -> Result<&'a [f32], Error> {
        let refused = || {
            arena_error(format!(
                "region {region:?} overlaps the region being written, or leaves the arena"
            ))
        };
        let range = region.range(self.batch).ok_or_else(refused)?;
        if range.end <= self.before.len() {
            return Ok(&self.before[range]);
        }
        if range.start >= self.after_start {
            let start = range.start - self.after_start;
            let end = range.end - self.after_start;
            return self.after.get(start..end).ok_or_else(refused);
        }
        Err(refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(offset: usize, len: usize) -> Region {
        Region { offset, len }
    }

    #[test]
    fn regions_scale_with_the_batch_and_start_aligned() {
        let mut arena = Arena::new(64);
        assert_eq!(arena.batch_capacity(), 0);
        arena.reserve(3, 10).expect("reserve");
        assert_eq!((arena.batch_capacity(), arena.scratch_len()), (3, 10));
        let split = arena.split(3, region(16, 32)).expect("split");
        assert_eq!(split.output.len(), 96);
        assert_eq!(split.output.as_ptr() as usize % 64, 0);
        assert_eq!(split.scratch.len(), 10);
        // Before: floats 0..48 (offset 0, len 16); after: from 144.
        assert_eq!(split.reads.get(region(0, 16)).expect("before").len(), 48);
        assert_eq!(split.reads.get(region(48, 16)).expect("after").len(), 48);
    }

    #[test]
    fn reads_overlapping_the_output_or_outside_are_refused() {
        let mut arena = Arena::new(64);
        arena.reserve(2, 0).expect("reserve");
        let split = arena.split(2, region(16, 16)).expect("split");
        for bad in [
            region(16, 16),
            region(0, 17),
            region(31, 1),
            region(8, 40),
            region(48, 17),
            region(usize::MAX / 2, 4),
        ] {
            assert!(split.reads.get(bad).is_err(), "{bad:?}");
        }
        assert!(split.reads.get(region(0, 16)).is_ok());
        assert!(split.reads.get(region(32, 32)).is_ok());
        assert!(split.reads.get(region(40, 0)).is_ok());
    }

    #[test]
    fn writes_land_where_later_reads_find_them() {
        let mut arena = Arena::new(32);
        arena.reserve(2, 0).expect("reserve");
        let (a, b) = (region(0, 16), region(16, 16));
        arena.split(2, a).expect("split").output.fill(2.5);
        let split = arena.split(2, b).expect("split");
        let values = split.reads.get(a).expect("a");
        split.output.copy_from_slice(values);
        let (reads, _) = arena.read_all(2).expect("read all");
        assert_eq!(reads.get(b).expect("b"), &[2.5; 32][..]);
        assert_eq!(reads.get(region(0, 32)).expect("all").len(), 64);
    }

    #[test]
    fn growth_happens_once_and_batches_beyond_it_are_refused() {
        let mut arena = Arena::new(16);
        assert!(arena.split(1, region(0, 16)).is_err());
        arena.reserve(4, 8).expect("reserve");
        let before = arena
            .split(4, region(0, 16))
            .expect("split")
            .output
            .as_ptr();
        // Smaller batches and scratch reuse the memory.
        arena.reserve(2, 4).expect("reserve");
        assert_eq!((arena.batch_capacity(), arena.scratch_len()), (4, 8));
        let after = arena
            .split(4, region(0, 16))
            .expect("split")
            .output
            .as_ptr();
        assert_eq!(before, after);
        assert!(arena.split(5, region(0, 16)).is_err());
        assert!(arena.split(2, region(8, 16)).is_err());
    }

    #[test]
    fn impossible_batches_are_errors_not_aborts() {
        let mut arena = Arena::new(1 << 20);
        let error = arena.reserve(usize::MAX / 2, 0).expect_err("overflow");
        assert!(matches!(error, Error::BatchTooLarge { bytes: None, .. }));
        let error = arena.reserve(1 << 40, 0).expect_err("too large");
        assert!(matches!(error, Error::BatchTooLarge { bytes: Some(_), .. }));
        assert!(error.to_string().starts_with("out of memory"));
    }
}
