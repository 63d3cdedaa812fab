// Create and remove pools (Manager.CreatePool, Manager.RemovePool). Creating runs the
// service's pool setup, which by default checks that the directory's filesystem
// reflinks; on ext4 that check fails and the service's sentence says to turn it off.
// What is wrong with a field is said under it (checks.js).

import React, { useState } from "react";
import { Checkbox, FormGroup, TextInput } from "@patternfly/react-core";

import { firstError, poolFieldErrors, shownError } from "./checks.js";
import { ActionDialog, FieldHelp, describedBy, useTouched } from "./dialogs.jsx";
import { useApp } from "./context.js";
import { options } from "./service.js";

export function CreatePoolDialog({ close }) {
    const { service } = useApp();
    const [name, setName] = useState("");
    const [dir, setDir] = useState("");
    const [setupCheck, setSetupCheck] = useState(true);
    const [keep, setKeep] = useState("1");
    const [touched, touch] = useTouched();
    const errors = poolFieldErrors({ name, dir, keep });
    const edit = (field, set) => (_e, value) => {
        touch(field);
        set(value);
    };
    const apply = () => service.manager("CreatePool", "ssa{sv}", [name, "file-reflink", options({
        dir_path: ["s", dir],
        setup_check: ["b", setupCheck],
        revisions_to_keep: ["i", Number(keep)],
    })]);
    return (
        <ActionDialog id="create-pool-dialog" title="Create a pool" applyLabel="Create" close={close}
                      onApply={apply} error={firstError(errors)}>
            <FormGroup label="Name" fieldId="pool-name">
                <TextInput id="pool-name" value={name} onChange={edit("name", setName)}
                           validated={shownError(errors, touched, "name") ? "error" : "default"}
                           aria-describedby={describedBy("pool-name", shownError(errors, touched, "name"))} />
                <FieldHelp field="pool-name" error={shownError(errors, touched, "name")} />
            </FormGroup>
            <FormGroup label="Directory" fieldId="pool-dir">
                <TextInput id="pool-dir" value={dir} placeholder="/var/lib/qubes" onChange={edit("dir", setDir)}
                           validated={shownError(errors, touched, "dir") ? "error" : "default"}
                           aria-describedby={describedBy("pool-dir", shownError(errors, touched, "dir"))} />
                <FieldHelp field="pool-dir" error={shownError(errors, touched, "dir")} />
            </FormGroup>
            <FormGroup label="Revisions to keep" fieldId="pool-keep">
                <TextInput id="pool-keep" value={keep} onChange={edit("keep", setKeep)}
                           validated={shownError(errors, touched, "keep") ? "error" : "default"}
                           aria-describedby={describedBy("pool-keep", true)} />
                <FieldHelp field="pool-keep" error={shownError(errors, touched, "keep")}>
                    How many revisions new volumes of the pool keep: 0 none, -1 disables snapshots.
                </FieldHelp>
            </FormGroup>
            <Checkbox id="pool-setup-check" isChecked={setupCheck} onChange={(_e, v) => setSetupCheck(v)}
                      label="Require reflinks (turn off to allow byte copies, e.g. on ext4)" />
        </ActionDialog>
    );
}

export function RemovePoolDialog({ pool, close }) {
    const { service } = useApp();
    return (
        <ActionDialog id="remove-pool-dialog" title={`Remove pool ${pool.name}?`} applyLabel="Remove"
                      applyVariant="danger" close={close}
                      onApply={() => service.manager("RemovePool", "sa{sv}", [pool.name, {}])}>
            <p>The pool is forgotten; no file in {pool.dirPath} is deleted. A pool that still holds volumes cannot be removed.</p>
        </ActionDialog>
    );
}
