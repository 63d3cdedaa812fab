// The running Job objects of the service (byte copies: the copy fallback,
// cross-pool clones, large resizes without reflinks) as progress bars with bytes, rate,
// time left and Cancel. Every figure comes from the job's PropertiesChanged signals;
// the bar moves as they arrive. Cancel is offered to whoever may cancel: the user who
// started the job, or an administrator (the contract's rule for Job.Cancel).

import React from "react";
import { Button, Card, CardBody, CardTitle, DataList, DataListCell, DataListItem, DataListItemCells, DataListItemRow, Progress } from "@patternfly/react-core";

import { useAccess, useApp, useStore } from "./context.js";
import { formatBytes, formatEta, formatRate } from "./format.js";
import { JOB_IFACE } from "./paths.js";

const VERBS = {
    ImportVolume: "Copying",
    Resize: "Resizing",
};

function objectName(store, path) {
    const volume = store.volumes.get(path);
    if (!volume)
        return path;
    return `${volume.vid} (${store.pools.get(volume.pool)?.name ?? "?"})`;
}

export function jobTitle(store, job) {
    const names = (job.objects || []).map(p => objectName(store, p));
    if (job.operation === "ImportVolume" && names.length === 2)
        return `Copying ${names[1]} into ${names[0]}`;
    return `${VERBS[job.operation] || job.operation || "Job"} ${names.join(", ")}`;
}

function JobRow({ job }) {
    const { service, messages } = useApp();
    const store = useStore();
    const access = useAccess();
    const total = job.bytesTotal || 0;
    const done = job.bytesDone || 0;
    const percent = Math.round((job.progress ?? (total ? done / total : 0)) * 1000) / 10;
    const mayCancel = job.cancelable && (access.admin || (access.user && access.user.id === job.startedByUID));
    const cancel = () => messages.run(`Cannot cancel: ${jobTitle(store, job)}`,
                                      () => service.call(job.path, JOB_IFACE, "Cancel", "a{sv}", [{}]));
    const label = `${formatBytes(done)} of ${formatBytes(total)} · ${formatRate(job.rate)} · ${formatEta(total - done, job.rate)} left`;
    return (
        <DataListItem data-job={job.path} aria-labelledby={job.path}>
            <DataListItemRow>
                <DataListItemCells dataListCells={[
                    <DataListCell key="bar" width={5}>
                        <Progress id={job.path} value={percent} title={jobTitle(store, job)}
                                  label={label} valueText={`${percent} %`} measureLocation="top" />
                    </DataListCell>,
                    <DataListCell key="cancel" width={1} alignRight isFilled={false}>
                        {mayCancel && <Button variant="secondary" className="qs-job-cancel" onClick={cancel}>Cancel</Button>}
                    </DataListCell>,
                ]} />
            </DataListItemRow>
        </DataListItem>
    );
}

export function JobsPanel() {
    const store = useStore();
    if (store.jobs.size === 0)
        return null;
    return (
        <Card id="jobs" className="qs-card">
            <CardTitle>Running copies</CardTitle>
            <CardBody>
                <DataList aria-label="Running jobs" isCompact>
                    {[...store.jobs.values()].map(job => <JobRow key={job.path} job={job} />)}
                </DataList>
            </CardBody>
        </Card>
    );
}
