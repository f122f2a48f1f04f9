//! Fast layer operators over NHWC activations: what the interpreter's fast
//! path and the generated code call, one struct per layer.
//!
//! ## Contract shared by every operator
//!
//! - **Layout.** Activations are NHWC (`[N, H, W, C]`, channels innermost),
//!   rank-1 values (`[N, F]`) are plain rows. The network's public NCHW
//!   input and output are reordered once, at the edges ([`layout`]).
//! - **Spec.** Each operator has a `…Spec`: plain `Copy` data with public
//!   fields (per-sample geometry, epilogue, chosen algorithm) that the code
//!   generator writes out as a literal. The batch is a run-time argument.
//! - **Constants.** Operators with weights keep *all* their packed constants
//!   (weights, bias, transformed Winograd filters, …) in one [`Buffer`],
//!   exposed as `constants()`; `from_constants(spec, buffer)` rebuilds the
//!   operator from them without repacking (this is how generated code embeds
//!   pre-packed weights with `include_bytes!`), and `pack(spec, …)` builds it
//!   from PyTorch-layout tensors (`[O, C/groups, kh, kw]`, `[O, F]`).
//!   Whatever else an operator needs (indirection tables, …) is derived at
//!   construction, never stored in the constants.
//! - **Run.** `run(&self, ctx, batch, input…, output, scratch)`: no
//!   allocation; `scratch_len(batch)` floats of scratch are provided by the
//!   caller (0 for most operators). Sizes are checked and refused with an
//!   [`OpError`], never a panic.
//! - **Threads.** Work is split through [`Context::parallel_for`] into tasks
//!   that write disjoint parts of the output; results are bit-identical for
//!   every thread count.
//! - **Tiers.** An operator picks its inner loops from `ctx.kernels().tier()`
//!   (a per-module table of function pointers, as [`crate::gemm`] does).

use core::fmt;
use core::ops::Deref;

use std::sync::Arc;

use crate::gemm::GemmError;
use crate::threads::{self, ThreadPool};
use crate::tier::Kernels;

pub mod concat;
pub mod conv;
pub mod elementwise;
pub mod layout;
pub mod linear;
pub mod norm;
pub mod pool;
pub mod softmax;
pub mod winograd;

/// Why an operator call or construction was refused. Every variant is a
/// caller's bug (sizes that disagree with the spec), checked before any
/// memory is touched.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpError {
    /// A buffer does not have the length the spec and batch imply.
    Length {
        /// Which buffer.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length required.
        expected: usize,
    },
    /// The spec itself is inconsistent (e.g. groups not dividing channels).
    Spec(String),
    /// A GEMM underneath refused its arguments.
    Gemm(GemmError),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Length {
                what,
                len,
                expected,
            } => write!(f, "{what} has {len} elements, expected {expected}"),
            OpError::Spec(why) => write!(f, "invalid operator spec: {why}"),
            OpError::Gemm(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for OpError {}

impl From<GemmError> for OpError {
    fn from(err: GemmError) -> OpError {
        OpError::Gemm(err)
    }
}

/// Checks that `what` has exactly `expected` elements.
pub fn check_len(what: &'static str, len: usize, expected: usize) -> Result<(), OpError> {
    if len == expected {
        Ok(())
    } else {
        Err(OpError::Length {
            what,
            len,
            expected,
        })
    }
}

/// What a layer's `run` expects of its buffers (convolutions, Winograd, fused
/// blocks): the lengths of one sample's input and output, whether it adds a
/// residual (as long as the output), and the scratch the whole call needs.
pub(crate) struct RunBuffers {
    pub input: usize,
    pub output: usize,
    pub residual: bool,
    pub scratch: usize,
}

impl RunBuffers {
    /// Checks the buffers of a call on `batch` samples.
    pub(crate) fn check(
        &self,
        batch: usize,
        input: &[f32],
        residual: Option<&[f32]>,
        output: &[f32],
        scratch: &[f32],
    ) -> Result<(), OpError> {
        let whole = |len: usize| {
            batch
                .checked_mul(len)
                .ok_or_else(|| OpError::Spec(format!("a batch of {batch} overflows")))
        };
        check_len("input", input.len(), whole(self.input)?)?;
        check_len("output", output.len(), whole(self.output)?)?;
        let refuse = |why: &str| Err(OpError::Spec(why.to_owned()));
        match (residual, self.residual) {
            (Some(residual), true) => check_len("residual", residual.len(), output.len())?,
            (None, false) => {}
            (Some(_), false) => return refuse("a residual was given to a layer without one"),
            (None, true) => return refuse("the layer adds a residual but none was given"),
        }
        if scratch.len() < self.scratch {
            return Err(OpError::Length {
                what: "scratch",
                len: scratch.len(),
                expected: self.scratch,
            });
        }
        Ok(())
    }
}

/// Alignment of owned buffers, in floats (64 bytes, one cache line).
pub const BUFFER_ALIGN_FLOATS: usize = 16;

/// Packed constants of an operator: owned and 64-byte aligned, or borrowed
/// from a `'static` blob embedded in the program.
pub struct Buffer {
    repr: Repr,
}

enum Repr {
    Owned {
        storage: Vec<f32>,
        start: usize,
        len: usize,
    },
    Static(&'static [f32]),
}

impl Buffer {
    /// An owned, zero-filled, 64-byte aligned buffer of `len` floats.
    pub fn zeroed(len: usize) -> Buffer {
        let storage = vec![0.0f32; len + BUFFER_ALIGN_FLOATS];
        let misalign = (storage.as_ptr() as usize / 4) % BUFFER_ALIGN_FLOATS;
        let start = (BUFFER_ALIGN_FLOATS - misalign) % BUFFER_ALIGN_FLOATS;
        Buffer {
            repr: Repr::Owned {
                storage,
                start,
                len,
            },
        }
    }

    /// An owned aligned copy of `values`.
    pub fn from_slice(values: &[f32]) -> Buffer {
        let mut buffer = Buffer::zeroed(values.len());
        buffer.make_mut().copy_from_slice(values);
        buffer
    }

    /// Borrows constants embedded in the program (any alignment is
    /// accepted; 64 bytes is what generated code provides).
    pub fn from_static(values: &'static [f32]) -> Buffer {
        Buffer {
            repr: Repr::Static(values),
        }
    }

    /// Mutable access; a borrowed buffer is first copied into an owned one.
    pub fn make_mut(&mut self) -> &mut [f32] {
        if let Repr::Static(values) = self.repr {
            *self = Buffer::from_slice(values);
        }
        match &mut self.repr {
            Repr::Owned {
                storage,
                start,
                len,
            } => &mut storage[*start..*start + *len],
            Repr::Static(_) => unreachable!("converted to owned above"),
        }
    }
}

impl Deref for Buffer {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.repr {
            Repr::Owned {
                storage,
                start,
                len,
            } => &storage[*start..*start + *len],
            Repr::Static(values) => values,
        }
    }
}

impl Clone for Buffer {
    fn clone(&self) -> Buffer {
        match self.repr {
            Repr::Static(values) => Buffer::from_static(values),
            Repr::Owned { .. } => Buffer::from_slice(self),
        }
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer({} floats)", self.len())
    }
}

/// What every operator call runs with: the kernel tier and the threads.
///
/// Cloning a context shares its thread pool.
///
/// **Invariant:** results do not depend on the number of threads.
#[derive(Clone)]
pub struct Context {
    kernels: &'static Kernels,
    /// `None` for a single thread: [`Context::parallel_for`] is then a plain
    /// loop.
    pool: Option<Arc<ThreadPool>>,
}

impl Context {
    /// A context with the active tier ([`crate::kernels`]) and one thread
    /// per available core ([`threads::default_threads`]).
    pub fn new() -> Context {
        Context::with(crate::kernels(), threads::default_threads())
    }

    /// A context with the given kernels and thread count (at least 1). More
    /// than one thread starts a persistent pool ([`ThreadPool`]) of
    /// `threads - 1` workers; the calling thread is the last one.
    pub fn with(kernels: &'static Kernels, threads: usize) -> Context {
        let pool = (threads > 1).then(|| Arc::new(ThreadPool::new(threads)));
        Context { kernels, pool }
    }

    /// The kernel table.
    pub fn kernels(&self) -> &'static Kernels {
        self.kernels
    }

    /// The number of threads work may be split over.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |pool| pool.threads())
    }

    /// Runs `task(i)` for every `i` in `0..tasks`, on the context's threads
    /// (the caller included), and returns when all are done. Tasks must
    /// write disjoint data. A panicking task is propagated to the caller.
    ///
    /// With one thread, or one task, this is a plain loop. A call made from
    /// inside a task (nested parallelism) runs its tasks inline.
    pub fn parallel_for(&self, tasks: usize, task: impl Fn(usize) + Sync) {
        match &self.pool {
            Some(pool) if tasks > 1 => pool.run(tasks, &task),
            _ => (0..tasks).for_each(task),
        }
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("tier", &self.kernels.tier())
            .field("threads", &self.threads())
            .finish()
    }
}

impl Default for Context {
    fn default() -> Context {
        Context::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_buffers_are_aligned_and_copy_on_write() {
        for len in [0, 1, 17, 1000] {
            let buffer = Buffer::zeroed(len);
            assert_eq!(buffer.len(), len);
            assert_eq!(buffer.as_ptr() as usize % 64, 0);
        }
        static VALUES: [f32; 3] = [1.0, 2.0, 3.0];
        let mut buffer = Buffer::from_static(&VALUES);
        assert_eq!(&*buffer, &[1.0, 2.0, 3.0]);
        buffer.make_mut()[0] = 5.0;
        assert_eq!(&*buffer, &[5.0, 2.0, 3.0]);
        assert_eq!(VALUES[0], 1.0);
    }

    #[test]
    fn contexts_run_every_task_once_on_their_threads() {
        use std::sync::atomic::{AtomicU32, Ordering};

        let kernels = crate::kernels();
        assert_eq!(Context::with(kernels, 0).threads(), 1);
        assert_eq!(Context::new().threads(), threads::default_threads());
        for threads in 1..=4 {
            let ctx = Context::with(kernels, threads);
            assert_eq!(ctx.threads(), threads);
            let clone = ctx.clone();
            let seen: Vec<AtomicU32> = (0..100).map(|_| AtomicU32::new(0)).collect();
            clone.parallel_for(10, |outer| {
                // Nested calls run inline.
                ctx.parallel_for(10, |inner| {
                    seen[outer * 10 + inner].fetch_add(1, Ordering::Relaxed);
                });
            });
            assert!(seen.iter().all(|count| count.load(Ordering::Relaxed) == 1));
        }
    }
}
