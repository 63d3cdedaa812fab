//! The D-Bus layer: the only code that knows object paths, D-Bus types and error
//! names. It turns calls into engine calls (on tokio's blocking pool), engine results
//! into replies, engine events into signals, and copies into Job objects. The contract
//! it implements is `docs/dbus-api.md`; the introspection of every interface is kept in
//! `dbus/*.xml` (a test compares them with the running service).

pub mod authz;
pub mod daemon;
pub mod departures;
pub mod error;
pub mod inflight;
pub mod job;
pub mod manager;
pub mod object_manager;
pub mod options;
pub mod path;
pub mod pool;
pub mod props;
pub mod registry;
pub mod service;
pub mod signals;
pub mod volume;

/// The well-known name of the service.
pub const BUS_NAME: &str = "org.qubes.Storage";
