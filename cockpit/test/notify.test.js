// What the service says, as the store's notify messages; and the feed that keeps
// replies and signals in the order they arrived while a load piece by piece holds them.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Feed, load } from "../src/loader.js";
import {
    ANNOUNCED, childNodes, fromGetAll, fromInterfacesAdded, fromInterfacesRemoved, fromManagedObjects,
    fromPropertiesChanged,
} from "../src/notify.js";
import { Store } from "../src/store.js";

const POOL = "/org/qubes/Storage/pools/work";
const VOLUME = `${POOL}/volumes/appvms_2fwork_2fprivate`;
const VOLUME_IFACE = "org.qubes.Storage.Volume";
const POOL_IFACE = "org.qubes.Storage.Pool";

test("a listing's variants come off each property, nested ones stay", () => {
    const notify = fromManagedObjects({
        [POOL]: {
            [POOL_IFACE]: {
                Name: { t: "s", v: "work" },
                UsageDetails: { t: "a{sv}", v: { data_size: { t: "t", v: 1000 } } },
            },
        },
        [VOLUME]: { [VOLUME_IFACE]: { Vid: { t: "s", v: "appvms/work/private" }, Revisions: { t: "a(ts)", v: [["1", 5]] } } },
    });
    assert.deepEqual(notify[POOL][POOL_IFACE], { Name: "work", UsageDetails: { data_size: { t: "t", v: 1000 } } });
    assert.deepEqual(notify[VOLUME][VOLUME_IFACE], { Vid: "appvms/work/private", Revisions: [["1", 5]] });
    const store = new Store();
    store.applyNotify(notify);
    assert.equal(store.pools.get(POOL).usage.data_size, 1000);
    assert.deepEqual(store.volumes.get(VOLUME).revisions, [{ id: "1", timestamp: 5 }]);
});

test("signals and GetAll become the notify messages the bridge's watch gave", () => {
    assert.deepEqual(fromInterfacesAdded([VOLUME, { [VOLUME_IFACE]: { Vid: { t: "s", v: "a/b/c" } } }]),
                     { [VOLUME]: { [VOLUME_IFACE]: { Vid: "a/b/c" } }, [ANNOUNCED]: true });
    assert.deepEqual(fromInterfacesRemoved([VOLUME, [VOLUME_IFACE, "org.freedesktop.DBus.Properties"]]),
                     { [VOLUME]: { [VOLUME_IFACE]: null, "org.freedesktop.DBus.Properties": null } });
    assert.deepEqual(fromPropertiesChanged(VOLUME, [VOLUME_IFACE, { Started: { t: "b", v: true } }, []]),
                     { [VOLUME]: { [VOLUME_IFACE]: { Started: true } } });
    assert.deepEqual(fromGetAll(VOLUME, VOLUME_IFACE, [{ Size: { t: "t", v: 4096 } }]),
                     { [VOLUME]: { [VOLUME_IFACE]: { Size: 4096 } } });
});

test("the jobs are the child nodes an introspection names", () => {
    const xml = `<!DOCTYPE node><node><interface name="org.freedesktop.DBus.Peer"/>
      <node name="3"/><node name="17" /></node>`;
    assert.deepEqual(childNodes(xml), ["3", "17"]);
    assert.deepEqual(childNodes(""), []);
});

function volume(started, size = 1024) {
    return { [VOLUME]: { [VOLUME_IFACE]: { Vid: "appvms/work/private", Pool: POOL, Size: size, Started: started } } };
}

test("held replies and signals reach the store in the order they came, as one change", () => {
    const store = new Store();
    const feed = new Feed(store);
    let changes = 0;
    store.changed = () => { changes += 1; };
    feed.hold();
    // The volume's GetAll (stopped), then a start's signals: the last word wins.
    feed.put(volume(false));
    feed.put(fromPropertiesChanged(VOLUME, [VOLUME_IFACE, { Started: { t: "b", v: true } }, []]));
    feed.event(VOLUME, "VolumeStarted", ["/dev/loop7"]);
    assert.equal(store.volumes.size, 0, "nothing reaches the store while held");
    feed.flush();
    assert.equal(store.volumes.get(VOLUME).started, true);
    assert.equal(store.events.get(VOLUME)[0].member, "VolumeStarted");
    assert.equal(changes, 1);
    // A removal after the GetAll reply removes it; a change of an unknown volume
    // (its GetAll not yet answered) makes no half volume.
    feed.put(fromInterfacesRemoved([VOLUME, [VOLUME_IFACE]]));
    feed.put(fromPropertiesChanged(VOLUME, [VOLUME_IFACE, { Size: { t: "t", v: 1 } }, []]));
    feed.release();
    assert.equal(store.volumes.has(VOLUME), false);
    // Released: from now on at once.
    feed.put(volume(false, 2048));
    assert.equal(store.volumes.get(VOLUME).size, 2048);
});

/** A channel that answers like the service with more volumes than one listing holds. */
function bigService({ failOnce = [], gone = [] } = {}) {
    const volumes = ["a", "b", "c", "d"].map(n => `${POOL}/volumes/appvms_2fvm_2f${n}`);
    const failed = new Set();
    const error = (name, message) => Object.assign(new Error(message), { name: `org.qubes.Storage.Error.${name}` });
    return {
        volumes,
        calls: [],
        call(path, iface, method, args) {
            this.calls.push(`${method} ${path}`);
            const reply = (() => {
                if (method === "GetManagedObjects")
                    throw Object.assign(new Error("too large"), { name: "org.freedesktop.DBus.Error.LimitsExceeded" });
                if (method === "ListPools")
                    return [[POOL]];
                if (method === "ListVolumes")
                    return [volumes];
                if (method === "Introspect")
                    return ["<node></node>"];
                if (method === "GetAll" && args[0] === POOL_IFACE)
                    return [{ Name: { t: "s", v: "work" } }];
                if (method === "GetAll" && args[0] === VOLUME_IFACE) {
                    const n = path.slice(-1);
                    if (gone.includes(n))
                        throw error("NotFound", `There is no volume ${n}`);
                    if (failOnce.includes(n) && !failed.has(n)) {
                        failed.add(n);
                        throw error("Busy", "busy");
                    }
                    return [{ Vid: { t: "s", v: `appvms/vm/${n}` }, Pool: { t: "o", v: POOL } }];
                }
                return [{}];
            });
            return new Promise((resolve, reject) => {
                try {
                    resolve(reply());
                } catch (e) {
                    reject(e);
                }
            });
        },
    };
}

test("refused one listing, the page reads each volume; a failed read is asked again, a vanished one is no failure", async () => {
    const store = new Store();
    store.changed = () => {};
    const client = bigService({ failOnce: ["b"], gone: ["d"] });
    const progress = [];
    let listed = 0;
    await load(client, new Feed(store), {
        current: () => true,
        listed: () => { listed += 1; },
        progress: p => progress.push(p),
    });
    assert.equal(listed, 1);
    assert.deepEqual([...store.volumes.values()].map(v => v.vid).sort(), ["appvms/vm/a", "appvms/vm/b", "appvms/vm/c"]);
    const last = progress.at(-1);
    assert.equal(last.finished, true);
    assert.equal(last.total, 4);
    assert.equal(last.missed, 0, "b was read the second time, d is gone");
    assert.equal(client.calls.filter(c => c.endsWith("appvms_2fvm_2fb")).length, 2);
    assert.ok(!progress.some(p => !p.finished && p.total === 0), "no progress before the volumes are counted");
    assert.deepEqual(last.listed, { [POOL]: 4 }, "each pool's count as listed");
});

test("a volume that cannot be read twice is counted and said", async () => {
    const store = new Store();
    store.changed = () => {};
    const client = bigService();
    const original = client.call.bind(client);
    client.call = (path, iface, method, args, options) => (path.endsWith("_2fc") && method === "GetAll"
        ? Promise.reject(Object.assign(new Error("The service is busy"), { name: "org.qubes.Storage.Error.Busy" }))
        : original(path, iface, method, args, options));
    const progress = [];
    await load(client, new Feed(store), { current: () => true, listed: () => {}, progress: p => progress.push(p) });
    const last = progress.at(-1);
    assert.equal(last.missed, 1);
    assert.equal(last.problem, "The service is busy");
    assert.equal(store.volumes.size, 3);
});
