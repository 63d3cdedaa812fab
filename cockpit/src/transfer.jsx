// Import from and export to a file in the browser. The contract moves a volume's
// bytes through file descriptors (ImportData → write-only fd, Export → read-only fd),
// which cockpit's D-Bus channel cannot carry; the project's CLI does exactly this
// streaming (`qubes-storage volume import|export … -`), so the page runs it through
// cockpit's stream channel (`superuser: "try"`, like the D-Bus channel: as root with
// administrative access, else as the user, and polkit decides).
//
// Import: the file is sent down the channel in 1 MiB slices. Cockpit 287 has no
// acknowledgements from a process channel, and without them the browser would queue
// the whole image in memory; so a small shell loop between the channel and the CLI
// passes the data on one slice at a time (`head -c`) and reports each slice the CLI
// took on the channel's output. The page keeps at most WINDOW bytes unacknowledged.
// Cancel closes the channel: the CLI ends, and the service discards the unfinished
// import (an importer that leaves the bus is treated as ImportDataEnd(false)).
//
// Export: the browser downloads the CLI's standard output straight from cockpit-ws
// (an "external" channel URL with a content-disposition), streamed to disk. Cockpit
// finishes that download whatever the process's exit status (a non-zero exit is no
// channel problem, and a problem after the first bytes cannot undo them), so a failed
// export would look like a finished file. The page therefore learns the outcome
// itself: the export runs in a shell that writes the CLI's exit status and its message
// into a private directory (made by `mktemp -d`, as the same user as the export), and
// the page watches that file and says whether the download holds the whole image.

import React, { useRef, useState } from "react";
import { Alert, Button, Checkbox, FileUpload, FormGroup, Modal, Progress } from "@patternfly/react-core";

import { useApp } from "./context.js";
import { EXPORT_DIR_PATTERN, cliMessage, exportFilename, exportOutcome, staleExportCleanup } from "./cli-outcome.js";
import { formatBytes } from "./format.js";

const CHUNK = 1 << 20;
const WINDOW = 8 * CHUNK;
const CLI = "qubes-storage";

function cliArgs(...args) {
    return [CLI, "--no-interaction", "--no-progress", ...args];
}

/**
 * The shell between the channel and the CLI: passes $1 slices of CHUNK bytes on and
 * writes the number of each after the CLI took it (the pipe to the CLI holds at most
 * a pipe buffer) to the channel; the CLI's own output goes to stderr, which cockpit
 * returns as the channel's closing message.
 */
const RELAY = `slices=$1; shift
exec 3>&1
{ n=0; while [ "$n" -lt "$slices" ]; do head -c ${CHUNK} || exit 1; n=$((n + 1)); echo "$n" >&3; done; } |
${cliArgs("volume", "import").join(" ")} "$1" "$2" - --size "$3" \${4:+--allow-shrink} >&2 3>&-`;

/** How the import's process ended when it said nothing itself (killed, say). */
function endedHow(info) {
    if (info.problem)
        return cockpit.message(info.problem);
    if (info["exit-signal"])
        return `The import stopped: qubes-storage was killed (${info["exit-signal"]}); the volume is as it was.`;
    return `The import failed: qubes-storage exited with status ${info["exit-status"]}.`;
}

/**
 * Sends `file` into a spawned `qubes-storage volume import`; calls `progress(bytes)`.
 * `shrink`: the file is smaller than the volume and the user agreed to lose what lies
 * past its end (`--allow-shrink`).
 */
export function importFile(poolName, vid, file, progress, shrink = false) {
    const slices = Math.ceil(file.size / CHUNK);
    const channel = cockpit.channel({
        payload: "stream",
        spawn: ["/bin/sh", "-c", RELAY, "sh", String(slices), poolName, vid, String(file.size), shrink ? "shrink" : ""],
        superuser: "try",
        binary: true,
        err: "message",
    });
    let acked = 0;
    let waiter = null;
    const decoder = new TextDecoder();
    let text = "";
    channel.addEventListener("message", (_event, data) => {
        text += decoder.decode(data, { stream: true });
        const lines = text.split("\n");
        text = lines.pop();
        if (lines.length > 0) {
            acked = Math.min(file.size, Number(lines[lines.length - 1]) * CHUNK);
            progress(acked);
            waiter?.();
        }
    });
    const closed = new Promise((resolve, reject) => {
        channel.addEventListener("close", (_event, info) => {
            waiter?.();
            if (info.problem || info["exit-status"] || info["exit-signal"])
                reject(new Error(cliMessage(info.message ?? "") || endedHow(info)));
            else
                resolve();
        });
    });
    const send = async () => {
        for (let offset = 0; offset < file.size && channel.valid; offset += CHUNK) {
            const data = new Uint8Array(await file.slice(offset, offset + CHUNK).arrayBuffer());
            channel.send(data);
            const sent = offset + data.length;
            while (sent - acked > WINDOW && channel.valid)
                await new Promise(resolve => { waiter = resolve });
        }
        if (channel.valid)
            channel.control({ command: "done" });
    };
    send();
    return { done: closed, cancel: () => channel.close("cancelled") };
}

/**
 * The shell that runs the export: the CLI writes the image to standard output (the
 * download) and its message to `$1/message`; its exit status and that message are then
 * put in `$1/status` by a rename, so the file appears whole. A TERM or HUP (the
 * download cancelled) is caught, so that the shell outlives the CLI and says how it
 * ended; the CLI itself ends on the broken pipe or the signal.
 */
const EXPORT = `dir=$1; shift
trap : TERM HUP
${cliArgs("volume", "export").join(" ")} "$1" "$2" - 2>"$dir/message"
code=$?
{ echo "$code"; cat "$dir/message"; } >"$dir/status.new" && mv "$dir/status.new" "$dir/status"`;

/**
 * Watches an export's status file in `dir` until it appears; then `done(outcome)` and
 * the directory goes.
 */
function awaitOutcome(dir, done) {
    const file = cockpit.file(`${dir}/status`, { superuser: "try" });
    let watch = null;
    let ended = false;
    watch = file.watch((content, _tag, error) => {
        if (ended || (content === null && !error))
            return;
        ended = true;
        watch?.remove();
        file.close();
        cockpit.spawn(["rm", "-rf", "--", dir], { superuser: "try", err: "ignore" })
                .catch(() => {});
        done(error ? { ok: false, text: `The export's outcome cannot be read: ${cockpit.message(error)}` } : exportOutcome(content));
    });
}

/**
 * Starts the download of the volume's committed image as `exportFilename` names it, then says
 * on the page how the export ended (`messages`): finished, or failed — the downloaded
 * file is then incomplete.
 */
export async function exportVolume(poolName, vid, messages) {
    const filename = exportFilename(poolName, vid);
    const title = `Cannot export ${vid}`;
    let dir;
    // What earlier exports left behind when their page went away first goes now.
    await cockpit.spawn(staleExportCleanup(), { superuser: "try", err: "ignore" }).catch(() => {});
    try {
        dir = (await cockpit.spawn(["mktemp", "-d", "--tmpdir", EXPORT_DIR_PATTERN],
                                   { superuser: "try", err: "message" })).trim();
    } catch (error) {
        messages.error(title, error);
        return;
    }
    awaitOutcome(dir, ({ ok, text }) => {
        if (ok)
            messages.info(`Exported ${vid}`, `The download ${filename} holds the volume's committed image.`);
        else
            messages.add("danger", title, `${text} The download ${filename} is incomplete: delete it.`);
    });
    const query = window.btoa(JSON.stringify({
        payload: "stream",
        spawn: ["/bin/sh", "-c", EXPORT, "sh", dir, poolName, vid],
        superuser: "try",
        binary: "raw",
        external: {
            "content-disposition": `attachment; filename="${filename}"`,
            "content-type": "application/octet-stream",
        },
    }));
    const prefix = new URL(cockpit.transport.uri(`channel/${cockpit.transport.csrf_token}`)).pathname;
    const link = document.createElement("a");
    link.href = `${prefix}?${query}`;
    link.download = filename;
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

    const [shrink, setShrink] = useState(false);
    const sizeError = file && file.size % 512 !== 0 ? "The image size must be a whole number of 512-byte sectors." : null;
    const shrinking = Boolean(file) && file.size < volume.size;
    const start = () => {
        setFailure(null);
        setSent(0);
        const transfer = importFile(pool, volume.vid, file, setSent, shrinking);
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
                   <Button key="import" onClick={start} isDisabled={!file || busy || Boolean(sizeError) || (shrinking && !shrink)} isLoading={busy}>Import</Button>,
                   <Button key="cancel" variant="link" onClick={cancel}>Cancel</Button>,
               ]}>
            {failure && <Alert isInline variant="danger" title={failure} />}
            <p>The volume's content is replaced by the file; its current state is kept as a revision.</p>
            <FormGroup label="Image file" fieldId="import-file">
                <FileUpload id="import-file" filename={file?.name ?? ""} hideDefaultPreview browseButtonText="Choose…"
                            onFileInputChange={(_e, f) => { setFile(f); setFailure(null) }}
                            onClearClick={() => { setFile(null); setFailure(null) }}
                            isDisabled={busy} />
            </FormGroup>
            {sizeError && <Alert isInline variant="warning" title={sizeError} />}
            {shrinking && !sizeError &&
                <Checkbox id="import-shrink" isChecked={shrink} onChange={(_e, v) => setShrink(v)} isDisabled={busy}
                          label={`Shrink: the file is smaller than the volume (${formatBytes(volume.size)}); the data past its end is lost`} />}
            {busy && <Progress value={file.size ? (100 * sent) / file.size : 100} title="Sent"
                               label={`${formatBytes(sent)} of ${formatBytes(file.size)}`} />}
        </Modal>
    );
}
