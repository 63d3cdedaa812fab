// News goes by itself, errors stay — none is ever dropped — and no more than a few
// show: the rest collapse into "N more".

import assert from "node:assert/strict";
import { test } from "node:test";

import { INFO_MS, MOST_SHOWN, Messages } from "../src/messages.js";

test("news of success goes after a while, errors and warnings stay", () => {
    const messages = new Messages();
    messages.info("Cloned appvms/work/private", "Copied.");
    messages.add("danger", "Cannot start", "Busy.");
    messages.add("warning", "The next start copies", "No space.");
    // The alert runs the timeout (and waits while the pointer or the focus is on it).
    assert.deepEqual(messages.list.map(m => m.timeout), [INFO_MS, undefined, undefined]);
    messages.dismiss(messages.list[0].id);
    assert.deepEqual(messages.list.map(m => m.variant), ["danger", "warning"]);
});

test("at most a few show: the oldest news goes first", () => {
    const messages = new Messages();
    messages.add("danger", "error 1", "");
    for (let i = 1; i <= MOST_SHOWN + 2; i++)
        messages.info(`news ${i}`, "");
    assert.equal(messages.list.length, MOST_SHOWN);
    assert.equal(messages.list[0].title, "error 1");
    assert.equal(messages.list.at(-1).title, `news ${MOST_SHOWN + 2}`);
    assert.equal(messages.hidden(), 0);
});

test("errors beyond the few shown are never dropped: they collapse into N more", () => {
    const messages = new Messages();
    for (let i = 1; i <= MOST_SHOWN + 2; i++)
        messages.add("danger", `error ${i}`, "");
    assert.equal(messages.list.length, MOST_SHOWN + 2, "an error was dropped");
    assert.deepEqual(messages.shown().map(m => m.title), ["error 3", "error 4", "error 5", "error 6", "error 7"]);
    assert.equal(messages.hidden(), 2);
    messages.expand();
    assert.equal(messages.shown().length, MOST_SHOWN + 2);
    assert.equal(messages.hidden(), 0);
    // Once they fit again, the next overflow is collapsed anew.
    messages.dismiss(messages.list[0].id);
    messages.dismiss(messages.list[0].id);
    assert.equal(messages.expanded, false);
});

test("news among as many errors as show is shown, not dropped", () => {
    const messages = new Messages();
    for (let i = 1; i <= MOST_SHOWN; i++)
        messages.add("danger", `error ${i}`, "");
    messages.info("Exported appvms/work/private", "");
    assert.equal(messages.list.length, MOST_SHOWN + 1, "the news or an error was dropped");
    assert.equal(messages.shown().at(-1).title, "Exported appvms/work/private");
    assert.equal(messages.hidden(), 1);
});

test("a message dismissed by hand goes", () => {
    const messages = new Messages();
    const id = messages.add("info", "Exported", "");
    messages.dismiss(id);
    assert.equal(messages.list.length, 0);
});
