#!/usr/bin/env python3
"""Load with faults, for the figures in notes and the README.

Runs the `load` integration tests (tests/it/load.rs) for 60 s each, one at a
time: 200 clients mixing hits, misses and uploads (Bazel CAS, ccache, Gradle)
against the directory store, then against Azurite behind the fault proxy (one
Azure request in eight answered 503 or 500, dropped, or cut mid-body). Every
body read is checked against its hash; afterwards every acknowledged key must
read whole and every refused one whole or not at all.

    python3 bench/load.py [--seconds 60] [--clients 200]
"""

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--clients", type=int, default=200)
    args = parser.parse_args()
    env = dict(os.environ)
    env["BLOBCACHE_LOAD_SECONDS"] = str(args.seconds)
    env["BLOBCACHE_LOAD_CLIENTS"] = str(args.clients)
    command = [
        "cargo", "test", "--release", "--test", "it", "--",
        "--exact", "load::load_on_the_directory_store", "load::load_on_azure_with_faults",
        "--nocapture", "--test-threads", "1",
    ]
    print("running:", " ".join(command), flush=True)
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    figures = [line for line in run.stderr.splitlines() if line.startswith("load ")]
    for line in figures:
        print(line)
    if run.returncode != 0 or len(figures) != 2:
        sys.stdout.write(run.stdout[-4000:])
        sys.stderr.write(run.stderr[-4000:])
        sys.exit(1)


if __name__ == "__main__":
    main()
