#!/usr/bin/env bash
# The end-to-end benchmark: cairn side by side with ninja, GNU make and a
# plain shell baseline on the podcast workload, the graph shapes of issue 27
# (a deep chain, a wide fan-in, a lattice, one-line jobs, a loaded machine)
# against ninja and the shell floor, plus the scale benchmarks
# (1,000,000-partition planning, `cairn log --json`, CAS ingest). Rewrites
# the blocks of docs/benchmarks.md it generates (between `<!-- compare.sh:
# NAME -->` and `<!-- /compare.sh: NAME -->`): the machine, the podcast and
# scale tables (when this run measured them), the shapes table (likewise)
# and the notes (benches/e2e/notes.md). Everything outside the markers
# (the serve, remote cache and Slurm sections) is kept as it is.
#
#   bash benches/compare.sh                # the whole run (about 30 minutes on the 2-core VM)
#   bash benches/compare.sh --quick        # 2 runs per case, no 365x30, no 1M, small shapes (a smoke test)
#   bash benches/compare.sh --shapes-only  # only the shapes (about 15 minutes)
#
# Options (or environment variables):
#   --runs N          timed runs per case (RUNS, default 5)
#   --large-cold N    runs of the 365x30 cold builds (LARGE_COLD_RUNS, default 1:
#                     each takes minutes)
#   --sizes "A B"     workloads DAYSxSTATIONS (SIZES, default "30x30 365x30")
#   --scale-runs N    timed runs of each scale case (SCALE_RUNS, default 5)
#   --skip-scale      skip the 1M-partition, log and CAS benchmarks
#   --shapes "A B"    the shape cases to run (SHAPES, default all: chain
#                     chain-loaded fanin lattice oneline-30x30 oneline-365x30
#                     podcast-loaded syncs)
#   --shape-runs N    timed runs of each shape case (SHAPE_RUNS, default 3;
#                     oneline-365x30: LARGE_COLD_RUNS)
#   --shapes-only     only the shapes: no podcast workloads, no scale
#   --no-shapes       no shapes
#   --append          keep the rows of earlier runs in WORK/results.tsv (a run
#                     split in parts, e.g. across quiet windows: a later row of
#                     the same case, size and tool replaces the earlier one)
#   --work DIR        scratch directory (BENCH_DIR, default target/bench)
#   --no-doc          print the results, leave docs/benchmarks.md alone
#
# Everything runs at -j <cores> (nproc) for every tool. Timings are
# wall-clock medians with min and max, measured by hyperfine; peak RSS is GNU
# time's %M (the largest process of the tree); CPU is hyperfine's mean user +
# system time of the whole process tree. Before a cold build the previous
# outputs (and cairn's store, ninja's log) are renamed into a trash directory
# rather than deleted, and the trash is deleted at the end: on this kind of
# file system deleting thousands of files just before a measurement slows the
# next inode allocations for minutes, which would blur every cold number.
# "Loaded" cases run `stress-ng --cpu 2` beside each tool's timed runs
# (started before them, stopped by its pid after them, the same for every
# tool).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
LARGE_COLD_RUNS=${LARGE_COLD_RUNS:-1}
SCALE_RUNS=${SCALE_RUNS:-5}
SIZES=${SIZES:-"30x30 365x30"}
SCALE=${SCALE:-1}
SHAPE_RUNS=${SHAPE_RUNS:-3}
ALL_SHAPES="chain chain-loaded fanin lattice oneline-30x30 oneline-365x30 podcast-loaded syncs"
SHAPES=${SHAPES-$ALL_SHAPES}
CHAIN_N=${CHAIN_N:-1000}
FANIN_N=${FANIN_N:-10000}
LATTICE_N=${LATTICE_N:-100}
APPEND=0
WORK=${BENCH_DIR:-$REPO/target/bench}
DOC=${DOC:-$REPO/docs/benchmarks.md}
WRITE_DOC=1
while [ $# -gt 0 ]; do
    case $1 in
        --quick)
            RUNS=2; SIZES="30x30"; SCALE=0; SHAPE_RUNS=2
            CHAIN_N=100; FANIN_N=1000; LATTICE_N=20
            SHAPES=${SHAPES/oneline-365x30/} ;;
        --shapes) SHAPES=$2; shift ;;
        --shape-runs) SHAPE_RUNS=$2; shift ;;
        --shapes-only) SIZES=""; SCALE=0 ;;
        --no-shapes) SHAPES="" ;;
        --append) APPEND=1 ;;
        --runs) RUNS=$2; shift ;;
        --large-cold) LARGE_COLD_RUNS=$2; shift ;;
        --sizes) SIZES=$2; shift ;;
        --skip-scale) SCALE=0 ;;
        --scale-runs) SCALE_RUNS=$2; shift ;;
        --work) WORK=$2; shift ;;
        --no-doc) WRITE_DOC=0 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for c in $SHAPES; do
    case " $ALL_SHAPES " in *" $c "*) ;; *) echo "compare.sh: unknown shape case $c (one of: $ALL_SHAPES)" >&2; exit 2 ;; esac
done
CORES=$(nproc)
export LC_ALL=C

log() { printf '\n== %s\n' "$*" >&2; }

# Sets `build` (the cold build command at -j CORES) and `reset` (what is
# moved to the trash before a cold run) for tool $1, whose outputs are in
# directory $2 (cairn's are always data/ and .cairn).
tool_commands() {
    case $1 in
        cairn) build="$CAIRN build -j $CORES"; reset="$STASH data .cairn" ;;
        make) build="make -s -j $CORES"; reset="$STASH $2" ;;
        ninja) build="ninja -j $CORES"; reset="$STASH $2 .ninja_log .ninja_deps" ;;
        shell) build="sh shell-build $CORES"; reset="$STASH $2" ;;
    esac
}

# --- tools -------------------------------------------------------------------
need_apt=()
command -v ninja >/dev/null || need_apt+=(ninja-build)
command -v make >/dev/null || need_apt+=(make)
[ -x /usr/bin/time ] || need_apt+=(time)
command -v hyperfine >/dev/null || need_apt+=(hyperfine)
command -v jq >/dev/null || need_apt+=(jq)
command -v b3sum >/dev/null || need_apt+=(b3sum)
command -v python3 >/dev/null || need_apt+=(python3)
if [ -n "$SHAPES" ]; then
    command -v stress-ng >/dev/null || need_apt+=(stress-ng)
    command -v strace >/dev/null || need_apt+=(strace)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]}"
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v b3sum >/dev/null || cargo install b3sum
command -v hyperfine >/dev/null || cargo install hyperfine

log "building cairn (release)"
(cd "$REPO" && cargo build --release --bin cairn --example bench-scale)
CAIRN=$REPO/target/release/cairn
SCALE_TOOL=$REPO/target/release/examples/bench-scale
GENERATE=$REPO/fixtures/podcast/generate
GEN_PEERS=$REPO/benches/e2e/gen-peers
GEN_SHAPES=$REPO/benches/e2e/gen-shapes

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
TRASH=$WORK/trash
RESULTS=$WORK/results.tsv
RUNS_LOG=$WORK/runs.tsv
mkdir -p "$TRASH"
if [ "$APPEND" = 0 ]; then : > "$RESULTS"; : > "$RUNS_LOG"; fi
touch "$RESULTS" "$RUNS_LOG"
# This run's conditions, for the report: its revision, its start, the load
# and the cases it measured.
REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
# (docs/benchmarks.md is what this script writes: its changes do not count.)
git -C "$REPO" status --porcelain -- . ":(exclude)docs/benchmarks.md" 2>/dev/null | grep -q . && REV="$REV + uncommitted changes"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u '+%Y-%m-%d %H:%M UTC')
# Moves its arguments (if present) into the trash directory.
STASH=$WORK/stash
cat > "$STASH" <<EOF
#!/bin/sh
for p in "\$@"; do
    if [ -e "\$p" ]; then mv "\$p" "$TRASH/\$(date +%s%N)-\$\$-\$(basename "\$p")"; fi
done
EOF
chmod +x "$STASH"

# record CASE SIZE TOOL MEDIAN MIN MAX RSS_KB ACTIONS RUNS [CPU_S [DETAIL]]
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" \
        "${10:-}" "${11:-}" >> "$RESULTS"
}

# timed NAME RUNS PREPARE COMMAND: hyperfine in DIR; prints "median min max".
timed() {
    local name=$1 runs=$2 prepare=$3 command=$4 json=$WORK/json/$1.json
    mkdir -p "$WORK/json"
    local args=(--runs "$runs" --style basic --export-json "$json" --shell bash)
    [ -n "$prepare" ] && args+=(--prepare "$prepare")
    hyperfine "${args[@]}" "$command" >&2
    jq -r '.results[0] | "\(.median) \(.min) \(.max)"' "$json"
}

# timed_cpu NAME RUNS PREPARE COMMAND: as timed, and prints a fourth field,
# the mean user + system time of the command's whole process tree.
timed_cpu() {
    local json=$WORK/json/$1.json
    timed "$@" > /dev/null
    jq -r '.results[0] | "\(.median) \(.min) \(.max) \(.user + .system)"' "$json"
}

# peak_rss COMMAND: runs it once under GNU time, prints the max RSS in KiB.
peak_rss() {
    /usr/bin/time -f %M -o "$WORK/rss.txt" bash -c "$1" >/dev/null 2>&1
    tail -1 "$WORK/rss.txt"
}

# --- the podcast workloads ------------------------------------------------------
for size in $SIZES; do
    days=${size%x*}
    stations=${size#*x}
    base=$WORK/$size
    log "workload $size: $days days x $stations stations"
    for tool in cairn make ninja shell; do
        [ -d "$base/$tool" ] && "$STASH" "$base/$tool"
        mkdir -p "$base"
        "$GENERATE" "$base/$tool" "$days" "$stations"
        [ "$tool" = cairn ] || "$GEN_PEERS" "$base/$tool"
    done
    actions=$(( days * stations * 2 + days ))
    cold_runs=$RUNS
    [ "$size" = "30x30" ] || cold_runs=$LARGE_COLD_RUNS
    change_file=inputs/2024-01-05/S007.txt
    touch_file=inputs/2024-01-06/S008.txt
    [ "$days" -ge 6 ] || { change_file=inputs/2024-01-01/S001.txt; touch_file=$change_file; }

    for tool in shell ninja make cairn; do
        dir=$base/$tool
        tool_commands "$tool" out
        cd "$dir"
        log "$size $tool: cold build ($cold_runs runs)"
        : > "$WORK/cold-rss.txt"
        read -r med min max < <(timed "$size-$tool-cold" "$cold_runs" "$reset" \
            "/usr/bin/time -a -o $WORK/cold-rss.txt -f %M $build > $WORK/last.log 2>&1")
        rss=$(sort -n "$WORK/cold-rss.txt" | tail -1)
        record cold "$size" "$tool" "$med" "$min" "$max" "$rss" "$actions" "$cold_runs"
        [ "$tool" = shell ] && continue

        # Every tool's no-op starts a little over a second after its cold
        # build: cairn (like git) re-hashes a file modified within a second
        # of when its stat was recorded, since a write in the same clock tick
        # could leave the stat unchanged, and a no-op run right after a cold
        # build re-hashes every output (benches/e2e/notes.md measures that
        # case on its own). Waiting costs make and ninja nothing.
        sleep 1.1
        log "$size $tool: no-op rebuild"
        read -r med min max < <(timed "$size-$tool-noop" "$RUNS" "" "$build > /dev/null 2>&1")
        rss=$(peak_rss "$build")
        record noop "$size" "$tool" "$med" "$min" "$max" "$rss" 0 "$RUNS"
        if [ "$tool" = cairn ]; then
            # The first no-op after a build that ran jobs takes cairn's full
            # path (and records the up-to-date snapshot the later ones are
            # confirmed from): its own row, from the first timed run.
            first=$(jq '.results[0].times[0]' "$WORK/json/$size-$tool-noop.json")
            record noop-first "$size" "$tool" "$first" "$first" "$first" "" 0 1
        fi

        # Each change appends a line never seen before, so no run can reuse
        # an earlier result by content.
        change="echo ep\$(date +%s%N),4 >> $change_file"
        log "$size $tool: one input changed"
        read -r med min max < <(timed "$size-$tool-change" "$RUNS" "$change" "$build > /dev/null 2>&1")
        eval "$change"
        case $tool in
            cairn) n=$($build --json 2>/dev/null | tail -1 | jq .executed) ;;
            make) n=$(make -n -j "$CORES" | wc -l); $build >/dev/null 2>&1 ;;
            ninja) n=$(ninja -n -j "$CORES" | grep -c '^\[' || true); $build >/dev/null 2>&1 ;;
        esac
        record change "$size" "$tool" "$med" "$min" "$max" "" "$n" "$RUNS"

        log "$size $tool: one input touched"
        read -r med min max < <(timed "$size-$tool-touch" "$RUNS" "touch $touch_file" "$build > /dev/null 2>&1")
        touch "$touch_file"
        case $tool in
            cairn) n=$($build --json 2>/dev/null | tail -1 | jq .executed) ;;
            make) n=$(make -n -j "$CORES" | wc -l); $build >/dev/null 2>&1 ;;
            ninja) n=$(ninja -n -j "$CORES" | grep -c '^\[' || true); $build >/dev/null 2>&1 ;;
        esac
        record touch "$size" "$tool" "$med" "$min" "$max" "" "$n" "$RUNS"
    done
    # Same results from every tool (cairn's daily summaries against make's).
    for d in "$base/make/out/daily"/*; do
        date=${d##*/}
        cmp -s "$d/summary.csv" "$base/cairn/data/daily/date=$date/summary.csv" \
            || { echo "compare.sh: cairn and make disagree on daily $date" >&2; exit 1; }
    done
done

# --- the shapes of issue 27 --------------------------------------------------------
# Each case builds one graph cold with every tool, one tool after the other
# in the same run (the ratios are taken within it), and checks that every
# tool wrote the same files. benches/e2e/gen-shapes writes the graphs.
BURNER=
start_burners() {
    stress-ng --cpu 2 --timeout 1800 --quiet > /dev/null 2>&1 &
    BURNER=$!
    sleep 1
}
stop_burners() {
    kill -TERM "$BURNER" 2> /dev/null || true
    wait "$BURNER" 2> /dev/null || true
    BURNER=
}
trap '[ -z "$BURNER" ] || stop_burners' EXIT
trap 'exit 130' INT TERM

# cold_case CASE SIZE BASE RUNS LOADED ACTIONS TOOLS: the cold builds of
# BASE/<tool> for each tool; the outputs are data/ (out/ for the podcast
# peers, whose tools write there).
cold_case() {
    local case=$1 size=$2 base=$3 runs=$4 loaded=$5 actions=$6 tools=$7 tool build reset out
    for tool in $tools; do
        out=data
        [ -f "$base/$tool/waves/raw.dirs" ] && out=out   # gen-peers' podcast peers
        tool_commands "$tool" "$out"
        cd "$base/$tool"
        log "$case $size $tool: cold build ($runs runs${loaded:+, stress-ng --cpu 2 beside it})"
        [ -n "$loaded" ] && start_burners
        read -r med min max cpu < <(timed_cpu "$case-$size-$tool" "$runs" "$reset" "$build > $WORK/last.log 2>&1")
        [ -n "$loaded" ] && stop_burners
        record "$case" "$size" "$tool" "$med" "$min" "$max" "" "$actions" "$runs" "$cpu"
    done
}

# same_data BASE TOOLS: every tool's data/ holds the same files as cairn's.
same_data() {
    local base=$1 tool
    for tool in $2; do
        [ "$tool" = cairn ] && continue
        diff -rq "$base/cairn/data" "$base/$tool/data" > /dev/null \
            || { echo "compare.sh: cairn and $tool wrote different data in $base" >&2; exit 1; }
    done
}

# shape_workload NAME GEN-ARGS...: fresh copies of a shape for every tool
# in $WORK/shapes/NAME; prints the number of actions.
shape_workload() {
    local name=$1 base=$WORK/shapes/$1 tool n=
    shift
    [ -d "$base" ] && "$STASH" "$base"
    mkdir -p "$base"
    for tool in shell ninja cairn; do n=$("$GEN_SHAPES" "$1" "$base/$tool" "${@:2}"); done
    sync
    echo "$n"
}

for c in $SHAPES; do
    case $c in
        chain | chain-loaded)
            n=$(shape_workload "$c" chain "$CHAIN_N")
            cold_case "$c" "$CHAIN_N" "$WORK/shapes/$c" "$SHAPE_RUNS" "$([ "$c" = chain ] || echo 1)" "$n" "shell ninja cairn"
            same_data "$WORK/shapes/$c" "shell ninja" ;;
        fanin)
            n=$(shape_workload "$c" fanin "$FANIN_N")
            cold_case "$c" "$FANIN_N" "$WORK/shapes/$c" "$SHAPE_RUNS" "" "$n" "shell ninja cairn"
            same_data "$WORK/shapes/$c" "shell ninja" ;;
        lattice)
            n=$(shape_workload "$c" lattice "$LATTICE_N")
            cold_case "$c" "${LATTICE_N}x$LATTICE_N" "$WORK/shapes/$c" "$SHAPE_RUNS" "" "$n" "shell ninja cairn"
            same_data "$WORK/shapes/$c" "shell ninja" ;;
        oneline-*)
            size=${c#oneline-}
            runs=$SHAPE_RUNS
            [ "$size" = 30x30 ] || runs=$LARGE_COLD_RUNS
            n=$(shape_workload "$c" stages "${size%x*}" "${size#*x}")
            cold_case oneline "$size" "$WORK/shapes/$c" "$runs" "" "$n" "shell ninja cairn"
            same_data "$WORK/shapes/$c" "shell ninja" ;;
        podcast-loaded)
            base=$WORK/shapes/$c
            [ -d "$base" ] && "$STASH" "$base"
            mkdir -p "$base"
            for tool in cairn make ninja shell; do
                "$GENERATE" "$base/$tool" 30 30
                [ "$tool" = cairn ] || "$GEN_PEERS" "$base/$tool"
            done
            sync
            cold_case podcast-loaded 30x30 "$base" "$SHAPE_RUNS" 1 1830 "shell ninja make cairn"
            for d in "$base/make/out/daily"/*; do
                cmp -s "$d/summary.csv" "$base/cairn/data/daily/date=${d##*/}/summary.csv" \
                    || { echo "compare.sh: cairn and make disagree on daily ${d##*/}" >&2; exit 1; }
            done ;;
        syncs)
            # One untimed cold build: the sync calls per action. Counted by
            # perf's syscall tracepoints where it may read them: `strace -f`
            # stops every fork and exec of the build's 3,660 processes,
            # which made the build 5x slower and so made 5x more group
            # commits (0.47 per action under strace, 0.06 under perf, the
            # same binary). strace is the fallback.
            base=$WORK/shapes/$c
            n=$(shape_workload "$c" stages 30 30)
            cd "$base/cairn"
            syncs="fsync fdatasync syncfs sync_file_range"
            events=$(printf 'syscalls:sys_enter_%s,' $syncs)
            if perf stat -x, -e "${events%,}" -o "$WORK/syncs.txt" true 2>/dev/null; then
                log "syncs: one cold 30x30 build with one-line jobs under perf stat (syscall tracepoints)"
                perf stat -x, -e "${events%,}" -o "$WORK/syncs.txt" \
                    "$CAIRN" build -j "$CORES" > "$WORK/last.log" 2>&1
                detail=$(awk -F, '$3 ~ /sys_enter_/ { sub(/.*sys_enter_/, "", $3); printf "%s%s=%s", sep, $3, $1; sep = "," }' "$WORK/syncs.txt")
                total=$(awk -F, '$3 ~ /sys_enter_/ { t += $1 } END { print t + 0 }' "$WORK/syncs.txt")
            else
                log "syncs: one cold 30x30 build with one-line jobs under strace -f -c (no perf tracepoints here: the count is inflated)"
                strace -f -c -o "$WORK/syncs.txt" -e trace=fsync,fdatasync,syncfs,sync_file_range \
                    "$CAIRN" build -j "$CORES" > "$WORK/last.log" 2>&1
                detail=$(awk '$NF ~ /^(fsync|fdatasync|syncfs|sync_file_range)$/ { printf "%s%s=%s", sep, $NF, $4; sep = "," }' "$WORK/syncs.txt")
                total=$(awk '$NF ~ /^(fsync|fdatasync|syncfs|sync_file_range)$/ { t += $4 } END { print t + 0 }' "$WORK/syncs.txt")
            fi
            record syncs 30x30 cairn "$total" "$total" "$total" "" "$n" 1 "" "$detail" ;;
    esac
done

# --- scale: 1,000,000 partitions, the log, the CAS ---------------------------------
if [ "$SCALE" = 1 ]; then
    big=$WORK/1m
    log "scale workload: 365 days x 1370 stations (1,000,465 partitions)"
    [ -d "$big" ] && "$STASH" "$big"
    "$GENERATE" "$big" 365 1370
    # The generator leaves 2 GB of new files to be written back; no timed
    # run should pay for that writeback (the first dry run of an unsynced
    # tree measured 2.7 s and the next two 3.6 and 4.3 s).
    sync
    cd "$big"
    log "1M dry run, empty store"
    read -r med min max < <(timed "1m-dry-empty" "$SCALE_RUNS" "" "$CAIRN build --dry-run > /dev/null 2>&1")
    rss=$(peak_rss "$CAIRN build --dry-run")
    record dry-empty 1m cairn "$med" "$min" "$max" "$rss" 1000465 "$SCALE_RUNS"

    log "1M: populating the store through the library (every partition built)"
    /usr/bin/time -f "populate: %e s, %M KiB" "$SCALE_TOOL" populate "$big/cairn.toml" >&2
    # A populated store has no up-to-date snapshot (no build recorded one):
    # the dry run evaluates every action against the catalog.
    log "1M dry run, all built, full check (no snapshot)"
    "$CAIRN" build --dry-run --json 2>/dev/null | tail -1 > "$WORK/dry.json"
    read -r med min max < <(timed "1m-dry-built-full" "$SCALE_RUNS" "" "$CAIRN build --dry-run > /dev/null 2>&1")
    rss=$(peak_rss "$CAIRN build --dry-run")
    record dry-built-full 1m cairn "$med" "$min" "$max" "$rss" "$(jq .executed "$WORK/dry.json")" "$SCALE_RUNS"
    # The first real no-op build: the full path, which records the events
    # of a no-op build and the up-to-date snapshot.
    log "1M first no-op build (full path, records the snapshot)"
    /usr/bin/time -f "%e %M" -o "$WORK/first.txt" "$CAIRN" build --json 2>/dev/null | tail -1 > "$WORK/first.json"
    read -r first rss < <(tail -1 "$WORK/first.txt")
    record noop-first 1m cairn "$first" "$first" "$first" "$rss" "$(jq .executed "$WORK/first.json")" 1
    log "1M no-op check, all built, from the snapshot"
    "$CAIRN" build --dry-run --json 2>/dev/null | tail -1 > "$WORK/dry.json"
    read -r med min max < <(timed "1m-dry-built" "$SCALE_RUNS" "" "$CAIRN build --dry-run > /dev/null 2>&1")
    rss=$(peak_rss "$CAIRN build --dry-run")
    record dry-built 1m cairn "$med" "$min" "$max" "$rss" "$(jq .executed "$WORK/dry.json")" "$SCALE_RUNS"
    log "1M no-op build from the snapshot"
    read -r med min max < <(timed "1m-noop" "$SCALE_RUNS" "" "$CAIRN build > /dev/null 2>&1")
    rss=$(peak_rss "$CAIRN build")
    record noop 1m cairn "$med" "$min" "$max" "$rss" 0 "$SCALE_RUNS"

    # Issue 27: one input changed after a full build (the snapshot presumes
    # every action it does not concern; 3 run), then the first no-op after
    # it (confirmed from the snapshot that build patched). Another input
    # each run.
    log "1M one input changed after a full build, and the first no-op after it"
    : > "$WORK/1m-change.txt"
    : > "$WORK/1m-after.txt"
    for run in $(seq 1 "$SCALE_RUNS"); do
        echo "ep9999,4" >> "$big/inputs/2024-06-01/$(printf 'S%04d' $((run * 7))).txt"
        /usr/bin/time -f "%e %M" -a -o "$WORK/1m-change.txt" "$CAIRN" build --json 2>/dev/null | tail -1 > "$WORK/change.json"
        /usr/bin/time -f "%e %M" -a -o "$WORK/1m-after.txt" "$CAIRN" build > /dev/null 2>&1
    done
    # median min max of the seconds, and the largest peak RSS.
    time_stats() { grep -E '^[0-9.]+ [0-9]+$' "$1" | sort -n | awk '{ t[NR] = $1; if ($2 > r) r = $2 } END { print (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2, t[1], t[NR], r }'; }
    read -r med min max rss < <(time_stats "$WORK/1m-change.txt")
    record change 1m cairn "$med" "$min" "$max" "$rss" "$(jq .executed "$WORK/change.json")" "$SCALE_RUNS"
    read -r med min max rss < <(time_stats "$WORK/1m-after.txt")
    record noop-after-change 1m cairn "$med" "$min" "$max" "$rss" 0 "$SCALE_RUNS"

    log "cairn log --json of 1,000,000 events"
    read -r med min max < <(timed "1m-log" "$SCALE_RUNS" "" "$CAIRN log --json --until 1000000 > /dev/null")
    rss=$(peak_rss "$CAIRN log --json --until 1000000")
    events=$("$CAIRN" log --json --until 1000000 | wc -l)
    record log 1m cairn "$med" "$min" "$max" "$rss" "$events" "$SCALE_RUNS"

    log "CAS ingest of 1 GiB vs b3sum"
    blob=$WORK/blob-1g
    output=$WORK/output-1g
    head -c 1073741824 /dev/urandom > "$blob"
    # Ingest adopts the file it stores (hard-links it into the store and
    # makes it read-only), so every timed run, b3sum's included, gets a
    # fresh copy of $blob, as a job's output: in the page cache and not yet
    # written back (a --sync ingest pays for that, as a build's sync does).
    # The sync before the copy flushes what earlier runs left dirty.
    fresh="rm -f $output && sync && cp --reflink=never $blob $output"
    read -r med min max < <(timed "b3sum" "$SCALE_RUNS" "$fresh" "b3sum $output > /dev/null")
    record b3sum 1g b3sum "$med" "$min" "$max" "" "" "$SCALE_RUNS"
    read -r med min max < <(timed "cas-ingest" "$SCALE_RUNS" "$STASH $WORK/cas-store && $SCALE_TOOL ingest --init $WORK/cas-store $output && $fresh" \
        "$SCALE_TOOL ingest $WORK/cas-store $output > /dev/null")
    record ingest 1g cairn "$med" "$min" "$max" "" "" "$SCALE_RUNS"
    read -r med min max < <(timed "cas-ingest-sync" "$SCALE_RUNS" "$STASH $WORK/cas-store && $SCALE_TOOL ingest --init $WORK/cas-store $output && $fresh" \
        "$SCALE_TOOL ingest --sync $WORK/cas-store $output > /dev/null")
    record ingest-sync 1g cairn "$med" "$min" "$max" "" "" "$SCALE_RUNS"
    "$STASH" "$blob" "$output"
fi

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
END=$(date -u '+%H:%M UTC')
log "removing the trash"
rm -rf "$TRASH"

# --- the report ------------------------------------------------------------------
# The blocks of docs/benchmarks.md this run measured; the machine's and the
# notes' are rewritten every time, the others kept unless measured here.
blocks="machine notes"
# The notes block is benches/e2e/notes.md. Text written into the doc's
# block by hand would be lost by rewriting it (604 lines once were): keep
# the doc's block as it is then, and say so.
if [ "$WRITE_DOC" = 1 ] && [ -f "$DOC" ] && grep -qx '<!-- compare\.sh: notes -->' "$DOC" && ! sed -n '/^<!-- compare\.sh: notes -->$/,/^<!-- \/compare\.sh: notes -->$/p' "$DOC" \
        | sed '1d;$d' | cmp -s - "$REPO/benches/e2e/notes.md"; then
    log "the notes block of $DOC differs from benches/e2e/notes.md: kept as it is (move its text into notes.md, then run again to rewrite it)"
    blocks="machine"
fi
if [ -n "$SIZES" ] || [ "$SCALE" = 1 ]; then
    blocks="$blocks podcast"
    printf 'podcast\t%s\t%s\t%s\t%s\t%s\n' "$REV" "$START" "$LOAD_START" "$LOAD_END" "$END" >> "$RUNS_LOG"
fi
if [ -n "$SHAPES" ]; then
    blocks="$blocks shapes"
    printf 'shapes\t%s\t%s\t%s\t%s\t%s (%s)\n' "$REV" "$START" "$LOAD_START" "$LOAD_END" "$END" "$(echo $SHAPES)" >> "$RUNS_LOG"
fi
cd "$REPO"
report=$WORK/benchmarks.md
bash "$REPO/benches/e2e/report" "$RESULTS" "$CORES" "$RUNS" "$LARGE_COLD_RUNS" "$SCALE_RUNS" "$SHAPE_RUNS" > "$report"
if [ "$WRITE_DOC" = 1 ]; then
    # shellcheck disable=SC2086 # one block name per word
    python3 "$REPO/benches/e2e/merge-blocks" "$DOC" "$report" $blocks > "$WORK/merged.md"
    mv "$WORK/merged.md" "$DOC"
    log "wrote the blocks $blocks of $DOC"
else
    cat "$report"
fi
