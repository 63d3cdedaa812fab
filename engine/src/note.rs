//! Descriptions and pins of revisions: what lets a person tell revisions apart and keep
//! a known-good one (issue 13). A revision file keeps the reference's name
//! `<name>.img.<id>@<timestamp>Z`, so an existing Qubes pool directory stays as it is;
//! its note lives in the volume's configuration in the state directory
//! ([`crate::model::VolumeConfig::revision_notes`], one journal record per change).
//!
//! A note is keyed by the revision's id *and* its timestamp (the whole file name), not
//! by the id alone: ids start again at 1 once every revision is gone, and a note must
//! never attach itself to a later revision that merely reuses an id. Notes of revisions
//! that no longer exist (pruned, consumed by a revert, deleted by hand) are ignored by
//! every reader and dropped at the volume's next operation; a volume that is removed
//! takes its notes with it. Adopting a volume starts without notes: nothing is
//! invented for files another driver made.
//!
//! A pinned revision is never pruned and does not count against `revisions_to_keep`
//! (see [`crate::revision::prune`]); a revert to it copies it (a reflink where the pool
//! has them) instead of consuming it. Removing the volume removes it.

use std::ops::Not;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::layout::Revision;
use crate::names::quote;

/// The longest description, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 256;

/// A revision's description as a caller gave it: at most [`DESCRIPTION_MAX_CHARS`]
/// characters, none of them a control character (a description is one line in a
/// table or a log). Empty means "no description".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(text: &str) -> Result<Description> {
        let chars = text.chars().count();
        if chars > DESCRIPTION_MAX_CHARS {
            return Err(EngineError::invalid(format!(
                "a revision description holds at most {DESCRIPTION_MAX_CHARS} characters, not {chars}"
            )));
        }
        if text.chars().any(char::is_control) {
            return Err(EngineError::invalid(format!(
                "a revision description is one line without control characters: {}",
                quote(text)
            )));
        }
        Ok(Description(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a caller changes in a revision's note; `None` leaves that part as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoteChange {
    pub description: Option<Description>,
    pub pinned: Option<bool>,
}

impl NoteChange {
    /// Changes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.description.is_none() && self.pinned.is_none()
    }
}

/// The note of one revision, as stored (the empty parts are left out of the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevisionNote {
    pub id: u64,
    /// The timestamp of the revision's file name (Unix seconds).
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Not::not")]
    pub pinned: bool,
}

impl RevisionNote {
    fn revision(&self) -> Revision {
        Revision {
            id: self.id,
            timestamp: self.timestamp,
        }
    }

    fn is_empty(&self) -> bool {
        self.description.is_empty() && !self.pinned
    }
}

/// A volume's notes, ordered by revision id; a note says something (a description or
/// a pin), or it is not kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RevisionNotes(Vec<RevisionNote>);

impl RevisionNotes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &RevisionNote> {
        self.0.iter()
    }

    /// The note of exactly this revision (id and timestamp).
    pub fn get(&self, revision: &Revision) -> Option<&RevisionNote> {
        self.0.iter().find(|n| n.revision() == *revision)
    }

    pub fn is_pinned(&self, revision: &Revision) -> bool {
        self.get(revision).is_some_and(|n| n.pinned)
    }

    /// The description of `revision` (empty without one).
    pub fn description(&self, revision: &Revision) -> &str {
        self.get(revision).map_or("", |n| n.description.as_str())
    }

    /// These notes with `change` applied to `revision`'s (a note left empty is dropped).
    /// A note of the same id with another timestamp belongs to a revision that is gone
    /// (only one revision has a given id at a time): it is dropped too.
    pub fn with(&self, revision: Revision, change: &NoteChange) -> RevisionNotes {
        let mut note = self.get(&revision).cloned().unwrap_or(RevisionNote {
            id: revision.id,
            timestamp: revision.timestamp,
            description: String::new(),
            pinned: false,
        });
        if let Some(description) = &change.description {
            note.description = description.as_str().to_owned();
        }
        if let Some(pinned) = change.pinned {
            note.pinned = pinned;
        }
        let mut notes: Vec<RevisionNote> = self
            .0
            .iter()
            .filter(|n| n.id != revision.id)
            .cloned()
            .collect();
        if !note.is_empty() {
            notes.push(note);
        }
        notes.sort_by_key(|n| (n.id, n.timestamp));
        RevisionNotes(notes)
    }

    /// Only the notes of `existing` revisions.
    pub fn retain_existing(&self, existing: &[Revision]) -> RevisionNotes {
        RevisionNotes(
            self.0
                .iter()
                .filter(|n| existing.contains(&n.revision()))
                .cloned()
                .collect(),
        )
    }

    /// The rules the loader applies to notes read from the state directory: one note
    /// per id, ordered by id, each saying something, descriptions as
    /// [`Description::parse`] accepts them.
    pub fn check(&self) -> Result<()> {
        for pair in self.0.windows(2) {
            if pair[0].id >= pair[1].id {
                return Err(EngineError::invalid(format!(
                    "the notes of revision {} are not in order of id or appear twice",
                    pair[1].id
                )));
            }
        }
        for note in &self.0 {
            if note.is_empty() {
                return Err(EngineError::invalid(format!(
                    "the note of revision {} says nothing",
                    note.id
                )));
            }
            Description::parse(&note.description).map_err(|e| {
                EngineError::invalid(format!("revision {}: {}", note.id, e.reason()))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(id: u64, timestamp: i64) -> Revision {
        Revision { id, timestamp }
    }

    fn describe(text: &str) -> NoteChange {
        NoteChange {
            description: Some(Description::parse(text).unwrap()),
            pinned: None,
        }
    }

    fn pin(pinned: bool) -> NoteChange {
        NoteChange {
            description: None,
            pinned: Some(pinned),
        }
    }

    #[test]
    fn a_note_belongs_to_the_id_and_the_timestamp() {
        let notes = RevisionNotes::default().with(rev(1, 100), &describe("before upgrade"));
        assert_eq!(notes.description(&rev(1, 100)), "before upgrade");
        assert_eq!(
            notes.description(&rev(1, 101)),
            "",
            "a reused id is another revision"
        );
    }

    #[test]
    fn changes_keep_the_other_part_and_an_empty_note_is_dropped() {
        let notes = RevisionNotes::default()
            .with(rev(2, 5), &describe("known good"))
            .with(rev(2, 5), &pin(true));
        assert!(notes.is_pinned(&rev(2, 5)));
        assert_eq!(notes.description(&rev(2, 5)), "known good");
        let notes = notes
            .with(rev(2, 5), &describe(""))
            .with(rev(2, 5), &pin(false));
        assert!(notes.is_empty());
    }

    #[test]
    fn a_note_of_a_gone_revision_with_the_same_id_is_replaced() {
        let notes = RevisionNotes::default()
            .with(rev(1, 100), &describe("old"))
            .with(rev(1, 200), &pin(true));
        assert_eq!(notes.iter().count(), 1);
        assert_eq!(notes.description(&rev(1, 200)), "");
        notes.check().unwrap();
    }

    #[test]
    fn notes_stay_ordered_by_id() {
        let notes = RevisionNotes::default()
            .with(rev(9, 1), &pin(true))
            .with(rev(3, 1), &pin(true))
            .with(rev(10, 1), &pin(true));
        let ids: Vec<u64> = notes.iter().map(|n| n.id).collect();
        assert_eq!(ids, [3, 9, 10]);
        notes.check().unwrap();
    }

    #[test]
    fn only_notes_of_existing_revisions_are_retained() {
        let notes = RevisionNotes::default()
            .with(rev(1, 1), &pin(true))
            .with(rev(2, 2), &pin(true));
        let kept = notes.retain_existing(&[rev(2, 2), rev(3, 3)]);
        assert!(!kept.is_pinned(&rev(1, 1)));
        assert!(kept.is_pinned(&rev(2, 2)));
    }

    #[test]
    fn long_or_multi_line_descriptions_are_refused() {
        let long = "é".repeat(DESCRIPTION_MAX_CHARS + 1);
        let err = Description::parse(&long).unwrap_err();
        assert!(err.to_string().contains("at most 256 characters"), "{err}");
        Description::parse(&"é".repeat(DESCRIPTION_MAX_CHARS)).unwrap();
        let err = Description::parse("two\nlines").unwrap_err();
        assert!(err.to_string().contains("control characters"), "{err}");
    }

    #[test]
    fn stored_notes_leave_out_what_they_do_not_say() {
        let notes = RevisionNotes::default()
            .with(rev(1, 7), &pin(true))
            .with(rev(2, 8), &describe("x"));
        let json = serde_json::to_string(&notes).unwrap();
        assert_eq!(
            json,
            r#"[{"id":1,"timestamp":7,"pinned":true},{"id":2,"timestamp":8,"description":"x"}]"#
        );
        let back: RevisionNotes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, notes);
    }

    #[test]
    fn the_loader_refuses_duplicates_empty_notes_and_bad_descriptions() {
        let parse = |json: &str| serde_json::from_str::<RevisionNotes>(json).unwrap();
        let twice =
            parse(r#"[{"id":1,"timestamp":1,"pinned":true},{"id":1,"timestamp":2,"pinned":true}]"#);
        assert!(twice.check().is_err());
        assert!(parse(r#"[{"id":1,"timestamp":1}]"#).check().is_err());
        let bad = parse(r#"[{"id":1,"timestamp":1,"description":"a\u0007b"}]"#);
        assert!(bad.check().unwrap_err().to_string().contains("revision 1"));
    }
}
