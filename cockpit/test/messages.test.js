// News goes by itself, errors stay, and no more than a few show.

import assert from "node:assert/strict";
import { test } from "node:test";

import { INFO_MS, MOST_SHOWN, Messages } from "../src/messages.js";

/** A clock the test moves by hand. */
function fakeTimers() {
    let now = 0;
    let next = 1;
    const pending = new Map();
    return {
        setTimeout(fn, ms) { pending.set(next, { at: now + ms, fn }); return next++ },
        clearTimeout(id) { pending.delete(id) },
        advance(ms) {
            now += ms;
            for (const [id, { at, fn }] of [...pending]) {
                if (at <= now) {
                    pending.delete(id);
                    fn();
                }
            }
        },
        get pending() { return pending.size },
    };
}

test("news of success goes after a while, errors and warnings stay", () => {
    const timers = fakeTimers();
    const messages = new Messages(timers);
    messages.info("Cloned appvms/work/private", "Copied.");
    messages.add("danger", "Cannot start", "Busy.");
    messages.add("warning", "The next start copies", "No space.");
    timers.advance(INFO_MS - 1);
    assert.equal(messages.list.length, 3);
    timers.advance(1);
    assert.deepEqual(messages.list.map(m => m.variant), ["danger", "warning"]);
});

test("at most a few show: the oldest news goes first", () => {
    const timers = fakeTimers();
    const messages = new Messages(timers);
    messages.add("danger", "error 1", "");
    for (let i = 1; i <= MOST_SHOWN + 2; i++)
        messages.info(`news ${i}`, "");
    assert.equal(messages.list.length, MOST_SHOWN);
    assert.equal(messages.list[0].title, "error 1");
    assert.equal(messages.list.at(-1).title, `news ${MOST_SHOWN + 2}`);
    // The news dropped early leaves no timer behind.
    assert.equal(timers.pending, MOST_SHOWN - 1);
});

test("a message dismissed by hand cancels its timer", () => {
    const timers = fakeTimers();
    const messages = new Messages(timers);
    const id = messages.add("info", "Exported", "");
    messages.dismiss(id);
    assert.equal(timers.pending, 0);
    assert.equal(messages.list.length, 0);
});
