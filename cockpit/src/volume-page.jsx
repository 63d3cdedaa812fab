// One volume's page (#/volume?pool=…&vid=…): its state and properties, its actions
// (a disabled one says why in its tooltip), the revision timeline (the current state,
// then every kept revision newest first with its description and pin, each with
// "Revert to this"), and what happened to it while the page is open (its
// domain signals: started, stopped, revision added or pruned, reverted, resized,
// imported).

import React, { useEffect } from "react";
import {
    ActionList, ActionListItem, Breadcrumb, BreadcrumbItem, Button, Card, CardBody, CardTitle,
    DescriptionList, DescriptionListDescription, DescriptionListGroup, DescriptionListTerm,
    EmptyState, EmptyStateBody, EmptyStateHeader, Flex, FlexItem, Label, Title, Tooltip,
} from "@patternfly/react-core";
import { Table, Tbody, Td, Th, Thead, Tr } from "@patternfly/react-table";

import { ACTIONS } from "./access.js";
import { useAccess, useApp, useStore } from "./context.js";
import { formatBytes, formatTimestamp, volumeKind } from "./format.js";
import { keepText, noRevisionsText, revisionsNewestFirst } from "./revisions.js";
import { RevertDialog } from "./volume-dialogs.jsx";
import { OutdatedLabel, StateLabel } from "./volumes.jsx";
import { volumeActions } from "./volume-actions.jsx";

function Crumbs({ poolName, vid }) {
    return (
        <Breadcrumb>
            <BreadcrumbItem to="#/" onClick={e => { e.preventDefault(); cockpit.location.go([]) }}>VM storage</BreadcrumbItem>
            <BreadcrumbItem>{poolName}</BreadcrumbItem>
            <BreadcrumbItem isActive>{vid}</BreadcrumbItem>
        </Breadcrumb>
    );
}

function Detail({ term, children }) {
    return (
        <DescriptionListGroup>
            <DescriptionListTerm>{term}</DescriptionListTerm>
            <DescriptionListDescription data-detail={term}>{children}</DescriptionListDescription>
        </DescriptionListGroup>
    );
}

function Details({ volume }) {
    const { store } = useApp();
    const source = store.volumes.get(volume.source);
    return (
        <Card className="qs-card">
            <CardTitle>Properties</CardTitle>
            <CardBody>
                <DescriptionList isHorizontal columnModifier={{ lg: "2Col" }}>
                    <Detail term="Kind">{volumeKind(volume)}</Detail>
                    <Detail term="Size">{formatBytes(volume.size)}</Detail>
                    <Detail term="Usage">{formatBytes(volume.usage)}</Detail>
                    <Detail term="Writable">{volume.rw ? "yes" : "no"}</Detail>
                    <Detail term="Revisions to keep">{keepText(volume)}</Detail>
                    <Detail term="Ephemeral">{volume.ephemeral ? "yes" : "no"}</Detail>
                    {source && <Detail term="Source">{source.vid}</Detail>}
                    <Detail term="Image">{volume.started ? volume.blockDevicePath : "—"}</Detail>
                    <Detail term="Uncommitted changes">{volume.isDirty ? "yes" : "no"}</Detail>
                    <Detail term="Outdated">{volume.isOutdated ? "yes (its source changed)" : "no"}</Detail>
                </DescriptionList>
            </CardBody>
        </Card>
    );
}

function Timeline({ volume }) {
    const { dialogs } = useApp();
    const access = useAccess();
    const mayRevert = access.allowed(ACTIONS.manageVolumes) && !volume.started;
    const revisions = revisionsNewestFirst(volume);
    const revert = id => dialogs.show(close => <RevertDialog volume={volume} revision={id} close={close} />);
    return (
        <Card className="qs-card" id="revisions">
            <CardTitle>Revisions</CardTitle>
            <CardBody>
                <Table aria-label="Revisions" variant="compact">
                    <Thead><Tr><Th>Revision</Th><Th>Content from</Th><Th>Description</Th><Th screenReaderText="Actions" /></Tr></Thead>
                    <Tbody>
                        <Tr data-revision="current">
                            <Td dataLabel="Revision">current</Td>
                            <Td dataLabel="Content from">{volume.started ? "running now" : "the committed image"}</Td>
                            <Td dataLabel="Description" />
                            <Td />
                        </Tr>
                        {revisions.map(r => (
                            <Tr key={r.id} data-revision={r.id}>
                                <Td dataLabel="Revision">{r.id}</Td>
                                <Td dataLabel="Content from">{formatTimestamp(r.timestamp)}</Td>
                                <Td dataLabel="Description" className="qs-revision-description">
                                    {r.pinned && <Label isCompact color="blue" className="qs-pinned">pinned</Label>}
                                    {r.pinned && r.description && " "}
                                    {r.description || (r.pinned ? "" : <span className="qs-muted">—</span>)}
                                </Td>
                                <Td isActionCell>
                                    {mayRevert && <Button variant="secondary" size="sm" onClick={() => revert(r.id)}>Revert to this</Button>}
                                </Td>
                            </Tr>
                        ))}
                    </Tbody>
                </Table>
                {revisions.length === 0 && <p className="qs-muted qs-no-revisions">{noRevisionsText(volume)}</p>}
                {revisions.length > 0 &&
                    <p className="qs-muted">A revision holds the image as it was last written at the time shown, not when the revision was made.</p>}
            </CardBody>
        </Card>
    );
}

/** A domain signal in words. */
export function eventText({ member, args }) {
    switch (member) {
    case "VolumeStarted": return `Started; the VM's image is ${args[0]}`;
    case "VolumeStopped": return args[0] ? "Stopped; the changes were committed" : "Stopped";
    case "RevisionAdded": return `Revision ${args[0]} added`;
    case "RevisionPruned": return `Revision ${args[0]} pruned`;
    case "VolumeReverted": return `Reverted to revision ${args[0]}`;
    case "VolumeResized": return `Resized from ${formatBytes(args[0])} to ${formatBytes(args[1])}`;
    case "VolumeImported": return args[0] ? "New content imported" : "An import was discarded";
    default: return member;
    }
}

function Events({ volume }) {
    const { store } = useApp();
    const events = [...(store.events.get(volume.path) || [])].reverse();
    return (
        <Card className="qs-card" id="events">
            <CardTitle>Since this page opened</CardTitle>
            <CardBody>
                {events.length === 0
                    ? <p className="qs-muted">Nothing happened to this volume yet.</p>
                    : <ul className="qs-events">
                        {events.map((e, i) => (
                            <li key={events.length - i}>
                                <span className="qs-event-time">{new Date(e.at).toLocaleTimeString()}</span> {eventText(e)}
                            </li>
                        ))}
                    </ul>}
            </CardBody>
        </Card>
    );
}

function Actions({ volume }) {
    const app = useApp();
    useAccess();
    return (
        <ActionList>
            {volumeActions(app, volume).map(a => {
                const button = (
                    <Button id={`volume-${a.id}`} variant={a.id === "remove" ? "danger" : "secondary"}
                            isAriaDisabled={a.disabled} onClick={a.run}>{a.label}</Button>
                );
                // An aria-disabled button still gets the pointer, so its tooltip shows.
                return (
                    <ActionListItem key={a.id}>
                        {a.disabled && a.why ? <Tooltip content={a.why}>{button}</Tooltip> : button}
                    </ActionListItem>
                );
            })}
        </ActionList>
    );
}

export function VolumePage({ poolName, vid }) {
    const store = useStore();
    const { service } = useApp();
    const volume = store.volumeAt(poolName, vid);
    useEffect(() => { if (volume) service.refreshVolumeUsage(volume) }, [service, volume]);
    if (!volume) {
        return (
            <div id="volume-page">
                <Crumbs poolName={poolName} vid={vid} />
                <EmptyState>
                    <EmptyStateHeader titleText="No such volume" headingLevel="h2" />
                    <EmptyStateBody>The pool {poolName} has no volume {vid} (any more).</EmptyStateBody>
                </EmptyState>
            </div>
        );
    }
    return (
        <div id="volume-page" data-vid={vid} data-pool={poolName}>
            <Crumbs poolName={poolName} vid={vid} />
            <Flex className="qs-volume-header" alignItems={{ default: "alignItemsCenter" }}>
                <FlexItem><Title headingLevel="h2">{vid}</Title></FlexItem>
                <FlexItem><StateLabel volume={volume} /> <OutdatedLabel volume={volume} /></FlexItem>
                <FlexItem align={{ default: "alignRight" }}><Actions volume={volume} /></FlexItem>
            </Flex>
            <Details volume={volume} />
            <Timeline volume={volume} />
            <Events volume={volume} />
        </div>
    );
}
