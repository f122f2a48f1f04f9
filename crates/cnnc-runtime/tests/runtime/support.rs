//! Test helpers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// A safetensors file written by the `safetensors` crate's serializer.
pub fn serialize(tensors: &[(&str, Dtype, &[usize], Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = TensorView::new(*dtype, shape.to_vec(), data).expect("valid test tensor");
            (name.to_string(), view)
        })
        .collect();
    safetensors::serialize(views, None).expect("serializable test tensors")
}

/// A safetensors file put together by hand, the way the conformance runner
/// does: JSON header padded with spaces to a multiple of 8, then `body`.
pub fn by_hand(header: &str, body: &[u8]) -> Vec<u8> {
    let mut header = header.as_bytes().to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(body);
    file
}

/// Splits a safetensors file into its JSON header and its data section.
pub fn split(file: &[u8]) -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let n = u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
    let header = serde_json::from_slice(&file[8..8 + n]).expect("test file header");
    (header, file[8 + n..].to_vec())
}

/// Joins a header and a data section back into a file.
pub fn join(header: &serde_json::Map<String, serde_json::Value>, body: &[u8]) -> Vec<u8> {
    by_hand(&serde_json::to_string(header).expect("json"), body)
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A small network's weights as PyTorch names them: a conv layer, a batch
/// norm with its int64 step counter, and a linear layer.
pub fn small_net() -> Vec<u8> {
    let conv_weight: Vec<f32> = (0..4 * 3 * 3 * 3).map(|i| i as f32 * 0.5 - 10.0).collect();
    serialize(&[
        (
            "conv1.weight",
            Dtype::F32,
            &[4, 3, 3, 3],
            f32_bytes(&conv_weight),
        ),
        (
            "conv1.bias",
            Dtype::F32,
            &[4],
            f32_bytes(&[0.1, 0.2, 0.3, 0.4]),
        ),
        ("bn1.weight", Dtype::F32, &[4], f32_bytes(&[1.0; 4])),
        ("bn1.bias", Dtype::F32, &[4], f32_bytes(&[0.0; 4])),
        ("bn1.running_mean", Dtype::F32, &[4], f32_bytes(&[0.5; 4])),
        ("bn1.running_var", Dtype::F32, &[4], f32_bytes(&[2.0; 4])),
        (
            "bn1.num_batches_tracked",
            Dtype::I64,
            &[],
            7i64.to_le_bytes().to_vec(),
        ),
        (
            "fc.weight",
            Dtype::F32,
            &[2, 4],
            f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
        ),
        ("fc.bias", Dtype::F32, &[2], f32_bytes(&[-1.0, 1.0])),
    ])
}

/// A fresh empty directory for one test.
pub fn scratch_dir(test: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cnnc-runtime-{}-{test}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The file names in `dir`, sorted.
#[cfg(feature = "npy")]
pub fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read scratch dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The global allocator of this test binary: the system allocator, plus a
/// record of the largest single allocation each thread made.
struct PeakTracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to `System`; the bookkeeping touches
// only a const-initialized thread-local `Cell`, which does not allocate.
unsafe impl GlobalAlloc for PeakTracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

#[global_allocator]
static ALLOCATOR: PeakTracking = PeakTracking;

/// Runs `f` and returns its result with the largest single allocation it
/// made on this thread.
pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|largest| largest.set(0));
    let result = f();
    (result, LARGEST.with(Cell::get))
}
