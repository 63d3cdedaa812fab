//! qubes-storaged: Qubes OS-style VM storage (the `file-reflink` driver's semantics)
//! as a D-Bus system service. The storage engine (crate `qubes-storage-engine`) does the
//! file work and knows nothing about D-Bus; this crate puts it on the bus:
//!
//! - [`bus`]: the `org.qubes.Storage` objects, their methods, properties and signals,
//!   Job objects for long copies, and the daemon's startup and shutdown;
//! - [`auth`]: polkit authorization of every mutating call;
//! - [`memory`]: the allocator policy that gives large replies' memory back;
//! - [`open_files`]: the limit of open files, raised for calls that carry descriptors;
//! - [`user_gate`]: work admitted a few at a time per user and for all users.

pub mod auth;
pub mod bus;
pub mod memory;
pub mod open_files;
pub mod user_gate;
