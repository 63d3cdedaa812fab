//! Typed proxies for the contract's read side: the calls that need no authorization
//! (`GetPool`, `ListPools`, `GetVolume`, `ListVolumes`, `Verify`) and the Manager's
//! properties. Calls that polkit guards go through [`crate::client::Client::call`]
//! instead, which sets the ALLOW_INTERACTIVE_AUTHORIZATION header flag per run (a
//! `#[proxy]` method can only have that flag always or never).

use std::collections::HashMap;

use zbus::{proxy, OwnedObjectPath, Variant};

/// The trailing `a{sv} options` every method takes.
pub type Options = HashMap<&'static str, Variant<'static>>;

#[proxy(
    interface = "org.qubes.Storage.Manager",
    default_service = "org.qubes.Storage",
    default_path = "/org/qubes/Storage"
)]
pub trait Manager {
    fn get_pool(&self, name: &str, options: &Options) -> zbus::Result<OwnedObjectPath>;

    fn list_pools(&self, options: &Options) -> zbus::Result<Vec<OwnedObjectPath>>;

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
    fn get_volume(&self, vid: &str, options: &Options) -> zbus::Result<OwnedObjectPath>;

    fn list_volumes(&self, options: &Options) -> zbus::Result<Vec<OwnedObjectPath>>;
}

#[proxy(
    interface = "org.qubes.Storage.Volume",
    default_service = "org.qubes.Storage"
)]
pub trait Volume {
    fn verify(&self, options: &Options) -> zbus::Result<bool>;
}
