//! `Interpreter::forward` in the fast mode allocates nothing once its arena
//! has grown to the batch: counted by a global allocator that records every
//! allocation of this test binary (its only test, so nothing else runs
//! beside it), on the calling thread and the thread pool's workers alike.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use cnnc_interp::{Interpreter, Mode, Options};
use cnnc_runtime::WeightFile;
use cnnc_syntax::{RenderStyle, SourceFile};

/// The system allocator, counting allocations and reallocations.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Every kind of step: edges, a Winograd-sized 3x3, a residual, depthwise,
/// an unfolded batch-norm, pools, a flatten reorder, concat, add, linear,
/// softmax.
const NET: &str = "network every {
    input x: [3, 24, 24]
    stem = conv2d(32, 3, padding=1)
    r = relu
    a = conv2d(32, 3, padding=1)
    s = add(a, r)
    relu
    dw = conv2d(32, 3, padding=1, groups=32)
    bn = batchnorm2d from s
    c = concat(dw, bn, dim=1)
    m = maxpool2d(2)
    t = tanh
    u = add(t, m)
    p = avgpool2d(2, padding=1)
    g = adaptive_avgpool2d(2)
    flatten
    fc = linear(10)
    softmax
}
";

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5
        })
        .collect()
}

fn weights() -> Vec<u8> {
    let tensors: Vec<(&str, Vec<usize>)> = vec![
        ("stem.weight", vec![32, 3, 3, 3]),
        ("stem.bias", vec![32]),
        ("a.weight", vec![32, 32, 3, 3]),
        ("a.bias", vec![32]),
        ("dw.weight", vec![32, 1, 3, 3]),
        ("dw.bias", vec![32]),
        ("bn.weight", vec![32]),
        ("bn.bias", vec![32]),
        ("bn.running_mean", vec![32]),
        ("bn.running_var", vec![32]),
        ("fc.weight", vec![10, 256]),
        ("fc.bias", vec![10]),
    ];
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (index, (name, shape)) in tensors.iter().enumerate() {
        let len: usize = shape.iter().product();
        let mut tensor = values(len, index as u64 + 1);
        if name.ends_with("running_var") {
            tensor.iter_mut().for_each(|v| *v = 1.0 + v.abs());
        }
        let start = data.len();
        data.extend(tensor.iter().flat_map(|v| v.to_le_bytes()));
        if index > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            r#""{name}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{start},{}]}}"#,
            data.len()
        ));
    }
    header.push('}');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    bytes
}

#[test]
fn forward_allocates_nothing_once_the_arena_has_grown() {
    let file = SourceFile::new("every.cnn", NET);
    let checked = cnnc_ir::check(&file)
        .unwrap_or_else(|errors| panic!("{}", errors.render(&file, RenderStyle::Plain)));
    let bytes = weights();
    let weights = WeightFile::from_bytes(&bytes).expect("weights parse");
    let input = values(3 * 3 * 24 * 24, 42);
    let mut reference = vec![0.0; 30];
    Interpreter::with_options(
        &checked.graph,
        &checked.info,
        Some(&weights),
        &Options::new().mode(Mode::Reference),
    )
    .expect("binds")
    .forward(&input, &mut reference)
    .expect("runs");

    for threads in [1, 2, 3] {
        let options = Options::new().mode(Mode::Fast).threads(threads);
        let mut net =
            Interpreter::with_options(&checked.graph, &checked.info, Some(&weights), &options)
                .expect("binds");
        let kernels: Vec<&str> = net
            .exec_plan()
            .expect("a plan")
            .steps
            .iter()
            .map(|step| step.kernel.name())
            .collect();
        for kernel in [
            "batchnorm2d",
            "concat",
            "add",
            "activation",
            "avgpool2d",
            "reorder",
        ] {
            assert!(kernels.contains(&kernel), "no {kernel} step in {kernels:?}");
        }
        let mut output = vec![0.0; 30];
        // The first batch of 3 grows the arena (which the counter sees).
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        net.forward(&input, &mut output).expect("runs");
        assert!(
            ALLOCATIONS.load(Ordering::SeqCst) > before,
            "the arena grew unseen"
        );
        for run in 0..3 {
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            // Batches of at most 3 reuse it.
            let batch = [3, 1, 2][run];
            net.forward(&input[..batch * 1728], &mut output[..batch * 10])
                .expect("runs");
            let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
            assert_eq!(
                allocations, 0,
                "{threads} threads, batch {batch}: forward allocated {allocations} times"
            );
        }
        net.forward(&input, &mut output).expect("runs");
        let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (got, want) in output.iter().zip(&reference) {
            assert!((got - want).abs() <= 1e-4 * scale, "{got} vs {want}");
        }
    }
}
