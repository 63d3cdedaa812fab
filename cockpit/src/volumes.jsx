// Every volume of every pool in one list — vid, pool, kind, size, usage, revisions and
// state in words (and "outdated" for a snapshot whose source changed) — filtered by
// pool, VM, state and a text in the vid (a filter that matches nothing says so), and
// windowed (virtual.js) so that 10 000 volumes scroll like 10. A row's Usage is read
// when the row is on screen and its last value went stale. Stacked cards only on a
// narrow page (narrow.js). Every row (and card) is one height, which the window
// measures once: a long vid or pool name is cut, not wrapped (`OneLine`).

import React, { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import {
    Button, Card, CardBody, CardTitle, EmptyState, EmptyStateActions, EmptyStateBody, EmptyStateFooter, EmptyStateHeader,
    FormSelect, FormSelectOption, Label, SearchInput, Toolbar, ToolbarContent, ToolbarItem, Tooltip,
} from "@patternfly/react-core";
import { Table, Tbody, Td, Th, Thead, Tr } from "@patternfly/react-table";

import { useAccess, useApp, useVolumesVersion } from "./context.js";
import { filterVolumes, vmNames } from "./store.js";
import { formatBytes, stateWord, volumeKind } from "./format.js";
import { useTableLayout, wideColumn } from "./narrow.js";
import { RowMenu } from "./row-menu.jsx";
import { useVisibleRows } from "./virtual.js";
import { volumeActions } from "./volume-actions.jsx";

export function StateLabel({ volume }) {
    return (
        <Label color={volume.started ? "green" : "grey"} className="qs-state">
            {stateWord(volume)}
        </Label>
    );
}

/** "outdated" beside the state of a snapshot whose source changed since it started. */
export function OutdatedLabel({ volume }) {
    if (!volume.isOutdated)
        return null;
    return (
        <Tooltip content="Its source changed since it started: the next start takes the new content.">
            <Label color="orange" className="qs-outdated" tabIndex={0}>outdated</Label>
        </Tooltip>
    );
}

/**
 * A text (a vid, a pool name) on one line, cut with an ellipsis when its cell is
 * narrow, whole in its title: rows of one height are what the window of rows
 * (virtual.js) relies on (app.css).
 */
export function OneLine({ text }) {
    return <span className="qs-one-line" title={text}>{text}</span>;
}

export function goToVolume(poolName, vid) {
    cockpit.location.go(["volume"], { pool: poolName, vid });
}

function RowActions({ volume }) {
    const app = useApp();
    useAccess();
    const actions = volumeActions(app, volume);
    if (actions.length === 0)
        return null;
    const [first, ...rest] = actions;
    const primary = first.id === "start" || first.id === "stop";
    const kebab = (primary ? rest : actions).map(a => ({ title: a.label, onClick: a.run, why: a.disabled ? (a.why || "Not possible now.") : null }));
    return (
        <div className="qs-row-actions">
            {primary && <Button variant="secondary" size="sm" className={`qs-${first.id}`} onClick={first.run}>{first.label}</Button>}
            {kebab.length > 0 && <RowMenu name={volume.vid} items={kebab} />}
        </div>
    );
}

const VolumeRow = React.memo(function VolumeRow({ volume, poolName }) {
    const { service } = useApp();
    useEffect(() => service.refreshVolumeUsage(volume), [service, volume]);
    const wide = wideColumn(useTableLayout());
    return (
        <Tr className="qs-row" data-vid={volume.vid} data-pool={poolName}>
            <Td dataLabel="Volume">
                <Button variant="link" isInline onClick={() => goToVolume(poolName, volume.vid)}><OneLine text={volume.vid} /></Button>
            </Td>
            <Td dataLabel="Pool" visibility={wide}><OneLine text={poolName} /></Td>
            <Td dataLabel="Kind">{volumeKind(volume)}</Td>
            <Td dataLabel="Size">{formatBytes(volume.size)}</Td>
            <Td dataLabel="Usage" visibility={wide}>{formatBytes(volume.usage)}</Td>
            <Td dataLabel="Revisions" visibility={wide}>{volume.revisions?.length ?? 0}</Td>
            <Td dataLabel="State" className="qs-state-cell">
                {/* One element: in a card each child of a cell is a row of its own. */}
                <span className="qs-state-labels"><StateLabel volume={volume} />{volume.isOutdated ? " " : null}<OutdatedLabel volume={volume} /></span>
            </Td>
            <Td isActionCell><RowActions volume={volume} /></Td>
        </Tr>
    );
});

function Filters({ filter, setFilter, vms, shown, total }) {
    const { store } = useApp();
    const pools = [...store.pools.values()].sort((a, b) => a.name.localeCompare(b.name));
    const set = key => (_event, value) => setFilter({ ...filter, [key]: value });
    return (
        <Toolbar id="volume-filters">
            <ToolbarContent>
                <ToolbarItem>
                    <SearchInput id="filter-text" placeholder="Filter by vid" value={filter.text}
                                 onChange={set("text")} onClear={() => setFilter({ ...filter, text: "" })} />
                </ToolbarItem>
                <ToolbarItem>
                    <FormSelect id="filter-pool" className="qs-filter" aria-label="Pool" value={filter.pool} onChange={set("pool")}>
                        <FormSelectOption value="" label="All pools" />
                        {pools.map(p => <FormSelectOption key={p.path} value={p.path} label={p.name} />)}
                    </FormSelect>
                </ToolbarItem>
                <ToolbarItem>
                    <FormSelect id="filter-vm" className="qs-filter" aria-label="VM" value={filter.vm} onChange={set("vm")}>
                        <FormSelectOption value="" label="All VMs" />
                        {vms.map(vm => <FormSelectOption key={vm} value={vm} label={vm} />)}
                    </FormSelect>
                </ToolbarItem>
                <ToolbarItem>
                    <FormSelect id="filter-state" className="qs-filter" aria-label="State" value={filter.state} onChange={set("state")}>
                        <FormSelectOption value="" label="Running and stopped" />
                        <FormSelectOption value="running" label="Running" />
                        <FormSelectOption value="stopped" label="Stopped" />
                    </FormSelect>
                </ToolbarItem>
                <ToolbarItem variant="pagination" id="volume-count">
                    {shown === total ? `${total} volumes` : `${shown} of ${total} volumes`}
                </ToolbarItem>
            </ToolbarContent>
        </Toolbar>
    );
}

export const NO_FILTER = { pool: "", vm: "", state: "", text: "" };

function NoMatch({ clear }) {
    return (
        <EmptyState variant="xs" id="volumes-no-match">
            <EmptyStateHeader titleText="No volume matches the filter" headingLevel="h3" />
            <EmptyStateBody>Change the filter, or clear it to see every volume.</EmptyStateBody>
            <EmptyStateFooter>
                <EmptyStateActions>
                    <Button variant="link" onClick={clear}>Clear all filters</Button>
                </EmptyStateActions>
            </EmptyStateFooter>
        </EmptyState>
    );
}

export function VolumeList({ filter, setFilter }) {
    const { store } = useApp();
    const version = useVolumesVersion();
    const rows = useMemo(() => filterVolumes(store, filter), [store, version, filter]);
    const vms = useMemo(() => vmNames(store), [store, version]);
    const [rowHeight, setRowHeight] = useState(45);
    const [headHeight, setHeadHeight] = useState(40);
    const { containerRef, first, last } = useVisibleRows(rows.length, rowHeight, headHeight);
    const scroller = useRef(null);
    const setScroller = useCallback(node => {
        scroller.current = node;
        containerRef(node);
    }, [containerRef]);

    // A new filter shows its first rows.
    useEffect(() => {
        if (scroller.current)
            scroller.current.scrollTop = 0;
    }, [filter]);

    // The real heights of a row and of the head, once rendered.
    useLayoutEffect(() => {
        const row = scroller.current?.querySelector("tbody tr.qs-row");
        if (row && row.offsetHeight && row.offsetHeight !== rowHeight)
            setRowHeight(row.offsetHeight);
        const head = scroller.current?.querySelector("thead");
        if (head && head.offsetHeight && head.offsetHeight !== headHeight)
            setHeadHeight(head.offsetHeight);
    });

    const poolName = v => store.pools.get(v.pool)?.name ?? "";
    const layout = useTableLayout();
    return (
        <Card id="volumes" className="qs-card">
            <CardTitle>Volumes</CardTitle>
            <CardBody>
                <Filters filter={filter} setFilter={setFilter} vms={vms} shown={rows.length} total={store.volumes.size} />
                <div className="qs-volumes-scroll" ref={setScroller}>
                    <Table aria-label="Volumes" variant="compact" isStickyHeader className="qs-volumes" gridBreakPoint={layout}>
                        <Thead>
                            <Tr>
                                <Th>Volume</Th>
                                <Th visibility={wideColumn(layout)}>Pool</Th>
                                <Th>Kind</Th>
                                <Th>Size</Th>
                                <Th visibility={wideColumn(layout)}>Usage</Th>
                                <Th visibility={wideColumn(layout)}>Revisions</Th>
                                <Th>State</Th>
                                <Th screenReaderText="Actions" />
                            </Tr>
                        </Thead>
                        <Tbody>
                            {first > 0 && <tr aria-hidden="true" className="qs-spacer" style={{ height: first * rowHeight }} />}
                            {rows.slice(first, last).map(v => <VolumeRow key={v.path} volume={v} poolName={poolName(v)} />)}
                            {last < rows.length &&
                                <tr aria-hidden="true" className="qs-spacer" style={{ height: (rows.length - last) * rowHeight }} />}
                            {rows.length === 0 && store.volumes.size > 0 &&
                                <Tr className="qs-no-match">
                                    <Td colSpan={8}><NoMatch clear={() => setFilter(NO_FILTER)} /></Td>
                                </Tr>}
                        </Tbody>
                    </Table>
                </div>
            </CardBody>
        </Card>
    );
}
