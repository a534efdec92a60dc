#!/usr/bin/env bash
# Stops the moto server .ci/s3-up.sh started (by the process id it kept), if it runs.
cd "$(dirname "$0")/.."
if [ -f target/s3-moto.pid ]; then
  kill "$(cat target/s3-moto.pid)" 2>/dev/null || true
  rm -f target/s3-moto.pid
fi
