// Whether the page is narrow: the frame Cockpit gives it is below NARROW_PX (a phone;
// at a 900 px window the frame is still ~660 px, room for the tables). Only then do the
// tables turn into stacked cards and the usage bars put their figures above the bar;
// PatternFly's own switch at 768 px would turn a desktop's half-width window into a
// list that shows one volume at a time. Between the two, the tables leave out the
// columns marked `wideColumn` (shown on the volume's own page).

import { useSyncExternalStore } from "react";

export const NARROW_PX = 576;

const QUERY = `(max-width: ${NARROW_PX - 1}px)`;

function subscribe(listener) {
    const media = window.matchMedia(QUERY);
    media.addEventListener("change", listener);
    return () => media.removeEventListener("change", listener);
}

/** True while the page is narrow; re-renders when that changes. */
export function useNarrow() {
    return useSyncExternalStore(subscribe, () => window.matchMedia(QUERY).matches);
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
