//! "Did you mean ...?" suggestions by edit distance.

/// The candidate closest to `word`, if it is close enough to be a likely typo:
/// equal ignoring case, or within an edit distance of about a third of the
/// word's length (at least 1, at most 3).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if word.len() > 64 {
        return None;
    }
    let lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let distance = if candidate.to_lowercase() == lower {
            0
        } else {
            edit_distance(&lower, &candidate.to_lowercase())
        };
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Edit distance over `char`s counting insertions, deletions, substitutions
/// and transpositions of neighbours (optimal string alignment), so `rleu` is
/// one edit from `relu`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut table = vec![0usize; (a.len() + 1) * width];
    for (i, row) in table.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in table.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[(i - 1) * width + j] + 1)
                .min(table[i * width + j - 1] + 1)
                .min(table[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[(i - 2) * width + j - 2] + 1);
            }
            table[i * width + j] = best;
        }
    }
    table[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::{did_you_mean, edit_distance};

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("stride", "strides"), 1);
    }

    #[test]
    fn suggestions() {
        let ops = ["conv2d", "maxpool2d", "relu", "relu6"];
        assert_eq!(did_you_mean("conv2D", ops), Some("conv2d"));
        assert_eq!(did_you_mean("maxpool", ops), Some("maxpool2d"));
        assert_eq!(did_you_mean("rleu", ops), Some("relu"));
        assert_eq!(did_you_mean("softmax", ops), None);
        assert_eq!(
            did_you_mean("strides", ["stride", "padding"]),
            Some("stride")
        );
    }
}
