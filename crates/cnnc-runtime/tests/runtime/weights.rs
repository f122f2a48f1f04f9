//! `WeightFile`: lookups, conversions, unused tensors, and every error.

use std::borrow::Cow;
use std::path::Path;

use cnnc_runtime::{Error, WeightFile};
use safetensors::Dtype;

use crate::support::{by_hand, f32_bytes, serialize, small_net};

/// Parses `file` from memory and returns the error's message.
fn error_of(file: &[u8]) -> String {
    match WeightFile::from_bytes(file) {
        Ok(w) => panic!("expected an error, parsed {w:?}"),
        Err(e) => e.to_string(),
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn reads_names_shapes_and_values() {
    let file = small_net();
    let w = WeightFile::from_bytes(&file).unwrap();
    assert_eq!(w.len(), 9);
    assert!(!w.is_empty());
    assert_eq!(
        w.names(),
        [
            "bn1.bias",
            "bn1.num_batches_tracked",
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.weight",
            "conv1.bias",
            "conv1.weight",
            "fc.bias",
            "fc.weight"
        ]
    );
    assert_eq!(w.shape("conv1.weight"), Some(&[4, 3, 3, 3][..]));
    assert_eq!(w.shape("bn1.num_batches_tracked"), Some(&[][..]));
    assert_eq!(w.shape("nope"), None);
    assert_eq!(w.dtype("bn1.num_batches_tracked"), Some("I64"));
    assert_eq!(w.dtype("fc.bias"), Some("F32"));
    assert_eq!(w.path(), None);

    let conv = w.tensor("conv1.weight", &[4, 3, 3, 3]).unwrap();
    assert_eq!(conv.len(), 108);
    assert_eq!((conv[0], conv[1], conv[107]), (-10.0, -9.5, 43.5));
    assert_eq!(w.tensor("fc.bias", &[2]).unwrap(), [-1.0, 1.0]);
}

#[test]
fn reads_a_file_pytorch_wrote() {
    let w = WeightFile::from_path(fixture("torch.safetensors")).unwrap();
    assert_eq!(w.path(), Some(fixture("torch.safetensors").as_path()));
    let (shape, expected) = read_npy_f32(&fixture("torch-conv-weight.npy"));
    assert_eq!(shape, [4, 3, 3, 3]);
    assert_eq!(w.tensor("0.weight", &[4, 3, 3, 3]).unwrap(), expected);
    // F16, BF16 and F64 tensors as torch stored them.
    assert_eq!(
        w.tensor("fc.weight", &[2, 2]).unwrap(),
        [1.5, -0.5, 0.25, 2.0]
    );
    assert_eq!(w.tensor("fc.bias", &[2]).unwrap(), [-2.0, 0.5]);
    assert_eq!(w.tensor("scale", &[1]).unwrap(), [0.1f32]);
    assert_eq!(
        w.unused(),
        [
            "0.bias",
            "1.bias",
            "1.running_mean",
            "1.running_var",
            "1.weight"
        ]
    );
}

/// Reads a little-endian float32 C-order `.npy` without the `npy` feature:
/// the fixture's header is NumPy's, version 1.0.
fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"));
    let shape_text = &header[header.find("'shape': (").unwrap() + 10..];
    let shape_text = &shape_text[..shape_text.find(')').unwrap()];
    let shape = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, data)
}

#[test]
fn converts_f16_bf16_f64_exactly() {
    let file = serialize(&[
        (
            "half",
            Dtype::F16,
            &[3],
            [1.5f32, 65504.0, -0.0]
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        ),
        (
            "brain",
            Dtype::BF16,
            &[2],
            [-2.0f32, f32::INFINITY]
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        ),
        (
            "double",
            Dtype::F64,
            &[3],
            [0.1f64, 1e-50, -3.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    ]);
    let w = WeightFile::from_bytes(&file).unwrap();
    let half = w.tensor("half", &[3]).unwrap();
    assert_eq!(half[..2], [1.5, 65504.0]);
    assert!(half[2] == 0.0 && half[2].is_sign_negative());
    assert_eq!(w.tensor("brain", &[2]).unwrap(), [-2.0, f32::INFINITY]);
    // Rounded to nearest: 0.1f64 becomes exactly 0.1f32; 1e-50 underflows to 0.
    let double = w.tensor("double", &[3]).unwrap();
    assert_eq!(double, [0.1f32, 0.0, -3.0]);
    assert_eq!(double[0].to_bits(), 0.1f32.to_bits());
}

#[test]
fn borrows_aligned_f32_and_copies_misaligned() {
    let file = small_net();
    // An 8-aligned copy of the file: the data section (header padded to 8 by
    // the serializer) is then aligned for f32.
    let mut words = vec![0u64; file.len().div_ceil(8) + 1];
    // SAFETY: u8 has no alignment requirement and every bit pattern is valid.
    let (_, aligned, _) = unsafe { words.align_to_mut::<u8>() };
    aligned[..file.len()].copy_from_slice(&file);
    let w = WeightFile::from_bytes(&aligned[..file.len()]).unwrap();
    let borrowed = w.tensor_cow("fc.weight", &[2, 4]).unwrap();
    assert!(matches!(borrowed, Cow::Borrowed(_)));
    assert_eq!(&*borrowed, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);

    // The same file one byte further: misaligned, converted.
    aligned.copy_within(0..file.len(), 1);
    let w = WeightFile::from_bytes(&aligned[1..file.len() + 1]).unwrap();
    let copied = w.tensor_cow("fc.weight", &[2, 4]).unwrap();
    assert!(matches!(copied, Cow::Owned(_)));
    assert_eq!(&*copied, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
}

#[test]
fn unused_tensors_leave_out_num_batches_tracked() {
    let file = small_net();
    let w = WeightFile::from_bytes(&file).unwrap();
    assert_eq!(
        w.unused(),
        [
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.weight",
            "conv1.bias",
            "conv1.weight",
            "fc.bias",
            "fc.weight"
        ]
    );
    w.tensor("conv1.weight", &[4, 3, 3, 3]).unwrap();
    w.tensor_cow("fc.bias", &[2]).unwrap();
    // A failed request does not count as a use.
    assert!(w.tensor("fc.weight", &[4, 2]).is_err());
    for name in [
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "conv1.bias",
    ] {
        w.tensor(name, &[4]).unwrap();
    }
    assert_eq!(w.unused(), ["fc.weight"]);
}

#[test]
fn metadata_and_empty_files() {
    let file = by_hand(r#"{"__metadata__":{"format":"pt"}}"#, b"");
    let w = WeightFile::from_bytes(&file).unwrap();
    assert!(w.is_empty());
    assert_eq!(w.unused(), Vec::<String>::new());
    let err = w.tensor("fc.weight", &[2]).unwrap_err().to_string();
    assert_eq!(err, "weights: tensor `fc.weight` not found");
}

#[test]
fn zero_sized_tensors() {
    let file = by_hand(
        r#"{"empty":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},
            "one":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#,
        &f32_bytes(&[7.0]),
    );
    let w = WeightFile::from_bytes(&file).unwrap();
    assert_eq!(w.tensor("empty", &[0, 3]).unwrap(), Vec::<f32>::new());
    assert_eq!(w.tensor("one", &[]).unwrap(), [7.0]);
}

#[test]
fn tolerates_unreferenced_bytes() {
    // A hole before the tensor and bytes after it: the safetensors crate
    // refuses both; we read the tensor and never look at the rest.
    let mut body = vec![0xAB; 8];
    body.extend(f32_bytes(&[3.0, 4.0]));
    body.extend([0xCD; 4]);
    let file = by_hand(
        r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
        &body,
    );
    assert!(safetensors::SafeTensors::deserialize(&file).is_err());
    let w = WeightFile::from_bytes(&file).unwrap();
    assert_eq!(w.tensor("t", &[2]).unwrap(), [3.0, 4.0]);
}

// ------------------------------------------------------------ errors

#[test]
fn missing_tensor_suggests_the_nested_name() {
    let file = serialize(&[
        (
            "features.0.0.weight",
            Dtype::F32,
            &[2],
            f32_bytes(&[1.0, 2.0]),
        ),
        (
            "features.0.1.weight",
            Dtype::F32,
            &[2],
            f32_bytes(&[1.0, 2.0]),
        ),
    ]);
    let w = WeightFile::from_bytes(&file).unwrap();
    let err = w.tensor("features.0.weight", &[2]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "weights: tensor `features.0.weight` not found; did you mean `features.0.0.weight`?"
    );
    match err {
        Error::MissingTensor {
            file,
            name,
            did_you_mean,
        } => {
            assert_eq!((file, name.as_str()), (None, "features.0.weight"));
            assert_eq!(did_you_mean.as_deref(), Some("features.0.0.weight"));
        }
        other => panic!("wrong variant: {other:?}"),
    }
}

#[test]
fn missing_tensor_suggests_data_parallel_prefix() {
    let file = serialize(&[("module.conv1.weight", Dtype::F32, &[1], f32_bytes(&[1.0]))]);
    let w = WeightFile::from_bytes(&file).unwrap();
    assert_eq!(
        w.tensor("conv1.weight", &[1]).unwrap_err().to_string(),
        "weights: tensor `conv1.weight` not found; did you mean `module.conv1.weight`?"
    );
    assert_eq!(
        w.tensor("fc.bias", &[1]).unwrap_err().to_string(),
        "weights: tensor `fc.bias` not found"
    );
}

#[test]
fn wrong_shape() {
    let file = serialize(&[(
        "conv1.weight",
        Dtype::F32,
        &[64, 3, 49, 1],
        vec![0; 64 * 3 * 49 * 4],
    )]);
    let w = WeightFile::from_bytes(&file).unwrap();
    let err = w.tensor("conv1.weight", &[64, 3, 7, 7]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "weights: tensor `conv1.weight` has the wrong shape: expected [64, 3, 7, 7], found [64, 3, 49, 1]"
    );
    assert!(
        matches!(err, Error::TensorShape { ref expected, ref found, .. }
        if expected == &[64, 3, 7, 7] && found == &[64, 3, 49, 1])
    );
}

#[test]
fn unconvertible_dtypes_are_named() {
    let file = serialize(&[
        ("steps", Dtype::I64, &[], vec![0; 8]),
        ("mask", Dtype::BOOL, &[2], vec![0, 1]),
        ("fp8", Dtype::F8_E4M3, &[2], vec![0, 0]),
        ("bytes", Dtype::U8, &[1], vec![0]),
    ]);
    let w = WeightFile::from_bytes(&file).unwrap();
    let cases: [(&str, &[usize], &str); 4] = [
        ("steps", &[], "I64"),
        ("mask", &[2], "BOOL"),
        ("fp8", &[2], "F8_E4M3"),
        ("bytes", &[1], "U8"),
    ];
    for (name, shape, dtype) in cases {
        assert_eq!(
            w.tensor(name, shape).unwrap_err().to_string(),
            format!(
                "weights: tensor `{name}` has dtype {dtype}, which cannot be converted to f32 \
                 (supported: F32, F16, BF16, F64)"
            )
        );
    }
    assert_eq!(w.unused(), ["bytes", "fp8", "mask", "steps"]);
}

#[test]
fn file_too_short() {
    assert_eq!(
        error_of(b"\x10\0\0"),
        "weights: file is 3 bytes long, too short for a safetensors file \
         (it must start with an 8-byte header length)"
    );
    assert!(matches!(
        WeightFile::from_bytes(b""),
        Err(Error::FileTooShort { len: 0, .. })
    ));
}

#[test]
fn header_length_past_the_end() {
    let mut file = 100u64.to_le_bytes().to_vec();
    file.extend_from_slice(b"{}");
    assert_eq!(
        error_of(&file),
        "weights: the header length field says 100 bytes but the file has only 10: \
         truncated, or not a safetensors file"
    );
    // Exactly at the end is fine.
    let mut file = 2u64.to_le_bytes().to_vec();
    file.extend_from_slice(b"{}");
    assert!(WeightFile::from_bytes(&file).unwrap().is_empty());
}

#[test]
fn header_not_utf8() {
    let file = by_hand("", b"");
    let mut file = file;
    file.splice(0..8, 4u64.to_le_bytes());
    file.extend_from_slice(b"{\xff}\n");
    assert_eq!(
        error_of(&file),
        "weights: invalid safetensors header: not UTF-8 (invalid utf-8 sequence of 1 bytes from index 1)"
    );
}

#[test]
fn header_json_of_the_wrong_form() {
    assert_eq!(
        error_of(&by_hand("[1, 2]", b"")),
        "weights: invalid safetensors header: not a JSON object \
         (invalid type: sequence, expected a map at line 1 column 0)"
    );
    assert_eq!(
        error_of(&by_hand(
            r#"{"w":{"shape":[1],"data_offsets":[0,4]}}"#,
            &[0; 4]
        )),
        "weights: invalid safetensors header: tensor `w`: missing field `dtype`"
    );
    let message = error_of(&by_hand(
        r#"{"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#,
        &[0; 8],
    ));
    assert!(
        message
            .starts_with("weights: invalid safetensors header: tensor `w`: unknown variant `C64`"),
        "{message}"
    );
    assert_eq!(
        error_of(&by_hand(
            r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            &[0; 4]
        )),
        "weights: invalid safetensors header: tensor `w`: \
         invalid value: integer `-1`, expected usize"
    );
}

#[test]
fn offsets_past_the_end() {
    let file = by_hand(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
            "b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
        &[0; 12],
    );
    assert_eq!(
        error_of(&file),
        "weights: tensor `b` has data_offsets [8, 16] but the data section has only 12 bytes: \
         the file is truncated or its header is wrong"
    );
}

#[test]
fn overlapping_tensors() {
    let file = by_hand(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
            "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &[0; 12],
    );
    assert_eq!(
        error_of(&file),
        "weights: tensors `a` and `b` overlap in the data section"
    );
    // The same range twice is an overlap too; touching ranges are not.
    let file = by_hand(
        r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
            "y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    assert_eq!(
        error_of(&file),
        "weights: tensors `x` and `y` overlap in the data section"
    );
}

#[test]
fn offsets_not_matching_dtype_and_shape() {
    let file = by_hand(
        r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#,
        &[0; 16],
    );
    assert_eq!(
        error_of(&file),
        "weights: tensor `w` has data_offsets [0, 12] (12 bytes) but F32 [2, 2] needs 16 bytes"
    );
    let file = by_hand(
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#,
        &[0; 16],
    );
    assert_eq!(
        error_of(&file),
        "weights: tensor `w` has data_offsets [8, 4], which end before they start"
    );
    // An element count that overflows usize.
    let file = by_hand(
        r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    assert_eq!(
        error_of(&file),
        "weights: tensor `w` has data_offsets [0, 4] (4 bytes) but F32 [4294967296, 4294967296, 16] \
         has no valid byte size (too large, or not a whole number of bytes)"
    );
    // Three 4-bit floats do not fill whole bytes.
    let file = by_hand(
        r#"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
        &[0; 2],
    );
    assert!(matches!(
        WeightFile::from_bytes(&file),
        Err(Error::TensorSize { needed: None, .. })
    ));
}

#[test]
fn io_errors_name_the_file() {
    let dir = crate::support::scratch_dir("io");
    let missing = dir.join("nope.safetensors");
    let err = WeightFile::from_path(&missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot read `{}`: No such file or directory (os error 2)",
            missing.display()
        )
    );
    assert!(std::error::Error::source(&err).is_some());
    // A directory is not a weights file either.
    let err = WeightFile::from_path(&dir).unwrap_err();
    assert!(
        matches!(err, Error::Io { ref path, .. } if path == &dir),
        "{err:?}"
    );
}

#[test]
fn errors_are_send_sync_static() {
    fn check<T: Send + Sync + 'static + std::error::Error>() {}
    check::<Error>();
    fn check_weights<T: Send + Sync>() {}
    check_weights::<WeightFile<'static>>();
}
