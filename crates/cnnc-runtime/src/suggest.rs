//! "Did you mean": the tensor name in a file that a missing name most
//! plausibly stands for.
//!
//! The mistakes this catches, most specific first:
//!
//! 1. a prefix added by a wrapper: the network asks for `conv1.weight`, the
//!    file has `module.conv1.weight` (`DataParallel`) or `model.conv1.weight`;
//! 2. the opposite, the network's name has a prefix the file lacks;
//! 3. a near miss in the layer's path, for the same parameter:
//!    `features.0.weight` against `features.0.0.weight` (an `nn.Sequential`
//!    nested one level deeper), `feature.3.bias` against `features.3.bias`,
//!    judged by edit distance.

/// Returns the name in `names` that `wanted` most plausibly means, if any.
pub(crate) fn closest<'a>(
    wanted: &str,
    names: impl Iterator<Item = &'a str> + Clone,
) -> Option<String> {
    // 1. Some name is `<prefix>.<wanted>`: take the shortest such prefix.
    let with_prefix = names
        .clone()
        .filter(|name| name.len() > wanted.len() && ends_with_component(name, wanted))
        .min_by_key(|name| (name.len(), *name));
    if let Some(name) = with_prefix {
        return Some(name.to_string());
    }
    // 2. `wanted` is `<prefix>.<name>`: take the longest such name.
    let without_prefix = names
        .clone()
        .filter(|name| wanted.len() > name.len() && ends_with_component(wanted, name))
        .max_by_key(|name| (name.len(), std::cmp::Reverse(*name)));
    if let Some(name) = without_prefix {
        return Some(name.to_string());
    }
    // 3. The same parameter (`weight`, `running_var`) of a layer whose path
    //    is a near miss: within a quarter of its length in edits (at least
    //    one). Tighter than that and `features.0` would not find
    //    `features.0.0`; looser and `conv1` would suggest `bn1`, another layer.
    let (wanted_layer, wanted_param) = split_last(wanted);
    let budget = (wanted_layer.chars().count() / 4).max(1);
    names
        .filter(|name| split_last(name).1 == wanted_param)
        .filter_map(|name| {
            let distance = bounded_edit_distance(wanted_layer, split_last(name).0, budget)?;
            Some(((distance, name), name))
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, name)| name.to_string())
}

/// `haystack` is `<something>.<needle>`.
fn ends_with_component(haystack: &str, needle: &str) -> bool {
    haystack
        .strip_suffix(needle)
        .is_some_and(|head| head.ends_with('.'))
}

/// `layer1.0.conv1.weight` → (`layer1.0.conv1`, `weight`); a name without
/// a dot is all parameter.
fn split_last(name: &str) -> (&str, &str) {
    name.rsplit_once('.').unwrap_or(("", name))
}

/// Levenshtein distance between `a` and `b` in characters, or `None` when it
/// exceeds `budget`. Names whose lengths differ by more than the budget are
/// refused without any work, so a hostile header with huge names costs
/// nothing.
fn bounded_edit_distance(a: &str, b: &str, budget: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    if b.len() > (a.len() + budget) * 4 {
        // More bytes than `a.len() + budget` characters can take.
        return None;
    }
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > budget {
        return None;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        let mut row_min = current[0];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
            row_min = row_min.min(current[j + 1]);
        }
        if row_min > budget {
            return None;
        }
        std::mem::swap(&mut previous, &mut current);
    }
    let distance = previous[b.len()];
    (distance <= budget).then_some(distance)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(wanted: &str, names: &[&str], expect: Option<&str>) {
        let got = closest(wanted, names.iter().copied());
        assert_eq!(got.as_deref(), expect, "closest({wanted:?}, {names:?})");
    }

    #[test]
    fn nested_index() {
        check(
            "features.0.weight",
            &[
                "features.0.0.weight",
                "features.0.1.weight",
                "classifier.weight",
            ],
            Some("features.0.0.weight"),
        );
    }

    #[test]
    fn data_parallel_prefix() {
        check(
            "conv1.weight",
            &[
                "module.conv1.weight",
                "module.conv1.bias",
                "module.fc.weight",
            ],
            Some("module.conv1.weight"),
        );
    }

    #[test]
    fn extra_prefix_in_network() {
        check(
            "model.fc.bias",
            &["fc.bias", "fc.weight", "bias"],
            Some("fc.bias"),
        );
    }

    #[test]
    fn spelling() {
        check(
            "feature.3.bias",
            &["features.3.weight", "features.3.bias", "features.4.bias"],
            Some("features.3.bias"),
        );
    }

    #[test]
    fn only_the_same_parameter() {
        check("conv1.weight", &["conv1.bias", "conv2.bias"], None);
        check(
            "conv1.weight",
            &["conv2.bias", "conv2.weight"],
            Some("conv2.weight"),
        );
    }

    #[test]
    fn nothing_close() {
        // Another layer's weight is not a plausible meaning.
        check("conv1.weight", &["bn1.weight", "fc.weight"], None);
        check("fc.weight", &["features.0.0.weight", "running_mean"], None);
        check("fc.weight", &[], None);
    }

    #[test]
    fn distance() {
        assert_eq!(bounded_edit_distance("kitten", "sitting", 5), Some(3));
        assert_eq!(bounded_edit_distance("kitten", "sitting", 2), None);
        assert_eq!(bounded_edit_distance("", "ab", 2), Some(2));
        assert_eq!(bounded_edit_distance("ab", &"x".repeat(1000), 3), None);
    }
}
