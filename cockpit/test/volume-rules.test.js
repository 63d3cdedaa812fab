// Which actions on a volume are disabled in its state, and the sentence that says why.

import assert from "node:assert/strict";
import { test } from "node:test";

import { importBlocked, removeBlocked, resizeBlocked, revertBlocked } from "../src/volume-rules.js";

const ORIGIN = { vid: "appvms/work/private", rw: true, saveOnStop: true, started: false, revisions: [{ id: "1" }] };

test("a read-only volume cannot be resized, and says so", () => {
    assert.equal(resizeBlocked(ORIGIN), null);
    assert.match(resizeBlocked({ ...ORIGIN, rw: false }), /read-only volume cannot be resized/);
});

test("a volume that does not save on stop offers no import, and says why", () => {
    assert.equal(importBlocked(ORIGIN), null);
    assert.match(importBlocked({ ...ORIGIN, saveOnStop: false }), /does not save on stop/);
    assert.equal(importBlocked({ ...ORIGIN, started: true }), "Stop the volume first.");
});

test("a started volume is neither reverted nor removed; one without revisions is not reverted", () => {
    assert.equal(revertBlocked(ORIGIN), null);
    assert.equal(revertBlocked({ ...ORIGIN, started: true }), "Stop the volume first.");
    assert.equal(revertBlocked({ ...ORIGIN, revisions: [] }), "The volume has no revisions.");
    assert.equal(removeBlocked(ORIGIN), null);
    assert.equal(removeBlocked({ ...ORIGIN, started: true }), "Stop the volume first.");
});
