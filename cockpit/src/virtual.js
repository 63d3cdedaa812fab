// Windowing for long lists: of 10 000 rows only those in view (plus a margin) are in
// the DOM; spacers above and below keep the scroll height. The rows have one height,
// measured from a rendered row, so the window is arithmetic.

import { useCallback, useLayoutEffect, useState } from "react";

const MARGIN = 10;

/** The rows [first, last) to render in a scroll container `element` of `count` rows. */
export function visibleRange(scrollTop, viewHeight, rowHeight, count, margin = MARGIN) {
    // A position past the end (the list just got shorter) shows the last rows.
    const inView = Math.ceil(viewHeight / rowHeight);
    const top = Math.min(Math.floor(scrollTop / rowHeight), Math.max(0, count - inView));
    const first = Math.max(0, top - margin);
    const last = Math.min(count, top + inView + margin);
    return { first, last };
}

/**
 * Follows the scroll container (a ref callback's element) and returns the visible
 * range; `offset` is the height above the first row (the table head).
 */
export function useVisibleRows(count, rowHeight, offset) {
    const [element, setElement] = useState(null);
    const [range, setRange] = useState({ first: 0, last: Math.min(count, 40) });
    const containerRef = useCallback(node => setElement(node), []);

    useLayoutEffect(() => {
        if (!element)
            return undefined;
        const update = () => {
            const next = visibleRange(Math.max(0, element.scrollTop - offset), element.clientHeight,
                                      rowHeight, count);
            setRange(prev => (prev.first === next.first && prev.last === next.last ? prev : next));
        };
        update();
        element.addEventListener("scroll", update, { passive: true });
        const observer = new ResizeObserver(update);
        observer.observe(element);
        return () => {
            element.removeEventListener("scroll", update);
            observer.disconnect();
        };
    }, [element, count, rowHeight, offset]);

    return { containerRef, ...range };
}
