#!/bin/bash
# Per-request costs of a 1 KiB GET hit, /healthz and a 1 KiB PUT on the release build
# (cargo build --release first): server CPU (utime+stime from /proc), minor faults,
# TLB shootdowns (machine-wide, /proc/interrupts), guest memory growth (/metrics)
# and syscalls (strace -c), with wrk (1 thread, 32 connections, pinned to core 1).
# Needs wrk and strace (Debian packages). bench/profile.sh shows where the time goes.
#   bench/per_request.sh
source "$(dirname "$0")/small_server.sh"
cat > $D/put.lua <<LUA
wrk.method = "PUT"
local f = io.open("$D/blob", "rb"); wrk.body = f:read("*all"); f:close()
LUA
run() { # name url [script]
  local extra=""; [ -n "$3" ] && extra="-s $3"
  taskset -c 1 wrk -t1 -c32 -d2s $extra $2 > /dev/null   # warm up
  read -r u s f <<< $(awk '{print $14, $15, $10}' /proc/$PID/stat)
  t0=$(awk '/TLB/{print $2+$3}' /proc/interrupts)
  g0=$(curl -s http://$ADDR/metrics | awk '/^blobcache_guest_memory_grows_total/{print $2}')
  n=$(taskset -c 1 wrk -t1 -c32 -d5s $extra $2 | awk '/requests in/{print $1}')
  read -r u2 s2 f2 <<< $(awk '{print $14, $15, $10}' /proc/$PID/stat)
  t1=$(awk '/TLB/{print $2+$3}' /proc/interrupts)
  g1=$(curl -s http://$ADDR/metrics | awk '/^blobcache_guest_memory_grows_total/{print $2}')
  hz=$(getconf CLK_TCK)
  cpu=$(python3 -c "print(f'{(($u2-$u)+($s2-$s))/$hz/$n*1e6:.1f}')")
  usr=$(python3 -c "print(f'{($u2-$u)/$hz/$n*1e6:.1f}')")
  sys=$(python3 -c "print(f'{($s2-$s)/$hz/$n*1e6:.1f}')")
  flt=$(python3 -c "print(f'{($f2-$f)/$n:.2f}')")
  tlb=$(python3 -c "print(f'{($t1-$t0)/$n:.3f}')")
  grows=$(python3 -c "print(f'{($g1-$g0)/$n:.3f}')")
  rps=$((n/5))
  # syscalls: strace the server over a short run
  timeout 8 strace -f -c -p $PID -o $D/strace.txt 2>/dev/null &
  SP=$!; sleep 1
  m=$(taskset -c 1 wrk -t1 -c32 -d3s $extra $2 | awk '/requests in/{print $1}')
  sleep 0.5; kill -INT $SP 2>/dev/null; wait $SP 2>/dev/null
  calls=$(awk '/total/{print $4}' $D/strace.txt)
  top=$(grep -v -e total -e '^%' -e '^-' $D/strace.txt | sort -k4 -n -r | head -6 | awk -v m=$m '{printf "%s %.1f, ", $NF, $4/m}')
  echo "| $1 | $rps | $cpu ($usr user, $sys sys) | $flt | $tlb | $grows | $(python3 -c "print(f'{$calls/$m:.1f}')") | $top |"
}
echo "| request | req/s (wrk 1 thread, 32 conns, core 1) | server CPU µs/request | minor faults/request | TLB shootdowns/request | memory grows/request | syscalls/request | top syscalls per request |"
echo "|---|---|---|---|---|---|---|---|"
run "GET hit 1 KiB (/cas)" http://$ADDR/cas/$H
run "/healthz" http://$ADDR/healthz
run "PUT 1 KiB (/cas, sha256 verified, fsync)" http://$ADDR/cas/$H $D/put.lua
kill $PID; rm -rf $D
