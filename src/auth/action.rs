//! The polkit actions of the contract (`docs/dbus-api.md`, "Authorization") and the
//! words used to name them in messages and logs.
//!
//! The action ids here, the `<action id=…>` entries of
//! `polkit/org.qubes.storage.policy` and the contract table must agree; the test
//! `tests/auth.rs` reads the actions back from a running polkitd to check it.

use std::fmt;

/// One polkit action; every mutating D-Bus call is checked against exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// CreatePool, RemovePool, Pool property writes.
    ManagePools,
    /// CreateVolume, Remove, Resize, Revert, Volume property writes.
    ManageVolumes,
    /// Start, Stop.
    RunVolumes,
    /// ImportData, ImportDataEnd, ImportVolume.
    Import,
    /// Export.
    Export,
}

impl Action {
    /// Every action, in the order of the contract table.
    pub const ALL: [Action; 5] = [
        Action::ManagePools,
        Action::ManageVolumes,
        Action::RunVolumes,
        Action::Import,
        Action::Export,
    ];

    /// The polkit action id, as declared in `polkit/org.qubes.storage.policy`.
    pub fn id(self) -> &'static str {
        match self {
            Action::ManagePools => "org.qubes.storage.manage-pools",
            Action::ManageVolumes => "org.qubes.storage.manage-volumes",
            Action::RunVolumes => "org.qubes.storage.run-volumes",
            Action::Import => "org.qubes.storage.import",
            Action::Export => "org.qubes.storage.export",
        }
    }

    /// What the action allows, as a verb phrase: "Not authorized to <purpose> …".
    pub fn purpose(self) -> &'static str {
        match self {
            Action::ManagePools => "manage storage pools",
            Action::ManageVolumes => "manage volumes",
            Action::RunVolumes => "start or stop volumes",
            Action::Import => "import data into volumes",
            Action::Export => "export volume data",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_id_is_in_the_contract_namespace() {
        for action in Action::ALL {
            assert!(action.id().starts_with("org.qubes.storage."), "{action:?}");
        }
    }

    #[test]
    fn action_ids_are_distinct() {
        let mut ids: Vec<_> = Action::ALL.iter().map(|a| a.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Action::ALL.len());
    }
}
