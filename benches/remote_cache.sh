#!/usr/bin/env bash
# The shared remote cache's figures (issue 24; docs/remote-cache.md), against
# nginx (WebDAV) on loopback, as the issue asks:
#
#   1. second machine, 365x30 (22,265 actions) from the remote cache: 0
#      executed, wall time, and its ratio to a local restore
#      (`rm -rf data && cairn build` with the store full). Goal: <= 3x.
#   2. upload overhead on a cold 30x30 build with write mode, against a
#      cold 30x30 build with no cache. Goal: <= 10%.
#   3. a 1 GiB output: upload (cold build with write minus cold build
#      without) and download (the second machine's build minus a local
#      restore of the same output, i.e. the transfer into the local store)
#      against curl PUT/GET of the same file to the same server (GET both
#      to a file on the same file system and to /dev/null). Goal: >= 50%.
#
# Run on an idle machine (never while others compile):
#   bash benches/remote_cache.sh [--work DIR] [--runs N] [--only second|upload|large]
# Prints a markdown table for docs/benchmarks.md. Needs nginx
# (.ci/run installs it) and the podcast fixture.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-$REPO/target/bench-remote}
RUNS=3
ONLY=
while [ $# -gt 0 ]; do
  case "$1" in
    --work) WORK=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "usage: $0 [--work DIR] [--runs N] [--only second|upload|large]" >&2; exit 2 ;;
  esac
done
case "$ONLY" in ''|second|upload|large) ;; *) echo "--only: second, upload or large" >&2; exit 2 ;; esac
wanted() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
# shellcheck source=benches/timing.sh
. "$REPO/benches/timing.sh"

log "building cairn (release)"
(cd "$REPO" && cargo build --release --bin cairn)
CAIRN=$REPO/target/release/cairn

# An earlier run's directory is moved aside now and deleted at the end,
# after the timed builds (see `project` below).
OLD=
if [ -e "$WORK" ]; then OLD=$WORK.old.$$; mv "$WORK" "$OLD"; fi
mkdir -p "$WORK"
NGINX=$WORK/nginx
PORT=$("$REPO"/.ci/services/nginx-cache.sh start "$NGINX")
trap '"$REPO"/.ci/services/nginx-cache.sh stop "$NGINX"; [ -z "$OLD" ] || rm -rf "$OLD"' EXIT
url() { echo "http://127.0.0.1:$PORT/$1"; }
# Each project in a directory of its own, generated before anything is
# timed and never deleted during the run: on some file systems (this VM's
# ext4) a deletion slows the file creations of the next minutes, which
# made the cold build after an `rm -rf` pay for the one before.
project() { sh "$REPO"/fixtures/podcast/generate "$1" "$2" "$3" >/dev/null; }
build() { (cd "$1" && shift && "$CAIRN" build --json "$@" | tail -1); }

r=-; l=-; w=-; wo=-
# 1. Second machine, 365x30.
if wanted second; then
log "365x30: first machine builds and uploads"
project "$WORK/a" 365 30
build "$WORK/a" --remote-cache "$(url big)" --remote-cache-mode write >/dev/null
remote=(); local=()
for run in $(seq "$RUNS"); do
  project "$WORK/b$run" 365 30
  sync
  t=$(now); summary=$(build "$WORK/b$run" --remote-cache "$(url big)" --remote-cache-mode read); remote+=("$(since "$t")")
  echo "$summary" | grep -q '"executed":0' || { echo "the second machine executed something: $summary" >&2; exit 1; }
  mv "$WORK/b$run/data" "$WORK/b$run-data-aside"
  t=$(now); build "$WORK/b$run" --remote-cache-mode off >/dev/null; local+=("$(since "$t")")
done
r=$(printf '%s\n' "${remote[@]}" | median); l=$(printf '%s\n' "${local[@]}" | median)
fi

# 2. Upload overhead, cold 30x30.
if wanted upload; then
with=(); without=()
for run in $(seq "$RUNS"); do
  project "$WORK/c$run-without" 30 30
  project "$WORK/c$run-with" 30 30
  sync
  t=$(now); build "$WORK/c$run-without" >/dev/null; without+=("$(since "$t")")
  t=$(now); build "$WORK/c$run-with" --remote-cache "$(url cold-$run)" --remote-cache-mode write >/dev/null; with+=("$(since "$t")")
done
w=$(printf '%s\n' "${with[@]}" | median); wo=$(printf '%s\n' "${without[@]}" | median)
fi

# 3. A 1 GiB output.
cold=-; cold_up=-; down=-; restore=-; curl_up=-; curl_down=-; curl_file=-
if wanted large; then
big_graph() {
  mkdir -p "$1"
  cat > "$1/cairn.toml" <<'TOML'
[datasets.big]
[jobs.big]
outputs = ["big"]
run = ["sh", "-c", "head -c 1073741824 /dev/urandom > \"$CAIRN_OUT/blob.bin\""]
TOML
}
rm -rf "$WORK/g1" "$WORK/g2" "$WORK/g3"; big_graph "$WORK/g1"; big_graph "$WORK/g2"; big_graph "$WORK/g3"
t=$(now); build "$WORK/g3" >/dev/null; cold=$(since "$t")
t=$(now); build "$WORK/g1" --remote-cache "$(url large)" --remote-cache-mode write >/dev/null; cold_up=$(since "$t")
t=$(now); build "$WORK/g2" --remote-cache "$(url large)" --remote-cache-mode read >/dev/null; down=$(since "$t")
# The same output restored from the local store: what the second machine's
# build spends besides the transfer (moved aside, not deleted: a deletion
# slows the file creations that follow on some file systems).
mv "$WORK/g2/data" "$WORK/g2-data-aside"
t=$(now); build "$WORK/g2" --remote-cache-mode off >/dev/null; restore=$(since "$t")
file=$(find "$WORK/g1/data" -name blob.bin)
t=$(now); curl -sf -o /dev/null -T "$file" "$(url curl/blob.bin)"; curl_up=$(since "$t")
t=$(now); curl -sf -o /dev/null "$(url curl/blob.bin)"; curl_down=$(since "$t")
t=$(now); curl -sf -o "$WORK/curl-blob.bin" "$(url curl/blob.bin)"; curl_file=$(since "$t")
fi

ratio=-; overhead=-; up=-; download=-
[ "$r" = - ] || ratio=$(echo "scale=2; $r / $l" | bc)x
[ "$w" = - ] || overhead=$(echo "scale=1; ($w - $wo) * 100 / $wo" | bc)%
[ "$down" = - ] || { up=$(echo "$cold_up - $cold" | bc); download=$(echo "$down - $restore" | bc); }

cat <<TABLE
| remote cache (nginx, loopback, release, median of $RUNS) | value |
| --- | --- |
| second machine 365x30 from the remote (0 executed) | ${r} s |
| local restore (\`rm -rf data && cairn build\`) | ${l} s |
| ratio (goal <= 3x) | ${ratio} |
| cold 30x30, no cache | ${wo} s |
| cold 30x30, write mode (uploads waited for) | ${w} s |
| upload overhead (goal <= 10%) | ${overhead} |
| 1 GiB output: cold build with upload minus without | ${up} s (curl PUT: ${curl_up} s) |
| 1 GiB output: second machine's build (download + restore) | ${down} s |
| 1 GiB output: local restore of the same (\`rm -rf data && cairn build\`) | ${restore} s |
| 1 GiB output: download = the two's difference | ${download} s (curl GET to a file: ${curl_file} s; to /dev/null: ${curl_down} s) |
TABLE
