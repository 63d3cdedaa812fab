// The page's messages (messages.js) as PatternFly alerts at the top of the page, each
// with a close button; news of success goes by itself.

import React from "react";
import { Alert, AlertActionCloseButton, AlertGroup } from "@patternfly/react-core";

import { useApp, useEvent } from "./context.js";

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
