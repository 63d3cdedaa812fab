// The object path escaping of the contract (sd_bus_path_encode) and path kinds.

import assert from "node:assert/strict";
import { test } from "node:test";

import { decodeElement, encodeElement, kindOfPath, poolOfVolumePath, volumePath } from "../src/paths.js";

test("a vid is escaped byte by byte like sd_bus_path_encode", () => {
    assert.equal(encodeElement("appvms/work/private"), "appvms_2fwork_2fprivate");
    assert.equal(encodeElement("vm-templates/debian-12/root"), "vm_2dtemplates_2fdebian_2d12_2froot");
    assert.equal(encodeElement(""), "_");
    assert.equal(encodeElement("é"), "_c3_a9");
});

test("decoding undoes encoding and refuses what no encoding produces", () => {
    for (const text of ["appvms/a.b/c_d", "", "x", "ü/ß"])
        assert.equal(decodeElement(encodeElement(text)), text);
    assert.equal(decodeElement("_zz"), null);
    assert.equal(decodeElement("_c3"), null);
});

test("a volume's path lies under its pool's path", () => {
    const path = volumePath("varlibqubes", "appvms/work/private");
    assert.equal(path, "/org/qubes/Storage/pools/varlibqubes/volumes/appvms_2fwork_2fprivate");
    assert.equal(kindOfPath(path), "volume");
    assert.equal(poolOfVolumePath(path), "/org/qubes/Storage/pools/varlibqubes");
    assert.equal(kindOfPath("/org/qubes/Storage/pools/varlibqubes"), "pool");
    assert.equal(kindOfPath("/org/qubes/Storage/jobs/3"), "job");
    assert.equal(kindOfPath("/org/qubes/Storage"), "manager");
    assert.equal(kindOfPath("/org/other"), null);
});
