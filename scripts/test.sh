#!/usr/bin/env bash
# The test command: starts Garage (installing it if missing), installs
# Schemathesis, DuckDB (with its httpfs extension) and pyarrow into a cached
# virtualenv (if missing), builds the shale binary the end-to-end tests run,
# runs every test, stops Garage.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
# the archive's readers in the tests: nobody on this project wrote them
PYTHON_PACKAGES=("schemathesis==$SCHEMATHESIS_VERSION" "duckdb==1.5.5" "duckdb-extension-httpfs==1.5.5" "pyarrow==26.0.1")

garage_dir=$(mktemp -d)
trap 'scripts/garage.sh stop "$garage_dir"; rm -rf "$garage_dir"' EXIT
scripts/garage.sh start "$garage_dir"
# shellcheck disable=SC1091
source "$garage_dir/env"

# PyPI packages, pinned, in a virtualenv cached between runs
cache="${SHALE_CI_CACHE:-$HOME/.cache/shale-ci}"
venv="$cache/venv"
stamp="$venv/.shale-packages"
if [ "$(cat "$stamp" 2>/dev/null)" != "${PYTHON_PACKAGES[*]}" ]; then
  echo "installing ${PYTHON_PACKAGES[*]} into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "${PYTHON_PACKAGES[@]}"
  echo "${PYTHON_PACKAGES[*]}" > "$stamp"
fi
export SHALE_SCHEMATHESIS="$venv/bin/schemathesis"
export SHALE_PYTHON="$venv/bin/python"

cargo build --bin shale --bin shale-lambda
log="$garage_dir/cargo-test.log"
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# cargo prints one result line per test binary (the last is often an empty
# doc-test run); close with the totals.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
