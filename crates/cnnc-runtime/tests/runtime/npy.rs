//! `.npy` reading, atomic writing, and their faults.

use std::path::{Path, PathBuf};

use cnnc_runtime::{npy, Error, IoAction};

use crate::support::{largest_allocation, listing, scratch_dir};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A version 1.0 `.npy` file with `header` (padded as NumPy does) and `data`.
fn npy_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut text = header.to_string();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((text.len() as u16).to_le_bytes());
    bytes.extend(text.as_bytes());
    bytes.extend(data);
    bytes
}

fn error_of(bytes: &[u8]) -> String {
    match npy::from_bytes(bytes, Path::new("x.npy")) {
        Ok(t) => panic!("expected an error, read {t:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn reads_what_numpy_wrote() {
    let (shape, data) = npy::read(fixture("c-f32.npy")).unwrap();
    assert_eq!(shape, [2, 3, 4]);
    let expected: Vec<f32> = (0..24).map(|i| i as f32 / 8.0).collect();
    assert_eq!(data, expected);
}

#[test]
fn converts_f64_f16_and_big_endian() {
    let (shape, data) = npy::read(fixture("f64.npy")).unwrap();
    assert_eq!(shape, [1, 3]);
    assert_eq!(data, [0.1f32, -2.5, 1e-3f32]);
    let (shape, data) = npy::read(fixture("f16.npy")).unwrap();
    assert_eq!((shape, data), (vec![3], vec![1.5, -0.25, 65504.0]));
    let (shape, data) = npy::read(fixture("big-endian-f4.npy")).unwrap();
    assert_eq!((shape, data), (vec![2], vec![1.0, -3.5]));
}

#[test]
fn refuses_fortran_order() {
    let path = fixture("fortran.npy");
    let err = npy::read(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "`{}`: .npy data is in Fortran order; save it in C order \
             (numpy.ascontiguousarray) first",
            path.display()
        )
    );
    // With at most one dimension above 1, both orders are the same bytes.
    let bytes = npy_file(
        "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2, 1), }",
        &[0, 0, 128, 63, 0, 0, 0, 64],
    );
    let (shape, data) = npy::from_bytes(&bytes, Path::new("x.npy")).unwrap();
    assert_eq!((shape, data), (vec![1, 2, 1], vec![1.0, 2.0]));
}

#[test]
fn refuses_other_dtypes() {
    let path = fixture("i64.npy");
    assert_eq!(
        npy::read(&path).unwrap_err().to_string(),
        format!(
            "`{}`: unsupported .npy dtype `<i8`: expected float32 (float64 and float16 are converted)",
            path.display()
        )
    );
    let bytes = npy_file(
        "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,), }",
        &[0; 8],
    );
    assert_eq!(
        error_of(&bytes),
        "`x.npy`: unsupported .npy dtype `[('a', '<f4'), ('b', '<i4'), ]`: \
         expected float32 (float64 and float16 are converted)"
    );
}

#[test]
fn refuses_truncated_and_trailing_data() {
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    assert_eq!(
        error_of(&npy_file(header, &[0; 20])),
        "`x.npy`: .npy data truncated: shape [2, 3] of `<f4` needs 24 bytes, found 20"
    );
    assert_eq!(
        error_of(&npy_file(header, &[0; 28])),
        "`x.npy`: .npy data has trailing bytes: shape [2, 3] of `<f4` needs 24 bytes, found 28"
    );
}

#[test]
fn garbage_header_from_the_conformance_runner() {
    // run.py's "input: corrupt npy": a 65535-byte header length and 15 bytes.
    assert_eq!(
        error_of(b"\x93NUMPY\x01\x00\xff\xff{'descr': '<f8'"),
        "`x.npy`: not a readable .npy file: the header length field says 65535 bytes, \
         more than NumPy's limit of 10000"
    );
    // The same within the limit: the file ends first.
    assert_eq!(
        error_of(b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f8'"),
        "`x.npy`: not a readable .npy file: the header length field says 64 bytes but only 15 follow"
    );
    // A complete header that is not a Python literal: one line, with the header.
    assert_eq!(
        error_of(&npy_file("{'descr': '<f8'", &[])),
        "`x.npy`: not a readable .npy file: could not parse Python expression: syntax error:  \
         --> 1:15 in header `{'descr': '<f8'`"
    );
}

#[test]
fn garbage_prelude() {
    assert_eq!(
        error_of(b"PK\x03\x04 not npy at all"),
        "`x.npy`: not a readable .npy file: it does not start with the .npy magic string"
    );
    assert_eq!(
        error_of(b"\x93NUMPY\x09\x09\x00\x00"),
        "`x.npy`: not a readable .npy file: unsupported format version 9.9"
    );
    assert_eq!(
        error_of(b"\x93NUMPY\x02\x00\x01"),
        "`x.npy`: not a readable .npy file: the file ends inside the header length"
    );
    assert_eq!(
        error_of(b""),
        "`x.npy`: not a readable .npy file: it does not start with the .npy magic string"
    );
}

#[test]
fn absurd_shapes_allocate_nothing() {
    // 10^12 elements announced, 16 bytes present.
    let bytes = npy_file(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }",
        &[0; 16],
    );
    let (result, largest) = largest_allocation(|| npy::from_bytes(&bytes, Path::new("x.npy")));
    assert_eq!(
        result.unwrap_err().to_string(),
        "`x.npy`: .npy data truncated: shape [1000000, 1000000] of `<f4` needs 4000000000000 bytes, found 16"
    );
    assert!(largest < 64 * 1024, "largest allocation {largest} bytes");

    // An element count past 2^64 (npyz would overflow); also with a zero
    // dimension in front, where npyz's strides would overflow.
    for shape in ["(4294967296, 4294967296, 2)", "(0, 4294967296, 4294967296)"] {
        let bytes = npy_file(
            &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"),
            &[],
        );
        let (result, largest) = largest_allocation(|| npy::from_bytes(&bytes, Path::new("x.npy")));
        assert_eq!(
            result.unwrap_err().to_string(),
            format!(
                "`x.npy`: not a readable .npy file: absurd shape {shape}: more elements than memory can hold"
            )
        );
        assert!(largest < 64 * 1024, "largest allocation {largest} bytes");
    }

    // A version 2.0 header length of 4 GiB.
    let mut bytes = b"\x93NUMPY\x02\x00\xff\xff\xff\xff".to_vec();
    bytes.extend(b"{'descr': '<f4'}");
    let (result, largest) = largest_allocation(|| npy::from_bytes(&bytes, Path::new("x.npy")));
    assert_eq!(
        result.unwrap_err().to_string(),
        "`x.npy`: not a readable .npy file: the header length field says 4294967295 bytes, \
         more than NumPy's limit of 10000"
    );
    assert!(largest < 64 * 1024, "largest allocation {largest} bytes");
}

/// Without the guard this header takes the parser over a minute.
#[test]
fn deep_nesting_is_refused_before_parsing() {
    let header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': {}{}}}",
        "{".repeat(14),
        "}".repeat(14)
    );
    assert_eq!(
        error_of(&npy_file(&header, &[0; 4])),
        "`x.npy`: not a readable .npy file: the header nests brackets more than 4 deep"
    );
}

#[test]
fn negative_and_non_integer_dimensions() {
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }";
    assert_eq!(
        error_of(&npy_file(header, &[])),
        "`x.npy`: not a readable .npy file: dimension cannot be negative"
    );
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,), }";
    assert_eq!(
        error_of(&npy_file(header, &[])),
        "`x.npy`: not a readable .npy file: dimension must be an integer"
    );
}

#[test]
fn read_names_missing_file() {
    let dir = scratch_dir("npy-missing");
    let path = dir.join("absent.npy");
    assert_eq!(
        npy::read(&path).unwrap_err().to_string(),
        format!(
            "cannot read `{}`: No such file or directory (os error 2)",
            path.display()
        )
    );
}

// ------------------------------------------------------------ writing

#[test]
fn round_trip_is_bit_exact() {
    let dir = scratch_dir("npy-roundtrip");
    let path = dir.join("y.npy");
    let values = [
        0.5f32,
        -0.0,
        f32::INFINITY,
        f32::MIN_POSITIVE / 2.0,
        1e30,
        -7.25,
    ];
    npy::write(&path, &[2, 1, 3], &values).unwrap();
    assert_eq!(listing(&dir), ["y.npy"]);
    let (shape, data) = npy::read(&path).unwrap();
    assert_eq!(shape, [2, 1, 3]);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&data), bits(&values));
    // A NaN keeps its payload.
    let nan = f32::from_bits(0x7fc0_1234);
    npy::write(&path, &[1], &[nan]).unwrap();
    assert_eq!(npy::read(&path).unwrap().1[0].to_bits(), 0x7fc0_1234);
    // Same bytes as the in-memory encoding, which NumPy reads (checked when
    // this test was written: numpy.load gives shape (1,) and the NaN).
    assert_eq!(
        std::fs::read(&path).unwrap(),
        npy::to_bytes(&[1], &[nan]).unwrap()
    );
}

#[test]
fn written_header_is_numpys() {
    let bytes = npy::to_bytes(&[2, 3], &[0.0; 6]).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0, "data aligned to 64 bytes");
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, ), }"),
        "{header}"
    );
    assert_eq!(bytes.len(), 10 + header_len + 24);
    // Scalars and zero-element tensors round-trip too.
    for (shape, data) in [(vec![], vec![4.0f32]), (vec![0, 5], vec![])] {
        let bytes = npy::to_bytes(&shape, &data).unwrap();
        assert_eq!(
            npy::from_bytes(&bytes, Path::new("x.npy")).unwrap(),
            (shape, data)
        );
    }
}

#[test]
fn write_refuses_mismatched_data_and_creates_nothing() {
    let dir = scratch_dir("npy-mismatch");
    let err = npy::write(dir.join("y.npy"), &[2, 3], &[0.0; 5]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "shape [2, 3] has 6 elements but 5 values were given"
    );
    let err = npy::write(dir.join("y.npy"), &[usize::MAX, 2], &[0.0; 5]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "shape [{}, 2] has too many elements for the 5 values given",
            usize::MAX
        )
    );
    assert_eq!(listing(&dir), Vec::<String>::new());
}

#[test]
fn write_into_missing_directory_names_the_output() {
    let dir = scratch_dir("npy-nodir");
    let path = dir.join("absent").join("y.npy");
    let err = npy::write(&path, &[1], &[1.0]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot write `{}`: No such file or directory (os error 2)",
            path.display()
        )
    );
    assert_eq!(listing(&dir), Vec::<String>::new());
}

#[test]
fn failed_rename_leaves_no_temporary_file() {
    // The destination is a non-empty directory: the temporary file is
    // written, the rename fails, and the temporary file must be gone.
    let dir = scratch_dir("npy-rename");
    let path = dir.join("y.npy");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("keep"), b"x").unwrap();
    let err = npy::write(&path, &[1], &[1.0]).unwrap_err();
    assert!(
        matches!(err, Error::Io { action: IoAction::Rename, path: ref p, .. } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().starts_with(&format!(
        "cannot move the finished file to `{}`: ",
        path.display()
    )));
    assert_eq!(listing(&dir), ["y.npy"]);
    assert_eq!(listing(&path), ["keep"]);
}

#[test]
fn overwrite_replaces_the_old_file_whole() {
    let dir = scratch_dir("npy-overwrite");
    let path = dir.join("y.npy");
    npy::write(&path, &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    npy::write(&path, &[1], &[9.0]).unwrap();
    assert_eq!(npy::read(&path).unwrap(), (vec![1], vec![9.0]));
    assert_eq!(listing(&dir), ["y.npy"]);
}
