#!/usr/bin/env python3
"""blobcache beside its peers on Turborepo's artifact path, in one run: the
popular Turborepo cache server `turborepo-remote-cache` (npm) and nginx
(WebDAV PUT, serving files), with the same payloads; prints ratios.

    python3 bench/peers.py [--quick]
    BLOBCACHE_BIN=/path/to/blobcache python3 bench/peers.py

blobcache and turborepo-remote-cache serve `/v8/artifacts/<hash>?slug=<team>`
(turborepo-remote-cache with its local-disk storage and a token, as it
requires one); nginx serves the same bytes as plain files. Measured:
  - small hits: 1 KiB GETs/s and their p99 latency, 32 connections (wrk)
  - small uploads: 1 KiB PUTs/s and their p99, each to a new hash (wrk)
  - 100 MiB artifacts: upload and download MB/s (curl), median of three
  - peak RSS of each server
Neither peer fsyncs what it stores; blobcache runs twice, with its default
(fsync before publishing) and with --no-fsync, and the ratios compare the latter.
turborepo-remote-cache is installed into ~/.cache/blobcache-tools on first use.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import curl_mbps, ensure_tools, free_port, peak_rss_kib, say, start_blobcache, start_nginx, wait_port  # noqa: E402

QUICK = "--quick" in sys.argv
KEYS = 1000
WRK_SECONDS = 3 if QUICK else 8
BIG = 100 << 20
RUNS = 1 if QUICK else 3
VERSION = "2.12.0"
TOKEN = "bench-token"
TEAM = "bench"


def turborepo_remote_cache():
    """The CLI of turborepo-remote-cache, installed into a cache directory."""
    tools = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "blobcache-tools")
    prefix = os.path.join(tools, f"turborepo-remote-cache-{VERSION}")
    cli = os.path.join(prefix, "node_modules", "turborepo-remote-cache", "dist", "cli.js")
    if not os.path.exists(cli):
        say(f"installing turborepo-remote-cache {VERSION} (npm) into {prefix}")
        os.makedirs(prefix, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", prefix, "--no-audit", "--no-fund", "--silent",
                        f"turborepo-remote-cache@{VERSION}"], check=True)
    return cli


def start_peer(work):
    port = free_port()
    env = {**os.environ, "PORT": str(port), "STORAGE_PROVIDER": "local",
           "STORAGE_PATH": os.path.join(work, "peer-store"), "TURBO_TOKEN": TOKEN, "LOG_LEVEL": "error",
           "BODY_LIMIT": str(BIG * 2)}
    proc = subprocess.Popen(["node", turborepo_remote_cache()], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, timeout=30)
    return proc, port


def artifact_path(hash_):
    return f"/v8/artifacts/{hash_}?slug={TEAM}"


def wrk(port, script, work):
    """(requests/s, p99 ms) for a wrk Lua script."""
    path = os.path.join(work, "script.lua")
    with open(path, "w") as f:
        f.write(script)
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{WRK_SECONDS}s", "--latency", "-s", path,
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise SystemExit(f"wrk saw failed responses:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return rps, p99


def get_script(paths):
    keys = ",".join(f'"{p}"' for p in paths)
    return f"""
wrk.headers["Authorization"] = "Bearer {TOKEN}"
local paths = {{{keys}}}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end
"""


def put_script(template):
    return f"""
wrk.headers["Authorization"] = "Bearer {TOKEN}"
wrk.headers["Content-Type"] = "application/octet-stream"
local body = string.rep("x", 1024)
local n = 0
local id = 0
setup = function(thread) id = id + 1; thread:set("tid", id) end
request = function()
  n = n + 1
  return wrk.format("PUT", string.format("{template}", n, tid), nil, body)
end
"""


def main():
    ensure_tools()
    if shutil.which("node") is None:
        raise SystemExit("node is missing (Debian package nodejs)")
    # BENCH_DIR: as for bench/run.py (small uploads measure the filesystem too).
    work = tempfile.mkdtemp(prefix="blobcache-peers-bench-", dir=os.environ.get("BENCH_DIR"))
    small = os.path.join(work, "small")
    with open(small, "wb") as f:
        f.write(os.urandom(1024))
    big = os.path.join(work, "big")
    with open(big, "wb") as f:
        for _ in range(BIG >> 20):
            f.write(os.urandom(1 << 20))
    hashes = [f"{i:016x}" for i in range(KEYS)]
    results = {}
    procs = []
    try:
        blobcache, blobcache_port = start_blobcache(work)
        unsynced, unsynced_port = start_blobcache(work, extra=("--no-fsync",))
        peer, peer_port = start_peer(work)
        nginx, nginx_port, nginx_root = start_nginx(work)
        procs = [blobcache, unsynced, peer, nginx]
        servers = [
            ("blobcache", [blobcache.pid], blobcache_port, artifact_path,
             "/v8/artifacts/%056x%08x?slug=" + TEAM),
            ("blobcache --no-fsync", [unsynced.pid], unsynced_port, artifact_path,
             "/v8/artifacts/%056x%08x?slug=" + TEAM),
            ("turborepo-remote-cache", [peer.pid], peer_port, artifact_path,
             "/v8/artifacts/%056x%08x?slug=" + TEAM),
            ("nginx", [nginx.pid], nginx_port, lambda h: f"/cas/{h}", "/ac/%056x%08x"),
        ]
        for name, pids, port, path_of, put_template in servers:
            say(f"{name}: {KEYS} small artifacts, hits, uploads, {BIG >> 20} MiB x{RUNS}")
            for h in hashes:
                subprocess.run(["curl", "-s", "-f", "-o", "/dev/null", "-X", "PUT", "-T", small,
                                "-H", f"Authorization: Bearer {TOKEN}",
                                "-H", "Content-Type: application/octet-stream",
                                f"http://127.0.0.1:{port}{path_of(h)}"], check=True)
            hits, hits_p99 = wrk(port, get_script([path_of(h) for h in hashes]), work)
            puts, puts_p99 = wrk(port, put_script(put_template), work)
            big_url = f"http://127.0.0.1:{port}{path_of('b1' * 8)}"
            auth = ["-H", f"Authorization: Bearer {TOKEN}"]
            uploads = [curl_mbps([*auth, "-X", "PUT", "-T", big, "-H", "Content-Type: application/octet-stream",
                                  big_url]) for _ in range(RUNS)]
            downloads = [curl_mbps([*auth, big_url]) for _ in range(RUNS)]
            pids = pids + [int(p) for p in subprocess.run(["pgrep", "-P", str(pids[0])], capture_output=True,
                                                            text=True).stdout.split()]
            results[name] = {
                "small hits/s": hits,
                "small hit p99 ms": hits_p99,
                "small uploads/s": puts,
                "small upload p99 ms": puts_p99,
                "100 MiB upload MB/s": statistics.median(uploads),
                "100 MiB download MB/s": statistics.median(downloads),
                "peak RSS MiB": peak_rss_kib(pids) / 1024,
            }
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    names = list(results)
    print()
    print(f"{'measure':<22}" + "".join(f"{n:>24}" for n in names))
    for key in results["blobcache"]:
        print(f"{key:<22}" + "".join(f"{results[n][key]:>24.1f}" for n in names))
    # Neither peer fsyncs: the like-for-like blobcache is the one without fsync.
    ours = results["blobcache --no-fsync"]
    print(f"\nratios of blobcache --no-fsync (durability like both peers: no fsync)")
    print(f"{'measure':<22} {'/ turborepo-remote-cache':>26} {'/ nginx':>10}")
    for key in ours:
        peer, nginx = results["turborepo-remote-cache"][key], results["nginx"][key]
        print(f"{key:<22} {ours[key] / peer:>25.2f}x {ours[key] / nginx:>9.2f}x")
    print("\n(rates: higher is faster; p99 and RSS: lower is better)")


if __name__ == "__main__":
    main()
