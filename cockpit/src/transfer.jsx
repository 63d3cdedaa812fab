// Import from and export to a file in the browser. The contract moves a volume's
// bytes through file descriptors (ImportData → write-only fd, Export → read-only fd),
// which cockpit's D-Bus channel cannot carry; the project's CLI does exactly this
// streaming (`qubes-storage volume import|export … -`), so the page runs it through
// cockpit's stream channel (`superuser: "try"`, like the D-Bus channel: as root with
// administrative access, else as the user and polkit decides).
//
// Import: the file is read in 1 MiB slices and sent down the channel; a "ping" after
// each slice, answered with "pong" by the bridge only once the CLI has taken the data,
// keeps at most WINDOW bytes in flight, so a 20 GiB image never sits in memory.
// Cancel closes the channel: the CLI ends and the service discards the unfinished
// import (an importer that leaves the bus is treated as ImportDataEnd(false)).
//
// Export: the browser downloads the CLI's standard output straight from cockpit-ws
// (an "external" channel URL with a content-disposition), streamed to disk.

import React, { useRef, useState } from "react";
import { Alert, Button, FileUpload, FormGroup, Modal, Progress } from "@patternfly/react-core";

import { useApp } from "./context.js";
import { formatBytes } from "./format.js";

const CHUNK = 1 << 20;
const WINDOW = 8 * CHUNK;
const CLI = "qubes-storage";

function cliArgs(...args) {
    return [CLI, "--no-interaction", "--no-progress", ...args];
}

/** Sends `file` into a spawned `qubes-storage volume import`; calls `progress(bytes)`. */
export function importFile(poolName, vid, file, progress) {
    const channel = cockpit.channel({
        payload: "stream",
        spawn: cliArgs("volume", "import", poolName, vid, "-", "--size", String(file.size)),
        superuser: "try",
        binary: true,
        err: "message",
    });
    let acked = 0;
    let waiter = null;
    channel.addEventListener("control", (_event, message) => {
        if (message.command === "pong") {
            acked = Math.max(acked, Number(message.sequence) || 0);
            progress(acked);
            waiter?.();
        }
    });
    const closed = new Promise((resolve, reject) => {
        channel.addEventListener("close", (_event, info) => {
            waiter?.();
            if (info.problem || info["exit-status"] || info["exit-signal"])
                reject(new Error(info.message?.trim() || cockpit.message(info)));
            else
                resolve();
        });
    });
    const send = async () => {
        for (let offset = 0; offset < file.size && channel.valid; offset += CHUNK) {
            const data = new Uint8Array(await file.slice(offset, offset + CHUNK).arrayBuffer());
            channel.send(data);
            const sent = offset + data.length;
            channel.control({ command: "ping", sequence: sent });
            while (sent - acked > WINDOW && channel.valid)
                await new Promise(resolve => { waiter = resolve });
        }
        if (channel.valid)
            channel.control({ command: "done" });
    };
    send();
    return { done: closed, cancel: () => channel.close("cancelled") };
}

/** Starts the download of the volume's committed image as `<vm>-<name>.img`. */
export function exportVolume(poolName, vid) {
    const [, vm, name] = vid.split("/");
    const query = window.btoa(JSON.stringify({
        payload: "stream",
        spawn: cliArgs("volume", "export", poolName, vid, "-"),
        superuser: "try",
        binary: "raw",
        external: {
            "content-disposition": `attachment; filename="${vm}-${name}.img"`,
            "content-type": "application/octet-stream",
        },
    }));
    const prefix = new URL(cockpit.transport.uri(`channel/${cockpit.transport.csrf_token}`)).pathname;
    const link = document.createElement("a");
    link.href = `${prefix}?${query}`;
    link.download = `${vm}-${name}.img`;
    document.body.appendChild(link);
    link.click();
    link.remove();
}

export function ImportDialog({ volume, close }) {
    const { store, messages } = useApp();
    const pool = store.pools.get(volume.pool)?.name;
    const [file, setFile] = useState(null);
    const [sent, setSent] = useState(null);
    const [failure, setFailure] = useState(null);
    const running = useRef(null);

    const sizeError = file && file.size % 512 !== 0 ? "The image size must be a whole number of 512-byte sectors." : null;
    const start = () => {
        setFailure(null);
        setSent(0);
        const transfer = importFile(pool, volume.vid, file, setSent);
        running.current = transfer;
        transfer.done
                .then(() => {
                    messages.info(`Imported ${file.name}`, `${volume.vid} now holds ${formatBytes(file.size)} from ${file.name}.`);
                    close();
                })
                .catch(error => {
                    running.current = null;
                    setSent(null);
                    setFailure(error.message);
                });
    };
    const cancel = () => {
        running.current?.cancel();
        close();
    };
    const busy = sent !== null;
    return (
        <Modal id="import-dialog" isOpen variant="medium" title={`Import an image into ${volume.vid}`} onClose={cancel}
               actions={[
                   <Button key="import" onClick={start} isDisabled={!file || busy || Boolean(sizeError)} isLoading={busy}>Import</Button>,
                   <Button key="cancel" variant="link" onClick={cancel}>Cancel</Button>,
               ]}>
            {failure && <Alert isInline variant="danger" title={failure} />}
            <p>The volume's content is replaced by the file; its current state is kept as a revision.</p>
            <FormGroup label="Image file" fieldId="import-file">
                <FileUpload id="import-file" filename={file?.name ?? ""} hideDefaultPreview browseButtonText="Choose…"
                            onFileInputChange={(_e, f) => setFile(f)} onClearClick={() => setFile(null)}
                            isDisabled={busy} />
            </FormGroup>
            {sizeError && <Alert isInline variant="warning" title={sizeError} />}
            {busy && <Progress value={file.size ? (100 * sent) / file.size : 100} title="Sent"
                               label={`${formatBytes(sent)} of ${formatBytes(file.size)}`} />}
        </Modal>
    );
}
