// A Job's Completed reaches the page with its Job even while a load piece by piece
// holds the signals: it waits in the same queue as the Job's InterfacesAdded and
// InterfacesRemoved, so the precache warning is not lost.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Feed, TICK_MS } from "../src/loader.js";
import { fromInterfacesAdded, fromInterfacesRemoved } from "../src/notify.js";
import { Service } from "../src/service.js";
import { Store } from "../src/store.js";

const POOL = "/org/qubes/Storage/pools/slow";
const TARGET = `${POOL}/volumes/appvms_2fwork_2fprivate`;
const JOB = "/org/qubes/Storage/jobs/7";
const JOB_IFACE = "org.qubes.Storage.Job";
const PRECACHE = { Operation: { t: "s", v: "Stop" }, Objects: { t: "ao", v: [TARGET] }, Cancelable: { t: "b", v: false } };

test("held signals and a completion are taken in their order", () => {
    const store = new Store();
    const feed = new Feed(store);
    const seen = [];
    feed.hold();
    feed.put(fromInterfacesAdded([JOB, { [JOB_IFACE]: PRECACHE }]));
    feed.whenFolded(() => seen.push(store.jobs.get(JOB)?.operation ?? "none"));
    feed.put(fromInterfacesRemoved([JOB, [JOB_IFACE]]));
    assert.deepEqual(seen, [], "held until the flush");
    feed.flush();
    assert.deepEqual(seen, ["Stop"]);
    assert.equal(store.jobs.has(JOB), false);
});

/** cockpit.dbus as far as the service uses it: a load that goes piece by piece and waits. */
function fakeCockpit() {
    const handlers = new Map();
    let endLoad;
    const client = {
        addEventListener() {},
        close() {},
        subscribe(match, fn) {
            handlers.set(match.member ?? match.interface, fn);
            return { remove() {} };
        },
        call(_path, _iface, method) {
            if (method === "GetManagedObjects")
                return Promise.reject(Object.assign(new Error("too many"), { name: "org.qubes.Storage.Error.LimitsExceeded" }));
            if (method === "ListPools")
                return new Promise((_resolve, reject) => { endLoad = () => reject(new Error("test over")) });
            return Promise.resolve([{}]);
        },
    };
    globalThis.cockpit = { dbus: () => client, message: String };
    const signal = (member, args, path = "/org/qubes/Storage") => handlers.get(member)(path, "", member, args);
    return { signal, end: () => endLoad?.() };
}

test("a precache's failure during a load piece by piece still finds its Job", async () => {
    const bus = fakeCockpit();
    const store = new Store();
    const service = new Service(store);
    const completed = [];
    service.addEventListener("job-completed", ({ detail }) => completed.push(detail));
    service.start();
    await new Promise(resolve => setTimeout(resolve, 10));
    try {
        bus.signal("InterfacesAdded", [JOB, { [JOB_IFACE]: PRECACHE }]);
        bus.signal("Completed", [false, "No space left on device."], JOB);
        bus.signal("InterfacesRemoved", [JOB, [JOB_IFACE]]);
        await new Promise(resolve => setTimeout(resolve, 2 * TICK_MS));
        assert.equal(completed.length, 1);
        assert.equal(completed[0].job?.operation, "Stop", "the Job is known when its Completed is taken");
        assert.equal(completed[0].job.announced, true);
        assert.equal(completed[0].success, false);
    } finally {
        bus.end();
        delete globalThis.cockpit;
    }
});
