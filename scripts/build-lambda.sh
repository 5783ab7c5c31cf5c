#!/usr/bin/env bash
# Builds shale-lambda for Lambda's provided.al2023 runtime, x86_64 and arm64,
# with cargo-lambda (from PyPI, pinned, in a cached virtualenv; zig from PyPI
# links the arm64 build), and zips each as bootstrap:
#   target/lambda/x86_64/shale-lambda/bootstrap.zip
#   target/lambda/arm64/shale-lambda/bootstrap.zip
# Then it checks that neither needs a glibc newer than Amazon Linux 2023's
# 2.34 (SHALE_LAMBDA_DIR=$PWD/target/lambda cargo test -p shale-tests --test lambda).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES="cargo-lambda==1.9.2 ziglang==0.17.1"
venv="${SHALE_CI_CACHE:-$HOME/.cache/shale-ci}/lambda"
if [ "$(cat "$venv/.shale-packages" 2>/dev/null)" != "$PACKAGES" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet $PACKAGES
  echo "$PACKAGES" > "$venv/.shale-packages"
fi
export PATH="$venv/bin:$PATH"
rustup target add x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu >/dev/null

# what Lambda runs is stripped: no symbols, no debug info
export CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_DEBUG=false
# x86_64 links natively (this host's toolchain); arm64 through zig
cargo lambda build --release --bin shale-lambda --x86-64 --compiler cargo \
  --output-format zip --lambda-dir target/lambda/x86_64
cargo lambda build --release --bin shale-lambda --arm64 \
  --output-format zip --lambda-dir target/lambda/arm64
for arch in x86_64 arm64; do
  dir="target/lambda/$arch/shale-lambda"
  python3 -m zipfile -e "$dir/bootstrap.zip" "$dir"
  chmod +x "$dir/bootstrap"
  ls -l "$dir/bootstrap" "$dir/bootstrap.zip"
done
SHALE_LAMBDA_DIR="$PWD/target/lambda" cargo test -p shale-tests --test lambda the_lambda_binary
