// What a Job is for, in words. The service publishes a Job for each byte copy of a call
// (docs/dbus-api.md, Job): a clone's copy names the target and the source; a resize's
// copy, or the private copy of an import whose importer still holds its descriptor,
// the target; a commit on a pool without reflinks then copies the new image once more,
// into the precache that makes the volume's next start a rename — that Job names the
// target alone and, like every copy started past its call's point of no return, is
// announced not cancelable from its first InterfacesAdded (src/bus/jobs.rs). So a
// precache is a one-object Job that the page saw appear with Cancelable false; the
// operation's name says nothing (an import's own private copy is cancelable, and runs
// under ImportDataEnd as a precache may). A Job the page found running at its load was
// not seen appearing: its Cancelable may have turned false since (a resize's own copy
// past its point of no return), so it is labelled by its operation alone. Measurements
// (MeasureSpace, ExportDelta) walk or compare rather than copy. And what a Job's
// `Completed(false, …)` means when its call went on without it. Pure functions, tested
// under test/.

/** Calls whose Jobs read rather than copy. */
const READING = new Set(["MeasureSpace", "ExportDelta"]);

const VERBS = {
    ImportVolume: "Copying",
    ImportDataEnd: "Importing into",
    Resize: "Resizing",
    Revert: "Reverting",
    Stop: "Saving",
    MeasureSpace: "Measuring the space of",
    ExportDelta: "Comparing",
    Start: "Copying the image to start",
};

/** A Job that copies the image of one volume (no source, no measurement). */
function copiesOneImage(job) {
    return (job.objects || []).length === 1 && !READING.has(job.operation);
}

/** Whether `job` is a commit's precache copy: one object, seen appearing not cancelable. */
export function isPrecache(job) {
    return copiesOneImage(job) && job.announced === true && job.cancelableAtStart === false;
}

/**
 * Whether `job` may be a precache and the page cannot tell: found at the load (not
 * seen appearing), one object, not cancelable then.
 */
export function mayBePrecache(job) {
    return copiesOneImage(job) && job.announced !== true && job.cancelableAtStart === false;
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
 * The warning for a Job that completed with `success` false although its call may
 * have gone on without it: a precache (out of space, say) — nothing was lost, but the
 * volume's next start copies its image — said as such; a Job found at the load that
 * may have been one, said neutrally. Null for every other Job: a failed call's Jobs
 * complete with its error, which whoever made the call is told.
 */
export function precacheWarning(store, job, success, message) {
    if (success || !job)
        return null;
    const name = objectName(store, (job.objects || [])[0]);
    if (isPrecache(job)) {
        return {
            title: `The next start of ${name} will copy its image`,
            text: message || "The copy that prepares its next start did not finish.",
        };
    }
    if (mayBePrecache(job)) {
        return {
            title: `A copy of ${name} did not finish`,
            text: message || "The service gave no reason.",
        };
    }
    return null;
}
