// How the page writes and reads quantities: byte sizes in binary units (as the CLI
// does: "2 GiB"; input accepts 2G, 2GiB, 512M, plain bytes), a size to edit that reads
// back exactly, rates, the remaining time of a job, timestamps of revisions, and the
// words for a volume's kind and state. Pure functions, tested under test/.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** "1.5 GiB"; "0 B"; "—" for a value that is not known. */
export function formatBytes(bytes) {
    if (bytes === undefined || bytes === null || Number.isNaN(bytes))
        return "—";
    let value = Number(bytes);
    let unit = 0;
    while (value >= 1024 && unit < UNITS.length - 1) {
        value /= 1024;
        unit += 1;
    }
    const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
    const number = digits ? value.toFixed(digits).replace(/\.?0+$/, "") : value.toFixed(0);
    return `${number} ${UNITS[unit]}`;
}

/**
 * A size to put in a field: the largest unit that holds it as a whole number ("2GiB",
 * "1205632KiB", "1000B"), so that `parseSize` gives back exactly `bytes` — a rounded
 * "1.15GiB" would be another size (and not a whole number of sectors).
 */
export function exactSizeText(bytes) {
    let value = Number(bytes);
    let unit = 0;
    while (value !== 0 && value % 1024 === 0 && unit < UNITS.length - 1) {
        value /= 1024;
        unit += 1;
    }
    return `${value}${UNITS[unit]}`;
}

export function formatRate(bytesPerSecond) {
    if (!bytesPerSecond)
        return "—";
    return `${formatBytes(bytesPerSecond)}/s`;
}

/** The remaining time of a copy at its current rate: "12 s", "3 min 5 s", "1 h 2 min". */
export function formatEta(bytesLeft, bytesPerSecond) {
    if (!bytesPerSecond || bytesLeft === undefined)
        return "—";
    const seconds = Math.ceil(bytesLeft / bytesPerSecond);
    if (seconds < 60)
        return `${seconds} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60)
        return `${minutes} min ${seconds % 60} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** A revision's Unix seconds as local date and time. */
export function formatTimestamp(unixSeconds) {
    if (!unixSeconds)
        return "—";
    return new Date(unixSeconds * 1000).toLocaleString();
}

const SIZE = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i;
const POWERS = { "": 0, k: 1, m: 2, g: 3, t: 4, p: 5 };

/** Bytes of "20G", "1.5 GiB", "512M", "4096"; null if it is not a size. */
export function parseSize(text) {
    const match = SIZE.exec(String(text));
    if (!match)
        return null;
    const bytes = Number(match[1]) * 1024 ** POWERS[match[2].toLowerCase()];
    if (!Number.isFinite(bytes) || bytes > Number.MAX_SAFE_INTEGER)
        return null;
    return Math.round(bytes);
}

/** The Qubes word for what a volume does at start and stop (the engine's VolumeKind). */
export function volumeKind(volume) {
    if (volume.snapOnStart && volume.saveOnStop)
        return "origin + snapshot";
    if (volume.snapOnStart)
        return "snapshot";
    if (volume.saveOnStop)
        return volume.revisionsToKeep === -1 ? "origin, no revisions" : "origin";
    return "volatile";
}

export function stateWord(volume) {
    return volume.started ? "running" : "stopped";
}

/** The VM of a vid "appvms/<vm>/<name>", or "" if it has no such shape. */
export function vmOf(vid) {
    const parts = String(vid).split("/");
    return parts.length === 3 ? parts[1] : "";
}

/**
 * A pool's "Volumes" cell: `counts` ({total, running}) of the volumes the page holds;
 * while they are still read one by one, `listed` is how many the pool listed.
 */
export function volumeCountText(counts, listed) {
    const total = counts?.total ?? 0;
    const running = counts?.running ?? 0;
    if (listed !== undefined && listed !== null && total < listed)
        return `${total} of ${listed} read (${running} running so far)`;
    return `${total} (${running} running)`;
}
