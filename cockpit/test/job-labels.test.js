// What each Job is said to be, and when a finished one needs a warning.

import assert from "node:assert/strict";
import { test } from "node:test";

import { isPrecache, jobNote, jobTitle, precacheWarning } from "../src/job-labels.js";
import { fromInterfacesAdded } from "../src/notify.js";
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
    const copy = { operation: "ImportVolume", objects: [TARGET, SOURCE], cancelable: true, cancelableAtStart: true, announced: true };
    const precache = { operation: "ImportVolume", objects: [TARGET], cancelable: false, cancelableAtStart: false, announced: true };
    assert.equal(isPrecache(copy), false);
    assert.equal(isPrecache(precache), true);
    assert.match(jobTitle(s, copy), /^Copying .* into appvms\/work\/private \(slow\)$/);
    assert.equal(jobTitle(s, precache), "Preparing the next start of appvms/work/private (slow): copying its image");
    assert.match(jobNote(precache), /cannot be cancelled/);
    assert.equal(jobNote(copy), null);
});

test("a resize's own copy is no precache, the one after its point of no return is", () => {
    assert.equal(isPrecache({ operation: "Resize", objects: [TARGET], cancelableAtStart: true, announced: true }), false);
    assert.equal(isPrecache({ operation: "Resize", objects: [TARGET], cancelableAtStart: false, announced: true }), true);
    assert.equal(isPrecache({ operation: "MeasureSpace", objects: [TARGET], cancelableAtStart: false, announced: true }), false);
});

test("the store remembers whether a job was cancelable when it appeared", () => {
    const s = store();
    const JOB = "/org/qubes/Storage/jobs/3";
    s.fold(fromInterfacesAdded([JOB, { "org.qubes.Storage.Job": { Operation: "Stop", Objects: [TARGET], Cancelable: false } }]));
    s.fold({ [JOB]: { "org.qubes.Storage.Job": { BytesDone: 10 } } });
    assert.equal(s.jobs.get(JOB).cancelableAtStart, false);
    assert.equal(isPrecache(s.jobs.get(JOB)), true);
});

test("a precache that did not finish is a warning with the service's reason; other jobs are not", () => {
    const s = store();
    const precache = { operation: "ImportVolume", objects: [TARGET], cancelableAtStart: false, announced: true };
    const why = "No space left on device; the call succeeded without it: the volume's next start copies its image instead";
    const warning = precacheWarning(s, precache, false, why);
    assert.equal(warning.title, "The next start of appvms/work/private (slow) will copy its image");
    assert.equal(warning.text, why);
    assert.equal(precacheWarning(s, precache, true, ""), null);
    assert.equal(precacheWarning(s, { operation: "ImportVolume", objects: [TARGET, SOURCE] }, false, "Cancelled"), null);
    assert.equal(precacheWarning(s, undefined, false, "gone"), null);
});

test("an import's own copy of the image (ImportDataEnd, cancelable) is no precache", () => {
    const s = store();
    const JOB = "/org/qubes/Storage/jobs/4";
    s.fold(fromInterfacesAdded([JOB, { "org.qubes.Storage.Job": { Operation: "ImportDataEnd", Objects: [TARGET], Cancelable: true } }]));
    const job = s.jobs.get(JOB);
    assert.equal(isPrecache(job), false);
    assert.equal(jobTitle(s, job), "Importing into appvms/work/private (slow)");
    assert.equal(jobNote(job), null, "a cancelable copy says it cannot be cancelled");
    assert.equal(precacheWarning(s, job, false, "Cancelled"), null);
});

test("a one-volume Job found running at the load is labelled by its operation alone", () => {
    const s = store();
    const JOB = "/org/qubes/Storage/jobs/5";
    // In the listing, not an InterfacesAdded: a resize's own copy past its point of no
    // return looks the same as a precache.
    s.fold({ [JOB]: { "org.qubes.Storage.Job": { Operation: "Resize", Objects: [TARGET], Cancelable: false } } });
    const job = s.jobs.get(JOB);
    assert.equal(isPrecache(job), false);
    assert.equal(jobTitle(s, job), "Resizing appvms/work/private (slow)");
    assert.equal(jobNote(job), "Past the point of no return: it can no longer be cancelled.");
    const warning = precacheWarning(s, job, false, "No space left on device.");
    assert.equal(warning.title, "A copy of appvms/work/private (slow) did not finish");
    assert.equal(warning.text, "No space left on device.");
});
