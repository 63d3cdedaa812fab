// The page's messages (messages.js) as PatternFly alerts at the top of the page, each
// with a close button; news of success goes by itself (the alert's own timeout, which
// waits while the pointer or the focus is on it). The group is a live region (polite),
// present even while empty so that a screen reader hears what is added to it; messages
// beyond the few shown collapse into "N more".

import React from "react";
import { Alert, AlertActionCloseButton, AlertGroup } from "@patternfly/react-core";

import { useApp, useEvent } from "./context.js";

export function MessageList() {
    const { messages } = useApp();
    useEvent(messages, "changed");
    const hidden = messages.hidden();
    return (
        <AlertGroup className="qs-messages" isLiveRegion aria-label="Messages"
                    overflowMessage={hidden > 0 ? `${hidden} more` : ""} onOverflowClick={() => messages.expand()}>
            {messages.shown().map(m => (
                <Alert key={m.id} isInline variant={m.variant} title={m.title}
                       data-message={m.variant}
                       timeout={m.timeout ?? false} onTimeout={() => messages.dismiss(m.id)}
                       actionClose={<AlertActionCloseButton onClose={() => messages.dismiss(m.id)} />}>
                    {m.text}
                </Alert>
            ))}
        </AlertGroup>
    );
}
