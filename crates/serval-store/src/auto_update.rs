//! Auto-update version assignment (clearml-serving's rule, reference §5.2): the rule serves the
//! newest matching models, up to `max_versions`; a model already served keeps its version number,
//! new models get the next numbers (one above the highest served, in creation order), and models
//! that fall out of the newest-K lose their endpoint. Numbers are never reused while the highest
//! one is still served, and never silently renumbered.

use std::collections::BTreeMap;

use crate::Model;

/// Versions of one rule: version number → model id.
pub type VersionMap = BTreeMap<u32, String>;

/// The next version map, from the current one and the rule's query result (newest first).
pub fn assign_versions(current: &VersionMap, newest_first: &[Model]) -> VersionMap {
    let mut next = current.keys().next_back().map_or(1, |v| v + 1);
    let mut assigned = VersionMap::new();
    for model in newest_first.iter().rev() {
        let existing = current
            .iter()
            .find(|(_, id)| **id == model.id)
            .map(|(v, _)| *v);
        let version = existing.unwrap_or_else(|| {
            let v = next;
            next += 1;
            v
        });
        assigned.insert(version, model.id.clone());
    }
    assigned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models(ids: &[&str]) -> Vec<Model> {
        ids.iter()
            .map(|id| Model {
                id: (*id).to_string(),
                name: "m".into(),
                project: None,
                tags: vec![],
                framework: None,
                published: true,
                uri: "file:///m".into(),
                size: None,
                sha256: None,
                created_ms: 0,
            })
            .collect()
    }

    fn map(pairs: &[(u32, &str)]) -> VersionMap {
        pairs
            .iter()
            .map(|(v, id)| (*v, (*id).to_string()))
            .collect()
    }

    #[test]
    fn the_reference_sequence_with_two_versions() {
        // Reference §5.2, K = 2: [A]→{1:A}, [B,A]→{1:A,2:B}, [C,B]→{2:B,3:C}, [C]→{3:C}, [D,C]→{3:C,4:D}.
        let mut current = VersionMap::new();
        type Step<'a> = (&'a [&'a str], &'a [(u32, &'a str)]);
        let steps: [Step<'_>; 5] = [
            (&["A"], &[(1, "A")]),
            (&["B", "A"], &[(1, "A"), (2, "B")]),
            (&["C", "B"], &[(2, "B"), (3, "C")]),
            (&["C"], &[(3, "C")]),
            (&["D", "C"], &[(3, "C"), (4, "D")]),
        ];
        for (query, expected) in steps {
            current = assign_versions(&current, &models(query));
            assert_eq!(current, map(expected), "after {query:?}");
        }
    }

    #[test]
    fn first_sync_numbers_oldest_first() {
        let assigned = assign_versions(&VersionMap::new(), &models(&["new", "mid", "old"]));
        assert_eq!(assigned, map(&[(1, "old"), (2, "mid"), (3, "new")]));
    }

    #[test]
    fn a_number_is_reused_only_when_the_highest_left_first() {
        let current = map(&[(1, "A"), (2, "B")]);
        // B disappeared (unpublished), then C arrives: 2 is free again.
        let after = assign_versions(&current, &models(&["A"]));
        assert_eq!(after, map(&[(1, "A")]));
        assert_eq!(
            assign_versions(&after, &models(&["C", "A"])),
            map(&[(1, "A"), (2, "C")])
        );
        assert!(assign_versions(&current, &[]).is_empty());
    }
}
