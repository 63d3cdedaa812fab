// What the page says when a run of the CLI ends: an export's status file, and the
// CLI's message without what only a terminal user can act on.

import assert from "node:assert/strict";
import { test } from "node:test";

import { cliMessage, exportFilename, exportOutcome } from "../src/cli-outcome.js";

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
    assert.equal(exportFilename("fast", "appvms/work/private"), "fast-appvms-work-private.img");
});

test("an app VM's and a template's volume of one name get different downloads", () => {
    assert.notEqual(exportFilename("fast", "appvms/fedora/root"), exportFilename("fast", "vm-templates/fedora/root"));
    assert.equal(exportFilename("fast", "vm-templates/fedora/root"), "fast-vm-templates-fedora-root.img");
});

test("a download is never named undefined", () => {
    assert.equal(exportFilename(undefined, "appvms/work/private"), "appvms-work-private.img");
});
