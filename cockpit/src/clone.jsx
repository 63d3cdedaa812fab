// Clone a volume, as Qubes clones a VM's volume: create a new origin volume of the
// same size in the chosen pool (CreateVolume), then copy the source into it
// (ImportVolume: a reflink within a filesystem, else a byte copy that the service
// publishes as a Job — the jobs panel shows its progress and Cancel). A clone that
// fails or is cancelled leaves nothing behind: the service deletes its partial copy,
// and the page removes the volume it created for it.

import React, { useState } from "react";
import { FormGroup, FormSelect, FormSelectOption, TextInput } from "@patternfly/react-core";

import { ActionDialog } from "./dialogs.jsx";
import { useApp } from "./context.js";
import { POOL_IFACE } from "./paths.js";
import { errorKind, options } from "./service.js";

/** A free vid for the clone: the same vid in another pool, else "<vm>-clone". */
function suggestVid(source, samePool) {
    if (!samePool)
        return source.vid;
    const [vmClass, vm, name] = source.vid.split("/");
    return `${vmClass}/${vm}-clone/${name}`;
}

/**
 * Creates the target and starts the copy; resolves once the copy runs (its end is
 * reported as a message).
 */
export async function startClone({ service, messages }, source, targetPool, vid) {
    const config = options({ size: ["t", source.size], rw: ["b", Boolean(source.rw)], save_on_stop: ["b", true] });
    const [target] = await service.call(targetPool.path, POOL_IFACE, "CreateVolume", "sa{sv}a{sv}", [vid, config, {}]);
    const what = `${source.vid} into ${vid} (${targetPool.name})`;
    service.volume(target, "ImportVolume", "oa{sv}", [source.path, {}])
            .then(() => messages.info(`Cloned ${source.vid}`, `Copied ${what}.`))
            .catch(error => discard(service, messages, target, what, error));
}

function discard(service, messages, target, what, error) {
    const cancelled = errorKind(error) === "Cancelled";
    return service.volume(target, "Remove")
            .then(() => {
                if (cancelled)
                    messages.info("Clone cancelled", `The copy of ${what} was cancelled; the new volume was removed.`);
                else
                    messages.error(`Cannot clone ${what}`, error);
            })
            .catch(removeError => {
                messages.error(`Cannot clone ${what}`, error);
                messages.error("The new volume of the failed clone stays", removeError);
            });
}

export function CloneDialog({ volume, close }) {
    const app = useApp();
    const pools = [...app.store.pools.values()].sort((a, b) => a.name.localeCompare(b.name));
    // The store may be empty for a moment (the service restarting): no pool to offer.
    const other = pools.find(p => p.path !== volume.pool) ?? pools[0];
    const [poolPath, setPoolPath] = useState(() => other?.path ?? "");
    const [vid, setVid] = useState(() => suggestVid(volume, !other || other.path === volume.pool));
    const choosePool = path => {
        setPoolPath(path);
        setVid(suggestVid(volume, path === volume.pool));
    };
    const target = app.store.pools.get(poolPath);
    const taken = [...app.store.volumes.values()].some(v => v.pool === poolPath && v.vid === vid);
    const error = !target
        ? "The pool to clone into is not there (is the storage service running?)."
        : taken ? `${vid} exists in ${target.name} already.` : null;
    return (
        <ActionDialog id="clone-dialog" title={`Clone ${volume.vid}`} applyLabel="Clone" close={close}
                      error={error}
                      onApply={() => startClone(app, volume, target, vid)}>
            <FormGroup label="Into pool" fieldId="clone-pool">
                <FormSelect id="clone-pool" value={poolPath} onChange={(_e, v) => choosePool(v)}>
                    {pools.map(p => <FormSelectOption key={p.path} value={p.path} label={p.name} />)}
                </FormSelect>
            </FormGroup>
            <FormGroup label="New volume" fieldId="clone-vid">
                <TextInput id="clone-vid" value={vid} onChange={(_e, v) => setVid(v)} />
            </FormGroup>
        </ActionDialog>
    );
}
