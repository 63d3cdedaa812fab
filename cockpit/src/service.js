// The page's one connection to org.qubes.Storage, through cockpit's D-Bus channel
// (`cockpit.dbus(…, { bus: "system", superuser: "try" })`: with administrative access
// the calls come from root, else from the logged-in user and polkit decides).
//
// At load: one `watch` of /org/qubes/Storage, which the bridge answers with one
// GetManagedObjects of the ObjectManager there; from then on only signals —
// InterfacesAdded/Removed and PropertiesChanged (carrying values) arrive as "notify"
// and go to the store, the Volume domain signals go to each volume's timeline, Job
// Completed ends a job. Nothing polls. The two properties the service does not
// announce, Volume.Usage and Pool.UsageDetails, are read with one Get when a row that
// shows them is on screen and its value went stale by a change of that object.
//
// When the service leaves the bus the page says so and forgets everything; when it
// comes back the channel is opened again (one new GetManagedObjects). A service not on
// the bus when the page opens is waited for the same way (the bridge closes the
// channel then: the page follows the bus driver's NameOwnerChanged itself).

import { JOB_IFACE, MANAGER_IFACE, POOL_IFACE, ROOT, SERVICE, VOLUME_IFACE } from "./paths.js";

const PROPERTIES = "org.freedesktop.DBus.Properties";

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
    }

    start() {
        this.open();
    }

    open() {
        const client = cockpit.dbus(SERVICE, { bus: "system", superuser: "try" });
        this.client = client;
        client.addEventListener("notify", (_event, data) => this.store.applyNotify(data));
        client.addEventListener("owner", (_event, owner) => this.ownerChanged(client, owner));
        client.addEventListener("close", (_event, info) => {
            if (this.client !== client)
                return;
            if (info?.problem === "not-found") {
                // Not on the bus when the page opened (stopped, or its start failed):
                // the bridge closes the channel, so the page waits for the name itself.
                this.client = null;
                this.store.clear();
                this.setState("absent");
                this.awaitService();
            } else if (info?.problem) {
                this.setState("failed", cockpit.message(info));
            }
        });
        client.subscribe({ interface: VOLUME_IFACE, path_namespace: ROOT },
                         (path, _iface, member, args) => this.store.recordEvent(path, member, args));
        client.subscribe({ interface: JOB_IFACE, path_namespace: ROOT, member: "Completed" },
                         (path, _iface, _member, [success, message]) => this.jobCompleted(path, success, message));
        client.watch({ path_namespace: ROOT })
                .then(() => {
                    if (this.client === client && this.owner !== null)
                        this.setState("ready");
                })
                .catch(error => {
                    if (this.client === client)
                        this.setState("failed", describe(error));
                });
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
            this.store.clear();
            this.setState("absent");
        } else if (previous !== undefined && previous !== owner) {
            // A new instance of the service: start over with a fresh channel.
            this.client = null;
            client.close();
            this.store.clear();
            this.owner = undefined;
            this.setState("connecting");
            this.open();
        }
    }

    setState(state, problem = null) {
        this.state = state;
        this.problem = problem;
        this.dispatchEvent(new Event("state"));
    }

    jobCompleted(path, success, message) {
        this.dispatchEvent(new CustomEvent("job-completed", { detail: { path, success, message } }));
    }

    /** One method call; resolves to the reply's arguments. `signature` of the input. */
    call(path, iface, method, signature, args) {
        if (!this.client)
            return Promise.reject(new Error("The storage service is not connected."));
        return this.client.call(path, iface, method, args, { type: signature });
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

    /** Reads a pool's UsageDetails once if the value shown is stale. */
    refreshPoolUsage(pool) {
        if (!pool.usageStale)
            return;
        const epoch = this.store.pools.get(pool.path)?.usageEpoch;
        this.readOnce(pool.path, POOL_IFACE, "UsageDetails",
                      value => this.store.setPoolUsage(pool.path, value, epoch),
                      () => this.store.setPoolUsage(pool.path, pool.usage));
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

/** The short name of a D-Bus error ("Busy", "AccessDenied", …), or "". */
export function errorKind(error) {
    const name = error?.name || "";
    return name.slice(name.lastIndexOf(".") + 1);
}
