// What each Job is said to be, and when a finished one needs a warning.

import assert from "node:assert/strict";
import { test } from "node:test";

import { isPrecache, jobNote, jobTitle, precacheWarning } from "../src/job-labels.js";
import { Store } from "../src/store.js";

const POOL = "/org/qubes/Storage/pools/slow";
const TARGET = `${POOL}/volumes/appvms_2fwork_2fprivate`;
const SOURCE = "/org/qubes/Storage/pools/fast/volumes/appvms_2fwork_2fprivate";

function store() {
    const s = new Store();
    s.fold({
        [POOL]: { "org.qubes.Storage.Pool": { Name: "slow" } },
        [TARGET]: { "org.qubes.Storage.Volume": { Vid: "appvms/work/private", Pool: POOL } },
    });
    return s;
}

test("a clone's copy names its source; the commit's precache is said to prepare the next start", () => {
    const s = store();
    const copy = { operation: "ImportVolume", objects: [TARGET, SOURCE], cancelable: true, cancelableAtStart: true };
    const precache = { operation: "ImportVolume", objects: [TARGET], cancelable: false, cancelableAtStart: false };
    assert.equal(isPrecache(copy), false);
    assert.equal(isPrecache(precache), true);
    assert.match(jobTitle(s, copy), /^Copying .* into appvms\/work\/private \(slow\)$/);
    assert.equal(jobTitle(s, precache), "Preparing the next start of appvms/work/private (slow): copying its image");
    assert.match(jobNote(precache), /cannot be cancelled/);
    assert.equal(jobNote(copy), null);
});

test("a resize's own copy is no precache, the one after its point of no return is", () => {
    assert.equal(isPrecache({ operation: "Resize", objects: [TARGET], cancelableAtStart: true }), false);
    assert.equal(isPrecache({ operation: "Resize", objects: [TARGET], cancelableAtStart: false }), true);
    assert.equal(isPrecache({ operation: "MeasureSpace", objects: [TARGET], cancelableAtStart: false }), false);
});

test("the store remembers whether a job was cancelable when it appeared", () => {
    const s = store();
    const JOB = "/org/qubes/Storage/jobs/3";
    s.fold({ [JOB]: { "org.qubes.Storage.Job": { Operation: "Stop", Objects: [TARGET], Cancelable: false } } });
    s.fold({ [JOB]: { "org.qubes.Storage.Job": { BytesDone: 10 } } });
    assert.equal(s.jobs.get(JOB).cancelableAtStart, false);
    assert.equal(isPrecache(s.jobs.get(JOB)), true);
});

test("a precache that did not finish is a warning with the service's reason; other jobs are not", () => {
    const s = store();
    const precache = { operation: "ImportVolume", objects: [TARGET], cancelableAtStart: false };
    const why = "No space left on device; the call succeeded without it: the volume's next start copies its image instead";
    const warning = precacheWarning(s, precache, false, why);
    assert.equal(warning.title, "The next start of appvms/work/private (slow) will copy its image");
    assert.equal(warning.text, why);
    assert.equal(precacheWarning(s, precache, true, ""), null);
    assert.equal(precacheWarning(s, { operation: "ImportVolume", objects: [TARGET, SOURCE] }, false, "Cancelled"), null);
    assert.equal(precacheWarning(s, undefined, false, "gone"), null);
});
