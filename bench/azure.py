#!/usr/bin/env python3
"""blobcache with the Azure store against Microsoft's SDK, both talking to Azurite.

    python3 bench/azure.py [--quick]

Uploads and downloads 1 MiB and 256 MiB blobs: through blobcache (one keep-alive
HTTP connection -> blobcache -> Azurite, with sha256 verification) and with the official SDK writing the same
blobs straight to Azurite (@azure/storage-blob, default settings), in one run on
one machine. Prints throughput, the ratio blobcache/SDK, and peak memory.
Needs `npm install` (./test.sh does it).
"""

import hashlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from run import ROOT, free_port, peak_rss_kib, say, wait_port

QUICK = "--quick" in sys.argv
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SIZES = [(1 << 20, 10 if QUICK else 30), ((64 if QUICK else 256) << 20, 1 if QUICK else 3)]


def main():
    azurite_bin = os.path.join(ROOT, "node_modules", ".bin", "azurite-blob")
    if not os.path.exists(azurite_bin):
        raise SystemExit("run `npm install` (or ./test.sh) first: Azurite is missing")
    say("building blobcache (release)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "blobcache"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="blobcache-azure-bench-")
    port = free_port()
    azurite = subprocess.Popen([azurite_bin, "--inMemoryPersistence", "--silent", "--disableTelemetry",
                                "--skipApiVersionCheck", "--blobPort", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    connection = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
                  f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": connection}
    blob = subprocess.Popen([os.path.join(ROOT, "target", "release", "blobcache"), "serve", "--listen", "127.0.0.1:0",
                             "--store", "azure", "--azure-create-container", "--azure-container", "bench"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    blob_port = int(re.search(r"127\.0\.0\.1:(\d+)", blob.stdout.readline()).group(1))
    rows = []
    sdk_rss = 0
    try:
        for size, repeat in SIZES:
            label = f"{size >> 20} MiB"
            path = os.path.join(work, f"blob-{size}")
            with open(path, "wb") as f:
                f.write(os.urandom(size))
            digest = hashlib.sha256(open(path, "rb").read()).hexdigest()

            say(f"{label} upload x{repeat}")
            # One keep-alive connection, like the SDK's client: only transfers are timed.
            client = http.client.HTTPConnection("127.0.0.1", blob_port)
            data = open(path, "rb").read()
            start = time.perf_counter()
            for _ in range(repeat):
                client.request("PUT", f"/cas/{digest}", body=data)
                response = client.getresponse()
                response.read()
                assert response.status == 200, response.status
            ours = size * repeat / (time.perf_counter() - start) / 1e6
            sdk, rss = sdk_run("upload", connection, f"sdk/{digest}", path, repeat)
            sdk_rss = max(sdk_rss, rss)
            rows.append((f"{label} upload MB/s", ours, size * repeat / sdk / 1e6))

            say(f"{label} download x{repeat}")
            start = time.perf_counter()
            for _ in range(repeat):
                client.request("GET", f"/cas/{digest}")
                response = client.getresponse()
                while response.read(1 << 20):
                    pass
                assert response.status == 200, response.status
            ours = size * repeat / (time.perf_counter() - start) / 1e6
            client.close()
            sdk, rss = sdk_run("download", connection, f"sdk/{digest}", os.path.join(work, "out"), repeat)
            sdk_rss = max(sdk_rss, rss)
            rows.append((f"{label} download MB/s", ours, size * repeat / sdk / 1e6))
        blob_rss = peak_rss_kib([blob.pid]) / 1024
    finally:
        blob.send_signal(signal.SIGTERM)
        blob.wait()
        azurite.send_signal(signal.SIGTERM)
        azurite.wait()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{'measure':<26}{'blobcache':>12}{'SDK':>12}{'ratio':>8}  target")
    for name, ours, sdk in rows:
        print(f"{name:<26}{ours:>12.1f}{sdk:>12.1f}{ours / sdk:>8.2f}  >= 0.9 " + ("met" if ours / sdk >= 0.9 else "MISSED"))
    print(f"{'peak RSS MiB':<26}{blob_rss:>12.1f}{sdk_rss / 2**20:>12.1f}")


def sdk_run(mode, connection, blob, path, repeat):
    out = subprocess.run(["node", os.path.join(ROOT, "bench", "sdk.mjs"), mode, connection, "bench", blob, path, str(repeat)],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    return float(out[0]), int(out[1])


if __name__ == "__main__":
    main()
