// The volume list's rows keep one height (the window of rows measures one): a vid or
// pool name is drawn on one line, cut with an ellipsis, whole in its title — never
// wrapped.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { before, test } from "node:test";

import { loadPage } from "./render.js";

let page;
before(async () => { page = await loadPage("volumes.jsx") });

const CSS = readFileSync(new URL("../src/app.css", import.meta.url), "utf8");

/** The declarations of the rules whose selector contains `selector`. */
function rules(selector) {
    return [...CSS.matchAll(/([^{}]+)\{([^}]*)\}/g)]
            .filter(([, selectors]) => selectors.includes(selector))
            .map(([, , body]) => body);
}

test("a vid is one text with its title, with no place to wrap", () => {
    const { React, OneLine, html } = page;
    const drawn = html(React.createElement(OneLine, { text: "vm-templates/fedora-40-xfce/root" }));
    assert.equal(drawn, '<span class="qs-one-line" title="vm-templates/fedora-40-xfce/root">vm-templates/fedora-40-xfce/root</span>');
});

test("the page's style cuts such a text with an ellipsis and lets nothing in the list wrap it", () => {
    const oneLine = rules(".qs-one-line").join("");
    assert.match(oneLine, /white-space:\s*nowrap/);
    assert.match(oneLine, /text-overflow:\s*ellipsis/);
    assert.match(oneLine, /overflow:\s*hidden/);
    // (The row that says no volume matches the filter is no volume's row.)
    const rows = [...CSS.matchAll(/([^{}]+)\{([^}]*)\}/g)]
            .filter(([, selectors]) => selectors.includes(".qs-volumes") && !selectors.includes(".qs-no-match"));
    for (const [, selectors, body] of rows)
        assert.doesNotMatch(body, /white-space:\s*normal/, selectors.trim());
});
