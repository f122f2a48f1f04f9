//! A persistent thread pool for [`Context::parallel_for`](crate::ops::Context::parallel_for).
//!
//! A layer of a network takes tens of microseconds to a few milliseconds,
//! and waking a parked thread costs several microseconds, so the pool is
//! built for many short fork-joins in a row:
//!
//! - **Persistent workers.** `threads - 1` workers are spawned once, when the
//!   pool is made; the calling thread is the last participant, so
//!   `threads = 2` means one worker plus the caller.
//! - **Spin, then park.** After a job a worker spins for [`SPIN_TIME`]
//!   waiting for the next one (a new job then starts within a fraction of a
//!   microsecond), then parks on a condition variable (a wake-up then costs
//!   a futex call and a trip through the scheduler).
//! - **No allocation per call.** The caller publishes a pointer to a job
//!   record on its own stack (the task closure, the task count and one claim
//!   counter per participant); participants claim task indices with one
//!   `fetch_add` each.
//! - **Same rows, same core.** The tasks are cut into one contiguous range
//!   per participant, which it runs first before helping with the others'
//!   (see `Job`): the caller takes the first tasks, the first worker the
//!   next ones, and so on, in every job. Operators number their tasks in
//!   output-row order, so a core mostly reads the rows it wrote itself in
//!   the layer before, from its own L2.
//! - **Scoped.** [`ThreadPool::run`] returns only once no worker can touch
//!   the job record any more, so the task closure may borrow from the
//!   caller's stack (the SAFETY argument is on [`ThreadPool::run`]).
//! - **Panics propagate.** A panic in a task is caught where it happens; the
//!   remaining tasks are skipped, the job is wound down as usual (so nothing
//!   dangles and nothing deadlocks), and the first panic is resumed on the
//!   calling thread. The pool stays usable.
//! - **Nested and concurrent calls run inline.** The pool runs one job at a
//!   time. A call made while a job is running — from inside a task (nested
//!   parallelism) or from another thread sharing the pool — does not wait:
//!   it runs its tasks sequentially on its own thread. Nothing ever blocks
//!   on a lock held by someone else, so no combination of calls deadlocks.
//!
//! **Invariant:** results never depend on which thread runs a task. Every
//! task index runs exactly once (unless a task panicked); operators make each
//! task write its own disjoint part of the output with the same arithmetic as
//! a sequential run, so every thread count gives bit-identical results.

use std::any::Any;
use std::fmt;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins, waiting for the next job, before it
/// parks. Long enough to bridge the gap between two layers of a network,
/// short enough not to steal much from other processes on a busy machine.
pub const SPIN_TIME: Duration = Duration::from_micros(50);

/// The number of threads a [`Context::new`](crate::ops::Context::new) uses:
/// the cores this process may run on (1 if that cannot be determined).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A fixed set of worker threads that run fork-join jobs with the caller.
///
/// Dropping the pool stops and joins its workers.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Set while a job runs; a call that finds it set runs inline.
    busy: AtomicBool,
}

/// What the workers and the caller share.
struct Shared {
    /// `epoch << 1 | open`. A job is *open* while participants may join it;
    /// each job gets a new epoch so a worker never joins one twice.
    state: AtomicU64,
    /// The open job's record (a `*const Job<'_>` on the caller's stack).
    job: AtomicPtr<()>,
    /// Workers that joined the current job and have not left it.
    active: AtomicUsize,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    /// Guards parking: a worker holds it from its last check to its wait.
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    /// Workers that have started running.
    started: AtomicUsize,
}

/// The most task ranges a job is cut into ([`Job`]); participants beyond
/// it share ranges.
const MAX_RANGES: usize = 16;

/// One fork-join job, on the caller's stack for the duration of the call.
///
/// The tasks are cut into one contiguous range per participant (the caller
/// is participant 0, worker `w` is participant `w`). A participant first
/// runs the tasks of its own range, then helps with the others'. Operators
/// cut their work so that task `i` of consecutive layers touches the same
/// rows of the activations, so each core mostly reads what it wrote itself,
/// from its own L2 (with one shared counter, which core ran which rows
/// changed from layer to layer).
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    /// Ranges in use, `1..=MAX_RANGES`.
    ranges: usize,
    /// The next task index each range hands out.
    next: [AtomicUsize; MAX_RANGES],
    /// The first panic of a task, resumed on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Job<'_> {
    fn new(task: &(dyn Fn(usize) + Sync), tasks: usize, participants: usize) -> Job<'_> {
        let ranges = participants.clamp(1, MAX_RANGES).min(tasks.max(1));
        Job {
            task,
            tasks,
            ranges,
            next: core::array::from_fn(|range| AtomicUsize::new(range * tasks / ranges)),
            panic: Mutex::new(None),
        }
    }

    /// The end of range `range`'s tasks.
    fn end(&self, range: usize) -> usize {
        (range + 1) * self.tasks / self.ranges
    }

    /// Claims and runs tasks until none are left, its own range first. A
    /// panic is recorded and makes every participant stop claiming.
    fn run_tasks(&self, participant: usize) {
        let home = participant % self.ranges;
        for range in (home..self.ranges).chain(0..home) {
            let end = self.end(range);
            loop {
                let index = self.next[range].fetch_add(1, Ordering::Relaxed);
                if index >= end {
                    break;
                }
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (self.task)(index))) {
                    let mut slot = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
                    slot.get_or_insert(payload);
                    // No further claims succeed.
                    for (range, next) in self.next.iter().enumerate().take(self.ranges) {
                        next.store(self.end(range), Ordering::Relaxed);
                    }
                    return;
                }
            }
        }
    }
}

const OPEN: u64 = 1;

fn epoch(state: u64) -> u64 {
    state >> 1
}

fn is_open(state: u64) -> bool {
    state & OPEN != 0
}

impl ThreadPool {
    /// A pool where `threads` threads (the caller included) run each job:
    /// spawns `threads - 1` workers. If the system refuses to spawn some,
    /// the pool works with those it got ([`ThreadPool::threads`] says how
    /// many); with none it runs everything on the caller.
    pub fn new(threads: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(core::ptr::null_mut()),
            active: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            started: AtomicUsize::new(0),
        });
        let mut workers = Vec::with_capacity(threads.saturating_sub(1));
        for index in 1..threads {
            let worker_shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("cnnc-worker-{index}"))
                .spawn(move || {
                    worker_shared.started.fetch_add(1, Ordering::SeqCst);
                    worker_loop(&worker_shared, index);
                });
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(_) => break,
            }
        }
        // Returns once every worker runs: what a thread allocates while it
        // starts is then done, not counted against the first jobs (a
        // forward pass allocates nothing, whenever the OS starts threads).
        while shared.started.load(Ordering::SeqCst) < workers.len() {
            std::thread::yield_now();
        }
        ThreadPool {
            shared,
            workers,
            busy: AtomicBool::new(false),
        }
    }

    /// Threads that run a job: the workers plus the caller.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `task(i)` for every `i` in `0..tasks`, on the workers and the
    /// calling thread, and returns when all have finished. If a task
    /// panicked, the first panic is resumed here (after every other
    /// participant has left the job).
    ///
    /// If the pool is already running a job (a nested call from inside a
    /// task, or a call from another thread), the tasks run inline, in order.
    pub fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if tasks <= 1 || self.workers.is_empty() {
            (0..tasks).for_each(task);
            return;
        }
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            (0..tasks).for_each(task);
            return;
        }
        let shared = &*self.shared;
        let job = Job::new(task, tasks, self.threads());
        // SAFETY argument for the erased lifetime of `job` (workers see it
        // as a `Job<'static>`):
        //
        // 1. A worker reads `shared.job` and touches the record only between
        //    incrementing `active` and decrementing it again, and only if,
        //    after incrementing `active`, it saw the job open (both SeqCst).
        // 2. This function closes the job (SeqCst store) and then waits
        //    until `active` is 0 (SeqCst loads) before it returns and `job`
        //    (with the borrows in `task`) goes out of scope.
        // 3. In the single total order of SeqCst operations, a worker that
        //    saw the job open made its increment before the closing store,
        //    so the waiting loop sees it until the worker's decrement; a
        //    worker that increments after the closing store sees the job
        //    closed and leaves without touching it. So every access to the
        //    record happens while this frame is alive.
        // 4. The record published is this job's: the pointer is stored
        //    before the opening store, and the next job's pointer only after
        //    this call has returned, when no worker is inside this job.
        //
        // This thread keeps the panic of its own tasks in the record too, so
        // nothing below unwinds before the wait is over.
        shared.job.store(
            core::ptr::from_ref(&job).cast_mut().cast(),
            Ordering::Relaxed,
        );
        let next_epoch = epoch(shared.state.load(Ordering::Relaxed)) + 1;
        shared.state.store(next_epoch << 1 | OPEN, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = shared.lock.lock().unwrap_or_else(PoisonError::into_inner);
            shared.wake.notify_all();
        }

        job.run_tasks(0);

        shared.state.store(next_epoch << 1, Ordering::SeqCst);
        let mut spins = 0u32;
        while shared.active.load(Ordering::SeqCst) != 0 {
            // A worker still finishing a task; if it was preempted, let it run.
            spins += 1;
            if spins < 1 << 12 {
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        shared.job.store(core::ptr::null_mut(), Ordering::Relaxed);
        self.busy.store(false, Ordering::Release);

        let panic = job
            .panic
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }
}

/// Waits for a job with an epoch other than `seen`: spins for
/// [`SPIN_TIME`], then parks. `None` once the pool shuts down.
fn wait_for_job(shared: &Shared, seen: u64) -> Option<u64> {
    let wanted = |state: u64| is_open(state) && epoch(state) != seen;
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let state = shared.state.load(Ordering::Acquire);
        if wanted(state) {
            return Some(state);
        }
        if shared.shutdown.load(Ordering::Relaxed) {
            return None;
        }
        core::hint::spin_loop();
        spins += 1;
        if spins.is_multiple_of(64) && start.elapsed() >= SPIN_TIME {
            break;
        }
    }
    let mut guard = shared.lock.lock().unwrap_or_else(PoisonError::into_inner);
    shared.sleepers.fetch_add(1, Ordering::SeqCst);
    let found = loop {
        // Pairs with the caller's `state` store then `sleepers` load (both
        // SeqCst): either the caller sees this sleeper and notifies under
        // the lock (which this thread holds until `wait` releases it), or
        // this load sees the caller's job. Shutdown is announced the same
        // way, with an unconditional notify.
        let state = shared.state.load(Ordering::SeqCst);
        if shared.shutdown.load(Ordering::SeqCst) {
            break None;
        }
        if wanted(state) {
            break Some(state);
        }
        guard = shared
            .wake
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner);
    };
    shared.sleepers.fetch_sub(1, Ordering::SeqCst);
    drop(guard);
    found
}

/// The loop of worker `participant` (`1..threads`).
fn worker_loop(shared: &Shared, participant: usize) {
    let mut seen = 0;
    while let Some(state) = wait_for_job(shared, seen) {
        seen = epoch(state);
        shared.active.fetch_add(1, Ordering::SeqCst);
        let now = shared.state.load(Ordering::SeqCst);
        if is_open(now) {
            seen = epoch(now);
            let job = shared.job.load(Ordering::Acquire).cast::<Job<'static>>();
            // SAFETY: the job is open and this worker is counted in
            // `active`, so the caller's frame holding the record is alive
            // until this worker decrements `active` (see `ThreadPool::run`).
            unsafe { (*job).run_tasks(participant) };
        }
        // Release: the caller's acquiring load of 0 makes this worker's task
        // writes visible to it.
        shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = self
                .shared
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.shared.wake.notify_all();
        }
        let current = std::thread::current().id();
        for handle in self.workers.drain(..) {
            // A worker cannot join itself; it exits on its own.
            if handle.thread().id() != current {
                // A worker never panics (tasks are caught), so there is
                // nothing to report.
                let _ = handle.join();
            }
        }
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads())
            .finish_non_exhaustive()
    }
}

/// A mutable slice shared by the tasks of one
/// [`parallel_for`](crate::ops::Context::parallel_for), each of which
/// writes its own part.
pub(crate) struct Disjoint<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: core::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a `Disjoint` hands out parts of a slice only through the unsafe
// `part`, whose contract makes concurrent parts disjoint; `T: Send` lets
// the parts move to other threads.
unsafe impl<T: Send> Send for Disjoint<'_, T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    /// Shares `slice` for disjoint writes.
    pub(crate) fn new(slice: &'a mut [T]) -> Self {
        Disjoint {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: core::marker::PhantomData,
        }
    }

    /// The elements `range` of the slice.
    ///
    /// # Safety
    /// No two parts alive at the same time overlap.
    ///
    /// # Panics
    /// If `range` is not inside the slice (a bug of the caller's index
    /// arithmetic, never a consequence of the data).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn part(&self, range: Range<usize>) -> &'a mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "Disjoint::part out of bounds"
        );
        // SAFETY: inside the borrowed slice (checked above), which lives for
        // 'a; exclusive by the caller's contract.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }

    /// The slice's start, for tasks whose parts are not ranges (a tile's
    /// pixels spread over the rows of many planes).
    ///
    /// # Safety
    /// Tasks that write through it concurrently write disjoint elements
    /// inside the slice, and take no [`Disjoint::part`] meanwhile.
    pub(crate) unsafe fn pointer(&self) -> *mut T {
        self.ptr
    }
}

/// Part `index` of `0..total` cut into `parts` near-equal ranges whose
/// boundaries are multiples of `align` (the last range ends at `total`).
pub(crate) fn part(total: usize, parts: usize, align: usize, index: usize) -> Range<usize> {
    let align = align.max(1);
    let parts = parts.max(1);
    let units = total.div_ceil(align);
    let (base, extra) = (units / parts, units % parts);
    let start = index * base + index.min(extra);
    let end = start + base + usize::from(index < extra);
    (start * align).min(total)..(end * align).min(total)
}

/// How many tasks to cut `work` units into on `threads` threads, so that
/// each task has at least `grain` units: 1 when the work is too small to be
/// worth a wake-up, at most `4 · threads` (small tasks balance a machine
/// whose cores are also busy with other programs).
pub(crate) fn task_count(threads: usize, work: usize, grain: usize) -> usize {
    if threads <= 1 {
        return 1;
    }
    (work / grain.max(1)).clamp(1, 4 * threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn counts(len: usize) -> Vec<AtomicU32> {
        (0..len).map(|_| AtomicU32::new(0)).collect()
    }

    #[test]
    fn every_task_runs_exactly_once() {
        // 17 threads: more participants than task ranges (`MAX_RANGES`).
        for threads in [1, 2, 3, 4, MAX_RANGES + 1] {
            let pool = ThreadPool::new(threads);
            assert_eq!(pool.threads(), threads);
            for tasks in [0, 1, 2, 3, 7, 64, 1000] {
                // Many jobs in a row: epochs advance, workers rejoin.
                for _ in 0..20 {
                    let seen = counts(tasks);
                    pool.run(tasks, &|i| {
                        seen[i].fetch_add(1, Ordering::Relaxed);
                    });
                    for (i, count) in seen.iter().enumerate() {
                        assert_eq!(count.load(Ordering::Relaxed), 1, "task {i} of {tasks}");
                    }
                }
            }
        }
    }

    #[test]
    fn workers_take_part_and_wake_up_after_parking() {
        let pool = ThreadPool::new(3);
        for round in 0..3 {
            if round > 0 {
                // Long enough for the workers to park.
                std::thread::sleep(SPIN_TIME * 20);
            }
            let threads = Mutex::new(std::collections::HashSet::new());
            // Tasks that wait for each other force all three threads in.
            let arrived = AtomicUsize::new(0);
            pool.run(3, &|_| {
                threads.lock().unwrap().insert(std::thread::current().id());
                arrived.fetch_add(1, Ordering::SeqCst);
                let start = Instant::now();
                while arrived.load(Ordering::SeqCst) < 3 && start.elapsed() < Duration::from_secs(5)
                {
                    std::thread::yield_now();
                }
            });
            assert_eq!(threads.lock().unwrap().len(), 3, "round {round}");
        }
    }

    #[test]
    fn nested_calls_run_inline_without_deadlock() {
        let pool = ThreadPool::new(2);
        let seen = counts(8 * 8);
        pool.run(8, &|outer| {
            pool.run(8, &|inner| {
                seen[outer * 8 + inner].fetch_add(1, Ordering::Relaxed);
            });
        });
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn concurrent_callers_share_the_pool() {
        let pool = ThreadPool::new(2);
        let seen = counts(4 * 100);
        std::thread::scope(|scope| {
            for caller in 0..4 {
                let (pool, seen) = (&pool, &seen);
                scope.spawn(move || {
                    for round in 0..25 {
                        pool.run(4, &|i| {
                            seen[caller * 100 + round * 4 + i].fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn a_panicking_task_propagates_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        for bad in [0, 5, 63] {
            let result = catch_unwind(AssertUnwindSafe(|| {
                pool.run(64, &|i| {
                    if i == bad {
                        panic!("task {i} failed");
                    }
                });
            }));
            let payload = result.expect_err("the panic propagates");
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default();
            assert_eq!(message, format!("task {bad} failed"));
        }
        let seen = counts(100);
        pool.run(100, &|i| {
            seen[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn parts_cover_everything_on_aligned_boundaries() {
        for total in [0, 1, 15, 16, 17, 100, 1000] {
            for parts in 1..=9 {
                for align in [1, 4, 16] {
                    let mut next = 0;
                    for index in 0..parts {
                        let range = part(total, parts, align, index);
                        assert_eq!(range.start, next, "{total} {parts} {align}");
                        assert!(range.start.is_multiple_of(align) || range.start == total);
                        next = range.end;
                    }
                    assert_eq!(next, total);
                }
            }
        }
        assert_eq!(part(100, 3, 16, 0), 0..48);
        assert_eq!(part(100, 3, 16, 2), 80..100);
        assert_eq!(task_count(1, 1 << 30, 1), 1);
        assert_eq!(task_count(2, 10, 100), 1);
        assert_eq!(task_count(2, 350, 100), 3);
        assert_eq!(task_count(2, 1 << 30, 100), 8);
    }

    #[test]
    fn tasks_may_borrow_the_callers_stack() {
        let pool = ThreadPool::new(4);
        let input: Vec<u64> = (0..1000).collect();
        let output: Vec<AtomicU64> = (0..10).map(|_| AtomicU64::new(0)).collect();
        pool.run(10, &|i| {
            let sum = input[i * 100..(i + 1) * 100].iter().sum();
            output[i].store(sum, Ordering::Relaxed);
        });
        for (i, sum) in output.iter().enumerate() {
            let expected: u64 = (i as u64 * 100..(i as u64 + 1) * 100).sum();
            assert_eq!(sum.load(Ordering::Relaxed), expected);
        }
    }
}
