//! Replies that the bus can carry. dbus-daemon's default maximum message size is
//! 32 MiB; a larger message makes the bus disconnect the sender — the whole service,
//! with every call in flight. So a reply body is measured before it is built (without
//! allocating it), and one that would not fit is refused with
//! `org.freedesktop.DBus.Error.LimitsExceeded` instead (contract rev 2). The same holds
//! for every reply, whatever its method: a read of 100 000 volumes must never take the
//! service off the bus.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use zbus::message::Header;
use zbus::wire::serialized::Context;
use zbus::wire::{DynamicType, LE};
use zbus::Message;

use crate::bus::error::{BusError, Standard};

/// The largest message dbus-daemon accepts by default (`max_message_size`).
pub const BUS_MESSAGE_LIMIT: usize = 32 * 1024 * 1024;
/// Room left for the message header (path, interface, member, destination…).
const HEADER_ALLOWANCE: usize = 4 * 1024;

/// The largest message the bus carries, as configured (`--max-message-size`).
static LIMIT: AtomicUsize = AtomicUsize::new(BUS_MESSAGE_LIMIT);

/// Sets the largest message the bus carries (a bus configured with another
/// `max_message_size` than dbus-daemon's default).
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// The method return carrying `body`, or `LimitsExceeded` if it would be too large.
pub fn build<B>(header: &Header<'_>, body: &B, what: &str) -> Result<Message, BusError>
where
    B: Serialize + DynamicType,
{
    let size = zbus::wire::serialized_size(Context::new(LE, 0), body)
        .map_err(|err| BusError::failed(format!("Cannot encode the reply: {err}")))?;
    let size = *size;
    if size + HEADER_ALLOWANCE > limit() {
        return Err(too_large(what, size));
    }
    Message::method_return(header)
        .build(body)
        .map_err(|err| BusError::failed(format!("Cannot build the reply: {err}")))
}

fn too_large(what: &str, size: usize) -> BusError {
    BusError::standard(
        Standard::LimitsExceeded,
        format!(
            "The reply to {what} would be {} MiB, more than the bus carries ({} MiB); ask for less (per pool, per object)",
            size.div_ceil(1024 * 1024),
            limit().div_ceil(1024 * 1024)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Message {
        Message::method_call("/org/qubes/Storage", "ListPools")
            .sender(":1.1")
            .serial(std::num::NonZeroU32::new(7).unwrap())
            .build(&())
            .unwrap()
    }

    #[test]
    fn a_small_reply_is_built() {
        let msg = call();
        let reply = build(&msg.header(), &("x",), "ListPools").unwrap();
        assert_eq!(reply.body().deserialize::<String>().unwrap(), "x");
    }

    #[test]
    fn an_oversize_reply_is_limits_exceeded() {
        let msg = call();
        let big = vec!["y".repeat(1024); 40 * 1024];
        let err = build(&msg.header(), &(big,), "ListPools").unwrap_err();
        assert_eq!(err.name(), "org.freedesktop.DBus.Error.LimitsExceeded");
        assert!(err.message().contains("ListPools"), "{}", err.message());
    }
}
