// Dialogs that change one volume's lifecycle or shape: create (in a pool), remove,
// resize, revert to a chosen revision. Each calls one method of the contract; the
// service checks everything again and its sentence is shown when it refuses.

import React, { useEffect, useState } from "react";
import { Checkbox, FormGroup, FormSelect, FormSelectOption, Radio, TextInput } from "@patternfly/react-core";

import { firstError, shownError, sizeOrError, volumeFieldErrors } from "./checks.js";
import { ActionDialog, FieldHelp, describedBy, useTouched } from "./dialogs.jsx";
import { useApp, useVolumesVersion } from "./context.js";
import { exactSizeText, formatBytes, parseSize } from "./format.js";
import { POOL_IFACE } from "./paths.js";
import { revisionLabel, revisionsNewestFirst } from "./revisions.js";
import { options } from "./service.js";
import { effectiveSource, snapshotSources, sourceGone } from "./store.js";

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
    const [text, setText] = useState(() => exactSizeText(volume.size));
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
                <TextInput id="resize-size" value={text} onChange={(_e, v) => setText(v)}
                           aria-describedby={describedBy("resize-size", true)} />
                <FieldHelp field="resize-size" error={sizeError}>Now {formatBytes(volume.size)} ({volume.size} bytes).</FieldHelp>
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
    const revisions = revisionsNewestFirst(volume);
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
                           label={revisionLabel(r)} />
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

export function CreateVolumeDialog({ pool, close }) {
    const { service, store } = useApp();
    const [vmClass, setVmClass] = useState("appvms");
    const [vm, setVm] = useState("");
    const [name, setName] = useState("private");
    const [kind, setKind] = useState("origin");
    const [sizeText, setSizeText] = useState("2G");
    const [rw, setRw] = useState(true);
    // The pool's volumes change while the dialog is open: the sources follow them.
    useVolumesVersion();
    const sources = snapshotSources(store, pool.path);
    const [chosenSource, setSource] = useState("");
    const source = effectiveSource(sources, chosenSource);
    const gone = sourceGone(sources, chosenSource) ? chosenSource : null;
    const [touched, touch] = useTouched();
    const needsSource = kind === "snapshot";
    // The first source shown is pinned: one created later that sorts first does not
    // replace it unseen.
    useEffect(() => {
        if (needsSource && !chosenSource && source)
            setSource(source);
    }, [needsSource, chosenSource, source]);
    const errors = volumeFieldErrors({ vm, name, size: sizeText, source, needsSource, sourcesOffered: sources.length, gone });
    const shown = field => shownError(errors, touched, field);
    const edit = (field, set) => (_e, value) => {
        touch(field);
        set(value);
    };
    const apply = () => {
        const typed = { rw: ["b", rw] };
        for (const key of Object.keys(KINDS[kind].config))
            typed[key] = ["b", true];
        if (needsSource)
            typed.source = ["s", source];
        else
            typed.size = ["t", parseSize(sizeText)];
        return service.call(pool.path, POOL_IFACE, "CreateVolume", "sa{sv}a{sv}",
                            [`${vmClass}/${vm}/${name}`, options(typed), {}]);
    };
    return (
        <ActionDialog id="create-volume-dialog" title={`Create a volume in ${pool.name}`} applyLabel="Create"
                      close={close} onApply={apply} error={firstError(errors)} variant="medium">
            <FormGroup label="Class" fieldId="volume-class">
                <FormSelect id="volume-class" value={vmClass} onChange={(_e, v) => setVmClass(v)}>
                    <FormSelectOption value="appvms" label="appvms" />
                    <FormSelectOption value="vm-templates" label="vm-templates" />
                </FormSelect>
            </FormGroup>
            <FormGroup label="VM" fieldId="volume-vm">
                <TextInput id="volume-vm" value={vm} onChange={edit("vm", setVm)}
                           validated={shown("vm") ? "error" : "default"} aria-describedby={describedBy("volume-vm", shown("vm"))} />
                <FieldHelp field="volume-vm" error={shown("vm")} />
            </FormGroup>
            <FormGroup label="Volume name" fieldId="volume-name">
                <TextInput id="volume-name" value={name} onChange={edit("name", setName)}
                           validated={shown("name") ? "error" : "default"} aria-describedby={describedBy("volume-name", true)} />
                <FieldHelp field="volume-name" error={shown("name")}>The volume is {vmClass}/{vm || "…"}/{name || "…"}.</FieldHelp>
            </FormGroup>
            <FormGroup label="Kind" fieldId="volume-kind">
                <FormSelect id="volume-kind" value={kind} onChange={(_e, v) => setKind(v)}>
                    {Object.entries(KINDS).map(([k, { label }]) => <FormSelectOption key={k} value={k} label={label} />)}
                </FormSelect>
            </FormGroup>
            {needsSource
                ? <FormGroup label="Source volume" fieldId="volume-source">
                    {sources.length > 0 &&
                        <FormSelect id="volume-source" value={source} onChange={(_e, v) => setSource(v)}
                                    aria-describedby={describedBy("volume-source", true)}>
                            {!source && <FormSelectOption value="" label="Choose a source…" isPlaceholder />}
                            {sources.map(v => <FormSelectOption key={v.vid} value={v.vid} label={v.vid} />)}
                        </FormSelect>}
                    <FieldHelp field="volume-source" error={errors.source}>
                        {sources.length > 0 && "Only volumes that save on stop can be a source."}
                    </FieldHelp>
                </FormGroup>
                : <FormGroup label="Size" fieldId="volume-size">
                    <TextInput id="volume-size" value={sizeText} onChange={edit("size", setSizeText)}
                               validated={errors.size ? "error" : "default"} aria-describedby={describedBy("volume-size", errors.size)} />
                    <FieldHelp field="volume-size" error={errors.size} />
                </FormGroup>}
            <Checkbox id="volume-rw" label="Writable by the VM" isChecked={rw} onChange={(_e, v) => setRw(v)} />
        </ActionDialog>
    );
}
