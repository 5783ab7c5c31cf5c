#!/usr/bin/env bash
# Runs a single-node Garage (S3-compatible) on 127.0.0.1 for the tests and
# benchmarks, syncing what it acknowledges.
#
#   scripts/garage.sh start DIR   install Garage if missing, start it on free
#                                 ports, create a bucket and key, and write
#                                 DIR/env with the SHALE_TEST_S3_* variables
#   scripts/garage.sh stop DIR    stop it
set -euo pipefail

GARAGE_VERSION=2.5.0
cmd=${1:?usage: garage.sh start|stop DIR}
dir=${2:?usage: garage.sh start|stop DIR}
export PATH="$HOME/.cargo/bin:$PATH"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install() {
  if command -v garage >/dev/null && garage --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
    return
  fi
  echo "garage $GARAGE_VERSION is missing: installing it with cargo (takes several minutes)" >&2
  cargo install "garage@$GARAGE_VERSION" --locked
}

start() {
  install
  mkdir -p "$dir/meta" "$dir/data"
  local s3_port rpc_port admin_port
  s3_port=$(free_port); rpc_port=$(free_port); admin_port=$(free_port)
  # One node and no replicas: its answer to a PUT means durable, as S3's
  # does, only if it syncs first; Garage's default does not. Unsynced, its data
  # also reaches the disk in writeback bursts that stall the Raft log's
  # flushes on the same disk (docs/BENCHMARKS.md). SHALE_GARAGE_FSYNC=0
  # turns syncing off, to compare.
  local fsync=true
  if [ "${SHALE_GARAGE_FSYNC:-1}" = 0 ]; then fsync=false; fi
  cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
data_fsync = $fsync
metadata_fsync = $fsync
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
TOML
  local g="garage -c $dir/garage.toml"
  $g server > "$dir/garage.log" 2>&1 &
  echo $! > "$dir/garage.pid"
  for _ in $(seq 1 100); do
    if $g status >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
  local node
  node=$($g node id -q 2>/dev/null | cut -d@ -f1)
  $g layout assign -z dc1 -c 1G "$node" >/dev/null
  $g layout apply --version 1 >/dev/null
  local key_id="GK$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
  local secret
  secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
  $g key import --yes -n shale-test "$key_id" "$secret" >/dev/null
  $g key allow --create-bucket shale-test >/dev/null
  $g bucket create shale-test >/dev/null
  $g bucket allow --read --write --owner shale-test --key shale-test >/dev/null
  cat > "$dir/env" <<ENV
export SHALE_TEST_S3_URL=s3://shale-test
export SHALE_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
export SHALE_TEST_S3_REGION=garage
export SHALE_TEST_S3_ACCESS_KEY_ID=$key_id
export SHALE_TEST_S3_SECRET_ACCESS_KEY=$secret
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=garage
export AWS_ENDPOINT=http://127.0.0.1:$s3_port
export AWS_ALLOW_HTTP=true
ENV
  echo "garage listening on http://127.0.0.1:$s3_port (bucket shale-test)" >&2
}

stop() {
  if [ -f "$dir/garage.pid" ]; then
    kill "$(cat "$dir/garage.pid")" 2>/dev/null || true
    rm -f "$dir/garage.pid"
  fi
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: garage.sh start|stop DIR" >&2; exit 2 ;;
esac
