// The running Job objects of the service (byte copies: the copy fallback,
// cross-pool clones, large resizes without reflinks, a commit's precache) as progress
// bars with bytes, rate, time left and Cancel — or a note why there is none — titled
// by what each is for (job-labels.js). A precache that did not finish is said. Every
// figure comes from the job's PropertiesChanged signals; the bar moves as they
// arrive. Cancel is offered to whoever may cancel: the user who
// started the job, or an administrator (the contract's rule for Job.Cancel).

import React from "react";
import { Button, Card, CardBody, CardTitle, DataList, DataListCell, DataListItem, DataListItemCells, DataListItemRow, Progress } from "@patternfly/react-core";

import { useAccess, useApp, useStore } from "./context.js";
import { formatBytes, formatEta, formatRate } from "./format.js";
import { jobNote, jobTitle, precacheWarning } from "./job-labels.js";
import { JOB_IFACE } from "./paths.js";

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
    const note = jobNote(job);
    const label = `${formatBytes(done)} of ${formatBytes(total)} · ${formatRate(job.rate)} · ${formatEta(total - done, job.rate)} left`;
    return (
        <DataListItem data-job={job.path} aria-labelledby={job.path}>
            <DataListItemRow>
                <DataListItemCells dataListCells={[
                    <DataListCell key="bar" width={5}>
                        <Progress id={job.path} value={percent} title={jobTitle(store, job)}
                                  label={label} valueText={`${percent} %`} measureLocation="top" />
                        {note && <p className="qs-muted qs-job-note">{note}</p>}
                    </DataListCell>,
                    <DataListCell key="cancel" width={1} alignRight isFilled={false}>
                        {mayCancel && <Button variant="secondary" className="qs-job-cancel" onClick={cancel}>Cancel</Button>}
                    </DataListCell>,
                ]} />
            </DataListItemRow>
        </DataListItem>
    );
}

/**
 * Says on the page when a commit's precache copy did not finish although its call
 * succeeded (`Completed(false, why)`): the volume's next start will copy its image.
 * Other failed Jobs end with their call, whose caller says why.
 */
export function reportJobOutcomes({ service, store, messages }) {
    service.addEventListener("job-completed", ({ detail: { job, success, message } }) => {
        const warning = precacheWarning(store, job, success, message);
        if (warning)
            messages.add("warning", warning.title, warning.text);
    });
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
