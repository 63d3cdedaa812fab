// Whether the page is narrow: the frame Cockpit gives it is below NARROW_PX (a phone;
// at a 900 px window the frame is still ~660 px, room for the tables). Only then do the
// tables turn into stacked cards and the usage bars put their figures above the bar;
// PatternFly's own switch at 768 px would turn a desktop's half-width window into a
// list that shows one volume at a time. Between the two, the tables leave out the
// columns marked `wideColumn` (shown on the volume's own page).

import { useSyncExternalStore } from "react";

export const NARROW_PX = 576;

/** PatternFly's lg breakpoint: below it the tables leave out their wide columns. */
export const WIDE_PX = 992;

/** Whether the page is below `px`, as a store React can subscribe to (made once per
 * width: a subscription that changes with every render would be renewed each time). */
function widthBelow(px) {
    const query = `(max-width: ${px - 1}px)`;
    return {
        subscribe(listener) {
            const media = window.matchMedia(query);
            media.addEventListener("change", listener);
            return () => media.removeEventListener("change", listener);
        },
        get: () => window.matchMedia(query).matches,
    };
}

const BELOW_NARROW = widthBelow(NARROW_PX);
const BELOW_WIDE = widthBelow(WIDE_PX);

/** True while the page is narrow; re-renders when that changes. */
export function useNarrow() {
    return useSyncExternalStore(BELOW_NARROW.subscribe, BELOW_NARROW.get);
}

/** True while the page is below [WIDE_PX] (narrow or middle): no room for figures
 * beside a bar. */
export function useNotWide() {
    return useSyncExternalStore(BELOW_WIDE.subscribe, BELOW_WIDE.get);
}

/** A table's `gridBreakPoint`: cards when narrow, else always a table. */
export function useTableLayout() {
    return useNarrow() ? "grid" : "";
}

/**
 * A column's `visibility` in a table of `layout`: hidden below PatternFly's lg
 * breakpoint (992 px) while it is a table; a card shows every field.
 */
export function wideColumn(layout) {
    return layout === "grid" ? undefined : ["hidden", "visibleOnLg"];
}
