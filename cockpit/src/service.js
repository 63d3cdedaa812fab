// The page's one connection to org.qubes.Storage, through cockpit's D-Bus channel
// (`cockpit.dbus(…, { bus: "system", superuser: "try" })`: with administrative access
// the calls come from root, else from the logged-in user and polkit decides).
//
// At load: the signals of /org/qubes/Storage and below are subscribed — InterfacesAdded
// and InterfacesRemoved, PropertiesChanged (carrying values), the Volume domain
// signals for each volume's timeline, Job Completed —, then everything is read once
// (loader.js: one GetManagedObjects, or each object on its own when the service has
// more than one message can carry). From then on only signals. Nothing polls. The two
// properties the service does not announce, Volume.Usage and Pool.UsageDetails, are
// read with one Get when a row that shows them is on screen and its value went stale
// by a change of that object — or, for a pool, by a failed call on it or its volumes.
// The one exception to "nothing polls": a pool whose usage cannot be read (its
// directory moved away, or the read failed) is read again every 30 s while it stays
// so, since nothing announces the directory's return; its timer goes with the pool
// or the service. A Job's Completed is taken at its place among the signals (the
// Feed's order), with its Job as the store has it then. (The page does not use the bridge's `watch`: when the
// listing does not fit on the bus, the bridge falls back to introspecting and reading
// every object one after another: at 100 000 volumes not even the pools showed
// within 20 s.)
//
// When the service leaves the bus the page says so and forgets everything; when it
// comes back the channel is opened again and everything read again. A service not on
// the bus when the page opens is waited for the same way (the page follows the bus
// driver's NameOwnerChanged itself).

import { Feed, OBJECT_MANAGER, PROPERTIES, errorKind, load } from "./loader.js";
import { fromInterfacesAdded, fromInterfacesRemoved, fromPropertiesChanged } from "./notify.js";
import { JOB_IFACE, MANAGER_IFACE, POOL_IFACE, ROOT, SERVICE, VOLUME_IFACE, kindOfPath, poolOfVolumePath } from "./paths.js";
import { poolUsageUnsure } from "./store.js";

/** How often the usage of a pool whose usage cannot be read is read again. */
export const POOL_USAGE_RETRY_MS = 30000;

/** Errors of a call to a name nobody owns. */
const ABSENT = new Set(["ServiceUnknown", "NameHasNoOwner"]);

/** An a{sv} for cockpit's JSON encoding: {key: {t: signature, v: value}}. */
export function options(typed = {}) {
    const dict = {};
    for (const [key, [t, v]] of Object.entries(typed))
        dict[key] = { t, v };
    return dict;
}

export class Service extends EventTarget {
    constructor(store) {
        super();
        this.store = store;
        this.client = null;
        /** "connecting" | "ready" | "absent" (not on the bus) | "failed" */
        this.state = "connecting";
        this.problem = null;
        this.reading = new Set();
        this.owner = undefined;
        /** A load piece by piece: {done, total, missed, problem, finished}, or null. */
        this.loading = null;
        /** Pending re-reads of pools whose usage could not be read, by pool path. */
        this.retries = new Map();
        /** How long until such a pool's usage is read again (tests shorten it). */
        this.usageRetryMs = POOL_USAGE_RETRY_MS;
        // A removed pool's retry goes with it: a pool created again under its path
        // gets its own.
        store.addEventListener("pool-removed", ({ detail: path }) => this.cancelRetries(path));
    }

    start() {
        this.open();
    }

    open() {
        const client = cockpit.dbus(SERVICE, { bus: "system", superuser: "try" });
        const feed = new Feed(this.store);
        this.client = client;
        this.setLoading(null);
        const current = () => this.client === client;
        client.addEventListener("owner", (_event, owner) => this.ownerChanged(client, owner));
        client.addEventListener("close", (_event, info) => {
            if (!current())
                return;
            if (info?.problem === "not-found") {
                this.absent(client);
            } else if (info?.problem) {
                // The channel is gone: a load still running stops (its calls would
                // all fail).
                this.client = null;
                this.setLoading(null);
                this.setState("failed", cockpit.message(info));
            }
        });
        const here = { path_namespace: ROOT };
        client.subscribe({ ...here, interface: OBJECT_MANAGER, member: "InterfacesAdded" },
                         (_path, _iface, _member, args) => current() && feed.put(fromInterfacesAdded(args)));
        client.subscribe({ ...here, interface: OBJECT_MANAGER, member: "InterfacesRemoved" },
                         (_path, _iface, _member, args) => current() && feed.put(fromInterfacesRemoved(args)));
        client.subscribe({ ...here, interface: PROPERTIES, member: "PropertiesChanged" },
                         (path, _iface, _member, args) => current() && feed.put(fromPropertiesChanged(path, args)));
        client.subscribe({ ...here, interface: VOLUME_IFACE },
                         (path, _iface, member, args) => current() && feed.event(path, member, args));
        client.subscribe({ ...here, interface: JOB_IFACE, member: "Completed" },
                         (path, _iface, _member, [success, message]) => current() && feed.whenFolded(() => this.jobCompleted(path, success, message)));
        const hooks = {
            current,
            listed: () => current() && this.owner !== null && this.setState("ready"),
            progress: loading => current() && this.owner !== null && this.setLoading(loading),
        };
        load(client, feed, hooks).catch(error => {
            if (!current())
                return;
            if (ABSENT.has(errorKind(error)))
                this.absent(client);
            else
                this.setState("failed", describe(error));
        });
    }

    /**
     * Not on the bus (stopped, or its start failed): the page forgets everything and
     * waits for the name itself.
     */
    absent(client) {
        this.client = null;
        client.close();
        this.cancelRetries();
        this.store.clear();
        this.setLoading(null);
        this.setState("absent");
        this.awaitService();
    }

    /**
     * Waits — by the bus driver's NameOwnerChanged, not by polling — for the service
     * to own its name, then opens the channel again (one new GetManagedObjects).
     */
    awaitService() {
        if (this.waiting)
            return;
        const bus = cockpit.dbus("org.freedesktop.DBus", { bus: "system" });
        this.waiting = bus;
        const reopen = () => {
            if (this.waiting !== bus)
                return;
            this.waiting = null;
            bus.close();
            this.owner = undefined;
            this.setState("connecting");
            this.open();
        };
        bus.subscribe({ interface: "org.freedesktop.DBus", member: "NameOwnerChanged", arg0: SERVICE },
                      (_path, _iface, _member, [, , owner]) => owner && reopen());
        // It may have come between the close and the subscription.
        bus.call("/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner", [SERVICE])
                .then(([has]) => has && reopen())
                .catch(() => {});
    }

    ownerChanged(client, owner) {
        if (client !== this.client)
            return;
        const previous = this.owner;
        this.owner = owner;
        if (owner === null) {
            // Gone: a load still running stops with the channel (its calls would
            // start the service again by bus activation), and the name is waited for.
            this.absent(client);
        } else if (previous !== undefined && previous !== owner) {
            // A new instance of the service: start over with a fresh channel.
            this.client = null;
            client.close();
            this.cancelRetries();
            this.store.clear();
            this.owner = undefined;
            this.setState("connecting");
            this.open();
        }
    }

    setLoading(loading) {
        if (loading === null && this.loading === null)
            return;
        this.loading = loading;
        this.dispatchEvent(new Event("loading"));
    }

    setState(state, problem = null) {
        this.state = state;
        this.problem = problem;
        this.dispatchEvent(new Event("state"));
    }

    /**
     * A Job's Completed, at its place among the other signals (the Feed's order): the
     * event carries the Job as the store has it then — its InterfacesRemoved, which
     * comes next, has not been folded in yet.
     */
    jobCompleted(path, success, message) {
        const job = this.store.jobs.get(path);
        this.dispatchEvent(new CustomEvent("job-completed", { detail: { path, job, success, message } }));
    }

    /** One method call; resolves to the reply's arguments. `signature` of the input. */
    call(path, iface, method, signature, args) {
        if (!this.client)
            return Promise.reject(new Error("The storage service is not connected."));
        // (A plain promise around cockpit's: a handler given to cockpit's own must not throw.)
        const reply = Promise.resolve(this.client.call(path, iface, method, args, { type: signature }));
        if (iface !== POOL_IFACE && iface !== VOLUME_IFACE)
            return reply;
        return reply.catch(error => {
            this.callFailed(path);
            throw error;
        });
    }

    manager(method, signature, args) {
        return this.call(ROOT, MANAGER_IFACE, method, signature, args);
    }

    volume(path, method, signature = "a{sv}", args = [{}]) {
        return this.call(path, VOLUME_IFACE, method, signature, args);
    }

    /** Reads a volume's Usage once if the value shown is stale. */
    refreshVolumeUsage(volume) {
        if (!volume.usageStale)
            return;
        const epoch = this.store.volumes.get(volume.path)?.usageEpoch;
        this.readOnce(volume.path, VOLUME_IFACE, "Usage",
                      value => this.store.setVolumeUsage(volume.path, value, epoch),
                      () => this.store.setVolumeUsage(volume.path, volume.usage));
    }

    /**
     * Reads a pool's UsageDetails once if the value shown is stale. A pool whose usage
     * cannot be read (its directory missing, the read refused) is read again every
     * `usageRetryMs` while it stays so: nothing announces its directory's return. That
     * holds for a pool found so at the load too (its listing carries the live details:
     * `{}` for a missing directory, not stale, so no read of its own follows).
     */
    refreshPoolUsage(pool) {
        if (!pool.usageStale) {
            this.retryPoolUsageLater(pool.path);
            return;
        }
        const epoch = this.store.pools.get(pool.path)?.usageEpoch;
        const after = () => this.retryPoolUsageLater(pool.path);
        this.readOnce(pool.path, POOL_IFACE, "UsageDetails",
                      value => { this.store.setPoolUsage(pool.path, value, epoch); after() },
                      error => { this.store.setPoolUsageFailed(pool.path, describe(error)); after() });
    }

    /** One read of the pool at `path` in `usageRetryMs`, unless its usage is fine or one is pending. */
    retryPoolUsageLater(path) {
        if (!poolUsageUnsure(this.store.pools.get(path)) || this.retries.has(path))
            return;
        this.retries.set(path, setTimeout(() => {
            this.retries.delete(path);
            if (poolUsageUnsure(this.store.pools.get(path)))
                this.store.rereadPoolUsage(path);
        }, this.usageRetryMs));
    }

    /** No more retry for the pool at `path` (removed), or for any (`path` undefined: the service left). */
    cancelRetries(path) {
        for (const [key, timer] of this.retries) {
            if (path === undefined || key === path) {
                clearTimeout(timer);
                this.retries.delete(key);
            }
        }
    }

    /**
     * A call on a pool or volume failed: perhaps because its pool's directory went
     * away, which nothing announces — the pool's usage is read again, and says so.
     */
    callFailed(path) {
        const kind = kindOfPath(path);
        if (kind === "pool")
            this.store.rereadPoolUsage(path);
        else if (kind === "volume")
            this.store.rereadPoolUsage(poolOfVolumePath(path));
    }

    readOnce(path, iface, property, done, failed) {
        const key = `${path} ${property}`;
        if (this.reading.has(key) || this.state !== "ready")
            return;
        this.reading.add(key);
        this.call(path, PROPERTIES, "Get", "ss", [iface, property])
                .then(([variant]) => done(variant.v))
                // Gone meanwhile (its removal is on the way) or unreadable: keep the
                // old value until the next change.
                .catch(failed)
                .finally(() => this.reading.delete(key));
    }
}

/**
 * The sentence to show for a failed call: the service's own message (its errors are
 * one sentence naming the object and the reason), polkit's refusal as the service
 * words it, or the bridge's description of a broken connection — never a trace.
 */
export function describe(error) {
    if (!error)
        return "Unknown error.";
    if (typeof error === "string")
        return error;
    if (error.message)
        return String(error.message);
    if (error.problem)
        return cockpit.message(error);
    return String(error);
}

export { errorKind };
