// Create and remove pools (Manager.CreatePool, Manager.RemovePool). Creating runs the
// service's pool setup, which by default checks that the directory's filesystem
// reflinks; on ext4 that check fails and the service's sentence says to turn it off.

import React, { useState } from "react";
import { Checkbox, FormGroup, TextInput } from "@patternfly/react-core";

import { ActionDialog } from "./dialogs.jsx";
import { useApp } from "./context.js";
import { options } from "./service.js";

const POOL_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;

export function CreatePoolDialog({ close }) {
    const { service } = useApp();
    const [name, setName] = useState("");
    const [dir, setDir] = useState("");
    const [setupCheck, setSetupCheck] = useState(true);
    const [keep, setKeep] = useState("1");
    const error = !POOL_NAME.test(name)
        ? "The name starts with a letter and holds only letters, digits, _ . and -."
        : !dir.startsWith("/")
            ? "The directory is an absolute path."
            : !/^-?\d+$/.test(keep) || Number(keep) < -1
                ? "Revisions to keep is a number, -1 or more."
                : null;
    const apply = () => service.manager("CreatePool", "ssa{sv}", [name, "file-reflink", options({
        dir_path: ["s", dir],
        setup_check: ["b", setupCheck],
        revisions_to_keep: ["i", Number(keep)],
    })]);
    return (
        <ActionDialog id="create-pool-dialog" title="Create a pool" applyLabel="Create" close={close}
                      onApply={apply} error={error}>
            <FormGroup label="Name" fieldId="pool-name">
                <TextInput id="pool-name" value={name} onChange={(_e, v) => setName(v)} />
            </FormGroup>
            <FormGroup label="Directory" fieldId="pool-dir">
                <TextInput id="pool-dir" value={dir} placeholder="/var/lib/qubes" onChange={(_e, v) => setDir(v)} />
            </FormGroup>
            <FormGroup label="Revisions to keep" fieldId="pool-keep">
                <TextInput id="pool-keep" value={keep} onChange={(_e, v) => setKeep(v)} />
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
