// Why an action on a volume is not possible in the volume's present state — the
// service's own refusals (docs/dbus-api.md), said before the user tries: the list's
// menu and the volume's page show such an action disabled, with this sentence. Null
// when the action makes sense. Pure functions, tested under test/.

const STOP_FIRST = "Stop the volume first.";

/** Resize: `InvalidArgument` for a read-only volume. */
export function resizeBlocked(volume) {
    return volume.rw === false ? "The volume is read-only: a read-only volume cannot be resized." : null;
}

/** Revert: `Busy` while started, `NotFound` without revisions. */
export function revertBlocked(volume) {
    if (volume.started)
        return STOP_FIRST;
    return volume.revisions?.length ? null : "The volume has no revisions.";
}

/**
 * Import (ImportData, ImportVolume): `Busy` while started; `NotSupported` (ImportData)
 * or nothing done (ImportVolume) for a volume that does not save on stop.
 */
export function importBlocked(volume) {
    if (volume.started)
        return STOP_FIRST;
    return volume.saveOnStop ? null : "The volume does not save on stop: it keeps no content to import into.";
}

/** Remove: not while started. */
export function removeBlocked(volume) {
    return volume.started ? STOP_FIRST : null;
}
