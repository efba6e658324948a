# Sourced by bench/per_request.sh and bench/profile.sh: starts the release build's
# server on a fresh directory store and stores one 1 KiB blob. Sets D (a work
# directory), PID, ADDR (host:port) and H (the blob's sha256; it is at /cas/$H).
BIN="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/blobcache"
D=$(mktemp -d)
BLOBCACHE_LOG=warn $BIN serve --listen 127.0.0.1:0 --store dir:$D/s > $D/out 2>/dev/null &
PID=$!
sleep 1.5
ADDR=$(head -1 $D/out | sed 's|.*http://||; s| .*||')
head -c 1024 /dev/urandom > $D/blob
H=$(sha256sum $D/blob | cut -d' ' -f1)
curl -s -X PUT --data-binary @$D/blob http://$ADDR/cas/$H > /dev/null
