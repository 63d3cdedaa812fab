// What the create dialogs say about each field, and when they say it.

import assert from "node:assert/strict";
import { test } from "node:test";

import { MOST_REVISIONS_TO_KEEP, firstError, poolFieldErrors, shownError, sizeOrError, volumeFieldErrors } from "../src/checks.js";

test("a pool's bad name, relative directory and bad count each get their own sentence", () => {
    const errors = poolFieldErrors({ name: "1st pool", dir: "pools/a", keep: "-2" });
    assert.match(errors.name, /^The name starts with a letter/);
    assert.match(errors.dir, /absolute path/);
    assert.match(errors.keep, /-1 or more/);
    assert.deepEqual(poolFieldErrors({ name: "fast", dir: "/var/lib/qubes", keep: "-1" }), { name: null, dir: null, keep: null });
});

test("a volume's fields are checked one by one, the size only without a source", () => {
    const base = { vm: "work", name: "private", size: "2G", source: "", needsSource: false };
    assert.equal(firstError(volumeFieldErrors(base)), null);
    assert.match(volumeFieldErrors({ ...base, vm: "my vm" }).vm, /^The VM name starts with a letter/);
    assert.match(volumeFieldErrors({ ...base, name: "root-dirty" }).name, /does not end in -dirty/);
    assert.match(volumeFieldErrors({ ...base, size: "1000" }).size, /512-byte sectors/);
    const snapshot = volumeFieldErrors({ ...base, size: "nonsense", needsSource: true });
    assert.equal(snapshot.size, null);
    assert.match(snapshot.source, /Choose the source volume/);
});

test("a field's sentence shows only once the user typed in it", () => {
    const errors = poolFieldErrors({ name: "", dir: "", keep: "1" });
    assert.equal(shownError(errors, {}, "name"), null);
    assert.match(shownError(errors, { name: true }, "name"), /starts with a letter/);
    // The button stays disabled for the untouched field all the same.
    assert.match(firstError(errors), /starts with a letter/);
});

test("sizes must be whole sectors", () => {
    assert.deepEqual(sizeOrError("1M"), [1024 * 1024, null]);
    assert.match(sizeOrError("1.15GiB")[1], /512-byte sectors/);
    assert.match(sizeOrError("big")[1], /Write a size/);
});

test("a snapshot in a pool without any volume that saves on stop says so", () => {
    const base = { vm: "work", name: "private", size: "2G", source: "", needsSource: true };
    assert.match(volumeFieldErrors({ ...base, sourcesOffered: 0 }).source, /^The pool has no volume that saves on stop/);
    assert.match(volumeFieldErrors({ ...base, sourcesOffered: 2 }).source, /^Choose the source volume/);
    assert.equal(
        volumeFieldErrors({ ...base, sourcesOffered: 1, gone: "appvms/a/private" }).source,
        "The source appvms/a/private was removed meanwhile: choose another.",
    );
});

test("revisions to keep fits the bus's int32", () => {
    const pool = keep => poolFieldErrors({ name: "fast", dir: "/var/lib/qubes", keep }).keep;
    assert.equal(pool(String(MOST_REVISIONS_TO_KEEP)), null);
    assert.match(pool(String(MOST_REVISIONS_TO_KEEP + 1)), /at most 2147483647/);
    assert.match(pool("99999999999999999999"), /at most 2147483647/);
});
