//! Every case of `tests/fixtures/` through the interpreter, compared with
//! PyTorch's float64 output: max abs error ≤ 1e-4 × max(1, max |expected|).
//! Run with `--nocapture` to see each case's error.

use cnnc_tests::{case_names, check_fixture, fixtures_dir};

fn check(name: &str) {
    match check_fixture(name) {
        Ok(comparison) => println!("{name}: {comparison}"),
        Err(why) => panic!("fixture `{name}` fails: {why}"),
    }
}

include!(concat!(env!("OUT_DIR"), "/fixture_tests.rs"));

#[test]
fn every_case_folder_has_a_test() {
    // `build.rs` lists the folders; this catches a stale list.
    assert_eq!(CASES, case_names(&fixtures_dir()).as_slice());
    assert!(CASES.len() >= 78, "only {} fixtures found", CASES.len());
}
