//! The connection to the storage service and the one way calls are made.
//!
//! Authorization: when stdin is a terminal, every call carries the D-Bus header flag
//! ALLOW_INTERACTIVE_AUTHORIZATION, so polkit may ask for a password (the service
//! passes the flag on to `CheckAuthorization`). `--no-interaction` drops the flag and
//! sends the option `auth.no_user_interaction = true` instead; a call that would need
//! a password then fails with `InteractiveAuthorizationRequired` (exit status 9).
//! Without a terminal neither is sent: polkit decides without asking.

use std::collections::HashMap;

use zbus::proxy::MethodFlags;
use zbus::{Connection, DynamicType, OwnedObjectPath, Proxy, Variant};

use crate::args::BusChoice;
use crate::error::{CliError, Result};
use crate::model::VolumeInfo;
use crate::paths::{PROPERTIES_IFACE, ROOT_PATH, SERVICE, VOLUME_IFACE};
use crate::props::PropertyMap;
use crate::proxies::{ManagerProxy, Options, PoolProxy};

/// Whether polkit may ask the user for a password during this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    /// On a terminal: set the ALLOW_INTERACTIVE_AUTHORIZATION flag.
    Allowed,
    /// `--no-interaction`: send `auth.no_user_interaction = true`.
    Forbidden,
    /// No terminal: send neither.
    Unavailable,
}

impl Interaction {
    pub fn choose(no_interaction: bool, stdin_is_terminal: bool) -> Interaction {
        match (no_interaction, stdin_is_terminal) {
            (true, _) => Interaction::Forbidden,
            (false, true) => Interaction::Allowed,
            (false, false) => Interaction::Unavailable,
        }
    }

    /// What to do when polkit wanted a password this run could not ask for.
    fn authentication_hint(self) -> &'static str {
        match self {
            Interaction::Forbidden => "run it again without --no-interaction to authenticate",
            Interaction::Unavailable => {
                "run it from a terminal to authenticate, or let a polkit rule allow it"
            }
            Interaction::Allowed => "no polkit authentication agent could ask for a password",
        }
    }

    fn flags(self) -> MethodFlags {
        match self {
            Interaction::Allowed => MethodFlags::ALLOW_INTERACTIVE_AUTH,
            Interaction::Forbidden | Interaction::Unavailable => MethodFlags::empty(),
        }
    }
}

/// Every object and interface the service exports, with its properties.
pub type ManagedObjects = HashMap<OwnedObjectPath, HashMap<String, PropertyMap>>;

pub struct Client {
    connection: Connection,
    interaction: Interaction,
}

impl Client {
    pub async fn connect(bus: &BusChoice, interaction: Interaction) -> Result<Client> {
        let builder = match bus {
            BusChoice::System => zbus::connection::Builder::system(),
            BusChoice::Session => zbus::connection::Builder::session(),
            BusChoice::Address(address) => zbus::connection::Builder::address(address.as_str()),
        };
        let connection = builder.build().await.map_err(|error| {
            CliError::Unreachable(format!("cannot connect to {}: {error}", describe_bus(bus)))
        })?;
        Ok(Client {
            connection,
            interaction,
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// A fresh options map, holding `auth.no_user_interaction` under `--no-interaction`.
    pub fn options(&self) -> Options {
        let mut options = Options::new();
        if self.interaction == Interaction::Forbidden {
            options.insert("auth.no_user_interaction", Variant::from(true));
        }
        options
    }

    /// Calls `method` on the service with this run's authorization flag.
    pub async fn call<B, R>(&self, path: &str, interface: &str, method: &str, body: &B) -> Result<R>
    where
        B: serde::Serialize + DynamicType,
        R: for<'d> zbus::wire::DynamicDeserialize<'d>,
    {
        tracing::debug!(path, interface, method, interaction = ?self.interaction, "call");
        let proxy = Proxy::new(&self.connection, SERVICE, path, interface).await?;
        let reply = proxy
            .call_with_flags(method, self.interaction.flags(), body)
            .await
            .map_err(|error| {
                CliError::from(error)
                    .with_authentication_hint(self.interaction.authentication_hint())
            })?;
        reply.ok_or_else(|| CliError::Protocol(format!("no reply to {method}")))
    }

    pub async fn manager(&self) -> Result<ManagerProxy<'static>> {
        Ok(ManagerProxy::new(&self.connection).await?)
    }

    /// The pool's object path, as the service names it (`NotFound` when absent).
    pub async fn pool_path(&self, pool: &str) -> Result<OwnedObjectPath> {
        Ok(self
            .manager()
            .await?
            .get_pool(pool, &self.options())
            .await?)
    }

    /// The volume's object path, as the service names it.
    pub async fn volume_path(&self, pool: &str, vid: &str) -> Result<OwnedObjectPath> {
        let pool = self.pool_proxy(&self.pool_path(pool).await?).await?;
        Ok(pool.get_volume(vid, &self.options()).await?)
    }

    pub async fn pool_proxy(&self, path: &OwnedObjectPath) -> Result<PoolProxy<'static>> {
        Ok(PoolProxy::builder(&self.connection)
            .path(path.clone())
            .build()
            .await?)
    }

    /// The volumes of the pool at `path` (ListVolumes); none when the pool went away
    /// since it was listed.
    pub async fn volumes_of(&self, path: &OwnedObjectPath) -> Result<Vec<OwnedObjectPath>> {
        let pool = self.pool_proxy(path).await?;
        match pool
            .list_volumes(&self.options())
            .await
            .map_err(CliError::from)
        {
            Err(CliError::Service { name, .. }) if name.ends_with(".UnknownObject") => {
                Ok(Vec::new())
            }
            listed => listed,
        }
    }

    /// The path of volume `vid` of `pool` and its properties.
    pub async fn volume_info(
        &self,
        pool: &str,
        vid: &str,
    ) -> Result<(OwnedObjectPath, VolumeInfo)> {
        let path = self.volume_path(pool, vid).await?;
        let properties = self.properties(path.as_str(), VOLUME_IFACE).await?;
        let info = VolumeInfo::from_properties(path.as_str(), &properties);
        Ok((path, info))
    }

    /// All properties of one interface of one object.
    pub async fn properties(&self, path: &str, interface: &str) -> Result<PropertyMap> {
        self.call(path, PROPERTIES_IFACE, "GetAll", &(interface,))
            .await
    }

    /// Writes one property, with this run's authorization flag.
    pub async fn set_property(
        &self,
        path: &str,
        interface: &str,
        name: &str,
        value: Variant<'_>,
    ) -> Result<()> {
        self.call(path, PROPERTIES_IFACE, "Set", &(interface, name, value))
            .await
    }

    /// Everything the service exports, in one round trip.
    pub async fn managed_objects(&self) -> Result<ManagedObjects> {
        let interface = "org.freedesktop.DBus.ObjectManager";
        self.call(ROOT_PATH, interface, "GetManagedObjects", &())
            .await
    }
}

fn describe_bus(bus: &BusChoice) -> String {
    match bus {
        BusChoice::System => "the system bus".to_owned(),
        BusChoice::Session => "the session bus".to_owned(),
        BusChoice::Address(address) => format!("the bus at {address}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_allows_interaction_unless_forbidden() {
        assert_eq!(Interaction::choose(false, true), Interaction::Allowed);
        assert_eq!(Interaction::choose(true, true), Interaction::Forbidden);
        assert_eq!(Interaction::choose(false, false), Interaction::Unavailable);
    }

    #[test]
    fn authentication_hint_names_only_what_the_user_did() {
        assert!(Interaction::Forbidden
            .authentication_hint()
            .contains("--no-interaction"));
        assert!(!Interaction::Unavailable
            .authentication_hint()
            .contains("--no-interaction"));
    }

    #[test]
    fn only_allowed_interaction_sets_the_header_flag() {
        assert_eq!(
            Interaction::Allowed.flags(),
            MethodFlags::ALLOW_INTERACTIVE_AUTH
        );
        assert!(Interaction::Forbidden.flags().is_empty());
        assert!(Interaction::Unavailable.flags().is_empty());
    }
}
