//! Field versions and the field-level conflict decision (PROTOCOL §5.1), as pure functions.
//!
//! The server keeps, per entity, which version and which author last changed each top-level
//! field of `data` (`entities.field_versions`). A change that names its fields conflicts only on
//! the named fields that someone else changed after the change's base version; this module
//! answers "which ones" and keeps the record up to date. `engine::apply` decides what happens
//! to them (the type's strategy) and writes the result.
//!
//! Stored form, compact JSON: `{"d":[version,author],"f":{"field":[version,author],…}}`, author
//! `null` for the hub (an admin write or a merge). `d` is the stamp of every field `f` does not
//! list. Why a default instead of one entry per field: a new entity, a deletion and every row
//! written before field versions existed are "every field changed at this version by this
//! author" (the column is then NULL), and after that only the fields later versions actually
//! changed are listed — the record grows with the fields that were edited, not with the size
//! of the entity, and a field removed long ago keeps its precise stamp through `d`.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

/// When and by whom a field was last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp(pub i64, pub Option<String>);

impl Stamp {
    pub fn version(&self) -> i64 {
        self.0
    }

    pub fn author(&self) -> Option<&str> {
        self.1.as_deref()
    }
}

/// The most fields a record lists by name (about 60 bytes each); beyond, the oldest stamps are
/// folded into the default one ([`FieldVersions::compact`]).
pub const MAX_LISTED: usize = 512;

/// The field versions of one entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldVersions {
    /// The stamp of every field not in `f`.
    d: Stamp,
    /// Fields changed after `d`, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    f: BTreeMap<String, Stamp>,
}

impl FieldVersions {
    /// Reads the stored record of an entity whose current version is `version` by `author`
    /// (`stored` NULL: every field was last changed then). Errors on text that is not a record.
    pub fn of(
        stored: Option<&str>,
        version: i64,
        author: Option<&str>,
    ) -> Result<FieldVersions, String> {
        match stored {
            None => Ok(FieldVersions::all_at(version, author)),
            Some(text) => {
                serde_json::from_str(text).map_err(|e| format!("field_versions {text:?}: {e}"))
            }
        }
    }

    /// Every field last changed at `version` by `author`.
    pub fn all_at(version: i64, author: Option<&str>) -> FieldVersions {
        FieldVersions {
            d: Stamp(version, author.map(str::to_string)),
            f: BTreeMap::new(),
        }
    }

    /// When `field` was last changed.
    pub fn last_change(&self, field: &str) -> &Stamp {
        self.f.get(field).unwrap_or(&self.d)
    }

    /// Records that `changed` fields were changed at `version` by `author`, then keeps the
    /// record within [`MAX_LISTED`] fields ([`FieldVersions::compact`]).
    pub fn record<'a>(
        &mut self,
        changed: impl IntoIterator<Item = &'a str>,
        version: i64,
        author: Option<&str>,
    ) {
        for field in changed {
            self.f.insert(
                field.to_string(),
                Stamp(version, author.map(str::to_string)),
            );
        }
        self.compact(MAX_LISTED);
    }

    /// Keeps at most `max` listed fields: the most recently changed ones stay, the others are
    /// folded into the default stamp, which takes the newest of their versions and, unless they
    /// all share one author, the author NULL (the hub: someone else for every node).
    ///
    /// Why: the record is loaded with its entity, and without a bound it would grow with every
    /// field name ever written (removed fields keep their stamps) — a node renaming keys on
    /// every write could make it larger than the entity. Folding only ever makes a field look
    /// changed later and by someone else, so it can add conflicts but never hide one.
    pub fn compact(&mut self, max: usize) {
        if self.f.len() <= max {
            return;
        }
        let mut by_age: Vec<(i64, String)> = self
            .f
            .iter()
            .map(|(k, s)| (s.version(), k.clone()))
            .collect();
        by_age.sort_unstable();
        let fold = by_age.len() - max;
        for (_, field) in by_age.into_iter().take(fold) {
            if let Some(s) = self.f.remove(&field) {
                if s.1 != self.d.1 {
                    self.d.1 = None;
                }
                self.d.0 = self.d.0.max(s.0);
            }
        }
    }

    /// The stored text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("field versions always serialize")
    }

    /// The named fields that someone other than `node` changed after `base`: the fields a
    /// change based on `base` conflicts on (PROTOCOL §5.1). In the order named.
    pub fn overlapping<'n>(&self, named: &'n [String], base: i64, node: &str) -> Vec<&'n str> {
        named
            .iter()
            .map(String::as_str)
            .filter(|f| {
                let s = self.last_change(f);
                s.version() > base && s.author() != Some(node)
            })
            .collect()
    }
}

/// The field versions after a new version replaced `old_data` by `new_data`: the fields whose
/// values differ (changed, added, removed) are stamped `version` by `author`, the others keep
/// their stamps. `stored`, `old_version` and `old_author` describe the entity before.
///
/// Costs one pass over both objects; the write it adds is a column of the entity's own row, so
/// applying a change stays O(1) writes.
pub fn next_field_versions(
    stored: Option<&str>,
    old_version: i64,
    old_author: Option<&str>,
    old_data: &str,
    new_data: &str,
    version: i64,
    author: Option<&str>,
) -> Result<String, String> {
    let mut fv = FieldVersions::of(stored, old_version, old_author)?;
    match starsync_protocol::fields::changed_fields(old_data, new_data) {
        Some(changed) => fv.record(changed.iter().map(String::as_str), version, author),
        // Not objects (never for validated data): everything changed.
        None => fv = FieldVersions::all_at(version, author),
    }
    Ok(fv.to_text())
}

/// The named fields minus `overlapping`, in the order named.
pub fn without<'n>(named: &'n [String], overlapping: &[&str]) -> Vec<&'n str> {
    let skip: HashSet<&str> = overlapping.iter().copied().collect();
    named
        .iter()
        .map(String::as_str)
        .filter(|f| !skip.contains(f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn null_means_every_field_at_the_current_version() {
        let fv = FieldVersions::of(None, 4, Some("M")).unwrap();
        assert_eq!(fv.last_change("anything"), &Stamp(4, Some("M".into())));
        let named = names(&["title", "status"]);
        assert_eq!(fv.overlapping(&named, 3, "N"), vec!["title", "status"]);
        assert!(
            fv.overlapping(&named, 4, "N").is_empty(),
            "not after the base"
        );
        assert!(
            fv.overlapping(&named, 3, "M").is_empty(),
            "the author's own change is not a conflict"
        );
    }

    #[test]
    fn only_changed_fields_get_a_new_stamp() {
        let text = next_field_versions(
            None,
            1,
            Some("A"),
            r#"{"title":"t","status":"open","gone":1}"#,
            r#"{"title":"renamed","status":"open","new":true}"#,
            2,
            None,
        )
        .unwrap();
        assert_eq!(
            text,
            r#"{"d":[1,"A"],"f":{"gone":[2,null],"new":[2,null],"title":[2,null]}}"#
        );
        let fv = FieldVersions::of(Some(&text), 2, None).unwrap();
        // A change based on version 1 by N: "status" merges, "title" and a removed field conflict.
        let named = names(&["status", "title", "gone"]);
        assert_eq!(fv.overlapping(&named, 1, "N"), vec!["title", "gone"]);
        assert_eq!(without(&named, &["title", "gone"]), vec!["status"]);
        assert!(fv.overlapping(&named, 2, "N").is_empty());

        // The next change stamps its fields over the record.
        let text = next_field_versions(
            Some(&text),
            2,
            None,
            r#"{"title":"renamed","status":"open","new":true}"#,
            r#"{"title":"renamed","status":"done","new":true}"#,
            3,
            Some("N"),
        )
        .unwrap();
        let fv = FieldVersions::of(Some(&text), 3, Some("N")).unwrap();
        assert_eq!(fv.last_change("status"), &Stamp(3, Some("N".into())));
        assert_eq!(fv.last_change("title"), &Stamp(2, None));
        assert_eq!(fv.last_change("other"), &Stamp(1, Some("A".into())));
    }

    #[test]
    fn a_record_stays_bounded_and_folding_never_hides_a_change() {
        let mut fv = FieldVersions::all_at(1, Some("A"));
        fv.record(["a", "b"], 2, Some("A"));
        fv.record(["c"], 3, Some("B"));
        fv.record(["d"], 4, Some("A"));
        fv.compact(2);
        // a and b (version 2, A) fold into the default: still A's, now at version 2.
        assert_eq!(fv.last_change("a"), &Stamp(2, Some("A".into())));
        assert_eq!(fv.last_change("zzz"), &Stamp(2, Some("A".into())));
        assert_eq!(fv.last_change("c"), &Stamp(3, Some("B".into())));
        fv.compact(1);
        // c (B) folds in: authors differ, so the default is the hub's — a conflict for anyone.
        assert_eq!(fv.last_change("c"), &Stamp(3, None));
        assert_eq!(fv.last_change("d"), &Stamp(4, Some("A".into())));
        assert_eq!(fv.overlapping(&names(&["c"]), 2, "B"), vec!["c"]);

        // A node writing new key names every time cannot grow the record past the bound.
        let mut stored: Option<String> = None;
        let mut old = String::from("{}");
        for v in 1..=4 {
            let new = format!(
                "{{{}}}",
                (0..400)
                    .map(|i| format!("\"k{v}_{i}\":{i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            stored = Some(
                next_field_versions(
                    stored.as_deref(),
                    v,
                    Some("N"),
                    &old,
                    &new,
                    v + 1,
                    Some("N"),
                )
                .unwrap(),
            );
            old = new;
        }
        let fv = FieldVersions::of(stored.as_deref(), 5, Some("N")).unwrap();
        assert_eq!(fv.f.len(), MAX_LISTED);
        assert_eq!(fv.last_change("k4_0"), &Stamp(5, Some("N".into())));
    }

    #[test]
    fn a_record_that_is_not_json_is_an_error() {
        assert!(FieldVersions::of(Some("{"), 1, None).is_err());
        assert!(FieldVersions::of(Some(r#"{"f":{}}"#), 1, None).is_err());
        let fv = FieldVersions::of(Some(r#"{"d":[2,null]}"#), 5, Some("X")).unwrap();
        assert_eq!(fv.last_change("x"), &Stamp(2, None));
        assert_eq!(fv.to_text(), r#"{"d":[2,null]}"#);
    }
}
