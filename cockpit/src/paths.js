// Object paths of the service (the D-Bus contract, "Bus, paths, escaping"): pools at
// /org/qubes/Storage/pools/<P>, volumes at …/pools/<P>/volumes/<V>, jobs at
// /org/qubes/Storage/jobs/<n>. <P> and <V> are escaped like sd_bus_path_encode: every
// byte of the UTF-8 string outside [A-Za-z0-9] becomes "_" and two lowercase hex
// digits, the empty string becomes "_". The page builds paths only to name a pool or
// volume it has not seen yet (a volume it is about to create); everything it shows
// comes with its path from the ObjectManager.

export const SERVICE = "org.qubes.Storage";
export const ROOT = "/org/qubes/Storage";
export const MANAGER_IFACE = "org.qubes.Storage.Manager";
export const POOL_IFACE = "org.qubes.Storage.Pool";
export const VOLUME_IFACE = "org.qubes.Storage.Volume";
export const JOB_IFACE = "org.qubes.Storage.Job";

const POOLS = `${ROOT}/pools/`;
const JOBS = `${ROOT}/jobs/`;

const PLAIN = /^[A-Za-z0-9]$/;

/** One path element for `text`, as sd_bus_path_encode writes it. */
export function encodeElement(text) {
    if (text === "")
        return "_";
    let out = "";
    for (const byte of new TextEncoder().encode(text)) {
        const ch = String.fromCharCode(byte);
        out += PLAIN.test(ch) ? ch : "_" + byte.toString(16).padStart(2, "0");
    }
    return out;
}

/** The text of a path element; null if it is not a valid encoding. */
export function decodeElement(element) {
    if (element === "_")
        return "";
    const bytes = [];
    for (let i = 0; i < element.length;) {
        if (element[i] === "_") {
            const hex = element.slice(i + 1, i + 3);
            if (!/^[0-9a-f]{2}$/.test(hex))
                return null;
            bytes.push(parseInt(hex, 16));
            i += 3;
        } else {
            bytes.push(element.charCodeAt(i));
            i += 1;
        }
    }
    try {
        return new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(bytes));
    } catch {
        return null;
    }
}

export function poolPath(pool) {
    return POOLS + encodeElement(pool);
}

export function volumePath(pool, vid) {
    return `${poolPath(pool)}/volumes/${encodeElement(vid)}`;
}

/** "pool" | "volume" | "job" | "manager" | null for a path of the service. */
export function kindOfPath(path) {
    if (path === ROOT)
        return "manager";
    if (path.startsWith(JOBS))
        return "job";
    if (!path.startsWith(POOLS))
        return null;
    const rest = path.slice(POOLS.length).split("/");
    if (rest.length === 1)
        return "pool";
    if (rest.length === 3 && rest[1] === "volumes")
        return "volume";
    return null;
}

/** The pool path a volume path lies under. */
export function poolOfVolumePath(path) {
    return path.slice(0, path.indexOf("/volumes/"));
}
