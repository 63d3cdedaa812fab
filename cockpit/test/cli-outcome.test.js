// What the page says when a run of the CLI ends: an export's status file, and the
// CLI's message without what only a terminal user can act on.

import assert from "node:assert/strict";
import { test } from "node:test";

import { execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, existsSync, utimesSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { cliMessage, exportFilename, exportOutcome, staleExportCleanup } from "../src/cli-outcome.js";

test("an exit status of 0 is a finished export", () => {
    assert.deepEqual(exportOutcome("0\n"), { ok: true, text: "" });
});

test("a failed export says the CLI's message, as the page words it", () => {
    const outcome = exportOutcome("1\nqubes-storage: Authentication is required to export volume data for volume appvms/work/private in pool work, but the caller did not allow interactive authorization. (run it again without --no-interaction to authenticate)\n");
    assert.equal(outcome.ok, false);
    assert.equal(outcome.text, "Authentication is required to export volume data for volume appvms/work/private in pool work, but the caller did not allow interactive authorization.");
});

test("a CLI stopped by a signal without a message says which signal", () => {
    const outcome = exportOutcome("143\n");
    assert.equal(outcome.ok, false);
    assert.match(outcome.text, /signal 15/);
});

test("a failure without a message says the exit status", () => {
    assert.deepEqual(exportOutcome("2\n"), { ok: false, text: "qubes-storage exited with status 2." });
});

test("an empty status file is no success", () => {
    assert.equal(exportOutcome("").ok, false);
});

test("a message without the CLI's prefix or advice is kept as it is", () => {
    assert.equal(cliMessage("  No space left on device\n"), "No space left on device");
    assert.equal(cliMessage("qubes-storage: a\nqubes-storage: b"), "a\nb");
});

test("an export's download is named for its pool and whole vid", () => {
    assert.equal(exportFilename("fast", "appvms/work/private"), "fast+appvms+work+private.img");
});

test("an app VM's and a template's volume of one name get different downloads", () => {
    assert.notEqual(exportFilename("fast", "appvms/fedora/root"), exportFilename("fast", "vm-templates/fedora/root"));
    assert.equal(exportFilename("fast", "vm-templates/fedora/root"), "fast+vm-templates+fedora+root.img");
    assert.notEqual(exportFilename("fast", "appvms/foo-bar/root"), exportFilename("fast", "appvms/foo/bar-root"));
});

test("a download is never named undefined", () => {
    assert.equal(exportFilename(undefined, "appvms/work/private"), "appvms+work+private.img");
});

test("the cleanup deletes only this user's export directories older than a day", () => {
    const tmp = mkdtempSync(join(tmpdir(), "qs-cleanup-test-"));
    try {
        const old = join(tmp, "qubes-storage-export.oldoldoldo");
        const fresh = join(tmp, "qubes-storage-export.freshfresh");
        const other = join(tmp, "something-else.oldoldoldo");
        for (const dir of [old, fresh, other])
            mkdirSync(dir);
        mkdirSync(join(old, "inside"));
        const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
        for (const dir of [old, other])
            utimesSync(dir, twoDaysAgo, twoDaysAgo);
        const [command, ...args] = staleExportCleanup();
        execFileSync(command, args, { env: { ...process.env, TMPDIR: tmp } });
        assert.equal(existsSync(old), false, "the old export directory stayed");
        assert.equal(existsSync(fresh), true, "a running export's directory went");
        assert.equal(existsSync(other), true, "another program's directory went");
    } finally {
        rmSync(tmp, { recursive: true, force: true });
    }
});
