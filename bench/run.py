#!/usr/bin/env python3
"""blobcache against nginx on this machine, in one run; prints ratios to nginx.

    python3 bench/run.py [--quick]
    BLOBCACHE_BIN=/path/to/blobcache python3 bench/run.py   # another build, e.g. a baseline

nginx (Debian's nginx-core, WebDAV PUT) and blobcache (directory store, default
settings: sha256 verification of CAS uploads, fsync before publish) serve the same
files from the same disk. Measured:
  - requests/s of 1 KiB GETs and PUTs, keep-alive, 32 connections (wrk), their
    p99 latency, and the server's CPU time per request (from /proc)
  - MB/s of one 1 GiB GET and one 1 GiB PUT (curl), median of three
  - peak RSS of each server
Absolute numbers vary with the machine; the ratios are the result.

The load generator (wrk, two threads) and the server share every core, as the
scheduler splits them; nothing is pinned. CPU time per request does not depend
on that split. nginx never fsyncs a PUT, so the like-for-like PUT is blobcache's
--no-fsync; its default (fsync before acknowledging) is shown beside it.

Small PUTs measure the filesystem as much as the server. ext4 without a journal
skips inodes freed in the last minute (six while their inode table is not yet
written back, as without fsync) when it allocates one, scanning them one by one:
right after a run that deleted tens of thousands of files, each create costs a
millisecond. Wait between runs, or set BENCH_DIR=/path to put the work directory
on another filesystem (a journaled one gives steadier figures).
"""

import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "--quick" in sys.argv
SMALL_KEYS = 1000
WRK_SECONDS = 3 if QUICK else 8
BIG = (256 if QUICK else 1024) << 20
RUNS = 1 if QUICK else 3


def say(text):
    print(f"==> {text}", flush=True)


def ensure_tools():
    missing = [pkg for tool, pkg in [("nginx", "nginx-core"), ("wrk", "wrk"), ("curl", "curl")]
               if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}")]
    if missing:
        say(f"installing Debian packages: {' '.join(missing)}")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq"] + missing, check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def peak_rss_kib(pids):
    peak = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except FileNotFoundError:
            pass
    return peak


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def start_nginx(work):
    port = free_port()
    root = os.path.join(work, "nginx-root")
    os.makedirs(os.path.join(root, "cas"), exist_ok=True)
    os.makedirs(os.path.join(root, "ac"), exist_ok=True)
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        # Workers run as the invoking user so they can read and write the work dir.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        f.write(f"""
{user}
worker_processes auto;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {work}/nginx-body;
    client_max_body_size 0;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        dav_methods PUT;
        create_full_put_path on;
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", work], stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port, root


def start_blobcache(work, extra=()):
    binary = os.environ.get("BLOBCACHE_BIN") or os.path.join(ROOT, "target", "release", "blobcache")
    store = os.path.join(work, f"blobcache-store{len(extra)}")
    proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--store", f"dir:{store}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
    wait_port(port)
    return proc, port


def cpu_seconds(pids):
    """User plus system CPU time of processes so far."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class Small:
    """What wrk measured for one server: requests/s, p99 ms, server CPU µs per request."""

    def __init__(self, rps, p99, cpu_us):
        self.rps, self.p99, self.cpu_us = rps, p99, cpu_us


def wrk(port, script, work, pids):
    path = os.path.join(work, "script.lua")
    with open(path, "w") as f:
        f.write(script)
    before = cpu_seconds(pids)
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{WRK_SECONDS}s", "--latency", "-s", path,
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(pids) - before
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} failed responses:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return Small(rps, p99, used / requests * 1e6)


GET_SCRIPT = """
local keys = {%s}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/cas/" .. keys[(n %% #keys) + 1])
end
"""

PUT_SCRIPT = """
local body = string.rep("x", 1024)
local n = 0
local id = 0
setup = function(thread) id = id + 1; thread:set("tid", id) end
request = function()
  n = n + 1
  return wrk.format("PUT", string.format("/ac/%056x%08x", n, tid), nil, body)
end
response = function(status, headers, body)
  if status >= 300 and not reported then reported = true; print("PUT failed: " .. status .. " " .. body) end
end
"""


def curl_mbps(args):
    out = subprocess.run(["curl", "-s", "-f", "-o", "/dev/null", "-w", "%{http_code} %{speed_download} %{speed_upload}", *args],
                         capture_output=True, text=True, check=True).stdout.split()
    speed = max(float(out[1]), float(out[2]))
    return speed / 1e6


def main():
    ensure_tools()
    if not os.environ.get("BLOBCACHE_BIN"):
        say("building blobcache (release)")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "blobcache"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="blobcache-bench-", dir=os.environ.get("BENCH_DIR"))
    nginx, nginx_port, nginx_root = start_nginx(work)
    blob, blob_port = start_blobcache(work)
    # Started (and its store made) at the same moment as the other: on ext4
    # without a journal, where a directory's files go depends on recent deletions.
    unsynced, unsynced_port = start_blobcache(work, ["--no-fsync"])
    results = []
    small = []
    try:
        say(f"preparing {SMALL_KEYS} 1 KiB blobs on both servers")
        keys = []
        for i in range(SMALL_KEYS):
            data = i.to_bytes(4, "little") * 256
            key = hashlib.sha256(data).hexdigest()
            keys.append(key)
            with open(os.path.join(nginx_root, "cas", key), "wb") as f:
                f.write(data)
            subprocess.run(["curl", "-s", "-f", "-o", "/dev/null", "-T", "-", f"http://127.0.0.1:{blob_port}/cas/{key}"],
                           input=data, check=True)
        get_script = GET_SCRIPT % ",".join(f'"{k}"' for k in keys)

        nginx_pids = children(nginx.pid) + [nginx.pid]
        say("1 KiB GET, 32 connections")
        n = wrk(nginx_port, get_script, work, nginx_pids)
        b = wrk(blob_port, get_script, work, [blob.pid])
        small.append(("1 KiB GET", b, n, 0.6))

        say("1 KiB PUT, 32 connections")
        n = wrk(nginx_port, PUT_SCRIPT, work, nginx_pids)
        b = wrk(unsynced_port, PUT_SCRIPT, work, [unsynced.pid])
        small.append(("1 KiB PUT, --no-fsync (as nginx)", b, n, 0.5))
        b = wrk(blob_port, PUT_SCRIPT, work, [blob.pid])
        small.append(("1 KiB PUT, fsync (default)", b, n, None))

        say(f"{BIG >> 20} MiB file")
        big = os.path.join(work, "big.bin")
        digest = hashlib.sha256()
        with open(big, "wb") as f:
            chunk = os.urandom(1 << 20)
            for i in range(BIG >> 20):
                block = chunk[:-4] + i.to_bytes(4, "little")
                digest.update(block)
                f.write(block)
        big_hash = digest.hexdigest()
        subprocess.run(["cat", big], stdout=subprocess.DEVNULL, check=True)  # into the page cache

        say(f"{BIG >> 20} MiB PUT (blobcache verifies sha256), median of {RUNS}")
        n_put, b_put = [], []
        for run in range(RUNS):
            # Each PUT starts with no writeback backlog from the previous one.
            os.sync()
            n_put.append(curl_mbps(["-T", big, f"http://127.0.0.1:{nginx_port}/cas/big-{run}"]))
            os.sync()
            b_put.append(curl_mbps(["-T", big, f"http://127.0.0.1:{blob_port}/cas/{big_hash}"]))
        os.rename(os.path.join(nginx_root, "cas", "big-0"), os.path.join(nginx_root, "cas", big_hash))
        results.append((f"{BIG >> 20} MiB PUT MB/s", statistics.median(b_put), statistics.median(n_put), 0.8))
        # The same without fsync, as nginx does it: separates disk speed from ours.
        quick_put = []
        for _ in range(RUNS):
            os.sync()
            quick_put.append(curl_mbps(["-T", big, f"http://127.0.0.1:{unsynced_port}/cas/{big_hash}"]))
        results.append((f"{BIG >> 20} MiB PUT MB/s (--no-fsync)", statistics.median(quick_put), statistics.median(n_put), None))

        say(f"{BIG >> 20} MiB GET, median of {RUNS}")
        n_get, b_get = [], []
        for _ in range(RUNS):
            n_get.append(curl_mbps([f"http://127.0.0.1:{nginx_port}/cas/{big_hash}"]))
            b_get.append(curl_mbps([f"http://127.0.0.1:{blob_port}/cas/{big_hash}"]))
        results.append((f"{BIG >> 20} MiB GET MB/s", statistics.median(b_get), statistics.median(n_get), 0.5))

        blob_rss = peak_rss_kib([blob.pid]) / 1024
        nginx_rss = peak_rss_kib(children(nginx.pid) + [nginx.pid]) / 1024
    finally:
        blob.send_signal(signal.SIGTERM)
        unsynced.send_signal(signal.SIGTERM)
        nginx.send_signal(signal.SIGQUIT)
        blob.wait()
        unsynced.wait()
        nginx.wait()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{'small requests':<34}{'req/s':>9}{'nginx':>9}{'ratio':>7}  {'target':<14}"
          f"{'p99 ms':>7}{'nginx':>7}{'CPU us/req':>11}{'nginx':>7}{'ratio':>7}")
    for name, b, n, target in small:
        verdict = "" if target is None else (f">= {target} " + ("met" if b.rps / n.rps >= target else "MISSED"))
        print(f"{name:<34}{b.rps:>9.0f}{n.rps:>9.0f}{b.rps / n.rps:>7.2f}  {verdict:<14}"
              f"{b.p99:>7.2f}{n.p99:>7.2f}{b.cpu_us:>11.1f}{n.cpu_us:>7.1f}{n.cpu_us / b.cpu_us:>7.2f}")
    print("(CPU ratio: nginx's CPU time per request over blobcache's)")
    print()
    print(f"{'measure':<36}{'blobcache':>12}{'nginx':>12}{'ratio':>8}  target")
    for name, b, n, target in results:
        verdict = "" if target is None else (f">= {target}  " + ("met" if b / n >= target else "MISSED"))
        print(f"{name:<36}{b:>12.1f}{n:>12.1f}{b / n:>8.2f}  {verdict}")
    print(f"{'peak RSS MiB (nginx: largest process)':<36}{blob_rss:>12.1f}{nginx_rss:>12.1f}")


if __name__ == "__main__":
    main()
