// Dialogs that change one volume's lifecycle or shape: create (in a pool), remove,
// resize, revert to a chosen revision. Each calls one method of the contract; the
// service checks everything again and its sentence is shown when it refuses.

import React, { useState } from "react";
import { Checkbox, FormGroup, FormHelperText, FormSelect, FormSelectOption, HelperText, HelperTextItem, Radio, TextInput } from "@patternfly/react-core";

import { ActionDialog } from "./dialogs.jsx";
import { useApp } from "./context.js";
import { formatBytes, formatTimestamp, parseSize } from "./format.js";
import { POOL_IFACE } from "./paths.js";
import { options } from "./service.js";

function Helper({ children, variant = "default" }) {
    return (
        <FormHelperText>
            <HelperText><HelperTextItem variant={variant}>{children}</HelperTextItem></HelperText>
        </FormHelperText>
    );
}

/** The size field's bytes, or the sentence that says why there are none. */
export function sizeOrError(text) {
    const bytes = parseSize(text);
    if (bytes === null)
        return [null, "Write a size such as 2G, 512M or 10GiB."];
    if (bytes % 512 !== 0)
        return [null, "The size must be a whole number of 512-byte sectors."];
    return [bytes, null];
}

/** Acts on `volume` only if it is still the volume the dialog was opened for. */
function onSameVolume(store, volume, act) {
    const now = store.sameVolume(volume);
    return now instanceof Error ? Promise.reject(now) : act(now);
}

export function RemoveVolumeDialog({ volume, close }) {
    const { service, store } = useApp();
    const pool = store.pools.get(volume.pool)?.name;
    return (
        <ActionDialog id="remove-volume-dialog" title={`Remove ${volume.vid}?`} applyLabel="Remove"
                      applyVariant="danger" close={close}
                      onApply={() => onSameVolume(store, volume, () => service.volume(volume.path, "Remove"))}>
            <p>The volume {volume.vid} of pool {pool} and all its revisions are deleted.</p>
        </ActionDialog>
    );
}

export function ResizeDialog({ volume, close }) {
    const { service, store } = useApp();
    const [text, setText] = useState(formatBytes(volume.size).replace(" ", ""));
    const [shrink, setShrink] = useState(false);
    const [bytes, sizeError] = sizeOrError(text);
    const shrinking = bytes !== null && bytes < volume.size;
    const error = sizeError || (shrinking && !shrink ? "Shrinking needs confirmation." : null);
    // The confirmation was given for the size shown: a volume whose size changed since
    // (an import) would lose more than the dialog said.
    const apply = () => onSameVolume(store, volume, now => now.size !== volume.size
        ? Promise.reject(new Error(`The size of ${volume.vid} changed since this dialog opened (now ${formatBytes(now.size)}); nothing was done.`))
        : service.volume(volume.path, "Resize", "ta{sv}",
                         [bytes, shrinking ? options({ allow_shrink: ["b", true] }) : {}]));
    return (
        <ActionDialog id="resize-dialog" title={`Resize ${volume.vid}`} applyLabel="Resize" close={close}
                      onApply={apply} error={error}>
            <FormGroup label="New size" fieldId="resize-size">
                <TextInput id="resize-size" value={text} onChange={(_e, v) => setText(v)} />
                <Helper variant={sizeError ? "error" : "default"}>
                    {sizeError || `Now ${formatBytes(volume.size)}.`}
                </Helper>
            </FormGroup>
            {shrinking &&
                <Checkbox id="resize-shrink" isChecked={shrink} onChange={(_e, v) => setShrink(v)}
                          label="Shrink: the data past the new end is lost" />}
        </ActionDialog>
    );
}

/**
 * What a revert does with the current state, as the service decides it: kept as a new
 * revision unless the volume keeps none (RevisionsToKeep 0) — then it is gone for good.
 */
export function revertOutcome(volume) {
    if (volume.revisionsToKeep === 0)
        return "The volume goes back to the chosen revision. It keeps no revisions (revisions to keep: 0), so its current state is discarded: this cannot be undone.";
    return "The volume goes back to the chosen revision; its current state is kept as a new revision.";
}

/**
 * Reverts `volume` to the revision `id` only while it is the volume the dialog listed
 * it for: a volume created again under its path has revisions of its own, and the one
 * of that number is another image. (A revision pruned since is refused by the service,
 * which says so.)
 */
function revertToListed(store, service, volume, id) {
    return onSameVolume(store, volume, () => service.volume(volume.path, "Revert", "sa{sv}", [id, {}]));
}

export function RevertDialog({ volume, close, revision: initial }) {
    const { service, store } = useApp();
    const revisions = [...(volume.revisions || [])].reverse();
    const [chosen, setChosen] = useState(initial ?? revisions[0]?.id ?? "");
    return (
        <ActionDialog id="revert-dialog" title={`Revert ${volume.vid}`} applyLabel="Revert" close={close}
                      error={revisions.length === 0 ? "This volume has no revisions." : null}
                      onApply={() => revertToListed(store, service, volume, chosen)}>
            <p>{revertOutcome(volume)}</p>
            <FormGroup role="radiogroup" label="Revision" fieldId="revert-revisions" isStack>
                {revisions.map(r => (
                    <Radio key={r.id} id={`revert-${r.id}`} name="revision" isChecked={chosen === r.id}
                           onChange={() => setChosen(r.id)}
                           label={`Revision ${r.id} — ${formatTimestamp(r.timestamp)}`} />
                ))}
            </FormGroup>
        </ActionDialog>
    );
}

const KINDS = {
    origin: { label: "Origin: keeps its changes, a revision at each stop", config: { save_on_stop: true } },
    snapshot: { label: "Snapshot: a fresh copy of a source volume at each start", config: { snap_on_start: true } },
    volatile: { label: "Volatile: empty at each start", config: {} },
};

const NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;

function vidError(vm, name) {
    if (!NAME.test(vm))
        return "The VM name starts with a letter and holds only letters, digits, _ . and -.";
    if (!NAME.test(name))
        return "The volume name starts with a letter and holds only letters, digits, _ . and -.";
    return null;
}

export function CreateVolumeDialog({ pool, close }) {
    const { service, store } = useApp();
    const [vmClass, setVmClass] = useState("appvms");
    const [vm, setVm] = useState("");
    const [name, setName] = useState("private");
    const [kind, setKind] = useState("origin");
    const [sizeText, setSizeText] = useState("2G");
    const [rw, setRw] = useState(true);
    const sources = [...store.volumes.values()].filter(v => v.pool === pool.path && !v.snapOnStart);
    const [source, setSource] = useState(sources[0]?.vid ?? "");
    const [size, sizeError] = sizeOrError(sizeText);
    const needsSource = kind === "snapshot";
    const error = vidError(vm, name) || (needsSource ? (source ? null : "Choose the source volume.") : sizeError);
    const apply = () => {
        const typed = { rw: ["b", rw] };
        for (const key of Object.keys(KINDS[kind].config))
            typed[key] = ["b", true];
        if (needsSource)
            typed.source = ["s", source];
        else
            typed.size = ["t", size];
        return service.call(pool.path, POOL_IFACE, "CreateVolume", "sa{sv}a{sv}",
                            [`${vmClass}/${vm}/${name}`, options(typed), {}]);
    };
    return (
        <ActionDialog id="create-volume-dialog" title={`Create a volume in ${pool.name}`} applyLabel="Create"
                      close={close} onApply={apply} error={error} variant="medium">
            <FormGroup label="Class" fieldId="volume-class">
                <FormSelect id="volume-class" value={vmClass} onChange={(_e, v) => setVmClass(v)}>
                    <FormSelectOption value="appvms" label="appvms" />
                    <FormSelectOption value="vm-templates" label="vm-templates" />
                </FormSelect>
            </FormGroup>
            <FormGroup label="VM" fieldId="volume-vm">
                <TextInput id="volume-vm" value={vm} onChange={(_e, v) => setVm(v)} />
            </FormGroup>
            <FormGroup label="Volume name" fieldId="volume-name">
                <TextInput id="volume-name" value={name} onChange={(_e, v) => setName(v)} />
                <Helper>The volume is {vmClass}/{vm || "…"}/{name || "…"}.</Helper>
            </FormGroup>
            <FormGroup label="Kind" fieldId="volume-kind">
                <FormSelect id="volume-kind" value={kind} onChange={(_e, v) => setKind(v)}>
                    {Object.entries(KINDS).map(([k, { label }]) => <FormSelectOption key={k} value={k} label={label} />)}
                </FormSelect>
            </FormGroup>
            {needsSource
                ? <FormGroup label="Source volume" fieldId="volume-source">
                    <FormSelect id="volume-source" value={source} onChange={(_e, v) => setSource(v)}>
                        {sources.map(v => <FormSelectOption key={v.vid} value={v.vid} label={v.vid} />)}
                    </FormSelect>
                </FormGroup>
                : <FormGroup label="Size" fieldId="volume-size">
                    <TextInput id="volume-size" value={sizeText} onChange={(_e, v) => setSizeText(v)} />
                    {sizeError && <Helper variant="error">{sizeError}</Helper>}
                </FormGroup>}
            <Checkbox id="volume-rw" label="Writable by the VM" isChecked={rw} onChange={(_e, v) => setRw(v)} />
        </ActionDialog>
    );
}
