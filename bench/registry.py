#!/usr/bin/env python3
"""blobcache's OCI registry endpoint against Debian's docker-registry (the CNCF
reference registry), on this machine, in one run; prints ratios to the reference.

    python3 bench/registry.py [--quick]
    BLOBCACHE_BIN=/path/to/blobcache python3 bench/registry.py

Both keep blobs in a directory on the same disk (blobcache: its default directory
store, fsync before publish; docker-registry: its filesystem driver) and both
verify every upload's digest before it is visible. Measured:
  - small blobs (1 KiB): pushes/s (POST, then PUT ?digest= with the body: the
    monolithic upload BuildKit sends), 8 client threads; pulls/s (wrk, 32
    connections), after a client-side digest check of every blob
  - one 1 GiB blob: push MB/s (POST, one streamed PATCH, PUT ?digest=) and pull
    MB/s through `sha256sum` (the client verifies the digest), median of three
  - peak RSS of each server
"""

import hashlib
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import free_port, peak_rss_kib, say, start_blobcache, wait_port  # noqa: E402

QUICK = "--quick" in sys.argv
SMALL = 300 if QUICK else 2000
THREADS = 8
WRK_SECONDS = 3 if QUICK else 8
BIG = (256 if QUICK else 1024) << 20
RUNS = 1 if QUICK else 3
NAME = "bench/app"


def start_reference(work):
    port = free_port()
    config = os.path.join(work, "registry.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {work}/registry-data\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def push(conn, data, digest):
    conn.request("POST", f"/v2/{NAME}/blobs/uploads/", headers={"content-length": "0"})
    started = conn.getresponse()
    started.read()
    assert started.status == 202, started.status
    location = started.getheader("location")
    location = re.sub(r"^https?://[^/]+", "", location)
    sep = "&" if "?" in location else "?"
    conn.request("PUT", f"{location}{sep}digest={digest}", body=data,
                 headers={"content-type": "application/octet-stream"})
    done = conn.getresponse()
    done.read()
    assert done.status == 201, (done.status, done.read())


def small_pushes(port, blobs):
    """Pushes/s of `blobs` from THREADS keep-alive connections."""
    parts = [blobs[i::THREADS] for i in range(THREADS)]

    def work(part):
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for data, digest in part:
            push(conn, data, digest)
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(blobs) / (time.perf_counter() - start)


def verify_all(port, blobs):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for data, digest in blobs:
        conn.request("GET", f"/v2/{NAME}/blobs/{digest}")
        got = conn.getresponse()
        body = got.read()
        assert got.status == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == digest
    conn.close()


def small_pulls(port, blobs, work):
    keys = ",".join(f'"{d}"' for _, d in blobs)
    script = os.path.join(work, "pull.lua")
    with open(script, "w") as f:
        f.write(f"""
local keys = {{{keys}}}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/v2/{NAME}/blobs/" .. keys[(n % #keys) + 1])
end
""")
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{WRK_SECONDS}s", "-s", script, f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise SystemExit(f"failed pulls:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def big_push(port, path, digest):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("POST", f"/v2/{NAME}/blobs/uploads/", headers={"content-length": "0"})
    started = conn.getresponse()
    started.read()
    location = re.sub(r"^https?://[^/]+", "", started.getheader("location"))
    url = f"http://127.0.0.1:{port}{location}"
    start = time.perf_counter()
    patched = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", "-X", "PATCH", "-T", path,
                              "-H", "content-type: application/octet-stream", url],
                             capture_output=True, text=True, check=True).stdout
    location = re.search(r"(?im)^location:\s*(\S+)", patched).group(1)
    location = re.sub(r"^https?://[^/]+", "", location)
    sep = "&" if "?" in location else "?"
    conn.request("PUT", f"{location}{sep}digest={digest}", headers={"content-length": "0"})
    done = conn.getresponse()
    done.read()
    elapsed = time.perf_counter() - start
    assert done.status == 201, done.status
    return BIG / elapsed / 1e6


def big_pull(port, digest):
    start = time.perf_counter()
    out = subprocess.run(f"curl -s -f http://127.0.0.1:{port}/v2/{NAME}/blobs/{digest} | sha256sum",
                         shell=True, capture_output=True, text=True, check=True).stdout
    elapsed = time.perf_counter() - start
    assert "sha256:" + out.split()[0] == digest, "pulled content does not match its digest"
    return BIG / elapsed / 1e6


def main():
    for tool in ["wrk", "curl", "sha256sum"]:
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (Debian packages wrk, curl, coreutils)")
    if not os.path.exists("/usr/bin/docker-registry"):
        raise SystemExit("docker-registry is missing (Debian package docker-registry; ./test.sh installs it)")
    work = tempfile.mkdtemp(prefix="blobcache-registry-bench-")
    blobs = []
    for i in range(SMALL):
        data = os.urandom(1024)
        blobs.append((data, "sha256:" + hashlib.sha256(data).hexdigest()))
    big = os.path.join(work, "big")
    with open(big, "wb") as f:
        for _ in range(BIG >> 20):
            f.write(os.urandom(1 << 20))
    digest = "sha256:" + subprocess.run(["sha256sum", big], capture_output=True, text=True).stdout.split()[0]

    results = {}
    servers = []
    try:
        blobcache, blobcache_port = start_blobcache(work)
        reference, reference_port = start_reference(work)
        servers = [blobcache, reference]
        for name, proc, port in [("blobcache", blobcache, blobcache_port), ("docker-registry", reference, reference_port)]:
            say(f"{name}: {SMALL} small pushes, pulls, {BIG >> 20} MiB push and pull x{RUNS}")
            pushes = small_pushes(port, blobs)
            verify_all(port, blobs)
            pulls = small_pulls(port, blobs, work)
            big_pushes = [big_push(port, big, digest) for _ in range(RUNS)]
            big_pulls = [big_pull(port, digest) for _ in range(RUNS)]
            results[name] = {
                "small pushes/s": pushes,
                "small pulls/s": pulls,
                "large push MB/s": statistics.median(big_pushes),
                "large pull MB/s": statistics.median(big_pulls),
                "peak RSS MiB": peak_rss_kib([proc.pid]) / 1024,
            }
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    ours, ref = results["blobcache"], results["docker-registry"]
    print()
    print(f"{'measure':<18} {'blobcache':>12} {'docker-registry':>16} {'ratio':>8}")
    for key in ours:
        ratio = ours[key] / ref[key] if ref[key] else float("nan")
        print(f"{key:<18} {ours[key]:>12.1f} {ref[key]:>16.1f} {ratio:>7.2f}x")
    print("\n(ratio > 1: blobcache is faster, or for RSS uses more)")


if __name__ == "__main__":
    main()
