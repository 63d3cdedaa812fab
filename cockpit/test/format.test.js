// Sizes, rates, remaining time and the words for kinds and states.

import assert from "node:assert/strict";
import { test } from "node:test";

import { exactSizeText, formatBytes, formatEta, formatRate, parseSize, stateWord, vmOf, volumeCountText, volumeKind } from "../src/format.js";

test("sizes are written in binary units without trailing zeros", () => {
    assert.equal(formatBytes(0), "0 B");
    assert.equal(formatBytes(512), "512 B");
    assert.equal(formatBytes(1024), "1 KiB");
    assert.equal(formatBytes(1536 * 1024 * 1024), "1.5 GiB");
    assert.equal(formatBytes(100 * 1024 ** 3), "100 GiB");
    assert.equal(formatBytes(10 * 1024 ** 2), "10 MiB");
    assert.equal(formatBytes(undefined), "—");
});

test("sizes are read with or without a binary suffix", () => {
    assert.equal(parseSize("2G"), 2 * 1024 ** 3);
    assert.equal(parseSize("1.5 GiB"), 1.5 * 1024 ** 3);
    assert.equal(parseSize("512m"), 512 * 1024 ** 2);
    assert.equal(parseSize("4096"), 4096);
    assert.equal(parseSize("lots"), null);
    assert.equal(parseSize("-1G"), null);
});

test("the time left follows the rate", () => {
    assert.equal(formatEta(1000, 100), "10 s");
    assert.equal(formatEta(185, 1), "3 min 5 s");
    assert.equal(formatEta(3720, 1), "1 h 2 min");
    assert.equal(formatEta(1000, 0), "—");
    assert.equal(formatRate(2 * 1024 ** 2), "2 MiB/s");
});

test("kinds and states are words", () => {
    assert.equal(volumeKind({ saveOnStop: true, revisionsToKeep: 1 }), "origin");
    assert.equal(volumeKind({ saveOnStop: true, revisionsToKeep: -1 }), "origin, no revisions");
    assert.equal(volumeKind({ snapOnStart: true }), "snapshot");
    assert.equal(volumeKind({ snapOnStart: true, saveOnStop: true }), "origin + snapshot");
    assert.equal(volumeKind({}), "volatile");
    assert.equal(stateWord({ started: true }), "running");
    assert.equal(stateWord({ started: false }), "stopped");
    assert.equal(vmOf("appvms/work/private"), "work");
    assert.equal(vmOf("odd"), "");
});

test("a pool's volumes are counted, and said to be still read while they are", () => {
    assert.equal(volumeCountText({ total: 3, running: 1 }, undefined), "3 (1 running)");
    assert.equal(volumeCountText(undefined, undefined), "0 (0 running)");
    assert.equal(volumeCountText({ total: 40, running: 2 }, 600), "40 of 600 read (2 running so far)");
    assert.equal(volumeCountText(undefined, 600), "0 of 600 read (0 running so far)");
    // Created during the load: more than listed is no longer "being read".
    assert.equal(volumeCountText({ total: 601, running: 0 }, 600), "601 (0 running)");
});

test("a size to edit reads back exactly, in the largest unit that holds it whole", () => {
    assert.equal(exactSizeText(2 * 1024 ** 3), "2GiB");
    assert.equal(exactSizeText(1536 * 1024 ** 2), "1536MiB");
    // 1.15 GiB shown, but not 1.15 GiB: the field holds the bytes.
    assert.equal(exactSizeText(1234567680), "1234567680B");
    for (const bytes of [0, 512, 1234567680, 1205632 * 1024, 3 * 1024 ** 4, 2 ** 52 + 512, 1.5 * 1024 ** 3])
        assert.equal(parseSize(exactSizeText(bytes)), bytes, `${bytes} → ${exactSizeText(bytes)}`);
});
