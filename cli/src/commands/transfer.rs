//! `volume import`, `volume export` and `volume clone`: the commands that move a
//! volume's bytes.
//!
//! Import and export move the data themselves, through the fd the service hands out
//! (`ImportData` → write-only fd of the import file, then `ImportDataEnd(success)`;
//! `Export` → read-only fd of the committed image), so their bar counts this
//! process's own bytes. Clone is `ImportVolume` on the destination: within one
//! filesystem the service links the source's image, otherwise it copies and publishes a
//! Job, which `job_watch` follows (as it follows the commit's copy on a pool without
//! reflinks).
//!
//! Ctrl-C: import stops writing and calls `ImportDataEnd(false)`, so the service
//! deletes its import file and the volume stays as it was; export removes its temp (a
//! file it was to replace stays as it was); clone cancels the service's job. All then
//! exit with status 8.

use std::fs::File;
use std::io::{ErrorKind, IsTerminal, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use super::Context;
use crate::args::{CloneArgs, ExportArgs, ImportArgs, VolumeRef};
use crate::error::{CliError, Result};
use crate::interrupt::Interrupt;
use crate::job_watch::{run_following_job, JobWatch, Labels};
use crate::model::VolumeInfo;
use crate::paths::VOLUME_IFACE;
use crate::progress::ProgressMode;
use crate::props::Props;
use crate::size::{check_volume_size, format_size};
use crate::sparse_copy::{self, Control, CopyError};

/// Where import data comes from.
enum Input {
    /// A regular file or block device: read by offset, holes skipped.
    Seekable(File),
    /// stdin, a pipe, a character device: read in order.
    Stream(File),
}

/// Where export data goes.
enum Output {
    /// A fresh regular file this run may leave sparse: a temp beside the file named
    /// (see [`Destination`]).
    SparseFile { file: File, path: PathBuf },
    /// stdout, a device: every byte written in order.
    Stream(File),
}

/// Where an export's bytes end up once they are all written. A regular file is
/// written under a temp name in its directory and renamed over the name given only
/// once complete and synced: a failure, a full disk or Ctrl-C leaves the file that was
/// there (yesterday's backup) as it was, or no file.
enum Destination {
    Replace {
        temp: tempfile::NamedTempFile,
        path: PathBuf,
    },
    /// stdout or a device: written in place.
    InPlace,
}

impl Destination {
    /// The temp gets the name given (replacing a file there), and the rename is made
    /// durable.
    fn finish(self) -> Result<()> {
        let Destination::Replace { temp, path } = self else {
            return Ok(());
        };
        let cannot =
            |error| CliError::io(format!("cannot put the image at {}", path.display()), error);
        temp.persist(&path).map_err(|error| cannot(error.error))?;
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(cannot)
    }

    /// After a failure: the temp is removed; the file named stays as it was.
    fn discard(self) {
        drop(self);
    }
}

/// The mode of a file an export creates (the umask applies): a VM's disk is private
/// data, like the pool's own images.
const NEW_EXPORT_MODE: u32 = 0o600;

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// How an input path is named in messages: `-` is standard input.
fn describe_input(path: &Path) -> String {
    match is_stdio(path) {
        true => "standard input".to_owned(),
        false => path.display().to_string(),
    }
}

/// How an output path is named in messages: `-` is standard output.
fn describe_output(path: &Path) -> String {
    match is_stdio(path) {
        true => "standard output".to_owned(),
        false => path.display().to_string(),
    }
}

fn duplicate_stdio(fd: std::os::fd::BorrowedFd<'_>, name: &str) -> Result<File> {
    let owned = fd
        .try_clone_to_owned()
        .map_err(|error| CliError::io(format!("cannot use {name}"), error))?;
    Ok(File::from(owned))
}

fn open_input(path: &Path) -> Result<Input> {
    if is_stdio(path) {
        return Ok(Input::Stream(duplicate_stdio(
            std::io::stdin().as_fd(),
            "standard input",
        )?));
    }
    let file = File::open(path)
        .map_err(|error| CliError::io(format!("cannot open {}", path.display()), error))?;
    let file_type = file
        .metadata()
        .map_err(|error| CliError::io(path.display().to_string(), error))?
        .file_type();
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_file() || file_type.is_block_device() {
        return Ok(Input::Seekable(file));
    }
    if file_type.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is a directory; import reads an image file, a block device, a pipe or - (standard input)",
            path.display()
        )));
    }
    Ok(Input::Stream(file))
}

/// The length a seekable input has (a block device's by seeking to its end); `None` for
/// streams, except stdin redirected from a regular file.
fn input_length(input: &mut Input) -> Result<Option<u64>> {
    match input {
        Input::Seekable(file) => {
            let end = file
                .seek(SeekFrom::End(0))
                .map_err(|error| CliError::io("cannot size the input", error))?;
            Ok(Some(end))
        }
        Input::Stream(file) => Ok(file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())),
    }
}

/// The error of creating the temporary file an export is written to, without the
/// temporary name tempfile adds to it ("at path …/.x.img.Ab3dEf.part"): the user named
/// the file, and the message names it.
fn without_temp_name(error: std::io::Error) -> std::io::Error {
    // A full disk keeps its errno: its exit status is NoSpace's.
    match error.kind() {
        ErrorKind::StorageFull => return std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
        ErrorKind::QuotaExceeded => return std::io::Error::from_raw_os_error(nix::libc::EDQUOT),
        _ => {}
    }
    let text = error.to_string();
    match text.split_once(" at path ") {
        Some((reason, _)) => std::io::Error::new(error.kind(), reason.to_owned()),
        None => error,
    }
}

/// How many bytes to import: `--size`, or the input's own length (which must agree
/// and, as every volume size, be a whole number of 512-byte sectors).
fn import_size(requested: Option<u64>, available: Option<u64>, name: &str) -> Result<u64> {
    match (requested, available) {
        (Some(size), Some(length)) if size != length => Err(CliError::Usage(format!(
            "{name} holds {length} bytes, not the {size} given by --size"
        ))),
        (Some(size), _) => Ok(size),
        (None, Some(0)) => Err(CliError::Usage(format!(
            "{name} is empty: there is nothing to import (a volume holds at least one \
             512-byte sector)"
        ))),
        (None, Some(length)) => check_volume_size(length).map_err(|why| {
            CliError::Usage(format!(
                "{name} cannot be imported as it is: {why}; volume sizes are whole \
                 sectors (pad the image first, e.g. truncate -s %512 {name})"
            ))
        }),
        (None, None) => Err(CliError::Usage(format!(
            "importing from {name} needs --size"
        ))),
    }
}

/// Importing replaces the volume and gives it the image's size: refuse to make it
/// smaller unless asked (data past the new end would be lost without a word).
async fn check_shrink(context: &Context, args: &ImportArgs, path: &str, size: u64) -> Result<()> {
    if args.allow_shrink {
        return Ok(());
    }
    let properties = context.client.properties(path, VOLUME_IFACE).await?;
    let current = Props(&properties).uint("Size").unwrap_or(0);
    if size >= current {
        return Ok(());
    }
    Err(CliError::Usage(format!(
        "importing {size} bytes would shrink {}:{} from {} to {}, losing the data past \
         the new end; pass --allow-shrink to do it anyway",
        args.volume.pool,
        args.volume.vid,
        format_size(current),
        format_size(size),
    )))
}

/// An export never writes into a pool's directory: it would put its own file where a
/// volume's image or revision is (replacing a committed image by another inode behind
/// the service's back). Compared by the real paths of the destination's directory and of
/// each pool's, so no symlink or `..` gets around it.
fn refuse_pool_destination(output: &Path, pools: &[(&str, &Path)]) -> Result<()> {
    let parent = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let Ok(dir) = std::fs::canonicalize(parent) else {
        return Ok(()); // Creating the file will say what is wrong with its directory.
    };
    for (name, pool_dir) in pools {
        if std::fs::canonicalize(pool_dir).is_ok_and(|pool_dir| dir.starts_with(&pool_dir)) {
            return Err(CliError::Usage(format!(
                "{} is in the directory of pool {name}, where the service keeps its volumes' \
                 files; export somewhere else",
                output.display()
            )));
        }
    }
    Ok(())
}

/// A copy's failure for the user; `verb` names the operation (import, export).
fn copy_error(error: CopyError, verb: &str, input: &str, output: &str) -> CliError {
    match error {
        CopyError::Cancelled => CliError::Cancelled(format!("{verb} cancelled")),
        CopyError::Read(source) => CliError::io(format!("cannot read {input}"), source),
        CopyError::Write(source) if source.kind() == ErrorKind::BrokenPipe => CliError::Failed(
            format!("{verb} stopped: the reader of {output} went away (broken pipe)"),
        ),
        CopyError::Write(source) => CliError::io(format!("cannot write {output}"), source),
        CopyError::ShortInput { expected, got } => {
            CliError::Failed(format!("{input} ended after {got} of {expected} bytes"))
        }
        CopyError::LongInput { expected } => CliError::Failed(format!(
            "{input} holds more than the {expected} bytes to copy"
        )),
    }
}

/// Runs a blocking copy on tokio's blocking pool, its bar fed by the byte count;
/// returns early on Ctrl-C (the copy stops at its next chunk).
async fn copy_in_background(
    interrupt: &Interrupt,
    mode: ProgressMode,
    bar: ProgressBar,
    copy: impl FnOnce(&Control<'_>) -> std::result::Result<(), CopyError> + Send + 'static,
) -> std::result::Result<(), CopyError> {
    let cancel = interrupt.flag();
    let task = tokio::task::spawn_blocking(move || {
        let progress = |done| bar.set_position(done);
        let result = copy(&Control {
            cancel: &cancel,
            progress: &progress,
        });
        match &result {
            Ok(()) => mode.finish(&bar),
            Err(_) => mode.abandon(&bar),
        }
        result
    });
    tokio::select! {
        joined = task => joined.unwrap_or_else(|panic| Err(CopyError::Write(std::io::Error::other(panic)))),
        () = interrupt.requested() => Err(CopyError::Cancelled),
    }
}

fn label(verb: &str, volume: &VolumeRef) -> String {
    format!("{verb} {}:{}", volume.pool, volume.vid)
}

pub async fn import(context: &Context, args: ImportArgs) -> Result<()> {
    let name = describe_input(&args.input);
    let mut input = open_input(&args.input)?;
    let size = import_size(args.size, input_length(&mut input)?, &name)?;
    let path = context
        .client
        .volume_path(&args.volume.pool, &args.volume.vid)
        .await?;
    check_shrink(context, &args, path.as_str(), size).await?;
    let interrupt = Interrupt::install();
    let (pool, vid) = (&args.volume.pool, &args.volume.vid);
    tracing::info!(op = "import", %pool, %vid, bytes = size, input = %name, "ImportData");
    let mut options = context.client.options();
    if args.allow_shrink {
        options.insert("allow_shrink", zbus::Variant::from(true));
    }
    let body = (size, options);
    let fd: zbus::OwnedFd = context
        .client
        .call(path.as_str(), VOLUME_IFACE, "ImportData", &body)
        .await
        .map_err(|error| match args.allow_shrink {
            true => error,
            false => error.with_flag_hint("InvalidArgument", "allow_shrink", "--allow-shrink"),
        })?;
    let target = File::from(std::os::fd::OwnedFd::from(fd));
    let bar = context
        .progress
        .byte_bar(&label("import", &args.volume), size);
    let copied = match interrupt.is_requested() {
        true => Err(CopyError::Cancelled),
        false => {
            copy_in_background(&interrupt, context.progress, bar, move |control| {
                write_import(input, &target, size, control)
            })
            .await
        }
    };
    let success = copied.is_ok();
    tracing::info!(op = "import", %pool, %vid, bytes = size, success, "ImportDataEnd");
    let end = end_import(context, &args.volume, path.as_str(), success, &interrupt).await;
    let import_file = format!("the import file of {pool}:{vid}");
    copied.map_err(|error| copy_error(error, "import", &name, &import_file))?;
    end
}

/// ImportDataEnd: a commit (`success`) may copy on a pool without reflinks, so its jobs
/// are followed; a discard is a plain call.
async fn end_import(
    context: &Context,
    volume: &VolumeRef,
    path: &str,
    success: bool,
    interrupt: &Interrupt,
) -> Result<()> {
    // Ctrl-C after the copy but before the commit was sent: the import is discarded.
    let cancelled = success && interrupt.is_requested();
    let body = (success && !cancelled, context.client.options());
    if !body.0 {
        let ended: Result<()> = context
            .client
            .call(path, VOLUME_IFACE, "ImportDataEnd", &body)
            .await;
        ended?;
        return match cancelled {
            true => Err(CliError::Cancelled("import cancelled".to_owned())),
            false => Ok(()),
        };
    }
    let labels = Labels::commit(&format!("{}:{}", volume.pool, volume.vid));
    let watch = JobWatch::subscribe(
        &context.client,
        path,
        "ImportDataEnd",
        labels,
        context.progress,
    )
    .await?;
    let call = context
        .client
        .call(path, VOLUME_IFACE, "ImportDataEnd", &body);
    run_following_job(&context.client, watch, interrupt, call).await
}

/// Writes the whole input into the import file and flushes it to disk (as the
/// reference's `dd conv=sparse,fdatasync` does).
fn write_import(
    input: Input,
    target: &File,
    size: u64,
    control: &Control<'_>,
) -> std::result::Result<(), CopyError> {
    let target_is_file = target.metadata().map_err(CopyError::Write)?.is_file();
    let method = match (&input, target_is_file) {
        (Input::Seekable(_), true) => "sparse file copy",
        (Input::Stream(_), true) => "sparse stream copy",
        (_, false) => "stream copy",
    };
    tracing::info!(
        op = "import",
        method,
        bytes = size,
        "writing the import file"
    );
    // A stream must end where --size says (more data is an error, not cut off), but a
    // character device such as /dev/zero or /dev/urandom never ends: it gives exactly
    // --size bytes.
    let endless = |source: &File| {
        use std::os::unix::fs::FileTypeExt;
        source
            .metadata()
            .is_ok_and(|meta| meta.file_type().is_char_device())
    };
    match (input, target_is_file) {
        (Input::Seekable(source), true) => {
            sparse_copy::copy_file_sparse(&source, target, size, control)?
        }
        (Input::Stream(mut source), true) => {
            sparse_copy::copy_stream_to_file(&mut source, target, size, control)?;
            if !endless(&source) {
                sparse_copy::expect_end(&mut source, size)?;
            }
        }
        (Input::Seekable(mut source), false) => {
            let mut writer = target;
            sparse_copy::copy_stream(&mut source, &mut writer, size, control)?
        }
        (Input::Stream(mut source), false) => {
            let mut writer = target;
            sparse_copy::copy_stream(&mut source, &mut writer, size, control)?;
            if !endless(&source) {
                sparse_copy::expect_end(&mut source, size)?;
            }
        }
    }
    target.sync_data().map_err(CopyError::Write)
}

fn open_output(path: &Path) -> Result<(Output, Destination)> {
    if is_stdio(path) {
        if std::io::stdout().is_terminal() {
            return Err(CliError::Usage(
                "refusing to write an image to a terminal; redirect stdout or name a file"
                    .to_owned(),
            ));
        }
        let stdout = duplicate_stdio(std::io::stdout().as_fd(), "standard output")?;
        return Ok((Output::Stream(stdout), Destination::InPlace));
    }
    let cannot = |error| CliError::io(format!("cannot create {}", path.display()), error);
    let existing = match std::fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(error) if error.kind() == ErrorKind::NotFound => None,
        Err(error) => return Err(cannot(error)),
    };
    if existing.as_ref().is_some_and(|meta| !meta.is_file()) {
        // A device or a pipe: written in place.
        let file = File::options().write(true).open(path).map_err(cannot)?;
        return Ok((Output::Stream(file), Destination::InPlace));
    }
    use std::os::unix::fs::PermissionsExt;
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => (
            if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            },
            name,
        ),
        _ => return Err(cannot(std::io::Error::from(ErrorKind::InvalidInput))),
    };
    // A file replaced keeps its permissions; a new one is private to its owner, as the
    // pool's images are (a VM's disk: 0600, not File::create's world-readable 0644).
    let mode = existing.map_or(NEW_EXPORT_MODE, |meta| meta.permissions().mode() & 0o7777);
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".part")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|error| cannot(without_temp_name(error)))?;
    let file = temp.as_file().try_clone().map_err(cannot)?;
    Ok((
        Output::SparseFile {
            file,
            path: path.to_owned(),
        },
        Destination::Replace {
            temp,
            path: path.to_owned(),
        },
    ))
}

pub async fn export(context: &Context, args: ExportArgs) -> Result<()> {
    let name = describe_output(&args.output);
    if !is_stdio(&args.output) {
        let pools = super::pool::all_pools(context).await?;
        let dirs: Vec<(&str, &Path)> = pools
            .iter()
            .map(|pool| (pool.name.as_str(), Path::new(&pool.dir_path)))
            .collect();
        refuse_pool_destination(&args.output, &dirs)?;
    }
    let (output, destination) = open_output(&args.output)?;
    let result = export_into(context, &args.volume, output).await;
    let result = result.map_err(|error| match error {
        ExportError::Copy(copy) => {
            let image = format!("the image of {}:{}", args.volume.pool, args.volume.vid);
            copy_error(copy, "export", &image, &name)
        }
        ExportError::Call(call) => call,
    });
    match result {
        Ok(()) => destination.finish()?,
        Err(error) => {
            destination.discard();
            return Err(error);
        }
    }
    // With --json (not on stdout, which carries the image), where the image went.
    match context.json && !is_stdio(&args.output) {
        true => crate::output::print_json(&serde_json::json!({
            "exported": { "pool": args.volume.pool, "vid": args.volume.vid },
            "path": args.output,
        })),
        false => Ok(()),
    }
}

enum ExportError {
    Call(CliError),
    Copy(CopyError),
}

impl From<CliError> for ExportError {
    fn from(error: CliError) -> ExportError {
        ExportError::Call(error)
    }
}

async fn export_into(
    context: &Context,
    volume: &VolumeRef,
    output: Output,
) -> std::result::Result<(), ExportError> {
    let path = context
        .client
        .volume_path(&volume.pool, &volume.vid)
        .await?;
    let interrupt = Interrupt::install();
    let (source, size) = open_export(context, path.as_str(), "the exported image").await?;
    let (pool, vid) = (&volume.pool, &volume.vid);
    tracing::info!(op = "export", %pool, %vid, bytes = size, "Export");
    let bar = context.progress.byte_bar(&label("export", volume), size);
    if interrupt.is_requested() {
        return Err(ExportError::Copy(CopyError::Cancelled));
    }
    copy_in_background(&interrupt, context.progress, bar, move |control| {
        write_export(&source, output, size, control)
    })
    .await
    .map_err(ExportError::Copy)
}

fn write_export(
    source: &File,
    output: Output,
    size: u64,
    control: &Control<'_>,
) -> std::result::Result<(), CopyError> {
    match output {
        Output::SparseFile { file, path } => {
            let method = "sparse file copy";
            tracing::info!(op = "export", method, bytes = size, path = %path.display(), "writing");
            sparse_copy::copy_file_sparse(source, &file, size, control)?;
            // On disk before it gets its name: a power cut never leaves an image of
            // the right size with zeros where data belongs.
            file.sync_all().map_err(CopyError::Write)
        }
        Output::Stream(mut file) => {
            tracing::info!(
                op = "export",
                method = "stream copy",
                bytes = size,
                "writing"
            );
            let mut reader = source;
            sparse_copy::copy_stream(&mut reader, &mut file, size, control)?;
            // A device is synced; a pipe or a terminal cannot be (EINVAL).
            match file.sync_all() {
                Err(error) if error.raw_os_error() == Some(nix::libc::EINVAL) => Ok(()),
                other => other.map_err(CopyError::Write),
            }
        }
    }
}

pub async fn clone(context: &Context, args: CloneArgs) -> Result<()> {
    let (source, source_info) = context
        .client
        .volume_info(&args.src_pool, &args.src_vid)
        .await?;
    let (target, target_info) = context
        .client
        .volume_info(&args.dst_pool, &args.dst_vid)
        .await?;
    let destination = format!("{}:{}", args.dst_pool, args.dst_vid);
    if !target_info.save_on_stop {
        // The service's ImportVolume does nothing here (R§3.19); as `import` into it,
        // this is refused rather than reported as done.
        return Err(CliError::Service {
            name: "org.qubes.Storage.Error.NotSupported".to_owned(),
            message: format!(
                "{destination} does not save on stop: a clone into it would change nothing (its next start makes its image afresh)"
            ),
        });
    }
    if !args.allow_shrink {
        let source_size = committed_size(context, source.as_str(), &source_info).await?;
        refuse_clone_shrink(&args, source_size, target_info.size)?;
    }
    let interrupt = Interrupt::install();
    let label = format!("clone {}:{} to {destination}", args.src_pool, args.src_vid);
    let labels = Labels::clone_then_commit(label, &destination);
    let watch = JobWatch::subscribe(
        &context.client,
        target.as_str(),
        "ImportVolume",
        labels,
        context.progress,
    )
    .await?;
    tracing::info!(op = "clone", source = %source.as_str(), target = %target.as_str(), "ImportVolume");
    let body = (source, context.client.options());
    let call = context
        .client
        .call(target.as_str(), VOLUME_IFACE, "ImportVolume", &body);
    run_following_job(&context.client, watch, &interrupt, call).await
}

/// The size of the image a clone of `source` copies: its committed image's. `Size` is
/// the running image's while the volume is started, which a live resize may have made
/// larger or smaller than the committed one; then the committed image is opened
/// (Export, which the clone needs permission for anyway) and measured. A started
/// volume with snapshots disabled writes into its committed image: `Size` is its size.
async fn committed_size(context: &Context, source: &str, info: &VolumeInfo) -> Result<u64> {
    if !(info.started && info.save_on_stop && !info.snapshots_disabled) {
        return Ok(info.size);
    }
    let (_image, size) = open_export(context, source, "the source's committed image").await?;
    Ok(size)
}

/// The committed image of the volume at `path` (Export), open for reading, and its
/// size; `what` names it when it cannot be sized.
async fn open_export(context: &Context, path: &str, what: &str) -> Result<(File, u64)> {
    let fd: zbus::OwnedFd = context
        .client
        .call(path, VOLUME_IFACE, "Export", &(context.client.options(),))
        .await?;
    let image = File::from(std::os::fd::OwnedFd::from(fd));
    let size = image
        .metadata()
        .map_err(|error| CliError::io(format!("cannot size {what}"), error))?
        .len();
    Ok((image, size))
}

/// A clone gives the destination the source's size, as an import does: refused when
/// that makes it smaller, unless asked (the arguments the wrong way round would
/// otherwise cut a VM's disk down to a template's without a word).
fn refuse_clone_shrink(args: &CloneArgs, source_size: u64, current: u64) -> Result<()> {
    if source_size >= current {
        return Ok(());
    }
    Err(CliError::Usage(format!(
        "cloning {}:{} ({}) would shrink {}:{} from {} to {}, replacing its content; \
         pass --allow-shrink to do it anyway",
        args.src_pool,
        args.src_vid,
        format_size(source_size),
        args.dst_pool,
        args.dst_vid,
        format_size(current),
        format_size(source_size),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_that_would_shrink_is_a_usage_error_naming_both_volumes() {
        let args = CloneArgs {
            src_pool: "p".into(),
            src_vid: "vm-templates/t/private".into(),
            dst_pool: "q".into(),
            dst_vid: "appvms/a/private".into(),
            allow_shrink: false,
        };
        assert!(refuse_clone_shrink(&args, 2 << 20, 2 << 20).is_ok());
        assert!(refuse_clone_shrink(&args, 4 << 20, 2 << 20).is_ok());
        let error = refuse_clone_shrink(&args, 3 << 20, 20 << 20).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert_eq!(
            error.to_string(),
            "cloning p:vm-templates/t/private (3.0 MiB) would shrink q:appvms/a/private from \
             20.0 MiB to 3.0 MiB, replacing its content; pass --allow-shrink to do it anyway"
        );
    }

    #[test]
    fn an_export_into_a_pool_directory_is_refused_however_it_is_named() {
        let root = tempfile::tempdir().unwrap();
        let pool = root.path().join("pool");
        std::fs::create_dir_all(pool.join("appvms/a")).unwrap();
        std::os::unix::fs::symlink(&pool, root.path().join("link")).unwrap();
        let pools = [("p", pool.as_path())];
        for inside in [
            pool.join("appvms/a/private.img"),
            root.path().join("link/appvms/a/x.img"),
            root.path().join("pool/appvms/../x.img"),
        ] {
            let error = refuse_pool_destination(&inside, &pools).unwrap_err();
            assert_eq!(error.exit_code(), 2);
            assert!(error.to_string().contains("directory of pool p"), "{error}");
        }
        assert!(refuse_pool_destination(&root.path().join("out.img"), &pools).is_ok());
        assert!(refuse_pool_destination(&root.path().join("poolx.img"), &pools).is_ok());
    }

    #[test]
    fn size_comes_from_the_flag_or_the_file() {
        assert_eq!(import_size(Some(10), None, "stdin").unwrap(), 10);
        assert_eq!(import_size(None, Some(2048), "f").unwrap(), 2048);
        assert_eq!(import_size(Some(20), Some(20), "f").unwrap(), 20);
    }

    #[test]
    fn file_that_is_not_whole_sectors_is_refused_with_a_remedy() {
        let error = import_size(None, Some(14), "note.txt").unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let text = error.to_string();
        assert!(
            text.contains("not a whole number of 512-byte sectors"),
            "{text}"
        );
        assert!(text.contains("truncate -s %512 note.txt"), "{text}");
    }

    #[test]
    fn broken_pipe_on_standard_output_names_standard_output() {
        let error = copy_error(
            CopyError::Write(std::io::Error::from(ErrorKind::BrokenPipe)),
            "export",
            "the volume's image",
            &describe_output(Path::new("-")),
        );
        assert_eq!(
            error.to_string(),
            "export stopped: the reader of standard output went away (broken pipe)"
        );
    }

    #[test]
    fn stream_without_size_is_a_usage_error() {
        let error = import_size(None, None, "standard input").unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("--size"));
    }

    #[test]
    fn size_disagreeing_with_the_file_is_refused() {
        assert_eq!(
            import_size(Some(10), Some(20), "f")
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn regular_file_input_is_seekable_and_sized() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        std::fs::write(&path, vec![1u8; 4096]).unwrap();
        let mut input = open_input(&path).unwrap();
        assert!(matches!(input, Input::Seekable(_)));
        assert_eq!(input_length(&mut input).unwrap(), Some(4096));
    }

    #[test]
    fn export_to_a_new_file_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.img");
        let (output, destination) = open_output(&path).unwrap();
        assert!(matches!(output, Output::SparseFile { .. }));
        drop(output);
        destination.discard();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn export_over_an_existing_file_keeps_it_whole_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.img");
        std::fs::write(&path, b"yesterday's backup").unwrap();
        let (output, destination) = open_output(&path).unwrap();
        let Output::SparseFile { file, .. } = output else {
            panic!("not a file");
        };
        std::os::unix::fs::FileExt::write_all_at(&file, b"half of today's", 0).unwrap();
        destination.discard();
        assert_eq!(std::fs::read(&path).unwrap(), b"yesterday's backup");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_directory_is_no_image_to_import() {
        let dir = tempfile::tempdir().unwrap();
        let Err(CliError::Usage(said)) = open_input(dir.path()) else {
            panic!("a directory was taken as an input");
        };
        assert!(said.contains("is a directory"), "{said}");
    }

    #[test]
    fn a_new_export_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.img");
        let (_, destination) = open_output(&path).unwrap();
        destination.finish().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn export_over_an_existing_file_keeps_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.img");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let (_, destination) = open_output(&path).unwrap();
        destination.finish().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn export_file_is_sparse_and_full_size() {
        let dir = tempfile::tempdir().unwrap();
        let source_path = dir.path().join("source.img");
        let source = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&source_path)
            .unwrap();
        source.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&source, b"data", 1 << 20).unwrap();
        let path = dir.path().join("out.img");
        std::fs::write(&path, vec![9u8; 100]).unwrap();
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let control = Control {
            cancel: &cancel,
            progress: &|_| {},
        };
        let (output, destination) = open_output(&path).unwrap();
        write_export(&source, output, 8 << 20, &control).unwrap();
        destination.finish().unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written.len(), 8 << 20);
        assert_eq!(&written[1 << 20..(1 << 20) + 4], b"data");
        assert!(
            written[..100].iter().all(|&b| b == 0),
            "old content survived"
        );
    }
}
