//! The D-Bus layer: the only code that knows object paths, D-Bus types and error
//! names. It turns calls into engine calls (off the executor, `Service::blocking`),
//! engine results into replies, engine events into signals, and copies into Job
//! objects. The contract it implements is `docs/dbus-api.md`; the interfaces are
//! described once, in `dbus/*.xml`, which the service embeds and serves.
//!
//! How the files stack (each imports only those below it):
//!
//! - `daemon` — start-up and shutdown;
//! - `dispatch` — routes each call to its handler;
//! - handlers: `properties` (+ `setters`), `manager`, `pool`, `volume` (+ `revisions`,
//!   `space`), `job`, `object_manager`, `standard`; and `departures` (callers leaving
//!   the bus);
//! - `pipeline` — authorize → gate → engine → refresh → signals, for every change;
//! - `jobs`, `refresh`, `live`, `service`, `call`, `authz`;
//! - `outbox` — the one sender of signals and replies, in order;
//! - `engine_places` — how many engine operations run at once;
//! - `registry`, `objects`, `signals`, `reply`, `values`, `interfaces`, `options`,
//!   `path`, `inflight`, `admission`, `error`.

pub mod admission;
pub mod authz;
pub mod call;
pub mod daemon;
pub mod departures;
pub mod dispatch;
pub mod engine_places;
pub mod error;
pub mod inflight;
pub mod interfaces;
pub mod job;
pub mod jobs;
pub mod live;
pub mod manager;
pub mod object_manager;
pub mod objects;
pub mod options;
pub mod outbox;
pub mod path;
pub mod pipeline;
pub mod pool;
pub mod properties;
pub mod refresh;
pub mod registry;
pub mod reply;
pub mod revisions;
pub mod service;
pub mod setters;
pub mod signals;
pub mod space;
pub mod standard;
pub mod values;
pub mod volume;

/// The well-known name of the service.
pub const BUS_NAME: &str = "org.qubes.Storage";
