// What the page says about itself above the content: whether the service is there,
// and why the page is read-only (or limited) for this session.

import React from "react";
import { Alert, AlertActionLink, EmptyState, EmptyStateBody, EmptyStateHeader, Progress, Spinner } from "@patternfly/react-core";

import { ACTIONS } from "./access.js";
import { useAccess, useApp, useEvent } from "./context.js";

const WORDS = {
    [ACTIONS.managePools]: "manage pools",
    [ACTIONS.manageVolumes]: "create, resize, revert and remove volumes",
    [ACTIONS.run]: "start and stop volumes",
    [ACTIONS.import]: "import",
    [ACTIONS.export]: "export",
};

export function AccessBanner() {
    const access = useAccess();
    const user = access.user?.name ?? "this user";
    if (access.readOnly) {
        return (
            <Alert id="read-only" isInline variant="warning" title="Read-only: you may look, not change"
                   actionLinks={<AlertActionLink id="try-anyway" onClick={() => access.tryAnyway()}>Try the actions anyway</AlertActionLink>}>
                You are logged in as {user} without administrative access, and polkit does not allow {user} the
                storage actions (org.qubes.storage.*): by default they need an administrator. Turn on
                administrative access in Cockpit's top bar to create, start, stop or change volumes. If a polkit
                rule allows {user} some pools or volumes only, try the actions anyway: the service then says for
                each whether it is allowed.
            </Alert>
        );
    }
    if (access.trying) {
        return (
            <Alert id="trying" isInline variant="info" title="Acting without administrative access"
                   actionLinks={<AlertActionLink onClick={() => access.tryAnyway(false)}>Back to read-only</AlertActionLink>}>
                As {user}, each action is allowed or refused by polkit when you make it; a refusal is shown with
                the service's reason.
            </Alert>
        );
    }
    if (access.limited) {
        const words = [...access.grants].map(a => WORDS[a]).join(", ");
        return (
            <Alert id="limited-access" isInline variant="info" title="Limited access">
                You are logged in as {user} without administrative access; polkit allows you to {words}.
                Everything else needs administrative access.
            </Alert>
        );
    }
    return null;
}

/** The content while the service is not (yet) there; null once it is. */
export function ServiceStatus() {
    const { service } = useApp();
    useEvent(service, "state");
    if (service.state === "ready")
        return null;
    if (service.state === "connecting")
        return <EmptyState><Spinner size="xl" aria-label="Loading" /></EmptyState>;
    if (service.state === "absent") {
        return (
            <EmptyState id="service-absent">
                <EmptyStateHeader titleText="The storage service is not running" headingLevel="h2" />
                <EmptyStateBody>
                    org.qubes.Storage is not on the system bus. Start it with: systemctl start qubes-storaged
                </EmptyStateBody>
            </EmptyState>
        );
    }
    return <Alert id="service-failed" isInline variant="danger" title="Cannot talk to the storage service">{service.problem}</Alert>;
}

/**
 * While the volumes are read one by one (the service has more than one listing can
 * carry, loader.js): how far it got. Afterwards only if some could not be read.
 */
export function LoadingBanner() {
    const { service } = useApp();
    useEvent(service, "loading");
    const loading = service.loading;
    if (!loading)
        return null;
    const { done, total, missed, unlisted, problem, finished } = loading;
    if (finished) {
        if (!missed && !unlisted)
            return null;
        const title = missed
            ? `${missed} of ${total} volumes could not be read`
            : `The volumes of ${unlisted} ${unlisted === 1 ? "pool" : "pools"} could not be listed`;
        return (
            <Alert id="load-missed" isInline variant="warning" title={title}>
                {problem} They are not in the list; reload the page to read them again.
            </Alert>
        );
    }
    return (
        <Alert id="loading-volumes" isInline variant="info" title={`Reading volumes: ${done} of ${total}`}>
            The service has more volumes than one listing on the bus can carry, so each is read on its own.
            The list fills in as they arrive; changes are shown meanwhile.
            <Progress value={total ? (100 * done) / total : 0} measureLocation="none" aria-label="Volumes read" />
        </Alert>
    );
}
