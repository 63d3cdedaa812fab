// The pools: name, directory, a usage bar of the filesystem (UsageDetails, read when
// it went stale; when it cannot be read, why — and it is read again now and then,
// service.js), how many volumes and how many of them run, and the pool actions
// (create a volume in it, remove it — disabled, saying why, while it holds volumes).
// Clicking a pool's name filters the volume list to it.

import React, { useEffect, useMemo } from "react";
import { Button, Card, CardBody, CardHeader, CardTitle, EmptyState, EmptyStateBody, EmptyStateHeader, Progress } from "@patternfly/react-core";
import { ExclamationTriangleIcon } from "@patternfly/react-icons/dist/esm/icons/exclamation-triangle-icon";
import { Table, Tbody, Td, Th, Thead, Tr } from "@patternfly/react-table";

import { ACTIONS } from "./access.js";
import { useAccess, useApp, useEvent, useVolumesVersion } from "./context.js";
import { formatBytes, volumeCountText } from "./format.js";
import { poolCounts } from "./store.js";
import { useNarrow, useNotWide, useTableLayout, wideColumn } from "./narrow.js";
import { CreatePoolDialog, RemovePoolDialog } from "./pool-dialogs.jsx";
import { RowMenu } from "./row-menu.jsx";
import { CreateVolumeDialog } from "./volume-dialogs.jsx";

function UsageBar({ pool }) {
    const narrow = useNotWide();
    const size = pool.usage?.data_size;
    const used = pool.usage?.data_usage;
    const trouble = pool.usageProblem || pool.usageError;
    if (!size) {
        return (
            <span className="qs-unknown qs-usage-problem">
                {trouble
                    ? <><ExclamationTriangleIcon className="qs-warning-icon" /> unknown: {trouble}</>
                    : "unknown"}
            </span>
        );
    }
    const percent = Math.round((1000 * used) / size) / 10;
    return (
        <>
            <Progress className="qs-usage" size="sm" value={percent} measureLocation={narrow ? "top" : "outside"}
                      aria-label={`Usage of ${pool.name}`} valueText={`${percent} %`}
                      label={`${formatBytes(used)} of ${formatBytes(size)}`}
                      variant={percent >= 90 ? "danger" : percent >= 75 ? "warning" : undefined} />
            {/* A failed read leaves the figures of the last good one, and says so. */}
            {pool.usageError &&
                <span className="qs-muted qs-usage-error">
                    <ExclamationTriangleIcon className="qs-warning-icon" /> the last read failed: {pool.usageError}
                </span>}
        </>
    );
}

/** Why the pool cannot be removed now, or null. */
function removeBlocked(counts) {
    const total = counts?.total ?? 0;
    if (total === 0)
        return null;
    return `Remove its ${total} volume${total === 1 ? "" : "s"} first: a pool that holds volumes cannot be removed.`;
}

function PoolRow({ pool, counts, listed, onFilter }) {
    const { service, dialogs } = useApp();
    const access = useAccess();
    useEffect(() => service.refreshPoolUsage(pool), [service, pool]);
    const wide = wideColumn(useTableLayout());
    const actions = [];
    if (access.allowed(ACTIONS.manageVolumes))
        actions.push({ title: "Create volume…", onClick: () => dialogs.show(close => <CreateVolumeDialog pool={pool} close={close} />) });
    if (access.allowed(ACTIONS.managePools)) {
        actions.push({
            title: "Remove pool…",
            why: removeBlocked(counts),
            onClick: () => dialogs.show(close => <RemovePoolDialog pool={pool} close={close} />),
        });
    }
    return (
        <Tr data-pool={pool.name} className="qs-pool-row">
            <Td dataLabel="Pool">
                <Button variant="link" isInline onClick={() => onFilter(pool.path)}>{pool.name}</Button>
            </Td>
            <Td dataLabel="Directory" className="qs-dir">{pool.dirPath}</Td>
            <Td dataLabel="Usage" width={30}><UsageBar pool={pool} /></Td>
            <Td dataLabel="Volumes">{volumeCountText(counts, listed)}</Td>
            <Td dataLabel="Revisions to keep" visibility={wide}>{pool.revisionsToKeep}</Td>
            <Td isActionCell>{actions.length > 0 && <RowMenu name={`pool ${pool.name}`} items={actions} />}</Td>
        </Tr>
    );
}

export function PoolList({ onFilter }) {
    const { dialogs, service, store } = useApp();
    const version = useVolumesVersion();
    useEvent(service, "loading");
    // While the volumes are read one by one, how many each pool listed.
    const listed = service.loading && !service.loading.finished ? service.loading.listed : null;
    const access = useAccess();
    const pools = [...store.pools.values()].sort((a, b) => a.name.localeCompare(b.name));
    const counts = useMemo(() => poolCounts(store), [store, version]);
    const layout = useTableLayout();
    const create = access.allowed(ACTIONS.managePools) &&
        <Button id="create-pool" variant="secondary" onClick={() => dialogs.show(close => <CreatePoolDialog close={close} />)}>
            Create pool
        </Button>;
    return (
        <Card id="pools" className="qs-card">
            <CardHeader actions={{ actions: create, hasNoOffset: false }}>
                <CardTitle>Pools</CardTitle>
            </CardHeader>
            <CardBody>
                {pools.length === 0
                    ? <EmptyState variant="sm">
                        <EmptyStateHeader titleText="No pools" headingLevel="h3" />
                        <EmptyStateBody>The service has no pool yet.</EmptyStateBody>
                    </EmptyState>
                    : <Table aria-label="Pools" variant="compact" gridBreakPoint={layout} className="qs-pools">
                        <Thead>
                            <Tr>
                                <Th>Pool</Th>
                                <Th>Directory</Th>
                                <Th>Usage</Th>
                                <Th modifier="nowrap">Volumes</Th>
                                <Th modifier="nowrap" visibility={wideColumn(layout)}>Revisions to keep</Th>
                                <Th screenReaderText="Actions" />
                            </Tr>
                        </Thead>
                        <Tbody>
                            {pools.map(p => <PoolRow key={p.path} pool={p} counts={counts.get(p.path)} listed={listed?.[p.path]} onFilter={onFilter} />)}
                        </Tbody>
                    </Table>}
            </CardBody>
        </Card>
    );
}
