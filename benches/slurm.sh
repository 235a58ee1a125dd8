#!/usr/bin/env bash
# The Slurm executor's figures (issue 25; docs/slurm.md), on the two-node
# Slurm of .ci/services/slurm.sh (n1, n2: one CPU each, on this host):
#
#   1. 30x30 podcast cold through Slurm vs local cold, same run. Goal: <= 3x.
#   2. 365x30 cold through Slurm: wall time, overhead per action
#      ((slurm - local) / actions), and the batching used (workers submitted).
#   3. scaling 1 vs 2 nodes with a CPU-bound job (~200 ms of hashing per
#      action, calibrated on this machine first; 300 actions by default, so
#      ~60 s of work on one node beside a worker's start of ~1 s): node n2
#      drained for the 1-node run. Goal: >= 1.7x from 1 to 2 nodes.
#
# Run on an idle machine (never while others compile):
#   bash benches/slurm.sh [--work DIR] [--runs N] [--skip-365] [--only PART]
#                         [--actions N]
# PART: 30, 365-slurm, 365-local or scaling (one piece, for a short quiet
# window; the 365 pieces print their seconds, the ratio is computed by hand).
# Prints a markdown table for docs/benchmarks.md, with the load and the
# work directory's file system.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-$REPO/target/bench-slurm}
RUNS=3
SKIP_365=0
ONLY=all
ACTIONS=300
while [ $# -gt 0 ]; do
  case "$1" in
    --work) WORK=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --skip-365) SKIP_365=1; shift ;;
    --only) ONLY=$2; shift 2 ;;
    --actions) ACTIONS=$2; shift 2 ;;
    *) echo "usage: $0 [--work DIR] [--runs N] [--skip-365] [--only 30|365-slurm|365-local|scaling] [--actions N]" >&2; exit 2 ;;
  esac
done
# shellcheck source=benches/timing.sh
. "$REPO/benches/timing.sh"

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  log "building cairn (release)"
  (cd "$REPO" && cargo build --release --bin cairn)
fi
CAIRN=$REPO/target/release/cairn
"$REPO"/.ci/services/slurm.sh start
rm -rf "$WORK"; mkdir -p "$WORK"
want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }
log "load: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; work dir on $(df -T "$WORK" | awk 'NR==2 {print $2}')"

# cold DAYS STATIONS EXECUTOR: seconds of one cold build of a fresh copy,
# in a directory of its own: deleting the last one first would slow the
# file creations of the build timed (ext4 looks for recently deleted
# inodes for minutes after a large rm -rf).
cold() {
  local dir
  dir=$(mktemp -d "$WORK/p-$1x$2-$3.XXXX")
  sh "$REPO"/fixtures/podcast/generate "$dir" "$1" "$2" >/dev/null
  local start; start=$(now)
  (cd "$dir" && "$CAIRN" build --executor "$3" >/dev/null 2>&1)
  since "$start"
}

# submitted_since N: Slurm jobs submitted since the log held N (slurmctld log).
submitted_since() {
  grep -c "_slurm_rpc_submit_batch_job" /var/log/slurm/slurmctld.log | awk -v before="$1" '{print $1 - before}'
}

echo "| measure | local (s) | slurm (s) | ratio / note |"
echo "| --- | --- | --- | --- |"

if want 30; then
log "30x30 cold, $RUNS runs each"
L=(); S=()
for _ in $(seq "$RUNS"); do L+=("$(cold 30 30 local)"); S+=("$(cold 30 30 slurm)"); done
log "30x30 local: ${L[*]}; slurm: ${S[*]}"
l=$(printf '%s\n' "${L[@]}" | median); s=$(printf '%s\n' "${S[@]}" | median)
echo "| 30x30 cold (1830 actions) | $l | $s | $(echo "scale=2; $s / $l" | bc)x (goal <= 3x) |"
fi

if [ "$ONLY" = 365-slurm ]; then
  before=$(submitted_since 0)
  s=$(cold 365 30 slurm)
  echo "| 365x30 cold through Slurm (22,265 actions) | | $s | $(submitted_since "$before") Slurm jobs |"
fi
if [ "$ONLY" = 365-local ]; then
  echo "| 365x30 cold locally (22,265 actions) | $(cold 365 30 local) | | |"
fi

if [ "$ONLY" = all ] && [ "$SKIP_365" = 0 ]; then
  log "365x30 cold, once each"
  before=$(submitted_since 0)
  s=$(cold 365 30 slurm)
  workers=$(submitted_since "$before")
  l=$(cold 365 30 local)
  per=$(echo "scale=2; ($s - $l) * 1000 / 22265" | bc)
  echo "| 365x30 cold (22,265 actions) | $l | $s | +$per ms per action; $workers Slurm jobs (workers, default batch) |"
fi

want scaling || { log "load: $(cut -d' ' -f1-3 /proc/loadavg)"; exit 0; }
# The bytes of zeros whose sha256 takes ~200 ms here (the median of 3).
calibrate() {
  local bytes=100000000 start t
  local times=()
  for _ in 1 2 3; do
    start=$(now)
    head -c "$bytes" /dev/zero | sha256sum >/dev/null
    times+=("$(since "$start")")
  done
  t=$(printf '%s\n' "${times[@]}" | median)
  echo "$bytes * 0.2 / $t" | bc
}
BYTES=$(calibrate)
log "scaling: $ACTIONS CPU-bound actions (sha256 of $BYTES bytes, ~200 ms each), 1 vs 2 nodes"
scaling() {
  local dir=$WORK/cpu-$1
  rm -rf "$dir"; mkdir -p "$dir"
  local values
  values=$(seq -s '", "' 1 "$ACTIONS")
  cat > "$dir/cairn.toml" <<TOML
[executor]
kind = "slurm"
[datasets.h]
[dimensions.n]
values = ["$values"]
[jobs.h]
outputs = ["h/n={n}"]
run = ["sh", "-c", "head -c $BYTES /dev/zero | sha256sum > \\"\$CAIRN_OUT/sum\\"; echo \$CAIRN_OUTPUT_REF_0 >> \\"\$CAIRN_OUT/sum\\""]
TOML
  local start; start=$(now)
  (cd "$dir" && "$CAIRN" build >/dev/null 2>&1) || { log "the $1-node build failed: see $dir"; exit 1; }
  since "$start"
}
# n2 comes back whatever happens.
trap 'scontrol update nodename=n2 state=resume >/dev/null 2>&1 || true' EXIT
two=$(scaling two)
scontrol update nodename=n2 state=drain reason=bench-1-node
one=$(scaling one)
scontrol update nodename=n2 state=resume
echo "| $ACTIONS CPU-bound actions (~200 ms each) | 1 node: $one | 2 nodes: $two | $(echo "scale=2; $one / $two" | bc)x from 1 to 2 nodes (goal >= 1.7x) |"
log "load: $(cut -d' ' -f1-3 /proc/loadavg)"
