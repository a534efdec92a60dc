#!/usr/bin/env bash
# A local S3-compatible server for the object storage tests: moto (from the Python package
# index) in server mode, in a virtualenv under target/, on 127.0.0.1 and a free port.
# Prints the endpoint URL on its last line (.ci/run exports it as WEAVE_TEST_S3_ENDPOINT)
# and keeps the server's process id in target/s3-moto.pid (.ci/s3-down.sh stops it).
# Exits non-zero (and says why) when it cannot start one.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/s3-venv
if [ ! -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]>=5,<6" >&2
fi

# A server an earlier call started is stopped first (its pid file would be overwritten).
bash .ci/s3-down.sh

# A free port: bound by the kernel, released, then taken by the server.
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >target/s3-moto.log 2>&1 &
echo $! >target/s3-moto.pid
for _ in $(seq 1 100); do
  if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" >/dev/null 2>&1; then
    echo "http://127.0.0.1:$port"
    exit 0
  fi
  sleep 0.1
done
echo "moto did not answer on 127.0.0.1:$port (its log: target/s3-moto.log)" >&2
kill "$(cat target/s3-moto.pid)" 2>/dev/null || true
exit 1
