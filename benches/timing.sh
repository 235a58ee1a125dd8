# Helpers shared by the benchmark scripts that time builds by hand
# (benches/remote_cache.sh, benches/slurm.sh); sourced, not run.

# log MESSAGE: a timestamped line on stderr.
log() { echo "[$(date -u +%T)] $*" >&2; }
# now: the time in seconds, with nanoseconds.
now() { date +%s.%N; }
# since START: seconds elapsed since START (a `now`).
since() { echo "$(now) - $1" | bc; }
# median: the median of the numbers on stdin, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
