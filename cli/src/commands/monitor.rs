//! `qubes-storage monitor [POOL [VID]]`: one line per signal of the service, as it
//! happens, like `udisksctl monitor` — or one JSON object per line with `--json`.
//!
//! Scope: everything, one pool (its own object and everything below it:
//! `path_namespace=`), or one volume (`path=`). The volume's path is encoded here, so
//! a volume can be watched before it exists. Jobs are shown when their `Objects` name
//! something in scope (jobs already running are learnt from `GetManagedObjects` at
//! start). Service (re)starts show as `service appeared`/`service vanished`. A line on
//! stderr says when the subscriptions are in place (scripts can wait for it).

use std::collections::HashMap;
use std::io::Write;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value as Json;
use zbus::Message;

use super::Context;
use crate::args::MonitorArgs;
use crate::error::{CliError, Result};
use crate::model::JobInfo;
use crate::output::iso_utc;
use crate::paths::{self, Subject, JOB_IFACE, ROOT_PATH};
use crate::props::map_to_json;
use crate::signals::{self, PathScope};

/// Argument names of the contract's signals, for `name=value` output.
fn argument_names(member: &str) -> &'static [&'static str] {
    match member {
        "VolumeStarted" => &["block_device_path"],
        "VolumeStopped" => &["committed"],
        "RevisionAdded" | "RevisionPruned" => &["id", "timestamp"],
        "VolumeReverted" => &["id"],
        "RevisionDetailsSet" => &["id", "description", "pinned"],
        "VolumeResized" => &["old_size", "new_size"],
        "VolumeImported" => &["success"],
        "Completed" => &["success", "message"],
        _ => &[],
    }
}

/// Named values in the order the signal carries them (serde_json's map would sort).
#[derive(Debug, Default, PartialEq)]
struct Args(Vec<(String, Json)>);

#[cfg(test)]
impl Args {
    fn get(&self, name: &str) -> Option<&Json> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

impl Serialize for Args {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// One line of output.
#[derive(Debug, Serialize, PartialEq)]
struct Event {
    time: String,
    /// The object the event is about (for InterfacesAdded: the added object).
    path: String,
    subject: String,
    event: String,
    args: Args,
    /// What a job works on, shown after its subject in text (`job 5 (clone p:vid)`):
    /// its Completed line would otherwise not say whose operation ended.
    #[serde(skip)]
    about: Option<String>,
}

impl Event {
    fn new(path: &str, event: &str, args: Args) -> Event {
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let subject = Subject::of_path(path).to_string();
        Event {
            time,
            path: path.to_owned(),
            subject,
            event: event.to_owned(),
            args,
            about: None,
        }
    }

    /// `12:00:01.123 pool:appvms/a/private VolumeStarted block_device_path=/...`
    fn to_line(&self) -> String {
        let clock = chrono::Local::now().format("%H:%M:%S%.3f");
        let mut line = match &self.about {
            Some(about) => format!("{clock} {} ({about}) {}", self.subject, self.event),
            None => format!("{clock} {} {}", self.subject, self.event),
        };
        for (name, value) in &self.args.0 {
            line.push_str(&format!(" {name}={}", show_named(name, value)));
        }
        line
    }
}

/// A job's operation as people call it: the service names the method (a clone is
/// `ImportVolume`, the commit of an import `ImportDataEnd`); `--json` keeps that name.
fn operation_name(method: &str) -> &str {
    match method {
        "ImportVolume" => "clone",
        "ImportData" | "ImportDataEnd" => "import",
        "Resize" => "resize",
        "MeasureSpace" => "measure",
        "ExportDelta" => "delta",
        other => other,
    }
}

/// A named value as people read it: a job's operation by its everyday name, its
/// progress in percent, times as ISO 8601 instead of the Unix seconds the bus carries
/// (`--json` keeps the values as they are).
fn show_named(name: &str, value: &Json) -> String {
    match (name, value) {
        ("Operation", Json::String(method)) => operation_name(method).to_owned(),
        ("Progress", Json::Number(fraction)) => fraction
            .as_f64()
            .map_or_else(|| show(value), |f| format!("{:.1}%", f * 100.0)),
        ("timestamp", Json::Number(seconds)) => {
            seconds.as_i64().map_or_else(|| show(value), iso_utc)
        }
        ("Revisions" | "RevisionDetails", Json::Array(revisions)) => revisions
            .iter()
            .map(show_revision)
            .collect::<Vec<_>>()
            .join(","),
        _ => show(value),
    }
}

/// One revision of Revisions `(id, timestamp)` or RevisionDetails `(id, timestamp,
/// nanoseconds, description, pinned, exclusive)`: `5@2026-12-07T20:22:42Z`, then
/// `/pinned` and the description when it has them.
fn show_revision(revision: &Json) -> String {
    let Some(fields) = revision.as_array() else {
        return show(revision);
    };
    let (Some(id), Some(seconds)) = (
        fields.first().and_then(Json::as_str),
        fields.get(1).and_then(Json::as_i64),
    ) else {
        return show(revision);
    };
    let mut shown = format!("{id}@{}", iso_utc(seconds));
    if fields.get(4).and_then(Json::as_bool) == Some(true) {
        shown.push_str("/pinned");
    }
    match fields.get(3).and_then(Json::as_str) {
        Some(description) if !description.is_empty() => {
            shown.push('/');
            shown.push_str(&show(&Json::from(description)));
        }
        _ => {}
    }
    shown
}

/// A JSON value as people read it: strings bare (quoted only when empty or spaced).
fn show(value: &Json) -> String {
    match value {
        Json::String(text) if text.is_empty() || text.contains(' ') => format!("{text:?}"),
        Json::String(text) => text.clone(),
        Json::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Which objects are in scope, and the jobs working on them (with what each does, in
/// words: `clone p:vm-templates/t/private, q:appvms/a/private`).
struct Scope {
    path: Option<PathScope>,
    jobs: HashMap<String, String>,
}

impl Scope {
    fn new(args: &MonitorArgs) -> Scope {
        let path = match (&args.pool, &args.vid) {
            (Some(pool), Some(vid)) => Some(PathScope::Exact(paths::volume_path(pool, vid))),
            (Some(pool), None) => Some(PathScope::Namespace(paths::pool_path(pool))),
            _ => None,
        };
        Scope {
            path,
            jobs: HashMap::new(),
        }
    }

    /// What is watched, for the greeting on stderr.
    fn describe(&self) -> String {
        match &self.path {
            None | Some(PathScope::All) => "the storage service".to_owned(),
            Some(PathScope::Exact(path) | PathScope::Namespace(path)) => {
                Subject::of_path(path).to_string()
            }
        }
    }

    fn rule_scope(&self) -> PathScope {
        self.path.clone().unwrap_or(PathScope::All)
    }

    fn covers(&self, path: &str) -> bool {
        match &self.path {
            None | Some(PathScope::All) => true,
            Some(PathScope::Exact(exact)) => path == exact,
            Some(PathScope::Namespace(namespace)) => paths::is_in_namespace(path, namespace),
        }
    }

    fn includes(&self, path: &str) -> bool {
        self.covers(path) || self.jobs.contains_key(path)
    }

    /// The words a job's lines carry after its subject.
    fn about(&self, path: &str) -> Option<String> {
        self.jobs.get(path).cloned()
    }

    /// Starts following a job when it works on something in scope.
    fn consider_job(&mut self, path: &str, job: &JobInfo) -> bool {
        if self.covers(path) || job.objects.iter().any(|object| self.covers(object)) {
            self.jobs.insert(path.to_owned(), describe_job(job));
        }
        self.jobs.contains_key(path)
    }
}

/// `clone p:vm-templates/t/private to q:appvms/a/private`: the operation and the
/// objects it works on, as people name them — a Job names its target first, then its
/// source, which reads the other way round (`volume clone SRC DST`).
fn describe_job(job: &JobInfo) -> String {
    let objects: Vec<String> = job
        .objects
        .iter()
        .map(|object| Subject::of_path(object).to_string())
        .collect();
    let operation = operation_name(&job.operation);
    match objects.as_slice() {
        [] => operation.to_owned(),
        [target] => format!("{operation} {target}"),
        [target, source, ..] => format!("{operation} {source} to {target}"),
    }
}

pub async fn run(context: &Context, args: MonitorArgs) -> Result<()> {
    let mut scope = Scope::new(&args);
    let rules = vec![
        signals::volume_signals(&scope.rule_scope())?,
        signals::properties_changed(ROOT_PATH)?,
        signals::object_manager_signals()?,
        signals::job_signals()?,
        signals::service_owner_changes()?,
    ];
    let mut stream = signals::subscribe(context.client.connection(), rules).await?;
    learn_running_jobs(context, &mut scope).await?;
    check_names(context, &args).await?;
    crate::output::say(format_args!(
        "Monitoring {}; press Ctrl-C to stop.",
        scope.describe()
    ));
    let mut stdout = std::io::stdout().lock();
    let mut pace = ProgressPace::default();
    while let Some(message) = stream.next().await {
        for event in events_of(&mut scope, &message) {
            if !context.json && !pace.shows(&event, std::time::Instant::now()) {
                continue;
            }
            let line = if context.json {
                serde_json::to_string(&event).unwrap_or_default()
            } else {
                event.to_line()
            };
            if let Err(error) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
                return stopped_writing(error);
            }
        }
    }
    Ok(())
}

/// The pool and volume named are asked for (after subscribing, so nothing created
/// meanwhile is missed): a name the service refuses (`../x`, `a b`) ends the monitor
/// with its error instead of watching for nothing forever; one it does not know is
/// said on stderr, and watched for (its events show once it is created).
async fn check_names(context: &Context, args: &MonitorArgs) -> Result<()> {
    let Some(pool) = &args.pool else {
        return Ok(());
    };
    let found = match &args.vid {
        Some(vid) => context.client.volume_path(pool, vid).await.map(drop),
        None => context.client.pool_path(pool).await.map(drop),
    };
    match found {
        Err(CliError::Service { name, message }) if name.ends_with(".NotFound") => {
            crate::output::say(format_args!(
                "note: {message}; its events show once it is created"
            ));
            Ok(())
        }
        other => other,
    }
}

/// How often a job's progress is shown in text: a job announces it ten times a second,
/// which scrolls everything else away. `--json` keeps every change.
const PROGRESS_LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// When each job's progress was last shown.
#[derive(Default)]
struct ProgressPace {
    shown: HashMap<String, std::time::Instant>,
}

impl ProgressPace {
    /// Whether to show `event` at `now`: every event but a job's progress alone, and
    /// that at most once per [`PROGRESS_LINE_EVERY`] per job.
    fn shows(&mut self, event: &Event, now: std::time::Instant) -> bool {
        let progress_only = event.event == "changed"
            && event.subject.starts_with("job ")
            && event
                .args
                .0
                .iter()
                .all(|(name, _)| matches!(name.as_str(), "Progress" | "BytesDone" | "Rate"));
        if !progress_only {
            if event.event == "removed" {
                self.shown.remove(&event.path);
            }
            return true;
        }
        match self.shown.get(&event.path) {
            Some(last) if now.duration_since(*last) < PROGRESS_LINE_EVERY => false,
            _ => {
                self.shown.insert(event.path.clone(), now);
                true
            }
        }
    }
}

/// A reader that went away (`| head`) ends the monitor quietly.
fn stopped_writing(error: std::io::Error) -> Result<()> {
    match error.kind() {
        std::io::ErrorKind::BrokenPipe => Ok(()),
        _ => Err(CliError::io("cannot write to stdout", error)),
    }
}

/// Jobs that were already running when the monitor started; none when the service
/// is not running yet (the monitor then waits for it), or when it has more objects than
/// one listing carries (100 000 volumes): then only the jobs that start from now on are
/// shown, which the greeting says.
async fn learn_running_jobs(context: &Context, scope: &mut Scope) -> Result<()> {
    let objects = match context.client.managed_objects().await {
        Ok(objects) => objects,
        Err(CliError::Unreachable(_)) => return Ok(()),
        Err(error) if error.is_listing_too_large() => {
            crate::output::say(format_args!(
                "(the service has too many objects to list at once: jobs already running are not shown, new ones are)"
            ));
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    for (path, interfaces) in &objects {
        if let Some(properties) = interfaces.get(JOB_IFACE) {
            scope.consider_job(path.as_str(), &JobInfo::from_properties(properties));
        }
    }
    Ok(())
}

/// The lines one message becomes (none when out of scope).
fn events_of(scope: &mut Scope, message: &Message) -> Vec<Event> {
    let header = message.header();
    let (Some(path), Some(member)) = (header.path(), header.member()) else {
        return Vec::new();
    };
    let (path, member) = (path.as_str().to_owned(), member.as_str().to_owned());
    match member.as_str() {
        "InterfacesAdded" => interfaces_added(scope, message),
        "InterfacesRemoved" => interfaces_removed(scope, message),
        "NameOwnerChanged" => owner_changed(message),
        "PropertiesChanged" if scope.includes(&path) => {
            properties_changed(&path, message, scope.about(&path))
        }
        _ if scope.includes(&path) => {
            let mut event = Event::new(&path, &member, named_args(&member, message));
            event.about = scope.about(&path);
            vec![event]
        }
        _ => Vec::new(),
    }
}

fn named_args(member: &str, message: &Message) -> Args {
    let names = argument_names(member);
    let values = signals::body_as_json(message).into_iter().enumerate();
    let named = values.map(|(index, value)| match names.get(index) {
        Some(name) => ((*name).to_owned(), value),
        None => (format!("arg{index}"), value),
    });
    Args(named.collect())
}

fn interfaces_added(scope: &mut Scope, message: &Message) -> Vec<Event> {
    let Some((path, interfaces)) = signals::interfaces_added(message) else {
        return Vec::new();
    };
    if let Some(job) = interfaces.get(JOB_IFACE) {
        if !scope.consider_job(&path, &JobInfo::from_properties(job)) {
            return Vec::new();
        }
    } else if !scope.covers(&path) {
        return Vec::new();
    }
    let mut args = Args::default();
    for properties in interfaces.values() {
        if let Json::Object(map) = map_to_json(properties) {
            let summary = map
                .into_iter()
                .filter(|(name, value)| is_summary_property(name) && !is_no_source(name, value));
            args.0.extend(summary);
        }
    }
    let mut event = Event::new(&path, "added", args);
    event.about = scope.about(&path);
    vec![event]
}

/// The few properties worth a word when an object appears: what a job does, where a
/// pool is, and what kind of volume appeared (its size, whether it is writable, what
/// its stop and start do, its source).
fn is_summary_property(name: &str) -> bool {
    matches!(
        name,
        "Operation"
            | "Objects"
            | "BytesTotal"
            | "Size"
            | "Rw"
            | "SaveOnStop"
            | "SnapOnStart"
            | "Source"
            | "DirPath"
            | "Driver"
    )
}

/// A volume without a source (its `Source` is the path `/`): nothing to show.
fn is_no_source(name: &str, value: &Json) -> bool {
    name == "Source" && value.as_str() == Some("/")
}

fn interfaces_removed(scope: &mut Scope, message: &Message) -> Vec<Event> {
    let Some((path, _)) = signals::interfaces_removed(message) else {
        return Vec::new();
    };
    if !scope.includes(&path) {
        return Vec::new();
    }
    let mut event = Event::new(&path, "removed", Args::default());
    event.about = scope.jobs.remove(&path);
    vec![event]
}

fn properties_changed(path: &str, message: &Message, about: Option<String>) -> Vec<Event> {
    let Some((_, changed, invalidated)) = signals::properties_changed_body(message) else {
        return Vec::new();
    };
    let Json::Object(changed) = map_to_json(&changed) else {
        return Vec::new();
    };
    let mut args = Args(changed.into_iter().collect());
    for name in invalidated {
        args.0.push((name, Json::from("<invalidated>")));
    }
    let mut event = Event::new(path, "changed", args);
    event.about = about;
    vec![event]
}

fn owner_changed(message: &Message) -> Vec<Event> {
    let Ok((name, _old, new)) = message.body().deserialize::<(String, String, String)>() else {
        return Vec::new();
    };
    let event = if new.is_empty() {
        "vanished"
    } else {
        "appeared"
    };
    let mut event = Event::new(ROOT_PATH, event, Args::default());
    event.subject = format!("service {name}");
    vec![event]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zbus::{ObjectPath, Variant};

    use crate::paths::{OBJECT_MANAGER_IFACE, PROPERTIES_IFACE, VOLUME_IFACE};

    fn scope(pool: Option<&str>, vid: Option<&str>) -> Scope {
        Scope::new(&MonitorArgs {
            pool: pool.map(Into::into),
            vid: vid.map(Into::into),
        })
    }

    fn volume_signal(
        pool: &str,
        vid: &str,
        member: &str,
        body: &(impl serde::Serialize + zbus::DynamicType),
    ) -> Message {
        Message::signal(paths::volume_path(pool, vid), VOLUME_IFACE, member)
            .build(body)
            .unwrap()
    }

    /// PropertiesChanged of the volume `p:appvms/a/b`.
    fn volume_changed(changed: HashMap<&str, Variant<'_>>) -> Message {
        Message::signal(
            paths::volume_path("p", "appvms/a/b"),
            PROPERTIES_IFACE,
            "PropertiesChanged",
        )
        .build(&(VOLUME_IFACE, changed, Vec::<&str>::new()))
        .unwrap()
    }

    fn job_added(job: &str, objects: &[String]) -> Message {
        let objects: Vec<ObjectPath<'_>> = objects
            .iter()
            .map(|o| ObjectPath::try_from(o.as_str()).unwrap())
            .collect();
        let props: HashMap<&str, Variant<'_>> = HashMap::from([
            ("Operation", Variant::from("clone")),
            ("Objects", Variant::from(objects)),
        ]);
        let interfaces = HashMap::from([(JOB_IFACE, props)]);
        Message::signal(ROOT_PATH, OBJECT_MANAGER_IFACE, "InterfacesAdded")
            .build(&(ObjectPath::try_from(job).unwrap(), interfaces))
            .unwrap()
    }

    #[test]
    fn a_clone_job_reads_as_a_clone_in_text_and_keeps_its_method_in_json() {
        let args = Args(vec![("Operation".to_owned(), Json::from("ImportVolume"))]);
        let event = Event::new("/org/qubes/Storage/jobs/3", "added", args);
        assert!(
            event.to_line().ends_with(" added Operation=clone"),
            "{}",
            event.to_line()
        );
        assert_eq!(
            event.args.get("Operation"),
            Some(&Json::from("ImportVolume"))
        );
    }

    #[test]
    fn volume_signal_names_its_arguments() {
        let message = volume_signal("p", "appvms/a/b", "VolumeResized", &(1u64, 2u64));
        let events = events_of(&mut scope(None, None), &message);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].subject, "p:appvms/a/b");
        assert!(events[0]
            .to_line()
            .ends_with(" p:appvms/a/b VolumeResized old_size=1 new_size=2"));
    }

    #[test]
    fn a_jobs_progress_is_shown_once_a_second_in_text() {
        let progress = |done: u64| {
            let args = Args(vec![
                ("Progress".to_owned(), Json::from(0.5)),
                ("BytesDone".to_owned(), Json::from(done)),
            ]);
            Event::new("/org/qubes/Storage/jobs/3", "changed", args)
        };
        let mut pace = ProgressPace::default();
        let start = std::time::Instant::now();
        let at = |ms: u64| start + std::time::Duration::from_millis(ms);
        assert!(pace.shows(&progress(1), at(0)));
        assert!(!pace.shows(&progress(2), at(100)));
        assert!(!pace.shows(&progress(3), at(900)));
        assert!(pace.shows(&progress(4), at(1000)));
        let cancelable = Args(vec![("Cancelable".to_owned(), Json::from(false))]);
        let other = Event::new("/org/qubes/Storage/jobs/3", "changed", cancelable);
        assert!(pace.shows(&other, at(1100)), "not progress alone");
        let other_job = Event::new("/org/qubes/Storage/jobs/4", "changed", progress(5).args);
        assert!(
            pace.shows(&other_job, at(1100)),
            "each job has its own pace"
        );
    }

    #[test]
    fn a_jobs_progress_reads_in_percent() {
        let args = Args(vec![(
            "Progress".to_owned(),
            Json::from(0.026_666_666_666_666_67),
        )]);
        let event = Event::new("/org/qubes/Storage/jobs/3", "changed", args);
        assert!(
            event.to_line().ends_with(" changed Progress=2.7%"),
            "{}",
            event.to_line()
        );
    }

    #[test]
    fn times_read_as_iso_8601_in_text_and_stay_unix_seconds_in_json() {
        let message = volume_signal("p", "appvms/a/b", "RevisionAdded", &("5", 1_796_674_962i64));
        let event = &events_of(&mut scope(None, None), &message)[0];
        assert!(
            event
                .to_line()
                .ends_with(" RevisionAdded id=5 timestamp=2026-12-07T20:22:42Z"),
            "{}",
            event.to_line()
        );
        assert_eq!(
            event.args.get("timestamp"),
            Some(&Json::from(1_796_674_962i64))
        );
    }

    #[test]
    fn revisions_read_as_ids_at_their_times_with_pins_and_descriptions() {
        let revisions = vec![("4", 1_796_674_900i64), ("5", 1_796_674_962i64)];
        let details = vec![
            ("4", 1_796_674_900i64, 7u32, "", false, -1i64),
            (
                "5",
                1_796_674_962i64,
                0u32,
                "before the update",
                true,
                4096i64,
            ),
        ];
        let changed = HashMap::from([
            ("Revisions", Variant::from(revisions)),
            ("RevisionDetails", Variant::from(details)),
        ]);
        let line = events_of(&mut scope(None, None), &volume_changed(changed))[0].to_line();
        let times = "4@2026-12-07T20:21:40Z,5@2026-12-07T20:22:42Z";
        assert!(line.contains(&format!(" Revisions={times}")), "{line}");
        assert!(
            line.contains(&format!(
                " RevisionDetails={times}/pinned/\"before the update\""
            )),
            "{line}"
        );
    }

    #[test]
    fn volume_scope_drops_other_volumes() {
        let mut scope = scope(Some("p"), Some("appvms/a/b"));
        let other = volume_signal("p", "appvms/a/c", "VolumeStopped", &(true,));
        assert!(events_of(&mut scope, &other).is_empty());
        let ours = volume_signal("p", "appvms/a/b", "VolumeStopped", &(true,));
        assert_eq!(events_of(&mut scope, &ours).len(), 1);
    }

    #[test]
    fn pool_scope_is_a_whole_path_element() {
        let mut scope = scope(Some("p"), None);
        let similar = volume_signal("p2", "appvms/a/b", "VolumeStopped", &(true,));
        assert!(events_of(&mut scope, &similar).is_empty());
    }

    #[test]
    fn jobs_on_scoped_volumes_are_followed_until_removed() {
        let mut scope = scope(Some("p"), Some("appvms/a/b"));
        let job = "/org/qubes/Storage/jobs/5";
        let added = job_added(
            job,
            &[
                paths::volume_path("q", "appvms/x/y"),
                paths::volume_path("p", "appvms/a/b"),
            ],
        );
        let events = events_of(&mut scope, &added);
        assert_eq!(
            (events[0].subject.as_str(), events[0].event.as_str()),
            ("job 5", "added")
        );
        let completed = Message::signal(job, JOB_IFACE, "Completed")
            .build(&(true, ""))
            .unwrap();
        let events = events_of(&mut scope, &completed);
        assert_eq!(events[0].args.get("success"), Some(&Json::from(true)));
        assert!(
            events[0].to_line().ends_with(
                "job 5 (clone p:appvms/a/b to q:appvms/x/y) Completed success=true message=\"\""
            ),
            "{}",
            events[0].to_line()
        );
        assert_eq!(
            serde_json::to_value(&events[0]).unwrap()["subject"],
            Json::from("job 5")
        );
        let removed = Message::signal(ROOT_PATH, OBJECT_MANAGER_IFACE, "InterfacesRemoved")
            .build(&(ObjectPath::try_from(job).unwrap(), vec![JOB_IFACE]))
            .unwrap();
        assert_eq!(events_of(&mut scope, &removed)[0].event, "removed");
        assert!(events_of(&mut scope, &completed).is_empty());
    }

    #[test]
    fn jobs_elsewhere_are_not_shown() {
        let mut scope = scope(Some("p"), None);
        let added = job_added(
            "/org/qubes/Storage/jobs/6",
            &[paths::volume_path("q", "appvms/x/y")],
        );
        assert!(events_of(&mut scope, &added).is_empty());
    }

    #[test]
    fn property_changes_carry_their_values() {
        let changed = HashMap::from([("Started", Variant::from(true))]);
        let events = events_of(&mut scope(None, None), &volume_changed(changed));
        assert!(events[0]
            .to_line()
            .ends_with("p:appvms/a/b changed Started=true"));
    }

    #[test]
    fn json_events_have_stable_keys() {
        let message = volume_signal("p", "appvms/a/b", "VolumeStarted", &("/dev/loop0",));
        let event = &events_of(&mut scope(None, None), &message)[0];
        let value = serde_json::to_value(event).unwrap();
        assert_eq!(value["event"], "VolumeStarted");
        assert_eq!(value["args"]["block_device_path"], "/dev/loop0");
        assert_eq!(value["path"], paths::volume_path("p", "appvms/a/b"));
    }

    #[test]
    fn service_restart_is_reported() {
        let message = Message::signal(
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameOwnerChanged",
        )
        .build(&("org.qubes.Storage", ":1.5", ""))
        .unwrap();
        let events = events_of(&mut scope(None, None), &message);
        assert!(events[0]
            .to_line()
            .ends_with("service org.qubes.Storage vanished"));
    }
}
