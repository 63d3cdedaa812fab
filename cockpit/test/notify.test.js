// What the service says, as the store's notify messages; and the feed that keeps
// replies and signals in the order they arrived while a load piece by piece holds them.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Feed } from "../src/loader.js";
import {
    childNodes, fromGetAll, fromInterfacesAdded, fromInterfacesRemoved, fromManagedObjects,
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
                     { [VOLUME]: { [VOLUME_IFACE]: { Vid: "a/b/c" } } });
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
