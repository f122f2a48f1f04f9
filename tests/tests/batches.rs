//! A batch gives exactly the outputs of its samples run one by one: the
//! batch dimension never mixes samples. Checked bit for bit on every
//! fixture, in both execution modes, with one more sample than the fixture
//! has (so batch-1 cases run a batch of 2 too).

use cnnc_interp::Mode;
use cnnc_tests::{case_names, fixtures_dir, Case};

#[test]
fn batches_equal_their_samples_one_by_one() {
    let mut failures = Vec::new();
    let names = case_names(&fixtures_dir());
    for name in &names {
        for mode in [Mode::Reference, Mode::Optimized] {
            if let Err(why) = check(name, mode) {
                failures.push(format!("{name} ({mode:?}): {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

fn check(name: &str, mode: Mode) -> Result<(), String> {
    let case = Case::fixture(name)?;
    let mut interpreter = case.interpreter_in(mode)?;
    let per_sample = interpreter.input_len();
    let out_per_sample = interpreter.output_len();
    // The fixture's samples, then its first sample again.
    let mut input = case.input.data.clone();
    input.extend_from_slice(&case.input.data[..per_sample]);
    let batch = input.len() / per_sample;
    let together = interpreter.run(&input).map_err(|e| e.to_string())?;
    if together.len() != batch * out_per_sample {
        return Err(format!("{} outputs for a batch of {batch}", together.len()));
    }
    for (index, sample) in input.chunks(per_sample).enumerate() {
        let alone = interpreter.run(sample).map_err(|e| e.to_string())?;
        let in_batch = &together[index * out_per_sample..(index + 1) * out_per_sample];
        // Bit-for-bit, NaN included.
        let same = alone
            .iter()
            .zip(in_batch)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same {
            return Err(format!("sample {index} differs in a batch of {batch}"));
        }
    }
    Ok(())
}
