//! The weight faults that `../shared/conformance/run.py` (`weight_faults`)
//! makes from a valid case, each reproduced on a small network and loaded
//! the way the command line loads it (`WeightFile::from_path`, then one
//! request per parameter). Each must be refused with the file's name and,
//! where the runner demands it, the tensor's.

use std::path::{Path, PathBuf};

use cnnc_runtime::{Error, WeightFile};

use crate::support::{join, largest_allocation, scratch_dir, small_net, split};

/// The parameters the small network asks for, in its order.
const PARAMETERS: [(&str, &[usize]); 8] = [
    ("conv1.weight", &[4, 3, 3, 3]),
    ("conv1.bias", &[4]),
    ("bn1.weight", &[4]),
    ("bn1.bias", &[4]),
    ("bn1.running_mean", &[4]),
    ("bn1.running_var", &[4]),
    ("fc.weight", &[2, 4]),
    ("fc.bias", &[2]),
];

/// Loads `path` like the command line: open, then fetch every parameter.
fn load(path: &Path) -> Result<Vec<Vec<f32>>, Error> {
    let weights = WeightFile::from_path(path)?;
    PARAMETERS
        .iter()
        .map(|(name, shape)| weights.tensor(name, shape))
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn message(path: &Path) -> String {
    match load(path) {
        Ok(_) => panic!("{} loaded without error", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_valid_case_loads() {
    let dir = scratch_dir("valid");
    let path = write(&dir, "ok.safetensors", &small_net());
    let tensors = load(&path).unwrap();
    assert_eq!(tensors[7], [-1.0, 1.0]);
    assert!(WeightFile::from_path(&path).unwrap().unused().len() == 8);
}

#[test]
fn missing_tensor() {
    // The runner deletes the header entry of the first 4-D F32 tensor and
    // keeps the data section as it is, leaving a hole.
    let dir = scratch_dir("missing");
    let (mut header, body) = split(&small_net());
    header.remove("conv1.weight");
    let path = write(&dir, "missing-tensor.safetensors", &join(&header, &body));
    assert_eq!(
        message(&path),
        format!(
            "weights file `{}`: tensor `conv1.weight` not found",
            path.display()
        )
    );
}

#[test]
fn wrong_shape() {
    // [s0, s1, s2, s3] becomes [s0, s1, s2 * s3, 1]: same bytes, other shape.
    let dir = scratch_dir("shape");
    let (mut header, body) = split(&small_net());
    header["conv1.weight"]["shape"] = serde_json::json!([4, 3, 9, 1]);
    let path = write(&dir, "wrong-shape.safetensors", &join(&header, &body));
    assert_eq!(
        message(&path),
        format!(
            "weights file `{}`: tensor `conv1.weight` has the wrong shape: \
             expected [4, 3, 3, 3], found [4, 3, 9, 1]",
            path.display()
        )
    );
}

#[test]
fn truncated_body() {
    let dir = scratch_dir("truncated");
    let (header, body) = split(&small_net());
    let path = write(
        &dir,
        "truncated-body.safetensors",
        &join(&header, &body[..body.len() / 3]),
    );
    let err = load(&path).unwrap_err();
    assert!(
        matches!(err, Error::DataOutOfBounds { ref file, data_len: 186, .. } if file.as_deref() == Some(&*path)),
        "{err:?}"
    );
    // The first tensor (by name) that the cut reaches.
    assert_eq!(
        err.to_string(),
        format!(
            "weights file `{}`: tensor `conv1.weight` has data_offsets [88, 520] but the data \
             section has only 186 bytes: the file is truncated or its header is wrong",
            path.display()
        )
    );
}

#[test]
fn offsets_past_end() {
    let dir = scratch_dir("offsets");
    let (mut header, body) = split(&small_net());
    header["conv1.weight"]["data_offsets"] = serde_json::json!([0, 1u64 << 40]);
    let path = write(&dir, "offsets-past-end.safetensors", &join(&header, &body));
    assert_eq!(
        message(&path),
        format!(
            "weights file `{}`: tensor `conv1.weight` has data_offsets [0, 1099511627776] but the \
             data section has only 560 bytes: the file is truncated or its header is wrong",
            path.display()
        )
    );
}

#[test]
fn header_length_2_to_the_62() {
    let dir = scratch_dir("huge");
    let mut bytes = (1u64 << 62).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let path = write(&dir, "huge-header.safetensors", &bytes);
    // Refused by comparison: nothing near the claimed size is allocated.
    let (result, largest) = largest_allocation(|| load(&path));
    assert_eq!(
        result.unwrap_err().to_string(),
        format!(
            "weights file `{}`: the header length field says 4611686018427387904 bytes but the \
             file has only 10: truncated, or not a safetensors file",
            path.display()
        )
    );
    assert!(largest < 4096, "largest allocation {largest} bytes");
}

#[test]
fn header_not_json() {
    let dir = scratch_dir("json");
    let mut bytes = 6u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{{{{{{");
    let path = write(&dir, "not-json.safetensors", &bytes);
    assert_eq!(
        message(&path),
        format!(
            "weights file `{}`: invalid safetensors header: not JSON \
             (key must be a string at line 1 column 2)",
            path.display()
        )
    );
}

#[test]
fn file_does_not_exist() {
    let dir = scratch_dir("nope");
    let path = dir.join("nope.safetensors");
    assert_eq!(
        message(&path),
        format!(
            "cannot read `{}`: No such file or directory (os error 2)",
            path.display()
        )
    );
}
