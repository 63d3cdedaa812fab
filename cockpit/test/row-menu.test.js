// A row menu's item that does not make sense now says why inside the item itself —
// seen, and read out with it — not in a tooltip only a pointer reaches.

import assert from "node:assert/strict";
import { before, test } from "node:test";

import { loadPage } from "./render.js";

let page;
before(async () => {
    page = await loadPage("row-menu.jsx", { from: "@patternfly/react-core", names: ["DropdownItem", "Menu", "MenuContent", "MenuList"] });
});

const WHY = "Remove its 1 volume first: a pool that holds volumes cannot be removed.";

test("a disabled item carries its reason as its description, not a tooltip", () => {
    const [enabled, disabled] = page.menuEntries([
        { title: "Create volume…", onClick: () => {} },
        { title: "Remove pool…", onClick: () => {}, why: WHY },
    ]);
    assert.equal(enabled.isAriaDisabled, undefined);
    assert.equal(disabled.isAriaDisabled, true);
    assert.equal(disabled.description, WHY);
    assert.equal(disabled.tooltipProps, undefined);
});

test("the reason is drawn inside the menu item, under its title", () => {
    const { React, DropdownItem, Menu, MenuContent, MenuList, html, menuEntries } = page;
    const [{ title, ...props }] = menuEntries([{ title: "Remove pool…", onClick: () => {}, why: WHY }]);
    // (PatternFly's Menu looks at the focused element while it draws.)
    globalThis.document = { activeElement: null };
    let drawn;
    try {
        drawn = html(React.createElement(Menu, null, React.createElement(MenuContent, null,
            React.createElement(MenuList, null, React.createElement(DropdownItem, props, title)))));
    } finally {
        delete globalThis.document;
    }
    const item = drawn.match(/<button[^>]*class="pf-v5-c-menu__item"[^]*?<\/button>/)?.[0] ?? "";
    assert.match(item, /aria-disabled="true"/);
    assert.match(item, /role="menuitem"/);
    assert.match(item, /<span class="pf-v5-c-menu__item-text">Remove pool…<\/span>/);
    assert.match(item, new RegExp(`<span class="pf-v5-c-menu__item-description"><span>${WHY}</span></span>`));
});
