//! Completeness of a PET series in a DICOM drop, for the watcher: a PET series is complete
//! when its ImageIndex (0054,1330) values cover 1..=NumberOfSlices (0054,0081). When the tags
//! are absent, or number two positions alike, the answer is `Unknown` and the watcher falls
//! back to its quiet period (and assembly to the slice-spacing check).

use std::collections::BTreeMap;

use super::scan::Instance;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    /// Every ImageIndex 1..=NumberOfSlices is present.
    Complete,
    /// Some are missing (the first few are listed).
    Incomplete {
        expected: usize,
        present: usize,
        first_missing: Vec<i64>,
    },
    /// The series does not carry the tags (or they disagree): use the quiet period.
    Unknown,
}

/// Completeness of one PET series from its instances' headers.
pub fn pet_series_completeness(instances: &[&Instance]) -> Completeness {
    let mut expected: Option<i64> = None;
    let mut seen = BTreeMap::new();
    for i in instances {
        let (Some(n), Some(idx)) = (i.number_of_slices, i.image_index) else {
            return Completeness::Unknown;
        };
        if n < 1 || expected.is_some_and(|e| e != n) {
            return Completeness::Unknown;
        }
        expected = Some(n);
        // One ImageIndex at two positions: the writer did not number the slices (a public
        // re-export gives every slice ImageIndex 1), so the tags cannot say what is missing.
        if let Some(Some(p)) = seen.insert(idx, i.image_position)
            && i.image_position.is_some_and(|q| distance(p, q) > 1e-3)
        {
            return Completeness::Unknown;
        }
    }
    let Some(n) = expected else {
        return Completeness::Unknown;
    };
    let missing: Vec<i64> = (1..=n).filter(|k| !seen.contains_key(k)).collect();
    if missing.is_empty() {
        Completeness::Complete
    } else {
        Completeness::Incomplete {
            expected: n as usize,
            present: (n as usize) - missing.len(),
            first_missing: missing.into_iter().take(8).collect(),
        }
    }
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(idx: Option<i64>, n: Option<i64>) -> Instance {
        Instance {
            image_index: idx,
            number_of_slices: n,
            ..Instance::for_tests()
        }
    }

    #[test]
    fn image_index_must_cover_number_of_slices() {
        let all: Vec<Instance> = (1..=4).map(|k| inst(Some(k), Some(4))).collect();
        let refs: Vec<&Instance> = all.iter().collect();
        assert_eq!(pet_series_completeness(&refs), Completeness::Complete);
        let some: Vec<&Instance> = all.iter().filter(|i| i.image_index != Some(3)).collect();
        assert_eq!(
            pet_series_completeness(&some),
            Completeness::Incomplete {
                expected: 4,
                present: 3,
                first_missing: vec![3]
            }
        );
        // Issue 15: a public re-export numbers every slice ImageIndex 1 (of 59).
        let unnumbered: Vec<Instance> = (0..4)
            .map(|k| Instance {
                image_position: Some([0.0, 0.0, 3.27 * k as f64]),
                ..inst(Some(1), Some(4))
            })
            .collect();
        assert_eq!(
            pet_series_completeness(&unnumbered.iter().collect::<Vec<_>>()),
            Completeness::Unknown
        );
        let bare = [inst(None, None)];
        assert_eq!(
            pet_series_completeness(&bare.iter().collect::<Vec<_>>()),
            Completeness::Unknown
        );
    }
}
