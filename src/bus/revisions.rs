//! The revision members of `org.qubes.Storage.Volume` added for issue 13 —
//! SetRevisionDetails, ExportDelta and the details a Stop may give the revision it
//! keeps — and the revision argument every member shares (`""` the highest, else an id
//! exactly as `Revisions` lists it). Each change goes through the pipeline like the
//! other volume methods; RevisionDetails and RevisionDetailsSet come from the
//! engine's view and events, as everything else does.

use std::sync::Arc;

use qubes_storage_engine::{Description, EngineError, Granularity, NoteChange, VolumeRef};

use crate::auth::Action;
use crate::bus::authz::Permission;
use crate::bus::call::{Answer, Call};
use crate::bus::error::{quote, BusResult};
use crate::bus::objects::VolumeObject;
use crate::bus::options::{Options, RawOptions};
use crate::bus::pipeline::Change;
use crate::bus::service::Service;

/// The keys of SetRevisionDetails' `details`.
const DETAIL_KEYS: [&str; 2] = ["description", "pinned"];
/// The options of Stop that describe the revision it keeps.
pub const STOP_KEYS: [&str; 2] = ["revision_description", "revision_pinned"];

/// SetRevisionDetails(s revision, a{sv} details, a{sv} options).
pub async fn set_details(
    svc: &Arc<Service>,
    call: &Call,
    object: &Arc<VolumeObject>,
) -> BusResult<Answer> {
    let (revision, details, raw): (String, RawOptions, RawOptions) = call.args()?;
    let options = Options::parse(raw, &[], &object.describe())?;
    let revision = parse_revision(&revision, &object.vol)?;
    let details = Options::parse_map(details, &DETAIL_KEYS, "detail", &object.describe())?;
    let change = note_change(&details, "description", "pinned", &object.vol)?;
    let vol = object.vol.clone();
    let permission = Permission::on_volume(
        Action::ManageVolumes,
        vol.pool.as_str(),
        &vol.vid.to_string(),
    );
    let change_of_volume = Change::method(permission, options.no_user_interaction());
    svc.change_volume(call, object, change_of_volume, move |e, ctx| {
        e.set_revision_details(&vol, revision, &change, ctx)
    })
    .await?;
    call.done()
}

/// The note a Stop's options give the revision it keeps (`None`: a plain stop).
pub fn stop_note(options: &Options, vol: &VolumeRef) -> BusResult<Option<NoteChange>> {
    let change = note_change(options, STOP_KEYS[0], STOP_KEYS[1], vol)?;
    Ok((!change.is_empty()).then_some(change))
}

/// A description under `description_key` and a pin under `pinned_key`, checked.
fn note_change(
    map: &Options,
    description_key: &str,
    pinned_key: &str,
    vol: &VolumeRef,
) -> BusResult<NoteChange> {
    let description = match map.string(description_key)? {
        Some(text) => Some(Description::parse(&text).map_err(|e| e.on(vol))?),
        None => None,
    };
    Ok(NoteChange {
        description,
        pinned: map.bool(pinned_key)?,
    })
}

/// ExportDelta(s base, a{sv} options) → (h fd, t size, a(tt) ranges).
pub async fn export_delta(
    svc: &Arc<Service>,
    call: &Call,
    object: &Arc<VolumeObject>,
) -> BusResult<Answer> {
    let (base, raw): (String, RawOptions) = call.args()?;
    let options = Options::parse(raw, &["granularity"], &object.describe())?;
    let base = parse_revision(&base, &object.vol)?;
    let granularity = match options.unsigned("granularity")? {
        Some(bytes) => Granularity::new(bytes).map_err(|e| e.on(&object.vol))?,
        None => Granularity::DEFAULT,
    };
    let vol = object.vol.clone();
    let permission = Permission::on_volume(Action::Export, vol.pool.as_str(), &vol.vid.to_string());
    let change = Change::method(permission, options.no_user_interaction());
    let exported = svc
        .change_volume(call, object, change, move |e, ctx| {
            e.export_delta(&vol, base, granularity, ctx)
        })
        .await?;
    let fd = zbus::OwnedFd::from(std::os::fd::OwnedFd::from(exported.file));
    call.reply(&(fd, exported.delta.size, exported.delta.ranges))
}

/// A revision argument: `""` is the highest id; otherwise a revision id exactly as
/// `Revisions` lists it (decimal digits, no sign, no leading zero). Anything else names
/// no revision: `NotFound`, like an unknown id (fix 7).
pub fn parse_revision(text: &str, vol: &VolumeRef) -> BusResult<Option<u64>> {
    if text.is_empty() {
        return Ok(None);
    }
    let canonical = text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    match text.parse() {
        Ok(id) if canonical => Ok(Some(id)),
        _ => Err(EngineError::not_found(format!(
            "has no revision {} (revision ids are the whole numbers from 1 up that Revisions lists, without leading zeros)",
            quote(text)
        ))
        .on(vol)
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qubes_storage_engine::{PoolName, Vid};

    fn vol() -> VolumeRef {
        VolumeRef {
            pool: PoolName::parse("p").unwrap(),
            vid: Vid::parse("appvms/a/private").unwrap(),
        }
    }

    #[test]
    fn empty_revision_is_the_latest() {
        assert_eq!(parse_revision("", &vol()).unwrap(), None);
        assert_eq!(parse_revision("12", &vol()).unwrap(), Some(12));
    }

    #[test]
    fn non_canonical_revisions_are_not_found() {
        for bad in ["012", "-1", "1e3", " 1", "x"] {
            let err = parse_revision(bad, &vol()).unwrap_err();
            assert_eq!(err.name(), "org.qubes.Storage.Error.NotFound", "{bad}");
        }
    }

    fn options(pairs: &[(&str, zbus::Variant<'_>)]) -> Options {
        let raw: RawOptions = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.try_to_owned().unwrap()))
            .collect();
        Options::parse(raw, &STOP_KEYS, &"volume x").unwrap()
    }

    #[test]
    fn a_stop_without_revision_options_is_a_plain_stop() {
        assert_eq!(stop_note(&options(&[]), &vol()).unwrap(), None);
        let note = stop_note(&options(&[("revision_pinned", true.into())]), &vol()).unwrap();
        assert_eq!(note.unwrap().pinned, Some(true));
    }

    #[test]
    fn a_description_with_a_newline_is_invalid_and_names_the_volume() {
        let bad = options(&[("revision_description", "a\nb".into())]);
        let err = stop_note(&bad, &vol()).unwrap_err();
        assert_eq!(err.name(), "org.qubes.Storage.Error.InvalidArgument");
        assert!(
            err.message().contains("appvms/a/private"),
            "{}",
            err.message()
        );
    }
}
