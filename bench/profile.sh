#!/bin/bash
# Where a small request's time goes: samples the release build's server with perf
# (DWARF call graphs) while wrk sends 1 KiB GET hits, /healthz or 1 KiB PUTs, and
# sorts the samples into phases (bench/phases.py). Needs perf, wrk (Debian packages)
# and the release build (cargo build --release).
#   bench/profile.sh [get|healthz|put]
set -euo pipefail
WHAT=${1:-get}
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/small_server.sh"
trap 'kill $PID 2>/dev/null; rm -rf $D' EXIT
cat > $D/put.lua <<LUA
local body = string.rep("x", 1024)
local n = 0
request = function()
  n = n + 1
  return wrk.format("PUT", string.format("/ac/%064x", n), nil, body)
end
LUA
case $WHAT in
  get) ARGS=(http://$ADDR/cas/$H) ;;
  healthz) ARGS=(http://$ADDR/healthz) ;;
  put) ARGS=(-s $D/put.lua http://$ADDR/) ;;
  *) echo "usage: $0 [get|healthz|put]" >&2; exit 2 ;;
esac
taskset -c 1 wrk -t1 -c32 -d2s "${ARGS[@]}" > /dev/null   # warm up
perf record -q -F 400 --call-graph dwarf,16384 -p $PID -o $D/perf.data -- sleep 4 2>/dev/null &
REC=$!
sleep 0.3
taskset -c 1 wrk -t1 -c32 -d4s "${ARGS[@]}" | grep Requests/sec
wait $REC
perf script -i $D/perf.data --no-inline -F tid,ip,sym 2>/dev/null > $D/samples.txt
python3 "$HERE/phases.py" $D/samples.txt
