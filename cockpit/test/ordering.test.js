// The load against the real cockpit.js (Debian's cockpit-system, which scripts/test
// installs): cockpit.js hands a call's reply and the signals that arrived right behind
// it to their callbacks in one go, from one queue; a signal that follows the listing
// must be folded in after it.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { gunzipSync } from "node:zlib";

import { Feed, load } from "../src/loader.js";
import { fromInterfacesRemoved, fromPropertiesChanged } from "../src/notify.js";
import { Store } from "../src/store.js";

const COCKPIT_JS = "/usr/share/cockpit/base1/cockpit.js.gz";
const POOL = "/org/qubes/Storage/pools/work";
const VOLUME = `${POOL}/volumes/appvms_2fwork_2fprivate`;
const VOLUME_IFACE = "org.qubes.Storage.Volume";

/** cockpit.js, loaded into this process with the little of a browser it needs. */
function realCockpit() {
    let source;
    try {
        source = gunzipSync(readFileSync(COCKPIT_JS)).toString("utf8");
    } catch (error) {
        throw new Error(`${COCKPIT_JS} cannot be read (${error.message}): install cockpit-system (scripts/test does)`);
    }
    globalThis.window = globalThis;
    globalThis.document = { head: { querySelector: () => null }, addEventListener() {}, hidden: false };
    globalThis.location = {
        origin: "http://localhost", pathname: "/cockpit/@localhost/qubes-storage/index.html", hash: "",
        href: "http://localhost/", protocol: "http:", hostname: "localhost", port: "",
        toString() { return this.href; },
    };
    window.addEventListener = () => {};
    window.localStorage = { getItem: () => null };
    window.sessionStorage = {};
    window.name = "";
    window.parent = window;
    (0, eval)(source);
    return window.cockpit;
}

const cockpit = realCockpit();

/** Lets cockpit.js's queue (a setTimeout) and everything after it run. */
function settled() {
    return new Promise(resolve => setTimeout(resolve, 20));
}

/** A channel whose listing reply is given by the test, with the signals behind it. */
function channel() {
    const listing = cockpit.defer();
    return {
        listing,
        call(_path, _iface, method) {
            return method === "GetManagedObjects" ? listing.promise : cockpit.defer().resolve([{}]).promise;
        },
        /** A signal as cockpit.js delivers one: through the same queue as replies. */
        signal(deliver) {
            const arrived = cockpit.defer();
            arrived.promise.then(deliver);
            arrived.resolve();
        },
    };
}

function listed(started) {
    return [{
        [VOLUME]: {
            [VOLUME_IFACE]: {
                Vid: { t: "s", v: "appvms/work/private" },
                Pool: { t: "o", v: POOL },
                Started: { t: "b", v: started },
            },
        },
    }];
}

async function loadWith(arrivals) {
    const store = new Store();
    store.changed = () => {};
    const feed = new Feed(store);
    const client = channel();
    const done = load(client, feed, { current: () => true, listed() {}, progress() {} });
    await settled();
    arrivals(client, feed);
    await done;
    await settled();
    return store;
}

test("a volume removed right after the listing stays removed", async () => {
    const store = await loadWith((client, feed) => {
        client.listing.resolve(listed(false));
        client.signal(() => feed.put(fromInterfacesRemoved([VOLUME, [VOLUME_IFACE]])));
    });
    assert.equal(store.volumes.has(VOLUME), false, "the listing brought the removed volume back");
});

test("a change right after the listing is not undone by it", async () => {
    const store = await loadWith((client, feed) => {
        client.listing.resolve(listed(false));
        client.signal(() => feed.put(fromPropertiesChanged(VOLUME, [VOLUME_IFACE, { Started: { t: "b", v: true } }, []])));
    });
    assert.equal(store.volumes.get(VOLUME).started, true);
});
