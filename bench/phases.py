#!/usr/bin/env python3
"""Sorts perf samples of the server (`perf script -F tid,ip,sym` with call
graphs) into the phases of a request and prints the share of each.

    python3 bench/phases.py samples.txt

A sample belongs to the first phase, in the order below, that one of its
frames names. Inlined frames are not in the call graph, so instantiation is
recognised by the wasmtime functions it calls.
"""

import collections
import sys

PHASES = [
    ("component instance: drop, memory reset", ["StoreOpaque as core::ops::drop",
                                                "drop_in_place<wasmtime::runtime::store::StoreInner"]),
    ("component instance: instantiation", ["instantiate_async", "Instantiator", "allocate_instance",
                                           "trampoline_ptrs", "get_func_ref", "push_export", "lookup_vmdef",
                                           "register_module", "set_lowering", "set_trampoline",
                                           "HostFunc::lowering", "Instance::new"]),
    ("store: directory store calls (files)", ["blobcache::store::dir::", "DirStore", "DirWriter"]),
    ("wasi:http host calls", ["wasmtime_wasi_http::"]),
    ("other host calls (streams, store bindings, lifting)", ["HostFn::entrypoint", "component-trampolines",
                                                             "cabi_entrypoint"]),
    ("new Store and WASI context", ["request_state", "WasiCtxBuilder", "Store<T>>::new"]),
    ("HTTP: write the response (writev, TCP)", ["poll_flush", "writev"]),
    ("HTTP: read and parse the request", ["poll_read_head", "recvfrom", "Buffered<T,B>::parse", "poll_read"]),
    ("metrics and access log", ["blobcache::metrics", "blobcache::exchange", "prometheus"]),
    ("accept", ["accept4", "TcpListener::accept"]),
    ("HTTP: the rest of hyper's connection task", ["hyper::proto::h1"]),
    ("event loop: epoll, scheduling", ["epoll_wait", "futex", "tokio::runtime::scheduler", "schedule"]),
]


def phase(stack):
    if stack and stack[0].startswith("wasm["):
        return "guest wasm code"
    for name, marks in PHASES:
        if any(mark in frame for frame in stack for mark in marks):
            return name
    return "other"


def main():
    counts = collections.Counter()
    stack = []
    lines = open(sys.argv[1], errors="replace").read().split("\n") + [""]
    for line in lines:
        if not line.strip():
            if stack:
                counts[phase(stack)] += 1
            stack = []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and line.startswith("\t"):
            stack.append(parts[1])
    total = sum(counts.values())
    print(f"{total} samples")
    for name, n in counts.most_common():
        print(f"{100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
