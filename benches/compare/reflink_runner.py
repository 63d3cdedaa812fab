"""The Python side of `cargo bench --bench compare`: drives the Qubes `file-reflink`
storage driver (`qubes.storage.reflink` of a qubes-core-admin checkout) the way qubesd
calls it, and times each call in-process (asyncio, no IPC) — the figures the
service's bus calls are compared with.

This file is qubes-storaged's own; the driver is not part of this repository. It is
imported from `$QSD_QUBES_CHECKOUT` through a shim package on `PYTHONPATH` that makes
the real `qubes.exc`, `qubes.config`, `qubes.utils`, `qubes.storage` and
`qubes.storage.reflink` importable outside Qubes (README, "Comparing with the Python
driver", says what it must provide).

Protocol: one JSON object per line on stdin, one reply per line on stdout:

  {"op": "pool", "name": "py", "dir": "/mnt/py", "setup_check": true, "revisions_to_keep": 1}
  {"op": "volume", "pool": "py", "vm": "work", "prefix": "appvms", "name": "private",
   "size": 1073741824, "rw": true, "save_on_stop": true, "snap_on_start": false,
   "source": null}                                  -> {"vid": "appvms/work/private"}
  {"op": "create" | "start" | "remove", "vids": [...], "concurrent": false}  -> {"ms": 1.2}
  {"op": "stop", "vids": [...], "concurrent": true}                       -> {"ms": ...}
  {"op": "revert", "vid": ...}   {"op": "resize", "vid": ..., "size": ...}
  {"op": "import_data", "vid": ..., "size": ...}                          -> {"path": ...}
  {"op": "import_data_end", "vid": ..., "success": true}
  {"op": "import_volume", "vid": ..., "source": ...}

Every reply has "ok"; a failure has "error" instead of the figures.
"""

import asyncio
import json
import sys
import time

import qubes.storage.reflink as reflink  # pylint: disable=import-error


class VM:  # pylint: disable=too-few-public-methods
    """What ReflinkPool.init_volume reads of a VM."""

    def __init__(self, name, prefix):
        self.name = name
        self.dir_path_prefix = prefix


POOLS = {}
VOLUMES = {}


async def make_pool(cmd):
    pool = reflink.ReflinkPool(
        name=cmd["name"],
        dir_path=cmd["dir"],
        setup_check=cmd["setup_check"],
        revisions_to_keep=cmd["revisions_to_keep"],
    )
    await pool.setup()
    POOLS[cmd["name"]] = pool
    return {}


async def make_volume(cmd):
    config = {
        "name": cmd["name"],
        "size": cmd["size"],
        "rw": cmd["rw"],
        "save_on_stop": cmd["save_on_stop"],
        "snap_on_start": cmd["snap_on_start"],
        "source": VOLUMES[cmd["source"]] if cmd.get("source") else None,
    }
    volume = POOLS[cmd["pool"]].init_volume(VM(cmd["vm"], cmd["prefix"]), config)
    VOLUMES[volume.vid] = volume
    return {"vid": volume.vid}


async def timed(calls, concurrent):
    """Milliseconds for the coroutines `calls` makes, together or one by one."""
    begun = time.perf_counter()
    if concurrent:
        await asyncio.gather(*(call() for call in calls))
    else:
        for call in calls:
            await call()
    return {"ms": (time.perf_counter() - begun) * 1e3}


def each(cmd, method):
    return [getattr(VOLUMES[vid], method) for vid in cmd["vids"]]


async def handle(cmd):
    op = cmd["op"]
    if op == "pool":
        return await make_pool(cmd)
    if op == "volume":
        return await make_volume(cmd)
    if op in ("create", "start", "stop", "remove"):
        return await timed(each(cmd, op), cmd.get("concurrent", False))
    volume = VOLUMES[cmd["vid"]]
    if op == "revert":
        return await timed([volume.revert], False)
    if op == "resize":
        return await timed([lambda: volume.resize(cmd["size"])], False)
    if op == "import_data":
        return {"path": await volume.import_data(cmd["size"])}
    if op == "import_data_end":
        return await timed([lambda: volume.import_data_end(cmd["success"])], False)
    if op == "import_volume":
        source = VOLUMES[cmd["source"]]
        return await timed([lambda: volume.import_volume(source)], False)
    raise ValueError(f"unknown op {op!r}")


async def serve():
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        try:
            reply = await handle(json.loads(line))
            reply["ok"] = True
        except Exception as err:  # pylint: disable=broad-except
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(serve())
