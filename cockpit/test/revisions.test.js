// Revisions with their descriptions and pins, in words that say what the time means.

import assert from "node:assert/strict";
import { test } from "node:test";

import { contentFrom, keepText, noRevisionsText, revisionLabel, revisionsNewestFirst } from "../src/revisions.js";

const volume = {
    saveOnStop: true,
    revisionsToKeep: 1,
    revisions: [{ id: "5", timestamp: 1700000000 }, { id: "6", timestamp: 1700000100 }],
    revisionDetails: [
        { id: "5", timestamp: 1700000000, nanoseconds: 0, description: "before the update", pinned: true, exclusive: -1 },
        { id: "6", timestamp: 1600000000, nanoseconds: 0, description: "an older life of 6", pinned: true, exclusive: -1 },
    ],
};

test("revisions come newest first with the details of the same revision only", () => {
    const [six, five] = revisionsNewestFirst(volume);
    assert.deepEqual([six.id, five.id], ["6", "5"]);
    assert.equal(five.description, "before the update");
    assert.equal(five.pinned, true);
    // Details of another revision under the number 6 are not this one's.
    assert.equal(six.description, "");
    assert.equal(six.pinned, false);
});

test("a revision's label says description, pin, and content from", () => {
    const [, five] = revisionsNewestFirst(volume);
    const label = revisionLabel(five);
    assert.match(label, /^Revision 5 — content from .+ — “before the update” \(pinned\)$/);
    assert.doesNotMatch(label, /Taken/i);
    assert.match(contentFrom(five), /^content from /);
    assert.match(revisionLabel({ id: "7", timestamp: 1700000000, description: "", pinned: false }), /^Revision 7 — content from [^—]+$/);
});

test("what a volume keeps is said the same way as its empty list", () => {
    assert.equal(keepText(volume), "up to 1 revision (pinned ones besides)");
    assert.equal(keepText({ ...volume, revisionsToKeep: 0 }), "none");
    assert.equal(keepText({ ...volume, revisionsToKeep: -1 }), "none (snapshots disabled)");
    assert.match(keepText({ saveOnStop: false, revisionsToKeep: 1 }), /^none/);
    assert.match(noRevisionsText(volume), /^No revisions yet/);
    assert.match(noRevisionsText({ ...volume, revisionsToKeep: 0 }), /keeps no revisions/);
    assert.match(noRevisionsText({ saveOnStop: false, revisionsToKeep: 1 }), /does not save on stop/);
});
