// What a Job is for, in words. The service publishes a Job for each byte copy of a call
// (docs/dbus-api.md, Job): a clone's copy names the target and the source; a resize's
// copy the target; a commit on a pool without reflinks then copies the new image once
// more, into the precache that makes the volume's next start a rename — that Job names
// the target alone and is past the call's point of no return from its first
// announcement (Cancelable false): it cannot be cancelled. Measurements (MeasureSpace,
// ExportDelta) walk or compare rather than copy. And what a Job's `Completed(false, …)`
// means when its call went on without it. Pure functions, tested under test/.

/** Calls whose only copy naming the target alone is their commit's precache. */
const COMMITTING = new Set(["ImportVolume", "ImportDataEnd", "Stop"]);
/** Calls whose Jobs read rather than copy. */
const READING = new Set(["MeasureSpace", "ExportDelta"]);

const VERBS = {
    ImportVolume: "Copying",
    Resize: "Resizing",
    Revert: "Reverting",
    MeasureSpace: "Measuring the space of",
    ExportDelta: "Comparing",
    Start: "Copying the image to start",
};

/** Whether `job` is a commit's precache copy (a Job whose Objects name only the target). */
export function isPrecache(job) {
    if ((job.objects || []).length !== 1 || READING.has(job.operation))
        return false;
    return COMMITTING.has(job.operation) || job.cancelableAtStart === false;
}

function objectName(store, path) {
    const volume = store.volumes.get(path);
    if (!volume)
        return path;
    return `${volume.vid} (${store.pools.get(volume.pool)?.name ?? "?"})`;
}

/** The title of a Job's progress bar. */
export function jobTitle(store, job) {
    const names = (job.objects || []).map(p => objectName(store, p));
    if (isPrecache(job))
        return `Preparing the next start of ${names[0]}: copying its image`;
    if (job.operation === "ImportVolume" && names.length === 2)
        return `Copying ${names[1]} into ${names[0]}`;
    return `${VERBS[job.operation] || job.operation || "Job"} ${names.join(", ")}`;
}

/** Why a Job shows no Cancel, when that needs saying; else null. */
export function jobNote(job) {
    if (isPrecache(job))
        return "The pool cannot reflink, so the commit copies the new image once more, so that the next start needs no copy. This copy cannot be cancelled.";
    if (job.cancelable === false)
        return "Past the point of no return: it can no longer be cancelled.";
    return null;
}

/**
 * The warning for a precache Job that completed with `success` false: its call went on
 * without it (out of space, say), so nothing was lost, but the volume's next start
 * copies its image. Null for every other Job: a failed call's Jobs complete with its
 * error, which whoever made the call is told.
 */
export function precacheWarning(store, job, success, message) {
    if (success || !job || !isPrecache(job))
        return null;
    const name = (job.objects || []).map(p => objectName(store, p))[0];
    return {
        title: `The next start of ${name} will copy its image`,
        text: message || "The copy that prepares its next start did not finish.",
    };
}
