// The store folds the bridge's notify messages (GetManagedObjects, InterfacesAdded,
// PropertiesChanged, InterfacesRemoved) into pools, volumes and jobs.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Store, effectiveSource, filterVolumes, poolCounts, snapshotSources, sourceGone, vmNames } from "../src/store.js";

const POOL = "/org/qubes/Storage/pools/work";
const VOLUME = `${POOL}/volumes/appvms_2fwork_2fprivate`;
const JOB = "/org/qubes/Storage/jobs/1";

function loaded() {
    const store = new Store();
    store.applyNotify({
        [POOL]: {
            "org.qubes.Storage.Pool": {
                Name: "work",
                DirPath: "/pools/work",
                RevisionsToKeep: 1,
                UsageDetails: { data_size: { t: "t", v: 1000 }, data_usage: { t: "t", v: 250 } },
            },
        },
        [VOLUME]: {
            "org.qubes.Storage.Volume": {
                Vid: "appvms/work/private",
                Pool: POOL,
                Size: 2048,
                Usage: 512,
                SaveOnStop: true,
                Started: false,
                Revisions: [["1", 1700000000], ["2", 1700000100]],
            },
        },
    });
    return store;
}

test("the load gives pools and volumes with their values", () => {
    const store = loaded();
    assert.deepEqual(store.pools.get(POOL).usage, { data_size: 1000, data_usage: 250 });
    const volume = store.volumes.get(VOLUME);
    assert.equal(volume.vid, "appvms/work/private");
    assert.equal(volume.vm, "work");
    assert.equal(volume.usage, 512);
    assert.equal(volume.usageStale, false);
    assert.deepEqual(volume.revisions, [{ id: "1", timestamp: 1700000000 }, { id: "2", timestamp: 1700000100 }]);
});

test("a change replaces the volume object, keeps the rest, and makes usage stale", () => {
    const store = loaded();
    const before = store.volumes.get(VOLUME);
    const version = store.volumesVersion;
    store.applyNotify({ [VOLUME]: { "org.qubes.Storage.Volume": { Started: true } } });
    const after = store.volumes.get(VOLUME);
    assert.notEqual(after, before);
    assert.equal(after.started, true);
    assert.equal(after.size, 2048);
    assert.equal(after.usageStale, true);
    assert.equal(store.pools.get(POOL).usageStale, true);
    assert.equal(store.volumesVersion, version + 1);
});

test("a removal takes the volume and its events away", () => {
    const store = loaded();
    store.recordEvent(VOLUME, "VolumeStarted", ["/x-dirty.img"]);
    store.applyNotify({ [VOLUME]: { "org.qubes.Storage.Volume": null } });
    assert.equal(store.volumes.size, 0);
    assert.equal(store.events.has(VOLUME), false);
});

test("job progress does not count as a volume change", () => {
    const store = loaded();
    const version = store.volumesVersion;
    store.applyNotify({ [JOB]: { "org.qubes.Storage.Job": { Operation: "ImportVolume", BytesTotal: 100, BytesDone: 10 } } });
    store.applyNotify({ [JOB]: { "org.qubes.Storage.Job": { BytesDone: 50, Progress: 0.5 } } });
    assert.equal(store.jobs.get(JOB).bytesDone, 50);
    assert.equal(store.jobs.get(JOB).operation, "ImportVolume");
    assert.equal(store.volumesVersion, version);
    store.applyNotify({ [JOB]: { "org.qubes.Storage.Job": null } });
    assert.equal(store.jobs.size, 0);
});

test("a fresh usage read clears the stale mark", () => {
    const store = loaded();
    store.applyNotify({ [VOLUME]: { "org.qubes.Storage.Volume": { Started: true } } });
    store.setVolumeUsage(VOLUME, 4096);
    assert.equal(store.volumes.get(VOLUME).usage, 4096);
    assert.equal(store.volumes.get(VOLUME).usageStale, false);
});

test("the list filters by pool, VM, state and text and sorts by pool then vid", () => {
    const store = new Store();
    const pools = { a: "/org/qubes/Storage/pools/a", b: "/org/qubes/Storage/pools/b" };
    const notify = {};
    for (const [name, path] of Object.entries(pools))
        notify[path] = { "org.qubes.Storage.Pool": { Name: name } };
    const volumes = [["b", "appvms/x/private", true], ["a", "appvms/y/private", false], ["a", "appvms/x/root", true]];
    for (const [pool, vid, started] of volumes)
        notify[`${pools[pool]}/volumes/${vid.replaceAll("/", "_2f")}`] = { "org.qubes.Storage.Volume": { Vid: vid, Pool: pools[pool], Started: started } };
    store.applyNotify(notify);
    const vids = rows => rows.map(v => `${store.pools.get(v.pool).name}:${v.vid}`);
    assert.deepEqual(vids(filterVolumes(store)), ["a:appvms/x/root", "a:appvms/y/private", "b:appvms/x/private"]);
    assert.deepEqual(vids(filterVolumes(store, { pool: pools.a })), ["a:appvms/x/root", "a:appvms/y/private"]);
    assert.deepEqual(vids(filterVolumes(store, { vm: "x" })), ["a:appvms/x/root", "b:appvms/x/private"]);
    assert.deepEqual(vids(filterVolumes(store, { state: "stopped" })), ["a:appvms/y/private"]);
    assert.deepEqual(vids(filterVolumes(store, { text: "ROOT" })), ["a:appvms/x/root"]);
    assert.deepEqual(vmNames(store), ["x", "y"]);
    assert.deepEqual(poolCounts(store).get(pools.a), { total: 2, running: 1 });
});

test("a change of an object the page does not know makes no half object", () => {
    const store = loaded();
    const gone = `${POOL}/volumes/appvms_2fold_2fprivate`;
    store.applyNotify({ [gone]: { "org.qubes.Storage.Volume": { Started: false } } });
    store.applyNotify({ "/org/qubes/Storage/pools/gone": { "org.qubes.Storage.Pool": { RevisionsToKeep: 2 } } });
    store.applyNotify({ "/org/qubes/Storage/jobs/9": { "org.qubes.Storage.Job": { BytesDone: 5 } } });
    assert.deepEqual([...store.volumes.keys()], [VOLUME]);
    assert.deepEqual([...store.pools.keys()], [POOL]);
    assert.equal(store.jobs.size, 0);
    assert.doesNotThrow(() => filterVolumes(store, { text: "a" }));
});

test("a volume's removal makes its pool's usage stale", () => {
    const store = loaded();
    store.setPoolUsage(POOL, { data_size: { t: "t", v: 1000 }, data_usage: { t: "t", v: 250 } });
    assert.equal(store.pools.get(POOL).usageStale, false);
    store.applyNotify({ [VOLUME]: { "org.qubes.Storage.Volume": null } });
    assert.equal(store.pools.get(POOL).usageStale, true);
});

test("a burst of signals notifies the listeners once", async () => {
    const store = loaded();
    await new Promise(resolve => setTimeout(resolve, 0));
    const heard = [];
    store.subscribe(version => heard.push(version));
    for (let i = 0; i < 100; i++)
        store.applyNotify({ [VOLUME]: { "org.qubes.Storage.Volume": { Size: 2048 + i } } });
    assert.deepEqual(heard, [], "not before the burst is over");
    await new Promise(resolve => setTimeout(resolve, 0));
    assert.deepEqual(heard, [store.version]);
    assert.equal(store.volumes.get(VOLUME).size, 2048 + 99);
});

test("a volume removed and created again under its path is another volume", () => {
    const store = loaded();
    const seen = store.volumes.get(VOLUME);
    store.applyNotify({ [VOLUME]: { "org.qubes.Storage.Volume": { Started: true } } });
    assert.equal(store.sameVolume(seen).started, true, "a change keeps it the same volume");
    store.applyNotify({ [VOLUME]: { "org.qubes.Storage.Volume": null } });
    assert.match(store.sameVolume(seen).message, /was removed since/);
    store.applyNotify({ [VOLUME]: { "org.qubes.Storage.Volume": { Vid: "appvms/work/private", Pool: POOL, Size: 1 } } });
    assert.match(store.sameVolume(seen).message, /was removed and created again/);
});

test("a usage read that a change overtook stays stale, and the next one is fresh", () => {
    const store = loaded();
    store.applyNotify({ [VOLUME]: { "org.qubes.Storage.Volume": { Started: true } } });
    const epoch = store.volumes.get(VOLUME).usageEpoch;
    // The read is on its way; the volume changes meanwhile.
    store.applyNotify({ [VOLUME]: { "org.qubes.Storage.Volume": { Started: false } } });
    store.setVolumeUsage(VOLUME, 1024, epoch);
    assert.equal(store.volumes.get(VOLUME).usage, 1024);
    assert.equal(store.volumes.get(VOLUME).usageStale, true, "read again");
    store.setVolumeUsage(VOLUME, 2048, store.volumes.get(VOLUME).usageEpoch);
    assert.equal(store.volumes.get(VOLUME).usageStale, false);
    const poolEpoch = store.pools.get(POOL).usageEpoch;
    store.recordEvent(VOLUME, "VolumeStarted", ["/x-dirty.img"]);
    store.applyNotify({ [VOLUME]: { "org.qubes.Storage.Volume": { Started: true } } });
    store.setPoolUsage(POOL, { data_size: { t: "t", v: 1000 } }, poolEpoch);
    assert.equal(store.pools.get(POOL).usageStale, true, "the pool's read is stale too");
});

test("a snapshot may start only from a volume of its pool that saves on stop", () => {
    const store = loaded();
    const at = vid => `${POOL}/volumes/${vid.replaceAll("/", "_2f")}`;
    store.applyNotify({
        [at("appvms/work/volatile")]: { "org.qubes.Storage.Volume": { Vid: "appvms/work/volatile", Pool: POOL, SaveOnStop: false, SnapOnStart: false } },
        [at("appvms/work/root")]: { "org.qubes.Storage.Volume": { Vid: "appvms/work/root", Pool: POOL, SaveOnStop: false, SnapOnStart: true } },
        [at("vm-templates/t/root")]: { "org.qubes.Storage.Volume": { Vid: "vm-templates/t/root", Pool: POOL, SaveOnStop: true, SnapOnStart: true } },
        "/org/qubes/Storage/pools/other/volumes/appvms_2fx_2fprivate": { "org.qubes.Storage.Volume": { Vid: "appvms/x/private", Pool: "/org/qubes/Storage/pools/other", SaveOnStop: true } },
    });
    assert.deepEqual(snapshotSources(store, POOL).map(v => v.vid), ["appvms/work/private", "vm-templates/t/root"]);
});

test("RevisionDetails are kept beside Revisions, and follow their changes", () => {
    const store = loaded();
    store.applyNotify({ [VOLUME]: { "org.qubes.Storage.Volume": { RevisionDetails: [["2", 1700000100, 5, "before the update", true, -1]] } } });
    assert.deepEqual(store.volumes.get(VOLUME).revisionDetails, [
        { id: "2", timestamp: 1700000100, nanoseconds: 5, description: "before the update", pinned: true, exclusive: -1 },
    ]);
});

test("a pool whose usage has no figures says its directory is missing, and recovers", () => {
    const store = loaded();
    store.setPoolUsage(POOL, {});
    assert.match(store.pools.get(POOL).usageProblem, /directory \/pools\/work is missing/);
    store.rereadPoolUsage(POOL);
    assert.equal(store.pools.get(POOL).usageStale, true);
    store.setPoolUsage(POOL, { data_size: { t: "t", v: 1000 }, data_usage: { t: "t", v: 10 } });
    assert.equal(store.pools.get(POOL).usageProblem, null);
    store.setPoolUsageFailed(POOL, "Permission denied.");
    assert.equal(store.pools.get(POOL).usageProblem, null);
    assert.equal(store.pools.get(POOL).usageError, "Permission denied.");
    assert.equal(store.pools.get(POOL).usage.data_size, 1000, "a failed read keeps the figures");
    store.setPoolUsage(POOL, { data_size: { t: "t", v: 1000 }, data_usage: { t: "t", v: 20 } });
    assert.equal(store.pools.get(POOL).usageError, null);
});

test("the Create dialog's source follows the sources offered", () => {
    const a = { vid: "appvms/a/private" };
    const b = { vid: "appvms/b/private" };
    // None when the dialog opened; one appears: it is the source, not "".
    assert.equal(effectiveSource([], ""), "");
    assert.equal(effectiveSource([a], ""), "appvms/a/private");
    // A choice stays while it is offered, also when a volume that sorts first appears;
    // once gone, nothing takes its place unseen.
    assert.equal(effectiveSource([a, b], "appvms/b/private"), "appvms/b/private");
    assert.equal(effectiveSource([a, b], "appvms/a/private"), "appvms/a/private");
    assert.equal(effectiveSource([a], "appvms/b/private"), "");
    assert.equal(sourceGone([a], "appvms/b/private"), true);
    assert.equal(sourceGone([a, b], "appvms/b/private"), false);
    assert.equal(sourceGone([a], ""), false);
});
