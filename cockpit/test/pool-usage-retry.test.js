// A pool whose usage cannot be read (its directory moved away) is read again now and
// then while it stays so, and no more once it is back; a pool that reads fine is never
// polled; a failed call on a volume has its pool's usage read again.

import assert from "node:assert/strict";
import { mock, test } from "node:test";

import { POOL_USAGE_RETRY_MS, Service } from "../src/service.js";
import { Store } from "../src/store.js";

const POOL = "/org/qubes/Storage/pools/work";
const VOLUME = `${POOL}/volumes/appvms_2fwork_2fprivate`;
const FIGURES = { data_size: { t: "t", v: 1000 }, data_usage: { t: "t", v: 10 } };

/**
 * A service whose bus answers UsageDetails with `answer.details` (or fails the read
 * with `answer.error`) and fails Start; the pool is loaded with `loaded` as its details.
 */
function world(loaded = FIGURES) {
    const store = new Store();
    // (A listing may name a pool after its volumes, or a pool may have none: nothing
    // marks its usage stale then.)
    store.fold({
        [VOLUME]: { "org.qubes.Storage.Volume": { Vid: "appvms/work/private", Pool: POOL } },
        [POOL]: { "org.qubes.Storage.Pool": { Name: "work", DirPath: "/pools/work", UsageDetails: loaded } },
    });
    const service = new Service(store);
    service.state = "ready";
    const answer = { details: {}, reads: 0 };
    service.client = {
        call(_path, _iface, method) {
            if (method === "Get") {
                answer.reads += 1;
                if (answer.error)
                    return Promise.reject(answer.error);
                return Promise.resolve([{ t: "a{sv}", v: answer.details }]);
            }
            return Promise.reject(Object.assign(new Error("No such file or directory."), { name: "org.qubes.Storage.Error.NotFound" }));
        },
    };
    // What the pool's row does whenever its pool object changes.
    const render = () => service.refreshPoolUsage(store.pools.get(POOL));
    return { store, service, answer, render };
}

/** Runs `body` with setTimeout under the test's hand (mock.timers). */
async function withClock(body) {
    mock.timers.enable({ apis: ["setTimeout"] });
    try {
        await body();
    } finally {
        mock.timers.reset();
    }
}

const settle = () => new Promise(resolve => setImmediate(resolve));

test("a missing directory is read again every interval until it is back", async () => {
    mock.timers.enable({ apis: ["setTimeout"] });
    try {
        const { store, answer, render } = world();
        store.rereadPoolUsage(POOL);
        render();
        await settle();
        assert.match(store.pools.get(POOL).usageProblem, /missing/);
        assert.equal(answer.reads, 1);
        mock.timers.tick(POOL_USAGE_RETRY_MS - 1);
        render();
        await settle();
        assert.equal(answer.reads, 1, "read again before the interval");
        answer.details = FIGURES;
        mock.timers.tick(1);
        render();
        await settle();
        assert.equal(answer.reads, 2);
        assert.equal(store.pools.get(POOL).usageProblem, null);
        assert.equal(store.pools.get(POOL).usage.data_size, 1000);
        mock.timers.tick(10 * POOL_USAGE_RETRY_MS);
        render();
        await settle();
        assert.equal(answer.reads, 2, "a pool that reads fine is polled");
    } finally {
        mock.timers.reset();
    }
});

test("a failed call on a volume has its pool's usage read again", async () => {
    const { store, service, answer, render } = world();
    store.setPoolUsage(POOL, FIGURES);
    assert.equal(store.pools.get(POOL).usageStale, false);
    await assert.rejects(service.volume(VOLUME, "Start"));
    assert.equal(store.pools.get(POOL).usageStale, true);
    render();
    await settle();
    assert.equal(answer.reads, 1);
    assert.match(store.pools.get(POOL).usageProblem, /directory \/pools\/work is missing/);
    for (const timer of service.retries.values())
        clearTimeout(timer);
});

test("a pool whose directory is missing at the load is read again after the interval", async () => {
    await withClock(async () => {
        const { store, answer, render } = world({});
        assert.match(store.pools.get(POOL).usageProblem, /missing/);
        assert.equal(store.pools.get(POOL).usageStale, false);
        render();
        await settle();
        assert.equal(answer.reads, 0, "the load's details are live: no read at once");
        answer.details = FIGURES;
        mock.timers.tick(POOL_USAGE_RETRY_MS);
        render();
        await settle();
        assert.equal(answer.reads, 1);
        assert.equal(store.pools.get(POOL).usageProblem, null);
        assert.equal(store.pools.get(POOL).usage.data_size, 1000);
    });
});

test("a failed read keeps the figures, says why beside them, and is tried again", async () => {
    await withClock(async () => {
        const { store, answer, render } = world();
        answer.error = Object.assign(new Error("Too many calls in progress."), { name: "org.qubes.Storage.Error.LimitsExceeded" });
        store.rereadPoolUsage(POOL);
        render();
        await settle();
        const pool = store.pools.get(POOL);
        assert.equal(pool.usage.data_size, 1000, "the figures of the last good read stay");
        assert.equal(pool.usageProblem, null, "a failed read is no missing directory");
        assert.equal(pool.usageError, "Too many calls in progress.");
        answer.error = null;
        mock.timers.tick(POOL_USAGE_RETRY_MS);
        render();
        await settle();
        assert.equal(answer.reads, 2);
        assert.equal(store.pools.get(POOL).usageError, null);
    });
});

test("a removed pool's retry goes with it, and one created again gets its own", async () => {
    await withClock(async () => {
        const { store, service, answer, render } = world({});
        render();
        assert.equal(service.retries.size, 1);
        store.fold({ [POOL]: { "org.qubes.Storage.Pool": null } });
        assert.equal(service.retries.size, 0, "the removed pool's timer is cancelled");
        mock.timers.tick(POOL_USAGE_RETRY_MS / 2);
        store.fold({ [POOL]: { "org.qubes.Storage.Pool": { Name: "work", DirPath: "/pools/work", UsageDetails: {} } } });
        render();
        mock.timers.tick(POOL_USAGE_RETRY_MS / 2);
        render();
        await settle();
        assert.equal(answer.reads, 0, "the old pool's timer read the new pool early");
        mock.timers.tick(POOL_USAGE_RETRY_MS / 2);
        render();
        await settle();
        assert.equal(answer.reads, 1);
        service.cancelRetries();
    });
});

test("the service leaving cancels every retry", () => {
    const { service, render } = world({});
    render();
    assert.equal(service.retries.size, 1);
    service.waiting = {}; // (already waiting for the name: no bus of its own in a test)
    service.absent({ close() {} });
    assert.equal(service.retries.size, 0);
});
