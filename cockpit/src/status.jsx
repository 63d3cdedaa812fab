// What the page says about itself above the content: whether the service is there,
// and why the page is read-only (or limited) for this session.

import React from "react";
import { Alert, EmptyState, EmptyStateBody, EmptyStateHeader, Spinner } from "@patternfly/react-core";

import { ACTIONS } from "./access.js";
import { useAccess, useApp, useEvent } from "./context.js";

const WORDS = {
    [ACTIONS.managePools]: "manage pools",
    [ACTIONS.manageVolumes]: "create, resize, revert and remove volumes",
    [ACTIONS.run]: "start and stop volumes",
    [ACTIONS.import]: "import",
    [ACTIONS.export]: "export",
};

/** "start and stop volumes in work; export in work and fast" */
function grantsInWords(access, store) {
    const byAction = new Map();
    for (const [poolPath, set] of access.grants) {
        for (const action of set) {
            const pools = byAction.get(action) || [];
            pools.push(store.pools.get(poolPath)?.name ?? "any pool");
            byAction.set(action, pools);
        }
    }
    return [...byAction].map(([action, pools]) => `${WORDS[action]} (${[...new Set(pools)].join(", ")})`).join("; ");
}

export function AccessBanner() {
    const access = useAccess();
    const { store } = useApp();
    const user = access.user?.name ?? "this user";
    if (access.readOnly) {
        return (
            <Alert id="read-only" isInline variant="warning" title="Read-only: you may look, not change">
                You are logged in as {user} without administrative access, and polkit allows {user} none
                of the storage actions (org.qubes.storage.*): they need an administrator. Turn on
                administrative access in Cockpit's top bar to create, start, stop or change volumes, or ask
                an administrator for a polkit rule.
            </Alert>
        );
    }
    if (access.limited) {
        return (
            <Alert id="limited-access" isInline variant="info" title="Limited access">
                You are logged in as {user} without administrative access; polkit allows you
                to {grantsInWords(access, store)}. Everything else needs administrative access.
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
