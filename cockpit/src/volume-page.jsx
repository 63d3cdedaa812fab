// One volume's page (#/volume?pool=…&vid=…): its state and properties, its actions,
// the revision timeline (the current state, then every kept revision newest first,
// each with "Revert to this"), and what happened to it while the page is open (its
// domain signals: started, stopped, revision added or pruned, reverted, resized,
// imported).

import React, { useEffect } from "react";
import {
    ActionList, ActionListItem, Breadcrumb, BreadcrumbItem, Button, Card, CardBody, CardTitle,
    DescriptionList, DescriptionListDescription, DescriptionListGroup, DescriptionListTerm,
    EmptyState, EmptyStateBody, EmptyStateHeader, Flex, FlexItem, Title,
} from "@patternfly/react-core";
import { Table, Tbody, Td, Th, Thead, Tr } from "@patternfly/react-table";

import { ACTIONS } from "./access.js";
import { useAccess, useApp, useStore } from "./context.js";
import { formatBytes, formatTimestamp, volumeKind } from "./format.js";
import { RevertDialog } from "./volume-dialogs.jsx";
import { StateLabel } from "./volumes.jsx";
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
                    <Detail term="Revisions kept">{volume.revisionsToKeep}</Detail>
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
    const revisions = [...(volume.revisions || [])].reverse();
    const revert = id => dialogs.show(close => <RevertDialog volume={volume} revision={id} close={close} />);
    return (
        <Card className="qs-card" id="revisions">
            <CardTitle>Revisions</CardTitle>
            <CardBody>
                <Table aria-label="Revisions" variant="compact">
                    <Thead><Tr><Th>Revision</Th><Th>Taken</Th><Th screenReaderText="Actions" /></Tr></Thead>
                    <Tbody>
                        <Tr data-revision="current">
                            <Td>current</Td>
                            <Td>{volume.started ? "running now" : "the committed image"}</Td>
                            <Td />
                        </Tr>
                        {revisions.map(r => (
                            <Tr key={r.id} data-revision={r.id}>
                                <Td>{r.id}</Td>
                                <Td>{formatTimestamp(r.timestamp)}</Td>
                                <Td isActionCell>
                                    {mayRevert && <Button variant="secondary" size="sm" onClick={() => revert(r.id)}>Revert to this</Button>}
                                </Td>
                            </Tr>
                        ))}
                    </Tbody>
                </Table>
                {revisions.length === 0 && <p className="qs-muted">No revisions are kept.</p>}
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
            {volumeActions(app, volume).map(a => (
                <ActionListItem key={a.id}>
                    <Button id={`volume-${a.id}`} variant={a.id === "remove" ? "danger" : "secondary"}
                            isDisabled={a.disabled} onClick={a.run}>{a.label}</Button>
                </ActionListItem>
            ))}
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
                <FlexItem><StateLabel volume={volume} /></FlexItem>
                <FlexItem align={{ default: "alignRight" }}><Actions volume={volume} /></FlexItem>
            </Flex>
            <Details volume={volume} />
            <Timeline volume={volume} />
            <Events volume={volume} />
        </div>
    );
}
