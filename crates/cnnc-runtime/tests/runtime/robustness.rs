//! Property tests: the weights parser agrees with the `safetensors` crate on
//! valid files, and neither parser in this crate panics or misbehaves on
//! corrupted input.

use cnnc_runtime::{Error, WeightFile};
use proptest::prelude::*;
use safetensors::Dtype;

use crate::support::{serialize, small_net};

/// The dtypes the generator draws from, with their sizes in bytes.
const DTYPES: [(Dtype, usize); 7] = [
    (Dtype::F32, 4),
    (Dtype::F16, 2),
    (Dtype::BF16, 2),
    (Dtype::F64, 8),
    (Dtype::I64, 8),
    (Dtype::U8, 1),
    (Dtype::BOOL, 1),
];

/// Up to six tensors with distinct names, random dtypes, shapes and bytes.
fn tensors() -> impl Strategy<Value = Vec<(String, usize, Vec<usize>, Vec<u8>)>> {
    prop::collection::btree_map(
        "[a-c]{1,2}(\\.[0-2]){0,2}\\.(weight|bias)",
        (0..DTYPES.len(), prop::collection::vec(0usize..4, 0..4)),
        0..6,
    )
    .prop_flat_map(|map| {
        map.into_iter()
            .map(|(name, (dtype, shape))| {
                let len = shape.iter().product::<usize>() * DTYPES[dtype].1;
                prop::collection::vec(any::<u8>(), len)
                    .prop_map(move |bytes| (name.clone(), dtype, shape.clone(), bytes))
            })
            .collect::<Vec<_>>()
    })
}

/// Reference conversion, written independently of the crate's.
fn expected_values(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F16 => bytes
            .chunks(2)
            .map(|c| half::f16::from_bits(u16::from_le_bytes(c.try_into().unwrap())).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks(2)
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes(c.try_into().unwrap())) << 16))
            .collect(),
        Dtype::F64 => bytes
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        _ => return None,
    })
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Every tensor of an accepted file must be served or refused cleanly.
fn exercise(weights: &WeightFile<'_>) {
    for name in weights.names() {
        let shape = weights.shape(name).unwrap().to_vec();
        match weights.tensor(name, &shape) {
            Ok(values) => assert_eq!(values.len(), shape.iter().product::<usize>()),
            Err(Error::UnsupportedDtype { .. }) => {}
            Err(other) => panic!("accepted file refused tensor `{name}`: {other}"),
        }
        let mut wrong = shape.clone();
        wrong.push(1);
        assert!(matches!(
            weights.tensor(name, &wrong),
            Err(Error::TensorShape { .. })
        ));
    }
    let _ = weights.tensor("no.such.tensor", &[1]);
    let _ = weights.unused();
}

/// One corruption of a file.
#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    /// Replace the header length field.
    HeaderLength(u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        4 => (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, 1 << bit)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => prop_oneof![any::<u64>(), 0u64..2000].prop_map(Mutation::HeaderLength),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let n = bytes.len();
    match *mutation {
        _ if n == 0 => {}
        Mutation::Set(i, b) => bytes[i % n] = b,
        Mutation::Flip(i, mask) => bytes[i % n] ^= mask,
        Mutation::Insert(i, b) => bytes.insert(i % (n + 1), b),
        Mutation::Remove(i) => {
            bytes.remove(i % n);
        }
        Mutation::Truncate(i) => bytes.truncate(i % n),
        Mutation::HeaderLength(len) => {
            if n >= 8 {
                bytes[..8].copy_from_slice(&len.to_le_bytes());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Files the `safetensors` serializer writes are read back with the same
    /// names, shapes, dtypes and values as the `safetensors` reader sees.
    #[test]
    fn agrees_with_safetensors_on_valid_files(tensors in tensors()) {
        let file = serialize(
            &tensors
                .iter()
                .map(|(name, dtype, shape, bytes)| (name.as_str(), DTYPES[*dtype].0, shape.as_slice(), bytes.clone()))
                .collect::<Vec<_>>(),
        );
        let reference = safetensors::SafeTensors::deserialize(&file).unwrap();
        let weights = WeightFile::from_bytes(&file).unwrap();
        let mut names = reference.names();
        names.sort();
        prop_assert_eq!(weights.names(), names);
        for (name, view) in reference.tensors() {
            prop_assert_eq!(weights.shape(&name).unwrap(), view.shape());
            prop_assert_eq!(weights.dtype(&name).unwrap(), view.dtype().to_string());
            match (weights.tensor(&name, view.shape()), expected_values(view.dtype(), view.data())) {
                (Ok(got), Some(want)) => prop_assert!(same_bits(&got, &want), "{}: {:?} vs {:?}", name, got, want),
                (Err(Error::UnsupportedDtype { dtype, .. }), None) => prop_assert_eq!(dtype, view.dtype().to_string()),
                (got, want) => prop_assert!(false, "{}: got {:?}, expected {:?}", name, got, want),
            }
        }
    }

    /// Corrupted files never panic; whatever is accepted serves every tensor
    /// or refuses it cleanly; whatever the `safetensors` crate accepts, we
    /// accept with the same tensors.
    #[test]
    fn corrupted_weights_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        let mut file = small_net();
        for m in &mutations {
            apply(&mut file, m);
        }
        let ours = WeightFile::from_bytes(&file);
        if let Ok(weights) = &ours {
            exercise(weights);
            let message = format!("{weights:?}");
            prop_assert!(message.starts_with("WeightFile"));
        } else if let Err(e) = &ours {
            prop_assert!(!e.to_string().is_empty());
        }
        if let Ok(reference) = safetensors::SafeTensors::deserialize(&file) {
            let weights = ours.expect("safetensors accepts a file we refuse");
            let mut names = reference.names();
            names.sort();
            prop_assert_eq!(weights.names(), names);
            for (name, view) in reference.tensors() {
                prop_assert_eq!(weights.shape(&name).unwrap(), view.shape());
            }
        }
    }

    /// Corrupted `.npy` files never panic, and what is accepted is
    /// consistent: as many values as the shape says.
    #[cfg(feature = "npy")]
    #[test]
    fn corrupted_npy_never_panics(mutations in prop::collection::vec(mutation(), 1..6)) {
        let mut file = cnnc_runtime::npy::to_bytes(&[2, 3, 2], &[1.5; 12]).unwrap();
        for m in &mutations {
            if !matches!(m, Mutation::HeaderLength(_)) {
                apply(&mut file, m);
            }
        }
        match cnnc_runtime::npy::from_bytes(&file, std::path::Path::new("x.npy")) {
            Ok((shape, data)) => prop_assert_eq!(shape.iter().product::<usize>(), data.len()),
            Err(e) => prop_assert!(e.to_string().starts_with("`x.npy`: "), "{}", e),
        }
    }
}

/// Every prefix of a valid file is refused or read consistently (a file cut
/// at any byte, as by an interrupted download).
#[test]
fn every_truncation_is_refused_cleanly() {
    let file = small_net();
    for len in 0..file.len() {
        match WeightFile::from_bytes(&file[..len]) {
            Ok(weights) => panic!(
                "a file cut at {len} of {} bytes was accepted: {weights:?}",
                file.len()
            ),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
