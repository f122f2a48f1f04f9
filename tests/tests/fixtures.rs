//! Every case of `tests/fixtures/` through the interpreter in each mode,
//! compared with PyTorch's float64 output: max abs error ≤ 1e-4 ×
//! max(1, max |expected|). `fixtures::reference::*` runs the graph as
//! written (the oracle), `fixtures::optimized::*` the optimized graph with
//! its batch-norms folded into the weights. Run with `--nocapture` to see
//! each case's error.

use cnnc_interp::Mode;
use cnnc_tests::{case_names, check_fixture, fixtures_dir};

include!(concat!(env!("OUT_DIR"), "/fixture_cases.rs"));

fn check_in(mode: Mode, name: &str) {
    match check_fixture(name, mode) {
        Ok(comparison) => println!("{name} ({mode:?}): {comparison}"),
        Err(why) => panic!("fixture `{name}` fails in {mode:?} mode: {why}"),
    }
}

mod reference {
    fn check(name: &str) {
        super::check_in(cnnc_interp::Mode::Reference, name);
    }

    include!(concat!(env!("OUT_DIR"), "/fixture_tests.rs"));
}

mod optimized {
    fn check(name: &str) {
        super::check_in(cnnc_interp::Mode::Optimized, name);
    }

    include!(concat!(env!("OUT_DIR"), "/fixture_tests.rs"));
}

#[test]
fn every_case_folder_has_a_test() {
    // `build.rs` lists the folders; this catches a stale list.
    assert_eq!(CASES, case_names(&fixtures_dir()).as_slice());
    assert!(CASES.len() >= 78, "only {} fixtures found", CASES.len());
}
