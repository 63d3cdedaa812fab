// The actions on one volume, shared by its row in the list and its own page: each with
// the polkit action that governs it (an action the user may not do is not offered),
// and whether it makes sense in the volume's state. Start and stop run at once;
// the others open a dialog. Failures become messages with the service's sentence. An
// action that does not make sense now is shown disabled with the reason (`why`,
// volume-rules.js), which the list's menu shows as the item's description and the
// volume page as its tooltip.

import React from "react";

import { ACTIONS } from "./access.js";
import { CloneDialog } from "./clone.jsx";
import { ImportDialog, exportVolume } from "./transfer.jsx";
import { RemoveVolumeDialog, ResizeDialog, RevertDialog } from "./volume-dialogs.jsx";
import { importBlocked, removeBlocked, resizeBlocked, revertBlocked } from "./volume-rules.js";

/** An action that `why` (a sentence, or null) disables. */
function unless(why, action) {
    return { ...action, disabled: Boolean(why), why };
}

/** [{id, label, run, disabled, why}] for the actions the user may do on `volume`. */
export function volumeActions(app, volume) {
    const { access, dialogs, messages, service, store } = app;
    const pool = store.pools.get(volume.pool);
    const may = action => access.allowed(action);
    const dialog = render => () => dialogs.show(close => render(close));
    const list = [];
    if (may(ACTIONS.run)) {
        list.push(volume.started
            ? { id: "stop", label: "Stop", run: () => messages.run(`Cannot stop ${volume.vid}`, () => service.volume(volume.path, "Stop")) }
            : { id: "start", label: "Start", run: () => messages.run(`Cannot start ${volume.vid}`, () => service.volume(volume.path, "Start")) });
    }
    if (may(ACTIONS.manageVolumes)) {
        list.push(unless(resizeBlocked(volume), { id: "resize", label: "Resize…", run: dialog(close => <ResizeDialog volume={volume} close={close} />) }));
        list.push(unless(revertBlocked(volume), { id: "revert", label: "Revert…", run: dialog(close => <RevertDialog volume={volume} close={close} />) }));
    }
    if (may(ACTIONS.export) && access.allowed(ACTIONS.import) && access.allowed(ACTIONS.manageVolumes))
        list.push({ id: "clone", label: "Clone…", run: dialog(close => <CloneDialog volume={volume} close={close} />) });
    if (may(ACTIONS.import))
        list.push(unless(importBlocked(volume), { id: "import", label: "Import…", run: dialog(close => <ImportDialog volume={volume} close={close} />) }));
    // The service exports only what a volume keeps: a volume that does not save on
    // stop has nothing committed to export (its Export is refused). The CLI names the
    // volume by its pool's name: not offered while the pool is unknown.
    if (may(ACTIONS.export) && volume.saveOnStop && pool?.name)
        list.push({ id: "export", label: "Export", run: () => exportVolume(pool.name, volume.vid, messages) });
    if (may(ACTIONS.manageVolumes))
        list.push(unless(removeBlocked(volume), { id: "remove", label: "Remove…", run: dialog(close => <RemoveVolumeDialog volume={volume} close={close} />) }));
    return list;
}
