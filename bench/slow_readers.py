#!/usr/bin/env python3
"""What slow downloads cost the server in memory.

Starts the release build (`cargo build --release` first) with a directory
store, uploads one 64 MiB blob, then opens 256 downloads of it that each read
64 KiB per second for 20 s. Samples the server's resident memory (VmRSS)
throughout and 5 s after the readers hang up, and prints the baseline, the
peak, the cost per reader, and what stays resident afterwards.

    python3 bench/slow_readers.py [--readers 256] [--seconds 20]
"""

import argparse
import hashlib
import os
import socket
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def request(addr, method, path, body=b""):
    host, port = addr.split(":")
    sock = socket.create_connection((host, int(port)))
    head = f"{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    return sock


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=256)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    store = tempfile.mkdtemp(prefix="blobcache-slow-")
    server = subprocess.Popen(
        [os.path.join(ROOT, "target/release/blobcache"), "serve", "--listen", "127.0.0.1:0",
         "--store", f"dir:{store}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        addr = server.stdout.readline().split("http://")[1].split()[0]
        blob = os.urandom(64 << 20)
        digest = hashlib.sha256(blob).hexdigest()
        upload = request(addr, "PUT", f"/cas/{digest}", blob)
        assert b" 200 " in upload.recv(4096)
        upload.close()
        time.sleep(1)
        baseline = rss_mib(server.pid)
        stop = threading.Event()
        received = [0] * args.readers

        def reader(i):
            sock = request(addr, "GET", f"/cas/{digest}")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            while not stop.is_set():
                data = sock.recv(16 << 10)
                if not data:
                    break
                received[i] += len(data)
                time.sleep(0.25)
            sock.close()

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(args.readers)]
        for thread in threads:
            thread.start()
        peak = baseline
        deadline = time.time() + args.seconds
        while time.time() < deadline:
            peak = max(peak, rss_mib(server.pid))
            time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        time.sleep(5)
        after = rss_mib(server.pid)
        print(f"{args.readers} readers at 64 KiB/s for {args.seconds} s "
              f"({sum(received) / (1 << 20):.0f} MiB delivered): baseline {baseline:.0f} MiB, "
              f"peak {peak:.0f} MiB ({(peak - baseline) / args.readers:.2f} MiB per reader), "
              f"5 s after they hung up {after:.0f} MiB")
    finally:
        server.kill()
        server.wait()
        subprocess.run(["rm", "-rf", store])


if __name__ == "__main__":
    main()
