// What the page says after an action started outside a dialog: each message is the
// title of the action and the service's own sentence (`describe`). Errors and warnings
// stay until dismissed — they need reading; news of success ("Cloned …", "Exported …")
// goes by itself after INFO_MS, and at most MOST_SHOWN messages show (the oldest news
// goes first), so they never pile up. Plain JavaScript (message-list.jsx draws them),
// tested under test/ with a fake clock.

import { describe } from "./service.js";

export const INFO_MS = 8000;
export const MOST_SHOWN = 5;

/** Variants that stay until dismissed. */
const LASTING = new Set(["danger", "warning"]);

export class Messages extends EventTarget {
    /** `timers`: {setTimeout, clearTimeout} (the window's unless a test gives its own). */
    constructor(timers = globalThis) {
        super();
        this.list = [];
        this.next = 1;
        this.timers = timers;
        this.expiries = new Map();
    }

    add(variant, title, text) {
        const id = this.next++;
        this.list = [...this.list, { id, variant, title, text }];
        if (!LASTING.has(variant))
            this.expiries.set(id, this.timers.setTimeout(() => this.dismiss(id), INFO_MS));
        this.cap();
        this.dispatchEvent(new Event("changed"));
        return id;
    }

    /** At most MOST_SHOWN: the oldest news goes first, then the oldest of the rest. */
    cap() {
        while (this.list.length > MOST_SHOWN) {
            const victim = this.list.find(m => !LASTING.has(m.variant)) ?? this.list[0];
            this.forget(victim.id);
        }
    }

    error(title, error) {
        this.add("danger", title, describe(error));
    }

    info(title, text) {
        this.add("info", title, text);
    }

    dismiss(id) {
        if (!this.list.some(m => m.id === id))
            return;
        this.forget(id);
        this.dispatchEvent(new Event("changed"));
    }

    forget(id) {
        this.list = this.list.filter(m => m.id !== id);
        if (this.expiries.has(id)) {
            this.timers.clearTimeout(this.expiries.get(id));
            this.expiries.delete(id);
        }
    }

    /** Runs `action` (returning a promise); a failure becomes a message titled `title`. */
    run(title, action) {
        return Promise.resolve()
                .then(action)
                .catch(error => this.error(title, error));
    }
}
