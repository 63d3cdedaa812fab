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

/** A service whose bus answers UsageDetails with `answer.details` and fails Start. */
function world() {
    const store = new Store();
    store.fold({
        [POOL]: { "org.qubes.Storage.Pool": { Name: "work", DirPath: "/pools/work", UsageDetails: FIGURES } },
        [VOLUME]: { "org.qubes.Storage.Volume": { Vid: "appvms/work/private", Pool: POOL } },
    });
    const service = new Service(store);
    service.state = "ready";
    const answer = { details: {}, reads: 0 };
    service.client = {
        call(_path, _iface, method) {
            if (method === "Get") {
                answer.reads += 1;
                return Promise.resolve([{ t: "a{sv}", v: answer.details }]);
            }
            return Promise.reject(Object.assign(new Error("No such file or directory."), { name: "org.qubes.Storage.Error.NotFound" }));
        },
    };
    // What the pool's row does whenever its pool object changes.
    const render = () => service.refreshPoolUsage(store.pools.get(POOL));
    return { store, service, answer, render };
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
