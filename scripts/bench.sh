#!/usr/bin/env bash
# Reproduces docs/BENCHMARKS.md: a release build, then each phase against a
# fresh single-node Garage on 127.0.0.1 (so one phase's background work does
# not slow the next), with every JSON report in OUT (default ./bench-results).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results}
mkdir -p "$out"
cargo build --release --bin shale
shale=target/release/shale

garage_dir=""
stop_garage() {
  if [ -n "$garage_dir" ]; then
    scripts/garage.sh stop "$garage_dir"
    rm -rf "$garage_dir"
  fi
}
trap stop_garage EXIT
fresh_garage() {
  stop_garage
  garage_dir=$(mktemp -d)
  scripts/garage.sh start "$garage_dir"
  # shellcheck disable=SC1091
  source "$garage_dir/env"
  s3=(--store "s3://shale-test/bench" --s3-endpoint "$SHALE_TEST_S3_ENDPOINT" --s3-region garage --s3-allow-http)
}

# store ceiling, produce at saturation, e2e at 10 MiB/s, catchup: one run, ratios included
fresh_garage
"$shale" bench all "${s3[@]}" --duration-secs 10 --json "$out/all.json" --server-log "$out/all.log"
# the latency targets: 10 MiB/s offered, flush interval 20 ms
fresh_garage
"$shale" bench e2e "${s3[@]}" --rate-mib 10 --flush-interval-ms 20 --duration-secs 20 --json "$out/e2e-20ms.json" \
  --server-log "$out/e2e-20ms.log"
# overload: 1000 MiB/s offered, far above capacity
fresh_garage
"$shale" bench produce "${s3[@]}" --rate-mib 1000 --duration-secs 15 --json "$out/overload.json" \
  --server-log "$out/overload.log"
