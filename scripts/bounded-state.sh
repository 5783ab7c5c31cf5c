#!/usr/bin/env bash
# Bounded controller state: produce at saturation against `shale dev` on the
# local disk for six retention periods (an hour at 10-minute retention, scaled
# down: retention 60 s, archive after 10 s), and every 30 s print the
# controller snapshot's size, its index entries (shale_controller_index_entries)
# and the objects the bucket holds. Flat columns
# mean the state grows with the files kept, not with the produces.
#
#   scripts/bounded-state.sh [SECONDS]        (default 360; SHALE_BIN picks the binary,
#                                             RATE_MIB an offered rate instead of saturation)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-360}
bin=${SHALE_BIN:-target/release/shale}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" dev --data-dir "$dir" --listen "127.0.0.1:$port" --gc-grace-ms 20000 > "$dir/out" 2> "$dir/log" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
sleep 2
sample() {
  local start=$SECONDS
  printf 'elapsed_s snapshot_bytes index_entries segments archive_files\n'
  while kill -0 "$server" 2>/dev/null; do
    printf '%s %s %s %s %s\n' $((SECONDS - start)) \
      "$(stat -c %s "$dir/controller/state/snapshot.bin" 2>/dev/null || echo 0)" \
      "$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^shale_controller_index_entries / {print $2}')" \
      "$(find "$dir/objects/segments" -type f 2>/dev/null | wc -l)" \
      "$(find "$dir/objects/archive" -type f 2>/dev/null | wc -l)"
    sleep 30
  done
}
sample &
sampler=$!
rate=()
if [ -n "${RATE_MIB:-}" ]; then rate=(--rate-mib "$RATE_MIB"); fi
"$bin" bench produce --url "http://127.0.0.1:$port" --duration-secs "$secs" "${rate[@]}" \
  --topic-config '{"retention_ms": 60000, "archive_after_ms": 10000}' > "$dir/bench" 2>&1 || cat "$dir/bench"
sleep 1
kill $sampler 2>/dev/null || true
grep -E "MiB/s|records" "$dir/bench" | head -5 || true
