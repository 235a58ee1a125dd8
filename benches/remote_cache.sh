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
#      against what object_store itself reaches with the same file and
#      server (the issue's yardstick: remote/examples/object-store-transfer.rs
#      reads the file into memory and PUTs it, as HttpStore takes a body
#      whole, then GETs it into a file), and curl PUT/GET of the same file
#      (GET both to a file on the same file system and to /dev/null).
#      Goal: >= 50% of object_store's rate.
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
# Built on its own: an example takes its crate's dev-dependencies' features,
# which would make cargo build cairn again.
(cd "$REPO" && cargo build --release -p cairn-remote --example object-store-transfer)
CAIRN=$REPO/target/release/cairn
TRANSFER=$REPO/target/release/examples/object-store-transfer

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
  # The order alternates: the second build of a pair finds the first's
  # writeback and cache effects, and neither mode should always pay them.
  for mode in $( ((run % 2)) && echo "without with" || echo "with without"); do
    if [ "$mode" = without ]; then
      t=$(now); build "$WORK/c$run-without" >/dev/null; without+=("$(since "$t")")
    else
      t=$(now); build "$WORK/c$run-with" --remote-cache "$(url cold-$run)" --remote-cache-mode write >/dev/null; with+=("$(since "$t")")
    fi
  done
done
w=$(printf '%s\n' "${with[@]}" | median); wo=$(printf '%s\n' "${without[@]}" | median)
fi

# 3. A 1 GiB output, RUNS times; every timed step starts after a `sync`, so
# that none pays for the writeback of the gigabytes written before it.
up=-; download=-; up_rate=-; down_rate=-; curl_up=-; curl_file=-; curl_down=-
os_up=-; os_get=-; os_durable=-
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
timed() { sync; local t; t=$(now); "$@" >/dev/null; since "$t"; }
# share A B: A as a percentage of B (B's time over A's is a rate's share);
# a difference of builds at or under zero (noise) counts as 9999%, and the
# median of the runs decides.
share() { if [ "$(echo "$2 > 0" | bc)" = 1 ]; then echo "scale=0; $1 * 100 / $2" | bc; else echo 9999; fi; }
ups=(); downs=(); up_rates=(); down_rates=(); curl_ups=(); curl_files=(); curl_downs=()
os_ups=(); os_gets=(); os_durables=()
for run in $(seq "$RUNS"); do
  g=$WORK/large-$run
  big_graph "$g/1"; big_graph "$g/2"; big_graph "$g/3"
  cold=$(timed build "$g/3")
  cold_up=$(timed build "$g/1" --remote-cache "$(url large-$run)" --remote-cache-mode write)
  down=$(timed build "$g/2" --remote-cache "$(url large-$run)" --remote-cache-mode read)
  # The same output restored from the local store: what the second
  # machine's build spends besides the transfer (moved aside, not deleted:
  # a deletion slows the file creations that follow on some file systems).
  mv "$g/2/data" "$g/2-data-aside"
  restore=$(timed build "$g/2" --remote-cache-mode off)
  file=$(find "$g/1/data" -name blob.bin)
  curl_ups+=("$(timed curl -sf -o /dev/null -T "$file" "$(url curl-$run/blob.bin)")")
  curl_downs+=("$(timed curl -sf -o /dev/null "$(url curl-$run/blob.bin)")")
  curl_files+=("$(timed curl -sf -o "$g/curl-blob.bin" "$(url curl-$run/blob.bin)")")
  sync
  read -r os_read os_put os_get os_sync < <("$TRANSFER" "$(url object_store-$run)" "$file" blob.bin "$g/object_store-blob.bin")
  up_=$(echo "$cold_up - $cold" | bc); down_=$(echo "$down - $restore" | bc)
  ups+=("$up_"); downs+=("$down_")
  os_ups+=("$(echo "$os_read + $os_put" | bc)"); os_gets+=("$os_get"); os_durables+=("$(echo "$os_get + $os_sync" | bc)")
  # cairn's rate as a share of object_store's (its time over cairn's), in
  # this run: uploads against the file read whole and PUT, downloads
  # against the GET into a file and its sync (a restore is durable).
  up_rates+=("$(share "$(echo "$os_read + $os_put" | bc)" "$up_")")
  down_rates+=("$(share "$(echo "$os_get + $os_sync" | bc)" "$down_")")
  log "1 GiB run $run: upload ${up_} s (object_store ${os_read} + ${os_put} s), download ${down_} s (object_store ${os_get} + ${os_sync} s)"
done
up=$(printf '%s\n' "${ups[@]}" | median); download=$(printf '%s\n' "${downs[@]}" | median)
up_rate=$(printf '%s\n' "${up_rates[@]}" | median)%; down_rate=$(printf '%s\n' "${down_rates[@]}" | median)%
curl_up=$(printf '%s\n' "${curl_ups[@]}" | median); curl_file=$(printf '%s\n' "${curl_files[@]}" | median)
curl_down=$(printf '%s\n' "${curl_downs[@]}" | median)
os_up=$(printf '%s\n' "${os_ups[@]}" | median); os_get=$(printf '%s\n' "${os_gets[@]}" | median)
os_durable=$(printf '%s\n' "${os_durables[@]}" | median)
fi

ratio=-; overhead=-
[ "$r" = - ] || ratio=$(echo "scale=2; $r / $l" | bc)x
[ "$w" = - ] || overhead=$(echo "scale=1; ($w - $wo) * 100 / $wo" | bc)%

cat <<TABLE
| remote cache (nginx, loopback, release, medians of $RUNS runs) | value |
| --- | --- |
| second machine 365x30 from the remote (0 executed) | ${r} s |
| local restore (\`rm -rf data && cairn build\`) | ${l} s |
| ratio (goal <= 3x) | ${ratio} |
| cold 30x30, no cache | ${wo} s |
| cold 30x30, write mode (uploads waited for) | ${w} s |
| upload overhead (goal <= 10%) | ${overhead} |
| 1 GiB output: upload, the cold build with it minus one without | ${up} s (curl PUT: ${curl_up} s) |
| 1 GiB output: object_store's upload, the file read whole, then its PUT | ${os_up} s |
| upload rate, a share of object_store's, per run (goal >= 50%) | ${up_rate} |
| 1 GiB output: download, the second machine's build minus a local restore (\`rm -rf data && cairn build\`) | ${download} s (curl GET to a file: ${curl_file} s; to /dev/null: ${curl_down} s) |
| 1 GiB output: object_store's GET into a file, then its sync | ${os_durable} s (the GET alone: ${os_get} s) |
| download rate, a share of object_store's durable GET, per run (goal >= 50%) | ${down_rate} |
TABLE
