// The messages as drawn: a live region that is there before the first message, and
// the overflow as "N more".

import assert from "node:assert/strict";
import { before, test } from "node:test";

import { MOST_SHOWN, Messages } from "../src/messages.js";
import { loadPage } from "./render.js";

let page;
before(async () => { page = await loadPage("message-list.jsx") });

function draw(messages) {
    const { React, AppContext, MessageList, html } = page;
    return html(React.createElement(AppContext.Provider, { value: { messages } }, React.createElement(MessageList)));
}

test("the messages are a polite live region, there even before the first one", () => {
    const messages = new Messages();
    assert.match(draw(messages), /<ul[^>]*aria-live="polite"/);
    messages.add("danger", "Cannot start appvms/work/private", "Busy.");
    assert.match(draw(messages), /<ul[^>]*aria-live="polite"[^]*Cannot start appvms\/work\/private/);
});

test("lasting messages beyond the few shown are behind an N more button", () => {
    const messages = new Messages();
    for (let i = 1; i <= MOST_SHOWN + 2; i++)
        messages.add("danger", `error ${i}`, "");
    const drawn = draw(messages);
    assert.equal(drawn.match(/data-message="danger"/g).length, MOST_SHOWN);
    assert.match(drawn, /<button[^>]*>2 more<\/button>/);
    messages.expand();
    assert.equal(draw(messages).match(/data-message="danger"/g).length, MOST_SHOWN + 2);
    assert.doesNotMatch(draw(messages), /more<\/button>/);
});
