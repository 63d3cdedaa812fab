// A field's own sentence is linked to the field (aria-describedby), so a screen
// reader reads it with the field, and only while it is there.

import assert from "node:assert/strict";
import { before, test } from "node:test";

import { loadPage } from "./render.js";

let page;
before(async () => { page = await loadPage("dialogs.jsx") });

function helpOf(field, error, text) {
    const { React, FieldHelp, html } = page;
    return html(React.createElement(FieldHelp, { field, error }, text));
}

test("the text under a field has the id the field is described by", () => {
    const id = page.describedBy("pool-keep", null, "How many revisions new volumes of the pool keep.");
    assert.equal(id, "pool-keep-help");
    assert.match(helpOf("pool-keep", null, "How many revisions new volumes of the pool keep."),
                 /^<div class="pf-v5-c-form__helper-text" id="pool-keep-help">.*How many revisions/);
    assert.match(helpOf("pool-name", "The name starts with a letter."), /id="pool-name-help"[^]*The name starts with a letter\./);
});

test("a field without a sentence under it is described by nothing", () => {
    assert.equal(page.describedBy("pool-name", null), undefined);
    assert.equal(helpOf("pool-name", null), "");
});
