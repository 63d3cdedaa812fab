// A volume's revisions in words: the list newest first with what RevisionDetails adds
// (description, pin, exclusive bytes), the label a revision gets where one is chosen,
// and what the volume keeps. A revision's timestamp is when its image was last
// written — the content it holds dates from then —, not when the revision was made
// (docs/dbus-api.md, Volume.Revisions): the words say "content from". Pure functions,
// tested under test/.

import { formatTimestamp } from "./format.js";

/**
 * The revisions of `volume`, newest first: {id, timestamp, description, pinned,
 * exclusive} — the details of a revision only when RevisionDetails lists the same one
 * (id and timestamp: a revision pruned and made again under its number is another).
 */
export function revisionsNewestFirst(volume) {
    const details = new Map((volume.revisionDetails || []).map(d => [`${d.id} ${d.timestamp}`, d]));
    return (volume.revisions || []).map(r => {
        const d = details.get(`${r.id} ${r.timestamp}`);
        return { id: r.id, timestamp: r.timestamp, description: d?.description ?? "", pinned: Boolean(d?.pinned), exclusive: d?.exclusive ?? -1 };
    }).reverse();
}

/** "content from <date>" of a revision. */
export function contentFrom(revision) {
    return `content from ${formatTimestamp(revision.timestamp)}`;
}

/** A revision where one is chosen: "Revision 6 — content from <date> — “before update” (pinned)". */
export function revisionLabel(revision) {
    const parts = [`Revision ${revision.id}`, contentFrom(revision)];
    if (revision.description)
        parts.push(`“${revision.description}”`);
    return parts.join(" — ") + (revision.pinned ? " (pinned)" : "");
}

/** What `volume` keeps, for its properties: "up to 2 revisions", "none", …. */
export function keepText(volume) {
    if (!volume.saveOnStop)
        return "none (it does not save on stop)";
    const keep = volume.revisionsToKeep;
    if (keep === -1)
        return "none (snapshots disabled)";
    if (keep === 0)
        return "none";
    return `up to ${keep} revision${keep === 1 ? "" : "s"} (pinned ones besides)`;
}

/** What the revision list says when it is empty. */
export function noRevisionsText(volume) {
    if (!volume.saveOnStop)
        return "This volume does not save on stop, so it has no revisions.";
    if (volume.revisionsToKeep === -1 || volume.revisionsToKeep === 0)
        return "This volume keeps no revisions.";
    return "No revisions yet: each stop that commits keeps the image before it as one.";
}
