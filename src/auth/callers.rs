//! The uid of each caller, by unique bus name, for the root fast path.
//!
//! polkit authorizes uid 0 for every action without asking anyone, yet a question to
//! polkitd costs about 1 ms. So the authorizer first asks the bus for the caller's uid
//! (`org.freedesktop.DBus.GetConnectionUnixUser`, the `SO_PEERCRED` uid the bus
//! recorded when the caller connected — the same uid polkitd itself gets for a
//! `system-bus-name` subject) and skips polkit for uid 0. Every other uid still goes to
//! polkit on every call: nothing about polkit's answers is cached.
//!
//! The bus never reuses a unique name, so an entry can never describe another
//! connection; entries are dropped on `NameOwnerChanged(name, name, "")` only to bound
//! memory. A lookup that was in flight while its caller left can insert an entry after
//! the signal has been handled; [`MAX_CACHED_CALLERS`] bounds such leftovers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use futures_util::StreamExt;
use zbus::fdo::{DBusProxy, NameOwnerChangedStream};
use zbus::names::{BusName, UniqueName};
use zbus::proxy::CacheProperties;

/// When the map holds more entries than this, it is emptied and refilled on demand.
pub(crate) const MAX_CACHED_CALLERS: usize = 4096;

type UidMap = Mutex<HashMap<String, u32>>;

/// What the bus says of a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Connected with this uid.
    Uid(u32),
    /// Not on the bus (any more).
    Gone,
    /// The bus driver failed to answer (the error).
    Unknown(String),
    /// The bus driver cannot be asked at all (its proxy could not be made).
    Unasked,
}

/// Caller uids by unique name, forgotten when the caller disconnects.
pub(crate) struct CallerUids {
    bus: Option<DBusProxy<'static>>,
    uids: Arc<UidMap>,
    forgetter: Option<tokio::task::JoinHandle<()>>,
}

impl CallerUids {
    /// Subscribes to `NameOwnerChanged` on `conn`; without the subscription the cache
    /// still works, bounded by [`MAX_CACHED_CALLERS`].
    pub(crate) async fn watch(conn: &zbus::Connection) -> CallerUids {
        let uids = Arc::new(UidMap::default());
        let bus = DBusProxy::builder(conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .inspect_err(|error| tracing::warn!(%error, "cannot build the bus driver proxy"))
            .ok();
        let forgetter = match &bus {
            Some(bus) => subscribe_departures(bus, Arc::downgrade(&uids)).await,
            None => None,
        };
        CallerUids {
            bus,
            uids,
            forgetter,
        }
    }

    /// The uid `sender` connected with, or `None` if the bus cannot tell (gone, error).
    pub(crate) async fn uid_of(&self, sender: &UniqueName<'_>) -> Option<u32> {
        match self.lookup(sender).await {
            Caller::Uid(uid) => Some(uid),
            _ => None,
        }
    }

    /// What the bus says of `sender`.
    pub(crate) async fn lookup(&self, sender: &UniqueName<'_>) -> Caller {
        if let Some(uid) = self.cached(sender) {
            return Caller::Uid(uid);
        }
        let Some(bus) = self.bus.as_ref() else {
            return Caller::Unasked;
        };
        let name = BusName::Unique(sender.clone());
        match bus.get_connection_unix_user(name).await {
            Ok(uid) => {
                self.remember(sender, uid);
                Caller::Uid(uid)
            }
            Err(zbus::fdo::Error::NameHasNoOwner(_)) => Caller::Gone,
            Err(error) => {
                tracing::debug!(%error, sender = %sender, "caller uid unknown");
                Caller::Unknown(error.to_string())
            }
        }
    }

    /// How many callers are remembered now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.uids).len()
    }

    fn cached(&self, sender: &UniqueName<'_>) -> Option<u32> {
        lock(&self.uids).get(sender.as_str()).copied()
    }

    fn remember(&self, sender: &UniqueName<'_>, uid: u32) {
        let mut uids = lock(&self.uids);
        if uids.len() >= MAX_CACHED_CALLERS {
            uids.clear();
        }
        uids.insert(sender.as_str().to_owned(), uid);
    }
}

impl Drop for CallerUids {
    fn drop(&mut self) {
        if let Some(forgetter) = &self.forgetter {
            forgetter.abort();
        }
    }
}

/// Starts the task that forgets callers as they leave the bus.
async fn subscribe_departures(
    bus: &DBusProxy<'static>,
    uids: Weak<UidMap>,
) -> Option<tokio::task::JoinHandle<()>> {
    // arg2 = "": the name lost its owner. Unique names leave exactly this way.
    match bus.receive_name_owner_changed_with_args(&[(2, "")]).await {
        Ok(departures) => Some(tokio::spawn(forget_departed(departures, uids))),
        Err(error) => {
            tracing::warn!(%error, "cannot follow callers leaving the bus");
            None
        }
    }
}

async fn forget_departed(mut departures: NameOwnerChangedStream, uids: Weak<UidMap>) {
    while let Some(signal) = departures.next().await {
        let Ok(args) = signal.args() else { continue };
        let BusName::Unique(name) = args.name() else {
            continue;
        };
        let Some(uids) = uids.upgrade() else { return };
        lock(&uids).remove(name.as_str());
    }
}

/// The map is plain data: a panic while it was locked cannot leave it inconsistent.
fn lock(uids: &UidMap) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
    uids.lock().unwrap_or_else(PoisonError::into_inner)
}
