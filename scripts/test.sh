#!/usr/bin/env bash
# The test command: starts Garage (installing it if missing), installs
# Schemathesis into a cached virtualenv (if missing), builds the shale binary
# the end-to-end tests run, runs every test, stops Garage.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5

garage_dir=$(mktemp -d)
trap 'scripts/garage.sh stop "$garage_dir"; rm -rf "$garage_dir"' EXIT
scripts/garage.sh start "$garage_dir"
# shellcheck disable=SC1091
source "$garage_dir/env"

# Schemathesis (PyPI, pinned) in a virtualenv cached between runs
cache="${SHALE_CI_CACHE:-$HOME/.cache/shale-ci}"
venv="$cache/venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
export SHALE_SCHEMATHESIS="$venv/bin/schemathesis"

cargo build --bin shale
log="$garage_dir/cargo-test.log"
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# cargo prints one result line per test binary (the last is often an empty
# doc-test run); close with the totals.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
