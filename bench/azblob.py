#!/usr/bin/env python3
"""BuildKit's `type=azblob` cache export and import through blobcache's /azure
endpoint (directory store) against Azurite, on this machine, in one run; prints
ratios (Azurite's time / blobcache's: above 1 means blobcache is faster).

    python3 bench/azblob.py [--quick]

The client is the replay the tests use (tests/sdk/buildkit-azblob.mjs):
Microsoft's SDK signing Shared Key as BuildKit's Go SDK does, BuildKit's request
sequence (HEAD per layer, Put Blob under 32 MiB with If-None-Match: *, else
32 MiB Put Blocks four in flight and a Put Block List; import by HEAD and whole
GET, every layer's digest checked). Both servers keep the bytes on the same disk
(blobcache: its default directory store, fsync before publish; Azurite: its disk
persistence). Measured: many small layers, and one 1 GiB layer (256 MiB with
--quick), export and import, the median of three runs; peak RSS of each server.
Needs `npm install` (./test.sh does it).
"""

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from run import ROOT, free_port, peak_rss_kib, say, start_blobcache, wait_port

QUICK = "--quick" in sys.argv
SMALL_LAYERS = 100 if QUICK else 300
SMALL_SIZE = 100 << 10
BIG = (256 if QUICK else 1024) << 20
RUNS = 1 if QUICK else 3
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SCRIPT = os.path.join(ROOT, "tests", "sdk", "buildkit-azblob.mjs")


def write_layer(path, size):
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 << 20))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return {"file": path, "digest": "sha256:" + digest.hexdigest()}


def replay(account_url, prefix, layers, mode):
    plan = {"mode": mode, "accountUrl": account_url, "account": DEV_ACCOUNT, "key": DEV_KEY,
            "container": "buildkit-cache", "prefix": prefix, "name": "buildkit", "layers": layers}
    out = subprocess.run(["node", SCRIPT, json.dumps(plan)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "NODE_PATH": os.path.join(ROOT, "node_modules")})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if "error" in result:
        raise SystemExit(f"{mode} against {account_url}: {result}")
    if mode == "import":
        got = [("sha256:" + l.get("sha256", "")) for l in result["layers"]]
        if got != [l["digest"] for l in layers]:
            raise SystemExit(f"import against {account_url} returned other bytes")
    return result["seconds"]


def main():
    azurite_bin = os.path.join(ROOT, "node_modules", ".bin", "azurite-blob")
    if not os.path.exists(azurite_bin):
        raise SystemExit("run `npm install` (or ./test.sh) first: Azurite is missing")
    if not os.environ.get("BLOBCACHE_BIN"):
        say("building blobcache (release)")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "blobcache"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="blobcache-azblob-bench-")
    try:
        say(f"writing {SMALL_LAYERS} layers of {SMALL_SIZE >> 10} KiB and one of {BIG >> 20} MiB")
        small = [write_layer(os.path.join(work, f"small-{i}"), SMALL_SIZE) for i in range(SMALL_LAYERS)]
        big = [write_layer(os.path.join(work, "big"), BIG)]
        port = free_port()
        azurite = subprocess.Popen([azurite_bin, "--location", os.path.join(work, "azurite"), "--silent",
                                    "--disableTelemetry", "--skipApiVersionCheck", "--blobPort", str(port)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        blobcache, blob_port = start_blobcache(work)
        no_fsync, no_fsync_port = start_blobcache(work, ["--no-fsync"])
        targets = {
            "blobcache": f"http://127.0.0.1:{blob_port}/azure/{DEV_ACCOUNT}",
            "no-fsync": f"http://127.0.0.1:{no_fsync_port}/azure/{DEV_ACCOUNT}",
            "azurite": f"http://127.0.0.1:{port}/{DEV_ACCOUNT}",
        }
        rows = []
        try:
            for label, layers in [(f"{SMALL_LAYERS} x {SMALL_SIZE >> 10} KiB", small),
                                  (f"1 x {BIG >> 20} MiB", big)]:
                for mode in ["export", "import"]:
                    times = {name: [] for name in targets}
                    for run in range(RUNS):
                        for name, url in targets.items():
                            # A fresh prefix per export run: every layer is uploaded.
                            prefix = f"run{run}" if mode == "export" else "run0"
                            say(f"{label} {mode} run {run + 1}/{RUNS}: {name}")
                            times[name].append(replay(url, prefix, layers, mode))
                    medians = {name: statistics.median(t) for name, t in times.items()}
                    size = sum(os.path.getsize(l["file"]) for l in layers)
                    rows.append((f"{label} {mode}", medians, size))
            rss = {"blobcache": peak_rss_kib([blobcache.pid]), "no-fsync": peak_rss_kib([no_fsync.pid]),
                   "azurite": peak_rss_kib([azurite.pid])}
        finally:
            for proc in (blobcache, no_fsync, azurite):
                proc.terminate()
                proc.wait()
        print()
        print("ratio: Azurite's time / blobcache's (above 1: blobcache is faster). Azurite never")
        print("fsyncs; blobcache fsyncs before publishing unless --no-fsync.")
        print(f"{'measure':<24} {'blobcache':>11} {'--no-fsync':>11} {'Azurite':>11} {'ratio':>6} {'ratio':>11}")
        print(f"{'':<24} {'':>11} {'':>11} {'':>11} {'':>6} {'--no-fsync':>11}")
        for label, medians, size in rows:
            mbps = {name: size / (1 << 20) / seconds for name, seconds in medians.items()}
            print(f"{label:<24} {mbps['blobcache']:>6.1f} MB/s {mbps['no-fsync']:>6.1f} MB/s "
                  f"{mbps['azurite']:>6.1f} MB/s {medians['azurite'] / medians['blobcache']:>5.2f}x "
                  f"{medians['azurite'] / medians['no-fsync']:>10.2f}x")
        print(f"{'peak RSS (MiB)':<24} {rss['blobcache'] >> 10:>11} {rss['no-fsync'] >> 10:>11} "
              f"{rss['azurite'] >> 10:>11}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
