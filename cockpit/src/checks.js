// What the create and resize dialogs check before they call the service, field by
// field: each check gives the sentence that says what is wrong with one field (or
// null), so the dialog can show it under that field — the Create button alone being
// grey says nothing. The rules are the contract's (docs/dbus-api.md: names are a
// letter, then up to 63 letters, digits, `_`, `.` or `-`; sizes are whole 512-byte
// sectors); the service checks everything again and has the last word. Pure
// functions, tested under test/.

import { parseSize } from "./format.js";

const NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;

/** Endings of a volume name that the pool's own file names use. */
const RESERVED = /-(dirty|precache|import|cow)$/;

/** RevisionsToKeep is an `i` (int32) on the bus. */
export const MOST_REVISIONS_TO_KEEP = 2147483647;

const NAME_RULE = "starts with a letter and holds only letters, digits, _ . and - (at most 64 characters).";

/** The size field's bytes, or the sentence that says why there are none. */
export function sizeOrError(text) {
    const bytes = parseSize(text);
    if (bytes === null)
        return [null, "Write a size such as 2G, 512M or 10GiB."];
    if (bytes % 512 !== 0)
        return [null, "The size must be a whole number of 512-byte sectors."];
    return [bytes, null];
}

/** CreatePool's fields: {name, dir, keep} → the sentence of each field, or null. */
export function poolFieldErrors({ name, dir, keep }) {
    return {
        name: NAME.test(name) ? null : `The name ${NAME_RULE}`,
        dir: dir.startsWith("/") ? null : "The directory is an absolute path (it starts with /).",
        keep: /^-?\d+$/.test(keep.trim()) && Number(keep) >= -1 && Number(keep) <= MOST_REVISIONS_TO_KEEP ? null
            : `Revisions to keep is a whole number, -1 or more and at most ${MOST_REVISIONS_TO_KEEP}.`,
    };
}

/**
 * CreateVolume's fields: {vm, name, size, source, needsSource, sourcesOffered, gone} →
 * the sentence of each field, or null (`size` is the size field's text; only one of
 * size and source counts; `sourcesOffered`: how many volumes the pool has that may be
 * one; `gone`: the vid of a chosen source that was removed meanwhile).
 */
export function volumeFieldErrors({ vm, name, size, source, needsSource, sourcesOffered, gone }) {
    return {
        vm: NAME.test(vm) ? null : `The VM name ${NAME_RULE}`,
        name: !NAME.test(name) ? `The volume name ${NAME_RULE}`
            : RESERVED.test(name) ? "The volume name does not end in -dirty, -precache, -import or -cow (the names of its files)." : null,
        size: needsSource ? null : sizeOrError(size)[1],
        source: !needsSource || source ? null
            : gone ? `The source ${gone} was removed meanwhile: choose another.`
            : sourcesOffered === 0 ? "The pool has no volume that saves on stop, which a snapshot needs as its source: create an origin in it first."
                : "Choose the source volume: one that saves on stop.",
    };
}

/** The first sentence of a dialog's fields, which keeps its button disabled. */
export function firstError(errors) {
    return Object.values(errors).find(Boolean) ?? null;
}

/**
 * The sentence to show under a field: none before the user typed in it (an empty new
 * field is not a mistake yet), its check's sentence after.
 */
export function shownError(errors, touched, field) {
    return touched[field] ? errors[field] : null;
}
