// What went wrong (or needs saying) after an action started outside a dialog: each
// message is the title of the action and the service's own sentence (`describe`),
// shown as a PatternFly alert at the top of the page until dismissed.

import React from "react";
import { Alert, AlertActionCloseButton, AlertGroup } from "@patternfly/react-core";

import { useApp, useEvent } from "./context.js";
import { describe } from "./service.js";

export class Messages extends EventTarget {
    constructor() {
        super();
        this.list = [];
        this.next = 1;
    }

    add(variant, title, text) {
        this.list = [...this.list, { id: this.next++, variant, title, text }];
        this.dispatchEvent(new Event("changed"));
    }

    error(title, error) {
        this.add("danger", title, describe(error));
    }

    info(title, text) {
        this.add("info", title, text);
    }

    dismiss(id) {
        this.list = this.list.filter(m => m.id !== id);
        this.dispatchEvent(new Event("changed"));
    }

    /** Runs `action` (returning a promise); a failure becomes a message titled `title`. */
    run(title, action) {
        return Promise.resolve()
                .then(action)
                .catch(error => this.error(title, error));
    }
}

export function MessageList() {
    const { messages } = useApp();
    useEvent(messages, "changed");
    if (messages.list.length === 0)
        return null;
    return (
        <AlertGroup className="qs-messages">
            {messages.list.map(m => (
                <Alert key={m.id} isInline variant={m.variant} title={m.title}
                       data-message={m.variant}
                       actionClose={<AlertActionCloseButton onClose={() => messages.dismiss(m.id)} />}>
                    {m.text}
                </Alert>
            ))}
        </AlertGroup>
    );
}
