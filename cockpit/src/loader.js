// How the page learns everything the service has: one GetManagedObjects, or — when
// the service has more objects than one message on the bus can carry (100 000
// volumes do not fit in the system bus's 32 MiB; the service then answers the
// listing with LimitsExceeded, contract rev 2) — each object read on its own: the pools and the
// paths of their volumes (ListPools, ListVolumes: paths only, 100 000 fit), then a
// GetAll of every volume, a few dozen at a time, while the page already shows what
// has arrived and how much is left.
//
// The signals are subscribed before anything is read (service.js), and the service
// sends a reply only after every signal that went out before it: so a change made
// meanwhile is in the reply or in a signal after it, and folding replies and signals
// into the store in the order they arrive ends with what the service has. The
// [`Feed`] keeps that order; while a load piece by piece runs it holds what arrives
// and hands it to the store now and then (`MOST_HELD_MS`), not reply by reply. What
// must see the store as it was at a signal's place in that order (a Job's Completed
// needs its Job, whose InterfacesAdded may be held and whose InterfacesRemoved
// follows) waits in the same queue (`whenFolded`).

import { JOB_IFACE, MANAGER_IFACE, POOL_IFACE, ROOT, VOLUME_IFACE } from "./paths.js";
import { childNodes, fromGetAll, fromManagedObjects } from "./notify.js";

export const OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager";
export const PROPERTIES = "org.freedesktop.DBus.Properties";
const INTROSPECTABLE = "org.freedesktop.DBus.Introspectable";
const JOBS = `${ROOT}/jobs`;

/** GetAll calls in flight at once: well below the service's 128 calls per user. */
export const IN_FLIGHT = 32;

/**
 * During a load piece by piece the progress is shown every `TICK_MS`; what arrived
 * reaches the store after `TICK_MS`, then after twice as long each time, at most every
 * `MOST_HELD_MS`: each time the page sorts and counts every volume it has, so handing
 * them over at a fixed rate would cost a time that grows with the square of their
 * number (at 80 000 volumes a page that drew four times a second read 200 volumes a
 * second instead of 1 500).
 */
export const TICK_MS = 250;
export const MOST_HELD_MS = 4000;

/** The short name of a D-Bus error ("LimitsExceeded", …), or "". */
export function errorKind(error) {
    const name = error?.name || "";
    return name.slice(name.lastIndexOf(".") + 1);
}

/** Replies and signals into the store, in the order they arrived. */
export class Feed {
    constructor(store) {
        this.store = store;
        /** While held: what arrived since the last flush. */
        this.queue = null;
    }

    /** A notify message. */
    put(notify) {
        if (this.queue)
            this.queue.push(notify);
        else
            this.store.applyNotify(notify);
    }

    /** A domain signal of a volume (its timeline). */
    event(path, member, args) {
        if (this.queue)
            this.queue.push({ event: [path, member, args] });
        else
            this.store.recordEvent(path, member, args);
    }

    /**
     * Runs `fn` once everything that arrived before it is in the store, and before
     * anything that arrived after it: at once unless held.
     */
    whenFolded(fn) {
        if (this.queue)
            this.queue.push(fn);
        else
            fn();
    }

    /** From now on what arrives waits for `flush`. */
    hold() {
        this.queue ??= [];
    }

    flush() {
        if (!this.queue?.length)
            return;
        const items = this.queue;
        this.queue = [];
        let folded = 0;
        items.forEach((item, i) => {
            if (typeof item !== "function")
                return;
            this.store.applyAll(items.slice(folded, i));
            folded = i + 1;
            item();
        });
        this.store.applyAll(items.slice(folded));
    }

    /** Everything held goes to the store, and from now on at once. */
    release() {
        this.flush();
        this.queue = null;
    }
}

/**
 * Loads everything through `client` (cockpit's dbus channel) into `feed`.
 * `hooks.current()` says whether this load is still wanted (the channel is still the
 * page's); `hooks.listed()` is called once the pools are known (the page can show
 * them); `hooks.progress({done, total, missed, unlisted, problem, finished, listed})`
 * (`listed`: each pool's number of volumes as listed, by path) during
 * and after a load piece by piece. Rejects with the error that ended it.
 *
 * Each reply goes into the feed from its own callback, never after an `await`:
 * cockpit.js runs a reply and the signals that arrived right behind it in one go, and
 * an `await` resumes only after all of them — a removal just after the listing would
 * be folded in before it, and the listing would bring the volume back.
 */
export async function load(client, feed, hooks) {
    const manager = client.call(ROOT, PROPERTIES, "GetAll", [MANAGER_IFACE], { type: "s" }).then(
        reply => hooks.current() && feed.put(fromGetAll(ROOT, MANAGER_IFACE, reply)),
        // Only the header's version is missing then.
        () => {});
    // (A handler given to cockpit's `then` must not throw: cockpit.js 287 does not
    // catch it, and the page would report an uncaught exception.)
    const refused = await client.call(ROOT, OBJECT_MANAGER, "GetManagedObjects", []).then(
        ([objects]) => {
            if (hooks.current())
                feed.put(fromManagedObjects(objects));
            return null;
        },
        error => ({ error }));
    await manager;
    if (!hooks.current())
        return;
    if (!refused)
        hooks.listed();
    else if (errorKind(refused.error) === "LimitsExceeded")
        await loadPiecewise(client, feed, hooks);
    else
        throw refused.error;
}

/** An object removed after it was listed: its removal comes (or came) as a signal. */
function gone(error) {
    return ["UnknownObject", "NotFound"].includes(errorKind(error));
}

async function loadPiecewise(client, feed, hooks) {
    const call = (path, iface, method, type, args) => client.call(path, iface, method, args, { type });
    const loading = { done: 0, total: 0, missed: 0, unlisted: 0, problem: null, finished: false, listed: {} };
    let missed = [];
    const getAll = (path, iface) => call(path, PROPERTIES, "GetAll", "s", [iface]).then(
        reply => feed.put(fromGetAll(path, iface, reply)),
        error => {
            if (!gone(error)) {
                missed.push(path);
                loading.problem ??= error?.message || String(error);
            }
        });
    feed.hold();
    let shown = false;
    let held = TICK_MS;
    let flushAt = Date.now() + held;
    const tick = setInterval(() => {
        if (!hooks.current())
            return;
        if (Date.now() >= flushAt) {
            feed.flush();
            held = Math.min(2 * held, MOST_HELD_MS);
            flushAt = Date.now() + held;
        }
        if (shown)
            hooks.progress({ ...loading });
    }, TICK_MS);
    try {
        const [pools] = await call(ROOT, MANAGER_IFACE, "ListPools", "a{sv}", [{}]);
        await Promise.all(pools.map(pool => getAll(pool, POOL_IFACE)));
        const lists = await Promise.all(pools.map(pool =>
            call(pool, POOL_IFACE, "ListVolumes", "a{sv}", [{}]).then(([paths]) => paths, error => {
                if (!gone(error)) {
                    loading.unlisted += 1;
                    loading.problem ??= error?.message || String(error);
                }
                return [];
            })));
        const [xml] = await call(JOBS, INTROSPECTABLE, "Introspect", "", []).catch(() => [""]);
        await Promise.all(childNodes(xml).map(node => getAll(`${JOBS}/${node}`, JOB_IFACE)));
        missed = [];
        const volumes = lists.flat();
        loading.total = volumes.length;
        loading.listed = Object.fromEntries(pools.map((pool, i) => [pool, lists[i].length]));
        if (!hooks.current())
            return;
        feed.flush();
        shown = true;
        hooks.progress({ ...loading });
        hooks.listed();
        const readAll = async (paths, read) => {
            let next = 0;
            const reader = async () => {
                while (next < paths.length && hooks.current())
                    await read(paths[next++]);
            };
            await Promise.all(Array.from({ length: IN_FLIGHT }, reader));
        };
        await readAll(volumes, path => getAll(path, VOLUME_IFACE).then(() => { loading.done += 1; }));
        // What could not be read (the service busy, say) is asked once more.
        const again = missed;
        missed = [];
        await readAll(again, path => getAll(path, VOLUME_IFACE));
        loading.missed = missed.length;
    } finally {
        clearInterval(tick);
        if (hooks.current()) {
            feed.release();
            hooks.progress({ ...loading, finished: true });
        }
    }
}
