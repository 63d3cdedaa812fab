//! Client proxies of the contract's interfaces, written from `docs/dbus-api.md` (not
//! from the service's code), so the tests check the contract rather than echo the
//! implementation. Properties are never cached: every read is a `Get` on the bus.

use std::collections::HashMap;

use zbus::{proxy, OwnedFd, OwnedObjectPath, OwnedVariant, Variant};

/// An `a{sv}` argument.
pub type Opts<'a> = HashMap<&'a str, Variant<'a>>;

#[proxy(
    interface = "org.qubes.Storage.Manager",
    default_service = "org.qubes.Storage",
    default_path = "/org/qubes/Storage"
)]
pub trait Manager {
    fn create_pool(
        &self,
        name: &str,
        driver: &str,
        options: Opts<'_>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn remove_pool(&self, name: &str, options: Opts<'_>) -> zbus::Result<()>;
    fn get_pool(&self, name: &str, options: Opts<'_>) -> zbus::Result<OwnedObjectPath>;
    fn list_pools(&self, options: Opts<'_>) -> zbus::Result<Vec<OwnedObjectPath>>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn drivers(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn features(&self) -> zbus::Result<Vec<String>>;
}

#[proxy(
    interface = "org.qubes.Storage.Pool",
    default_service = "org.qubes.Storage"
)]
pub trait Pool {
    fn create_volume(
        &self,
        vid: &str,
        config: Opts<'_>,
        options: Opts<'_>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn get_volume(&self, vid: &str, options: Opts<'_>) -> zbus::Result<OwnedObjectPath>;
    fn list_volumes(&self, options: Opts<'_>) -> zbus::Result<Vec<OwnedObjectPath>>;
    fn measure_space(&self, options: Opts<'_>) -> zbus::Result<Vec<(String, u64, u64)>>;
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn driver(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn dir_path(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn setup_check(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn revisions_to_keep(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn set_revisions_to_keep(&self, value: i32) -> zbus::Result<()>;
    #[zbus(property)]
    fn ephemeral_volatile(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn set_ephemeral_volatile(&self, value: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn usage_details(&self) -> zbus::Result<HashMap<String, OwnedVariant>>;
    #[zbus(property)]
    fn included_in(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.qubes.Storage.Volume",
    default_service = "org.qubes.Storage"
)]
pub trait Volume {
    fn start(&self, options: Opts<'_>) -> zbus::Result<String>;
    fn stop(&self, options: Opts<'_>) -> zbus::Result<()>;
    fn verify(&self, options: Opts<'_>) -> zbus::Result<bool>;
    fn remove(&self, options: Opts<'_>) -> zbus::Result<()>;
    fn revert(&self, revision: &str, options: Opts<'_>) -> zbus::Result<()>;
    fn resize(&self, size: u64, options: Opts<'_>) -> zbus::Result<()>;
    fn export(&self, options: Opts<'_>) -> zbus::Result<OwnedFd>;
    fn import_data(&self, size: u64, options: Opts<'_>) -> zbus::Result<OwnedFd>;
    fn import_data_end(&self, success: bool, options: Opts<'_>) -> zbus::Result<()>;
    fn import_volume(&self, source: &zbus::ObjectPath<'_>, options: Opts<'_>) -> zbus::Result<()>;
    fn set_revision_details(
        &self,
        revision: &str,
        details: Opts<'_>,
        options: Opts<'_>,
    ) -> zbus::Result<()>;
    fn measure_space(&self, options: Opts<'_>) -> zbus::Result<Vec<(String, String, u64, u64)>>;
    #[allow(clippy::type_complexity)]
    fn export_delta(
        &self,
        base: &str,
        options: Opts<'_>,
    ) -> zbus::Result<(OwnedFd, u64, Vec<(u64, u64)>)>;

    #[zbus(property)]
    fn vid(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn pool(&self) -> zbus::Result<OwnedObjectPath>;
    #[zbus(property)]
    fn size(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn usage(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn rw(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn set_rw(&self, value: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn snap_on_start(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn save_on_stop(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn source(&self) -> zbus::Result<OwnedObjectPath>;
    #[zbus(property)]
    fn revisions_to_keep(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn set_revisions_to_keep(&self, value: i32) -> zbus::Result<()>;
    #[zbus(property)]
    fn ephemeral(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn set_ephemeral(&self, value: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn snapshots_disabled(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn is_dirty(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn is_outdated(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn started(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn revisions(&self) -> zbus::Result<Vec<(String, i64)>>;
    #[allow(clippy::type_complexity)]
    #[zbus(property)]
    fn revision_details(&self) -> zbus::Result<Vec<(String, i64, u32, String, bool, i64)>>;
    #[zbus(property)]
    fn block_device_path(&self) -> zbus::Result<String>;

    #[zbus(signal)]
    fn volume_started(&self, block_device_path: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn volume_stopped(&self, committed: bool) -> zbus::Result<()>;
    #[zbus(signal)]
    fn revision_added(&self, id: String, timestamp: i64) -> zbus::Result<()>;
    #[zbus(signal)]
    fn revision_pruned(&self, id: String, timestamp: i64) -> zbus::Result<()>;
    #[zbus(signal)]
    fn volume_reverted(&self, id: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn volume_resized(&self, old_size: u64, new_size: u64) -> zbus::Result<()>;
    #[zbus(signal)]
    fn volume_imported(&self, success: bool) -> zbus::Result<()>;
    #[zbus(signal)]
    fn revision_details_set(
        &self,
        id: String,
        description: String,
        pinned: bool,
    ) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.qubes.Storage.Job",
    default_service = "org.qubes.Storage"
)]
pub trait Job {
    fn cancel(&self, options: Opts<'_>) -> zbus::Result<()>;
    #[zbus(property)]
    fn operation(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn objects(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn bytes_total(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn bytes_done(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn rate(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn start_time(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn cancelable(&self) -> zbus::Result<bool>;
    #[zbus(property, name = "StartedByUID")]
    fn started_by_uid(&self) -> zbus::Result<u32>;
    #[zbus(signal)]
    fn completed(&self, success: bool, message: String) -> zbus::Result<()>;
}
