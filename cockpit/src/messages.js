// What the page says after an action started outside a dialog: each message is the
// title of the action and the service's own sentence (`describe`). Errors and warnings
// stay until dismissed — they need reading, so none is ever dropped; news of success
// ("Cloned …", "Exported …") goes by itself after INFO_MS (its alert's own timeout,
// which waits while the pointer or the focus is on it: message-list.jsx). At most
// MOST_SHOWN messages show: older news goes first to make room (never the newest
// message, so news arriving among five errors is seen), and lasting messages beyond
// that collapse into "N more", which shows them all. Plain JavaScript, tested under
// test/.

import { describe } from "./service.js";

export const INFO_MS = 8000;
export const MOST_SHOWN = 5;

/** Variants that stay until dismissed. */
const LASTING = new Set(["danger", "warning"]);

export class Messages extends EventTarget {
    constructor() {
        super();
        this.list = [];
        this.next = 1;
        /** Whether the collapsed messages show (until they fit again). */
        this.expanded = false;
    }

    add(variant, title, text) {
        const id = this.next++;
        const timeout = LASTING.has(variant) ? undefined : INFO_MS;
        this.list = [...this.list, { id, variant, title, text, timeout }];
        this.makeRoom();
        this.dispatchEvent(new Event("changed"));
        return id;
    }

    /** Beyond MOST_SHOWN the oldest news goes, except the newest message; lasting ones stay. */
    makeRoom() {
        while (this.list.length > MOST_SHOWN) {
            const victim = this.list.slice(0, -1).find(m => !LASTING.has(m.variant));
            if (!victim)
                return;
            this.list = this.list.filter(m => m !== victim);
        }
    }

    /** The messages to draw: the newest MOST_SHOWN, or all once expanded. */
    shown() {
        return this.expanded ? this.list : this.list.slice(-MOST_SHOWN);
    }

    /** How many messages "N more" stands for (0: all show). */
    hidden() {
        return this.list.length - this.shown().length;
    }

    expand() {
        this.expanded = true;
        this.dispatchEvent(new Event("changed"));
    }

    error(title, error) {
        this.add("danger", title, describe(error));
    }

    info(title, text) {
        this.add("info", title, text);
    }

    /** Dismissed by its close button, or its timeout. */
    dismiss(id) {
        if (!this.list.some(m => m.id === id))
            return;
        this.list = this.list.filter(m => m.id !== id);
        if (this.list.length <= MOST_SHOWN)
            this.expanded = false;
        this.dispatchEvent(new Event("changed"));
    }

    /** Runs `action` (returning a promise); a failure becomes a message titled `title`. */
    run(title, action) {
        return Promise.resolve()
                .then(action)
                .catch(error => this.error(title, error));
    }
}
