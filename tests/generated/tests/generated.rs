//! Every fixture's generated network, checked three ways:
//!
//! - against PyTorch's float64 output (`expected.npy`): max abs error
//!   ≤ 1e-4 × max(1, max |expected|), the project's tolerance;
//! - **bit for bit** against the interpreter's fast mode (`Mode::Fast`):
//!   the same plan, the same operators, the same kernels;
//! - **bit for bit** between `new()` (constants embedded, pre-packed at
//!   build time) and `from_safetensors` (packed when loading).
//!
//! Then, on one case per kind: batches of any size give each sample's
//! output, mismatched buffers are refused, and `forward` allocates nothing
//! once its arena has grown (a counting global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cnnc_interp::Mode;
use cnnc_tests::{compare, fixtures_dir, Case};

/// What every generated network offers (implemented by `build.rs` for each
/// case: the generated structs share no trait of their own).
trait Generated: Sized {
    const INPUT_LEN: usize;
    const OUTPUT_LEN: usize;
    fn embedded() -> Self;
    fn from_safetensors(bytes: &[u8]) -> Result<Self, cnnc_runtime::Error>;
    fn forward(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), cnnc_runtime::Error>;
    fn set_context(&mut self, context: cnnc_runtime::kernels::ops::Context);
}

include!(concat!(env!("OUT_DIR"), "/cases.rs"));

/// The cases of the shared conformance suite, when `build.rs` found it.
mod conformance {
    use super::{check, Generated};

    include!(concat!(env!("OUT_DIR"), "/conformance_cases.rs"));
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// The safetensors bytes of a case, or an empty file for a case without
/// weights.
fn weights_bytes(case: &Case) -> Vec<u8> {
    let path = case.dir.join("weights.safetensors");
    if path.is_file() {
        std::fs::read(&path).expect("the weights file")
    } else {
        let header = b"{}      ";
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes
    }
}

fn check<N: Generated>(dir: std::path::PathBuf) {
    let case = Case::load(&dir).unwrap_or_else(|why| panic!("case {}: {why}", dir.display()));
    let name = case.name.as_str();
    let input = &case.input.data;
    let batch = case.input.shape[0];
    assert_eq!(input.len(), batch * N::INPUT_LEN);

    let mut net = N::embedded();
    let mut output = vec![f32::NAN; batch * N::OUTPUT_LEN];
    net.forward(input, &mut output).expect("forward");
    let comparison = compare(&output, &case.expected.data);
    assert!(
        comparison.passed(),
        "`{name}` against PyTorch: {comparison}"
    );

    let fast = case
        .run_in(Mode::Fast)
        .expect("the interpreter's fast mode");
    assert_eq!(
        bits(&output),
        bits(&fast.data),
        "`{name}`: generated code and the interpreter's fast mode differ"
    );

    let mut loaded = N::from_safetensors(&weights_bytes(&case)).expect("from_safetensors");
    let mut again = vec![f32::NAN; output.len()];
    loaded.forward(input, &mut again).expect("forward");
    assert_eq!(
        bits(&output),
        bits(&again),
        "`{name}`: embedded constants and constants packed on loading differ"
    );
    println!("{name}: {comparison}");
}

#[test]
fn every_fixture_is_compiled() {
    assert_eq!(CASES, cnnc_tests::case_names(&fixtures_dir()).as_slice());
    assert!(CASES.len() >= 78, "only {} fixtures", CASES.len());
}

mod batches {
    use super::*;
    use cnnc_generated_tests::nets::resnet_blocks::ResnetBlocks as Net;

    /// A batch of 5 through generated code and through the interpreter's
    /// fast mode: bit for bit the same. Run one by one, the samples agree
    /// with the batch to rounding (not bit for bit: a batch of one takes
    /// the GEMV path of linear layers, a batch the GEMM path).
    #[test]
    fn a_batch_is_what_the_fast_mode_computes_and_its_samples_alone() {
        let case = Case::fixture("resnet-blocks").expect("fixture");
        let mut net = Net::new();
        let input: Vec<f32> = (0..5 * Net::INPUT_LEN)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mut together = vec![0.0f32; 5 * Net::OUTPUT_LEN];
        net.forward(&input, &mut together).expect("batch");
        let fast = case
            .interpreter_in(Mode::Fast)
            .expect("interpreter")
            .run(&input)
            .expect("fast mode");
        assert_eq!(bits(&together), bits(&fast));
        for (sample, want) in input
            .chunks_exact(Net::INPUT_LEN)
            .zip(together.chunks_exact(Net::OUTPUT_LEN))
        {
            let mut alone = vec![0.0f32; Net::OUTPUT_LEN];
            net.forward(sample, &mut alone).expect("one sample");
            let comparison = compare(&alone, want);
            assert!(comparison.max_abs_error <= 1e-5, "{comparison}");
        }
    }

    #[test]
    fn mismatched_buffers_are_refused() {
        let mut net = Net::new();
        let mut output = vec![0.0f32; Net::OUTPUT_LEN];
        let error = net.forward(&[], &mut output).unwrap_err();
        assert_eq!(error.to_string(), "input is an empty batch (0 samples)");
        let input = vec![0.0f32; Net::INPUT_LEN + 1];
        assert!(matches!(
            net.forward(&input, &mut output),
            Err(cnnc_runtime::Error::InputLength { .. })
        ));
        let input = vec![0.0f32; 2 * Net::INPUT_LEN];
        assert!(matches!(
            net.forward(&input, &mut output),
            Err(cnnc_runtime::Error::OutputLength { .. })
        ));
    }

    #[test]
    fn networks_are_send() {
        fn send<T: Send>() {}
        send::<Net>();
        send::<cnnc_generated_tests::nets::lenet::Lenet>();
    }
}

mod allocations {
    use super::*;

    thread_local! {
        static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    }

    /// Counts the allocations of the current thread.
    struct Counting;

    // SAFETY: forwards every call to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
            // SAFETY: the caller's contract is `GlobalAlloc::alloc`'s.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
            // SAFETY: as above.
            unsafe { System.realloc(ptr, layout, size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    fn allocations_of(f: impl FnOnce()) -> usize {
        let before = ALLOCATIONS.with(Cell::get);
        f();
        ALLOCATIONS.with(Cell::get) - before
    }

    fn no_allocation_once_grown<N: Generated>(name: &str) {
        let mut net = N::embedded();
        // One thread: every allocation `forward` could make is this thread's.
        net.set_context(cnnc_runtime::kernels::ops::Context::with(
            cnnc_runtime::kernels::kernels(),
            1,
        ));
        let input: Vec<f32> = (0..3 * N::INPUT_LEN)
            .map(|i| (i % 13) as f32 * 0.1)
            .collect();
        let mut output = vec![0.0f32; 3 * N::OUTPUT_LEN];
        net.forward(&input, &mut output)
            .expect("first run grows the arena");
        let count = allocations_of(|| {
            net.forward(&input, &mut output).expect("batch of 3");
            net.forward(&input[..N::INPUT_LEN], &mut output[..N::OUTPUT_LEN])
                .expect("batch of 1");
        });
        assert_eq!(count, 0, "`{name}`: forward allocated {count} times");
    }

    #[test]
    fn forward_allocates_nothing_once_the_arena_has_grown() {
        use cnnc_generated_tests::nets;
        no_allocation_once_grown::<nets::resnet_blocks::ResnetBlocks>("resnet-blocks");
        no_allocation_once_grown::<nets::mobilenet_blocks::MobilenetBlocks>("mobilenet-blocks");
        no_allocation_once_grown::<nets::squeezenet_fire::SqueezenetFire>("squeezenet-fire");
        no_allocation_once_grown::<nets::lenet::Lenet>("lenet");
        no_allocation_once_grown::<nets::mlp_softmax::MlpSoftmax>("mlp-softmax");
    }
}

/// Layers named like Rust keywords and like the struct's own items.
#[test]
fn odd_layer_names_compile_and_run() {
    use cnnc_generated_tests::nets::names::SelfNet;

    let weights: Vec<f32> = (0..6).map(|i| i as f32 * 0.25 - 0.5).collect();
    let bias = [0.1f32, -0.2, 0.3];
    let bytes = cnnc_tests::safetensors_f32(&[
        ("context.weight", &[3, 2, 1, 1], &weights),
        ("context.bias", &[3], &bias),
    ]);
    let mut net = SelfNet::from_safetensors(&bytes).expect("loads");
    let input: Vec<f32> = (0..2 * SelfNet::INPUT_LEN)
        .map(|i| (i % 7) as f32 - 3.0)
        .collect();
    let mut output = vec![0.0f32; 2 * SelfNet::OUTPUT_LEN];
    net.forward(&input, &mut output).expect("forward");

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/nets/names.cnn");
    let text = std::fs::read_to_string(path).expect("the net");
    let file = cnnc_syntax::SourceFile::new(path, text);
    let checked = cnnc_ir::check(&file).expect("checks");
    let file = cnnc_runtime::WeightFile::from_bytes(&bytes).expect("weights");
    let options = cnnc_interp::Options::new().mode(Mode::Fast);
    let mut interpreter = cnnc_interp::Interpreter::with_options(
        &checked.graph,
        &checked.info,
        Some(&file),
        &options,
    )
    .expect("binds");
    let expected = interpreter.run(&input).expect("runs");
    assert_eq!(bits(&output), bits(&expected));
    // Softmax rows sum to 1.
    for row in output.chunks_exact(SelfNet::OUTPUT_LEN) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
