// The window of rows a scrolled list renders.

import assert from "node:assert/strict";
import { test } from "node:test";

import { visibleRange } from "../src/virtual.js";

test("the window covers the view and a margin, within the list", () => {
    assert.deepEqual(visibleRange(0, 400, 40, 10000, 10), { first: 0, last: 20 });
    assert.deepEqual(visibleRange(4000, 400, 40, 10000, 10), { first: 90, last: 120 });
    assert.deepEqual(visibleRange(399600, 400, 40, 10000, 10), { first: 9980, last: 10000 });
    assert.deepEqual(visibleRange(0, 400, 40, 5, 10), { first: 0, last: 5 });
    assert.deepEqual(visibleRange(0, 400, 40, 0, 10), { first: 0, last: 0 });
});

test("a position past the end of a list that got shorter shows its last rows", () => {
    assert.deepEqual(visibleRange(399600, 400, 40, 4, 10), { first: 0, last: 4 });
    assert.deepEqual(visibleRange(399600, 400, 40, 100, 10), { first: 80, last: 100 });
});
