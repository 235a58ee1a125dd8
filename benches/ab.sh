#!/usr/bin/env bash
# Interleaved A/B of two cairn binaries on the podcast workload: each run of
# each case alternates the two binaries (ABBA order), so a machine that gets
# busier or a file system that slows down weighs on both alike. This is the
# way to show that a change did not make cairn slower: compare.sh compares
# cairn with other tools, and two compare.sh runs minutes apart differ by
# more than most changes do.
#
#   bash benches/ab.sh OLD_CAIRN NEW_CAIRN [--runs N] [--size DAYSxSTATIONS] [--work DIR]
#                      [--old-generate PATH]
#
# --old-generate: the fixture generator for the old side, when the old
# binary cannot read today's fixture (e.g. `git archive OLD fixtures/podcast`
# unpacked somewhere); both sides then build the same partitions with each
# version's own graph file.
#
# Cases: cold build (data and store moved aside before each run), no-op,
# one input touched (0 actions), one input changed (3 actions). Prints a
# Markdown table of medians [min-max] and new/old, with the machine's load
# and file system, on stdout.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 2 ] || { sed -n 2,15p "$0"; exit 2; }
OLD=$(realpath "$1")
NEW=$(realpath "$2")
shift 2
RUNS=5
SIZE=30x30
WORK=$REPO/target/ab
while [ $# -gt 0 ]; do
    case $1 in
        --runs) RUNS=$2; shift ;;
        --size) SIZE=$2; shift ;;
        --work) WORK=$2; shift ;;
        --old-generate) OLD_GENERATE=$(realpath "$2"); shift ;;
        *) echo "ab.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
export LC_ALL=C
days=${SIZE%x*}
stations=${SIZE#*x}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
TRASH=$WORK/trash
mkdir -p "$TRASH"
stash() { for p in "$@"; do [ -e "$p" ] && mv "$p" "$TRASH/$(date +%s%N)-$(basename "$p")"; done; return 0; }

for side in old new; do
    [ -d "$WORK/$side" ] && stash "$WORK/$side"
    generate=$REPO/fixtures/podcast/generate
    [ "$side" = old ] && generate=${OLD_GENERATE:-$generate}
    "$generate" "$WORK/$side" "$days" "$stations" > /dev/null
done
sync
change_file=inputs/2024-01-05/S007.txt
touch_file=inputs/2024-01-06/S008.txt
[ "$days" -ge 6 ] || { change_file=inputs/2024-01-01/S001.txt; touch_file=$change_file; }

# run SIDE: one build in SIDE's tree; prints the wall time in ms.
run() {
    local bin=$OLD
    [ "$1" = new ] && bin=$NEW
    cd "$WORK/$1"
    local start=$EPOCHREALTIME
    "$bin" build -j "$(nproc)" > /dev/null 2>&1 || { echo "ab.sh: build failed in $WORK/$1" >&2; exit 1; }
    local end=$EPOCHREALTIME
    echo "$(( (${end/./} - ${start/./}) / 1000 ))"
}

declare -A times
# measure CASE PREPARE: RUNS rounds, ABBA order; PREPARE runs in the tree
# before each timed build (not timed).
measure() {
    local case=$1 prepare=$2 round side
    for round in $(seq "$RUNS"); do
        local order="old new"
        [ $((round % 2)) = 0 ] && order="new old"
        for side in $order; do
            (cd "$WORK/$side" && eval "$prepare")
            times[$case-$side]+="$(run "$side") "
        done
    done
}

# Build both once so the incremental cases start from a built tree.
run old > /dev/null
run new > /dev/null
sleep 1.1
measure cold 'aside=$TRASH/$(date +%s%N); mkdir "$aside"; mv data .cairn "$aside/"'
# The first no-op after a cold build takes the full path: not measured.
sleep 1.1
run old > /dev/null
run new > /dev/null
measure noop ':'
measure touch "touch $touch_file"
measure change "echo ep\$(date +%s%N),4 >> $change_file"

# stats "t1 t2 ...": median min max (ms)
stats() { tr ' ' '\n' <<< "$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)], a[1], a[NR]}'; }
fmt() { awk -v ms="$1" 'BEGIN { if (ms >= 1000) printf "%.2f s", ms / 1000; else printf "%d ms", ms }'; }

load=$(cut -d' ' -f1-3 /proc/loadavg)
fs=$(df -T "$WORK" | awk 'NR==2 {print $2}')
echo "Interleaved A/B, $SIZE podcast workload, $RUNS runs per case and binary, -j $(nproc);"
echo "load average at the end: $load; file system: $fs ($WORK)."
echo "old: $OLD"
echo "new: $NEW"
echo
echo "| case | old | new | new / old (medians) |"
echo "| --- | --- | --- | --- |"
for case in cold noop touch change; do
    read -r om omin omax < <(stats "${times[$case-old]}")
    read -r nm nmin nmax < <(stats "${times[$case-new]}")
    ratio=$(awk -v a="$nm" -v b="$om" 'BEGIN { printf "%.2f", a / b }')
    echo "| $case | $(fmt "$om") [$(fmt "$omin")–$(fmt "$omax")] | $(fmt "$nm") [$(fmt "$nmin")–$(fmt "$nmax")] | $ratio |"
done
rm -rf "$TRASH" &
