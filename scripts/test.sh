#!/usr/bin/env bash
# The test command: starts Garage (installing it if missing), installs
# Schemathesis, DuckDB (with its httpfs extension), pyarrow, python-hcl2,
# checkov and the Kafka clients (confluent-kafka, kafka-python, kafkajs,
# kcat, Apache Kafka's Java client and tools) into caches (if missing), builds the shale binary the end-to-end tests run,
# runs every test, stops Garage.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
# the archive's readers in the tests: nobody on this project wrote them
PYTHON_PACKAGES=("schemathesis==$SCHEMATHESIS_VERSION" "duckdb==1.5.5" "duckdb-extension-httpfs==1.5.5" "pyarrow==26.0.1" "python-hcl2==8.1.4")
# the Terraform checks (tests/tests/infra.rs)
CHECKOV_VERSION=3.3.30
# Kafka clients for the Kafka listener's tests (tests/tests/kafka.rs)
KAFKA_PYTHON_PACKAGES=("confluent-kafka==2.16.1" "kafka-python==3.0.12")
KAFKAJS_VERSION=2.2.4

garage_dir=$(mktemp -d)
trap 'scripts/garage.sh stop "$garage_dir"; rm -rf "$garage_dir"' EXIT
scripts/garage.sh start "$garage_dir"
# shellcheck disable=SC1091
source "$garage_dir/env"

# PyPI packages, pinned, in virtualenvs cached between runs; checkov gets its
# own (it pins an older packaging and a forked hcl2 that clash with the rest)
cache="${SHALE_CI_CACHE:-$HOME/.cache/shale-ci}"
venv_with() {
  local venv="$1" stamp="$1/.shale-packages"
  shift
  if [ "$(cat "$stamp" 2>/dev/null)" != "$*" ]; then
    echo "installing $* into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "$@"
    echo "$*" > "$stamp"
  fi
}
venv="$cache/venv"
venv_with "$venv" "${PYTHON_PACKAGES[@]}"
venv_with "$cache/checkov" "checkov==$CHECKOV_VERSION"
export SHALE_CHECKOV="$cache/checkov/bin/checkov"
export SHALE_SCHEMATHESIS="$venv/bin/schemathesis"
export SHALE_PYTHON="$venv/bin/python"
venv_with "$cache/kafka" "${KAFKA_PYTHON_PACKAGES[@]}"
export SHALE_KAFKA_PYTHON="$cache/kafka/bin/python"
# kafkajs from npm, kcat (librdkafka's command-line client) from Debian
if [ "$(cat "$cache/kafkajs/.shale-packages" 2>/dev/null)" != "kafkajs@$KAFKAJS_VERSION" ]; then
  echo "installing kafkajs@$KAFKAJS_VERSION into $cache/kafkajs" >&2
  rm -rf "$cache/kafkajs"
  mkdir -p "$cache/kafkajs"
  npm install --silent --no-audit --no-fund --prefix "$cache/kafkajs" "kafkajs@$KAFKAJS_VERSION"
  echo "kafkajs@$KAFKAJS_VERSION" > "$cache/kafkajs/.shale-packages"
fi
export SHALE_KAFKAJS_MODULES="$cache/kafkajs/node_modules"
if ! command -v kcat >/dev/null; then
  echo "installing kcat from Debian" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq kcat >/dev/null || { apt-get update -qq && apt-get install -y -qq kcat >/dev/null; }
  else sudo apt-get install -y -qq kcat >/dev/null || { sudo apt-get update -qq && sudo apt-get install -y -qq kcat >/dev/null; }
  fi
fi
export SHALE_KCAT="$(command -v kcat)"
# Apache Kafka's Java client, tools, Streams and Connect (tests/java/pom.xml, pinned to 4.4.0)
# from Maven Central, copied into the cache once per version of the pom; the
# checks are compiled on each run (seconds) and run on one JVM per suite
java_cache="$cache/kafka-java"
pom_stamp=$(sha256sum tests/java/pom.xml | cut -d' ' -f1)
if [ "$(cat "$java_cache/.shale-packages" 2>/dev/null)" != "$pom_stamp" ]; then
  echo "installing Apache Kafka's Java client and tools into $java_cache" >&2
  rm -rf "$java_cache"
  mvn -q -B -f tests/java/pom.xml dependency:copy-dependencies -DoutputDirectory="$java_cache/lib"
  echo "$pom_stamp" > "$java_cache/.shale-packages"
fi
rm -rf "$java_cache/classes"
javac -nowarn -d "$java_cache/classes" -cp "$java_cache/lib/*" tests/java/src/main/java/dev/shale/checks/*.java
export SHALE_KAFKA_JAVA_CLASSPATH="$java_cache/classes:$java_cache/lib/*"

cargo build --bin shale --bin shale-lambda
log="$garage_dir/cargo-test.log"
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# cargo prints one result line per test binary (the last is often an empty
# doc-test run); close with the totals.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
