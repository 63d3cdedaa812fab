// What the page knows about the service: pools, volumes and running jobs, built from
// the one GetManagedObjects at load (or, when the service has more than one listing
// can carry, from a GetAll of each object: loader.js) and kept current by signals
// only. Both arrive as "notify" messages ({path: {interface: {property: value} |
// null}}: InterfacesAdded and PropertiesChanged merge values, null is
// InterfacesRemoved; notify.js), which `applyNotify` folds in. Nothing here polls or calls the service; the two
// properties the service never announces (Volume.Usage, Pool.UsageDetails) are
// marked stale by any change of their object and read again on demand (service.js).
//
// Each change replaces the changed object (so React can compare rows by identity) and
// bumps `version`, and `volumesVersion` when a volume changed (the sorted volume list
// of 10 000 rows is rebuilt only then, not for each progress step of a job);
// listeners run once per animation frame.

import { JOB_IFACE, MANAGER_IFACE, POOL_IFACE, VOLUME_IFACE, poolOfVolumePath } from "./paths.js";
import { vmOf } from "./format.js";
import { ANNOUNCED, value as plain } from "./notify.js";


function usageDetails(dict) {
    const details = {};
    for (const [key, value] of Object.entries(dict || {}))
        details[key] = plain(value);
    return details;
}

/**
 * Why a pool's usage details have no figures, or null when they have them: only
 * details without keys say so (the contract's word for a missing directory); a read
 * that failed is `usageError` and leaves the figures as they were.
 */
export function poolUsageProblem(pool, usage) {
    if (usage?.data_size !== undefined)
        return null;
    return `The pool's directory ${pool.dirPath ?? ""} is missing (moved away or not mounted?).`;
}

function toPool(path, p, old) {
    return {
        ...old,
        path,
        name: p.Name ?? old?.name,
        driver: p.Driver ?? old?.driver,
        dirPath: p.DirPath ?? old?.dirPath,
        setupCheck: p.SetupCheck ?? old?.setupCheck,
        revisionsToKeep: p.RevisionsToKeep ?? old?.revisionsToKeep,
        ephemeralVolatile: p.EphemeralVolatile ?? old?.ephemeralVolatile,
        includedIn: p.IncludedIn ?? old?.includedIn,
        usage: p.UsageDetails ? usageDetails(p.UsageDetails) : old?.usage,
        usageProblem: p.UsageDetails ? poolUsageProblem({ dirPath: p.DirPath ?? old?.dirPath }, usageDetails(p.UsageDetails)) : old?.usageProblem,
        usageError: p.UsageDetails ? null : old?.usageError ?? null,
        usageStale: p.UsageDetails === undefined,
        usageEpoch: (old?.usageEpoch ?? 0) + (p.UsageDetails === undefined ? 1 : 0),
    };
}

const VOLUME_PROPS = {
    Vid: "vid",
    Name: "name",
    Pool: "pool",
    Size: "size",
    Usage: "usage",
    Rw: "rw",
    SnapOnStart: "snapOnStart",
    SaveOnStop: "saveOnStop",
    Source: "source",
    RevisionsToKeep: "revisionsToKeep",
    Ephemeral: "ephemeral",
    SnapshotsDisabled: "snapshotsDisabled",
    IsDirty: "isDirty",
    IsOutdated: "isOutdated",
    Started: "started",
    BlockDevicePath: "blockDevicePath",
};

function toVolume(path, p, old) {
    const volume = { ...old, path };
    for (const [dbus, key] of Object.entries(VOLUME_PROPS)) {
        if (p[dbus] !== undefined)
            volume[key] = plain(p[dbus]);
    }
    if (p.Revisions !== undefined)
        volume.revisions = p.Revisions.map(([id, timestamp]) => ({ id, timestamp: Number(timestamp) }));
    if (p.RevisionDetails !== undefined) {
        volume.revisionDetails = p.RevisionDetails.map(([id, timestamp, nanoseconds, description, pinned, exclusive]) => (
            { id, timestamp: Number(timestamp), nanoseconds: Number(nanoseconds), description, pinned: Boolean(pinned), exclusive: Number(exclusive) }));
    }
    volume.pool = volume.pool || poolOfVolumePath(path);
    volume.vm = vmOf(volume.vid);
    // Usage is never announced: a value that came now is fresh, any other change
    // makes the old one stale (and moves its epoch: a read begun before it is stale
    // when it arrives, see `setVolumeUsage`).
    volume.usageStale = p.Usage === undefined;
    volume.usageEpoch = (old?.usageEpoch ?? 0) + (volume.usageStale ? 1 : 0);
    return volume;
}

const JOB_PROPS = {
    Operation: "operation",
    Objects: "objects",
    Progress: "progress",
    BytesTotal: "bytesTotal",
    BytesDone: "bytesDone",
    Rate: "rate",
    StartTime: "startTime",
    Cancelable: "cancelable",
    StartedByUID: "startedByUID",
};

function toJob(path, p, old, announced) {
    const job = { ...old, path };
    for (const [dbus, key] of Object.entries(JOB_PROPS)) {
        if (p[dbus] !== undefined)
            job[key] = plain(p[dbus]);
    }
    // Whether it could be cancelled when the page first saw it, and whether that was
    // its InterfacesAdded: only then does "not cancelable" mean it started past its
    // call's point of no return (job-labels.js); a Job already running at the load may
    // have passed that point since.
    if (!old) {
        job.cancelableAtStart = job.cancelable;
        job.announced = announced;
    }
    return job;
}

/** Also an EventTarget: "pool-removed" ({detail: path}) when a pool's InterfacesRemoved is folded in. */
export class Store extends EventTarget {
    constructor() {
        super();
        this.pools = new Map();
        this.volumes = new Map();
        this.jobs = new Map();
        this.manager = {};
        /** Domain signals per volume path, newest last: {member, args, at}. */
        this.events = new Map();
        this.version = 0;
        this.volumesVersion = 0;
        /** Objects created so far: each new object's `generation`. */
        this.generations = 0;
        this.listeners = new Set();
    }

    subscribe(listener) {
        this.listeners.add(listener);
        return () => this.listeners.delete(listener);
    }

    /**
     * Something changed: the versions move now, the listeners (React's renders) run
     * once per animation frame however many notify messages arrived in it — a burst
     * of signals (a VM's volumes, a restore creating thousands) rebuilds the sorted
     * list of 100 000 rows once, not once per signal.
     */
    changed(volumes = false) {
        this.version += 1;
        if (volumes)
            this.volumesVersion += 1;
        if (this.notifyScheduled)
            return;
        this.notifyScheduled = true;
        const notify = () => {
            this.notifyScheduled = false;
            for (const listener of this.listeners)
                listener(this.version);
        };
        if (typeof requestAnimationFrame === "function")
            requestAnimationFrame(notify);
        else
            queueMicrotask(notify);
    }

    /** Folds one notify message in ({path: {interface: {property: value} | null}}). */
    applyNotify(notify) {
        this.changed(this.fold(notify));
    }

    /**
     * Folds what arrived in order — notify messages and domain signals
     * (`{event: [path, member, args]}`) — with one change for all of them: the load
     * piece by piece delivers the replies and signals of a few hundred milliseconds at
     * once, so a list of 100 000 rows is not sorted again for each.
     */
    applyAll(items) {
        let volumes = false;
        for (const item of items) {
            if (item.event) {
                this.foldEvent(...item.event);
                volumes = true;
            } else {
                volumes = this.fold(item) || volumes;
            }
        }
        if (items.length)
            this.changed(volumes);
    }

    /** Folds a notify message in without telling anyone; whether pools or volumes changed. */
    fold(notify) {
        let volumes = false;
        const announced = Boolean(notify[ANNOUNCED]);
        for (const [path, interfaces] of Object.entries(notify)) {
            for (const [iface, props] of Object.entries(interfaces)) {
                this.applyInterface(path, iface, props, announced);
                volumes ||= iface === VOLUME_IFACE || iface === POOL_IFACE;
            }
        }
        return volumes;
    }

    applyInterface(path, iface, props, announced = false) {
        const table = { [POOL_IFACE]: this.pools, [VOLUME_IFACE]: this.volumes, [JOB_IFACE]: this.jobs }[iface];
        if (iface === MANAGER_IFACE) {
            if (props)
                this.manager = { ...this.manager, ...Object.fromEntries(Object.entries(props).map(([k, v]) => [k, plain(v)])) };
            return;
        }
        if (!table)
            return;
        if (props === null) {
            const removed = table.get(path);
            table.delete(path);
            if (iface === VOLUME_IFACE) {
                this.events.delete(path);
                // What it took is free again: its pool's usage is read anew.
                if (removed)
                    this.markPoolUsageStale(removed.pool);
            }
            if (iface === POOL_IFACE && removed)
                this.dispatchEvent(new CustomEvent("pool-removed", { detail: path }));
            return;
        }
        // An object is known from its InterfacesAdded (or the load), which carries all
        // its values; a change of one the page does not know (a signal that raced its
        // removal) would make a half object: ignored.
        const identity = { [POOL_IFACE]: "Name", [VOLUME_IFACE]: "Vid", [JOB_IFACE]: "Operation" }[iface];
        if (!table.has(path) && props[identity] === undefined)
            return;
        const build = { [POOL_IFACE]: toPool, [VOLUME_IFACE]: toVolume, [JOB_IFACE]: toJob }[iface];
        const old = table.get(path);
        const built = build(path, props, old, announced);
        // Which life of the object this is: a path removed and created again (a VM
        // re-created under its name) is another volume, which a dialog opened for the
        // old one must not act on.
        built.generation = old ? old.generation : ++this.generations;
        table.set(path, built);
        if (iface === VOLUME_IFACE)
            this.markPoolUsageStale(table.get(path).pool);
    }

    markPoolUsageStale(poolPath) {
        const pool = this.pools.get(poolPath);
        if (pool)
            this.pools.set(poolPath, { ...pool, usageStale: true, usageEpoch: (pool.usageEpoch ?? 0) + 1 });
    }

    /**
     * A Usage read for a volume (service.js), begun at `epoch` (the volume's
     * `usageEpoch` then): fresh unless the volume changed while it was read — Usage is
     * read outside the service's order of signals, so it may predate that change; it
     * is shown, and read again.
     */
    setVolumeUsage(path, usage, epoch) {
        const volume = this.volumes.get(path);
        if (!volume)
            return;
        const fresh = epoch === undefined || epoch === volume.usageEpoch;
        this.volumes.set(path, { ...volume, usage, usageStale: !fresh });
        this.changed(true);
    }

    /**
     * A UsageDetails read for a pool, begun at `epoch` (as `setVolumeUsage`). Without
     * its keys the directory is missing (the contract's word for it): `usageProblem`
     * says so.
     */
    setPoolUsage(path, details, epoch) {
        const pool = this.pools.get(path);
        if (!pool)
            return;
        const fresh = epoch === undefined || epoch === pool.usageEpoch;
        const usage = usageDetails(details);
        this.pools.set(path, { ...pool, usage, usageStale: !fresh, usageProblem: poolUsageProblem(pool, usage), usageError: null });
        this.changed(true);
    }

    /**
     * A UsageDetails read that failed with `message` (the service busy, a limit, the
     * connection): it says nothing about the pool, so the figures shown stay, with the
     * error beside them (`usageError`), until a read succeeds.
     */
    setPoolUsageFailed(path, message) {
        const pool = this.pools.get(path);
        if (!pool)
            return;
        this.pools.set(path, { ...pool, usageStale: false, usageError: message });
        this.changed(true);
    }

    /** Reads the pool's usage again (a retry, or a call on it failed). */
    rereadPoolUsage(path) {
        if (!this.pools.has(path))
            return;
        this.markPoolUsageStale(path);
        this.changed(true);
    }

    /** A domain signal of a volume (VolumeStarted, RevisionAdded, …), for its timeline. */
    recordEvent(path, member, args) {
        this.foldEvent(path, member, args);
        this.changed(true);
    }

    foldEvent(path, member, args) {
        const list = this.events.get(path) || [];
        this.events.set(path, [...list, { member, args, at: Date.now() }].slice(-50));
        const volume = this.volumes.get(path);
        if (volume)
            this.volumes.set(path, { ...volume, usageStale: true, usageEpoch: (volume.usageEpoch ?? 0) + 1 });
    }

    /** Everything goes (the service left the bus). */
    clear() {
        this.pools.clear();
        this.volumes.clear();
        this.jobs.clear();
        this.events.clear();
        this.manager = {};
        this.changed(true);
    }

    /**
     * The volume as it is now, when it is still the one `seen` (the same life of its
     * path); else an Error saying why a dialog opened for it must not act.
     */
    sameVolume(seen) {
        const now = this.volumes.get(seen.path);
        if (!now || now.generation !== seen.generation)
            return new Error(`${seen.vid} was removed${now ? " and created again" : ""} since this dialog opened; nothing was done.`);
        return now;
    }

    poolByName(name) {
        for (const pool of this.pools.values()) {
            if (pool.name === name)
                return pool;
        }
        return null;
    }

    volumeAt(poolName, vid) {
        for (const volume of this.volumes.values()) {
            if (volume.vid === vid && this.pools.get(volume.pool)?.name === poolName)
                return volume;
        }
        return null;
    }
}

/** Whether the pool's usage is to be read again later: its directory missing, or its last read failed. */
export function poolUsageUnsure(pool) {
    return Boolean(pool?.usageProblem || pool?.usageError);
}

/** Code-point order: names are ASCII (the contract's name rules), and 10 000 rows sort fast. */
function compare(a, b) {
    return a < b ? -1 : a > b ? 1 : 0;
}

/** Volumes sorted by pool name and vid, filtered by pool path, VM and state. */
export function filterVolumes(store, { pool = "", vm = "", state = "", text = "" } = {}) {
    const needle = text.trim().toLowerCase();
    const rows = [];
    for (const volume of store.volumes.values()) {
        if (pool && volume.pool !== pool)
            continue;
        if (vm && volume.vm !== vm)
            continue;
        if (state && (state === "running") !== Boolean(volume.started))
            continue;
        if (needle && !volume.vid.toLowerCase().includes(needle))
            continue;
        rows.push(volume);
    }
    const poolName = volume => store.pools.get(volume.pool)?.name || "";
    rows.sort((a, b) => compare(poolName(a), poolName(b)) || compare(a.vid, b.vid));
    return rows;
}

/** The VM names of all volumes, sorted, for the VM filter. */
export function vmNames(store) {
    const names = new Set();
    for (const volume of store.volumes.values()) {
        if (volume.vm)
            names.add(volume.vm);
    }
    return [...names].sort();
}

/**
 * The volumes of the pool at `poolPath` a snapshot may start from: those that save on
 * stop (the service refuses a volatile or snapshot source), sorted by vid.
 */
export function snapshotSources(store, poolPath) {
    const sources = [];
    for (const volume of store.volumes.values()) {
        if (volume.pool === poolPath && volume.saveOnStop)
            sources.push(volume);
    }
    return sources.sort((a, b) => compare(a.vid, b.vid));
}

/**
 * The source a Create dialog shows and sends, given `sources` (snapshotSources,
 * computed anew at each render: volumes come and go while the dialog is open) and
 * `chosen` (what the user chose, or the dialog pinned when it first showed one):
 * `chosen` while it is offered; "" once it is gone — never another volume in its place
 * (a volume created meanwhile that sorts first must not become the source unseen);
 * with nothing chosen yet, the first offered.
 */
export function effectiveSource(sources, chosen) {
    if (!chosen)
        return sources[0]?.vid ?? "";
    return sources.some(s => s.vid === chosen) ? chosen : "";
}

/** Whether the source `chosen` in a Create dialog is no longer offered (removed). */
export function sourceGone(sources, chosen) {
    return Boolean(chosen) && !sources.some(s => s.vid === chosen);
}

/** Counts of a pool's volumes: {total, running}. */
export function poolCounts(store) {
    const counts = new Map();
    for (const volume of store.volumes.values()) {
        const c = counts.get(volume.pool) || { total: 0, running: 0 };
        c.total += 1;
        c.running += volume.started ? 1 : 0;
        counts.set(volume.pool, c);
    }
    return counts;
}
