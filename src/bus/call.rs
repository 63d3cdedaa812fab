//! One incoming method call as the handlers see it: its header, its arguments
//! (deserialised after the dispatcher checked their signature against the
//! introspection), who sent it, and how to answer it — a reply message built now, or a
//! read the outbox answers at its place in the sequence of announcements.

use serde::Serialize;
use zbus::message::{Flags, Header};
use zbus::names::OwnedUniqueName;
use zbus::wire::{DynamicDeserialize, DynamicType};
use zbus::Message;

use crate::bus::error::{BusError, BusResult};
use crate::bus::outbox::{Outgoing, ReadFn};
use crate::bus::registry::Registry;
use crate::bus::reply;

/// How a handler answers.
pub enum Answer {
    /// A reply built now (it reports no announced state, or the call changed state and
    /// its announcements are already queued ahead of it).
    Reply(Message),
    /// A reply built by the outbox from the announced state at its place in the sequence.
    Read(ReadFn),
}

impl Answer {
    /// The answer with `held` (e.g. the call's place among its user's calls in
    /// progress) kept until the reply is built: now for a reply, when the outbox builds
    /// it for a read.
    pub fn holding<T: Send + 'static>(self, held: T) -> Answer {
        match self {
            Answer::Reply(reply) => Answer::Reply(reply),
            Answer::Read(read) => Answer::Read(Box::new(move |registry| {
                let _held = held;
                read(registry)
            })),
        }
    }
}

/// An incoming method call.
pub struct Call {
    msg: Message,
    uid: u32,
}

impl Call {
    /// The call in `msg`, from a caller with `uid`.
    pub fn new(msg: Message, uid: u32) -> Call {
        Call { msg, uid }
    }

    /// The uid the caller connected with, as the dispatcher learnt it.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn header(&self) -> Header<'_> {
        self.msg.header()
    }

    pub fn message(&self) -> &Message {
        &self.msg
    }

    /// The member name, e.g. `Start`.
    pub fn member(&self) -> String {
        self.header()
            .member()
            .map(|m| m.to_string())
            .unwrap_or_default()
    }

    /// The caller's unique bus name.
    pub fn sender(&self) -> Option<OwnedUniqueName> {
        self.header().sender().map(|s| s.to_owned().into())
    }

    /// Whether the caller wants no reply.
    pub fn no_reply_expected(&self) -> bool {
        self.header()
            .primary()
            .flags()
            .contains(Flags::NO_REPLY_EXPECTED)
    }

    /// The arguments, as `T`. The dispatcher has checked the signature, so a failure
    /// here is a body that does not decode: `InvalidArgs`.
    pub fn args<T: for<'d> DynamicDeserialize<'d>>(&self) -> BusResult<T> {
        self.msg
            .body()
            .deserialize::<T>()
            .map_err(|err| BusError::invalid_args(format!("The arguments do not decode: {err}")))
    }

    /// The method return carrying `body` (refused if larger than the bus carries).
    pub fn reply<B: Serialize + DynamicType>(&self, body: &B) -> BusResult<Answer> {
        let what = self.member();
        reply::build(&self.header(), body, &what).map(Answer::Reply)
    }

    /// An empty method return.
    pub fn done(&self) -> BusResult<Answer> {
        self.reply(&())
    }

    /// A reply that `read` builds from the served objects when the outbox reaches it
    /// (`read` gets the registry and this call's message, to reply to).
    pub fn read<F>(&self, read: F) -> Answer
    where
        F: FnOnce(&Registry, &Message) -> BusResult<Message> + Send + 'static,
    {
        let msg = self.msg.clone();
        Answer::Read(Box::new(move |registry| {
            let answer = read(registry, &msg);
            outgoing(&msg, answer)
        }))
    }
}

/// A reply, or the error reply to `call`, ready for the outbox to send.
pub fn outgoing(call: &Message, answer: BusResult<Message>) -> Outgoing {
    let built = answer.or_else(|err| {
        err.reply_to(&call.header())
            .map_err(|e| BusError::failed(e.to_string()))
    });
    match built {
        Ok(message) => Outgoing::Ready(message),
        Err(err) => {
            tracing::error!(error = %err, "cannot build a reply");
            Outgoing::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A read's reply is built later by the outbox; what the answer holds (the call's
    /// place among its user's calls in progress) stays held until then.
    #[test]
    fn a_read_holds_what_it_was_given_until_its_reply_is_built() {
        let held = Arc::new(());
        let read = Answer::Read(Box::new(|_| Outgoing::Nothing)).holding(Arc::clone(&held));
        assert_eq!(
            Arc::strong_count(&held),
            2,
            "let go before the reply was built"
        );
        let Answer::Read(read) = read else {
            panic!("a read became a reply");
        };
        read(&Registry::default());
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "kept after the reply was built"
        );
    }
}
