#!/usr/bin/env bash
# A Bazel-HTTP-protocol cache on loopback: Debian's nginx with its WebDAV
# module (GET/PUT/HEAD under /ac/ and /cas/), as a user would run it.
#
#   nginx-cache.sh start DIR   prints the port; the server runs in the
#                              background (pid in DIR/nginx.pid)
#   nginx-cache.sh stop DIR    stops it by that pid
#   nginx-cache.sh kill DIR    SIGKILLs it and its worker at once (a crash)
#
# Used by tests/remote_cache.rs; .ci/run installs nginx (apt).
set -euo pipefail
command=${1:?usage: nginx-cache.sh start|stop DIR}
root=${2:?usage: nginx-cache.sh start|stop DIR}
case "$command" in
start)
  mkdir -p "$root"/data "$root"/tmp "$root"/logs
  # nginx's workers run as nobody: they must own what they write, or every
  # PUT answers 500.
  # (and reach them: a private temporary directory is opened up).
  if [ "$(id -u)" = 0 ]; then chown -R nobody "$root"/data "$root"/tmp; fi
  chmod 755 "$root"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$root"/nginx.conf <<CONF
daemon on;
worker_processes 1;
error_log logs/error.log;
pid nginx.pid;
events { worker_connections 256; }
http {
  access_log logs/access.log;
  client_body_temp_path tmp; proxy_temp_path tmp; fastcgi_temp_path tmp; uwsgi_temp_path tmp; scgi_temp_path tmp;
  server {
    listen 127.0.0.1:$port;
    location / {
      root data;
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 0;
    }
    # The same cache over a slow link: responses at 1 MB/s (large blobs
    # take longer than a request's timeout; tests/remote_cache.rs).
    location /slow/ {
      root data;
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 0;
      limit_rate 1m;
    }
  }
}
CONF
  nginx -p "$root" -c "$root"/nginx.conf
  for _ in $(seq 50); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
      echo "$port"
      exit 0
    fi
    sleep 0.1
  done
  echo "nginx did not listen on 127.0.0.1:$port" >&2
  exit 1
  ;;
stop)
  if [ -f "$root"/nginx.pid ]; then
    pid=$(cat "$root"/nginx.pid)
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  ;;
kill)
  if [ -f "$root"/nginx.pid ]; then
    pid=$(cat "$root"/nginx.pid)
    workers=$(ps -o pid= --ppid "$pid" || true)
    kill -9 "$pid" $workers 2>/dev/null || true
    rm -f "$root"/nginx.pid
  fi
  ;;
*)
  echo "usage: nginx-cache.sh start|stop|kill DIR" >&2
  exit 2
  ;;
esac
