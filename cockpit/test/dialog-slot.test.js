// The one dialog shown: a close from a dialog that is no longer shown (its action
// finished after another dialog was opened) leaves the newer dialog open.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Dialogs } from "../src/dialog-slot.js";

test("a dialog closes itself", () => {
    const dialogs = new Dialogs();
    let changes = 0;
    dialogs.addEventListener("changed", () => changes++);
    dialogs.show(() => "resize");
    const shown = dialogs.current;
    dialogs.close(shown);
    assert.equal(dialogs.current, null);
    assert.equal(changes, 2);
});

test("a late close of an older dialog leaves the newer one open", () => {
    const dialogs = new Dialogs();
    dialogs.show(() => "resize");
    const resize = dialogs.current;
    dialogs.show(() => "remove pool");
    const removePool = dialogs.current;
    dialogs.close(resize);
    assert.equal(dialogs.current, removePool);
    assert.equal(dialogs.current.render(), "remove pool");
});
