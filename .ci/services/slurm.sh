#!/usr/bin/env bash
# A two-node Slurm on this host, on loopback, for the Slurm executor's tests
# (tests/slurm.rs, docs/slurm.md). No systemd, no cgroups: munged, slurmctld
# and two slurmd (n1, n2, one CPU each) run as daemons and are stopped by pid.
#
#   .ci/services/slurm.sh start    install if missing, start, wait until idle
#                                  (reuses a cluster that is already up)
#   .ci/services/slurm.sh start --by-tests   the same; when it started
#                                  slurmctld, marks it as the tests' ($MARK):
#                                  the tests stop it when the last of them
#                                  using it exits (tests/slurm.rs)
#   .ci/services/slurm.sh stop     scontrol shutdown, then kill what is left,
#                                  munged included
#   .ci/services/slurm.sh status   exit 0 when both nodes answer
#   .ci/services/slurm.sh kill-node N   kill slurmd -N N and the jobs it runs
#   .ci/services/slurm.sh start-node N  start slurmd -N N again
#
# Exit status 3 from start: the packages cannot be installed here (the tests
# then print SKIPPED and return).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK=/run/cairn-slurm-started-by-tests
TEMPLATE="$(cd "$(dirname "$0")" && pwd)/slurm-2node.conf.template"

installed() {
  command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 \
    && command -v sbatch >/dev/null 2>&1 && command -v munged >/dev/null 2>&1
}

install_packages() {
  installed && return 0
  command -v apt-get >/dev/null 2>&1 || return 3
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
     slurmctld slurmd slurm-client munge) >/dev/null 2>&1 || return 3
  installed || return 3
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

healthy() {
  pid_alive /run/slurmctld.pid && pid_alive /run/slurmd-n1.pid && pid_alive /run/slurmd-n2.pid \
    && [ "$(sinfo -h -o '%T' 2>/dev/null | sort -u | tr '\n' ' ')" = "idle " ] \
    || [ "$(sinfo -h -N -o '%T' 2>/dev/null | grep -c -E '^(idle|mixed|allocated|completing)$')" = 2 ]
}

start_munge() {
  if [ ! -f /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge /run/munge
  if ! pid_alive /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged
  fi
}

write_conf() {
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd/n1 /var/spool/slurmd/n2 /var/log/slurm
  local wanted
  wanted="$(sed "s/@HOSTNAME@/$(hostname)/g" "$TEMPLATE")"
  if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$wanted" ]; then
    printf '%s\n' "$wanted" > "$CONF"
  fi
}

start_node() {
  pid_alive "/run/slurmd-$1.pid" || slurmd -N "$1"
}

wait_idle() {
  for _ in $(seq 1 120); do
    local states
    states="$(sinfo -h -N -o '%N %T' 2>/dev/null || true)"
    if [ "$(printf '%s\n' "$states" | grep -c -E ' (idle|mixed|allocated)$' || true)" = 2 ]; then
      return 0
    fi
    # A node that came back after a kill may be left down: resume it.
    for node in n1 n2; do
      if printf '%s\n' "$states" | grep -q -E "^$node (down|drained|down\*|drained\*)"; then
        scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
      fi
    done
    sleep 0.5
  done
  echo "slurm: the nodes did not become idle: $(sinfo -N 2>&1)" >&2
  return 1
}

start() {
  install_packages || { echo "slurm: the packages cannot be installed here" >&2; exit 3; }
  start_munge
  write_conf
  if ! pid_alive /run/slurmctld.pid; then
    slurmctld -i
    if [ "${1:-}" = --by-tests ]; then touch "$MARK"; fi
  fi
  start_node n1
  start_node n2
  wait_idle
}

stop() {
  scontrol shutdown >/dev/null 2>&1 || true
  sleep 1
  for pidfile in /run/slurmd-n1.pid /run/slurmd-n2.pid /run/slurmctld.pid /run/munge/munged.pid; do
    if pid_alive "$pidfile"; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
  done
  rm -f "$MARK"
}

kill_node() {
  local node="$1" pid parent
  if pid_alive "/run/slurmd-$node.pid"; then
    kill -9 "$(cat "/run/slurmd-$node.pid")" 2>/dev/null || true
  fi
  # Its jobs: every process whose environment says it runs on the node
  # (Slurm sets SLURMD_NODENAME), and the slurmstepd above each.
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "SLURMD_NODENAME=$node"; then
      parent="$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null || true)"
      if [ -n "$parent" ] && grep -q slurmstepd "/proc/$parent/comm" 2>/dev/null; then
        kill -9 "$parent" 2>/dev/null || true
      fi
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop ;;
  status) installed && pid_alive /run/slurmctld.pid && sinfo -h -N -o '%N %T' ;;
  kill-node) kill_node "${2:?node}" ;;
  start-node) start_node "${2:?node}"; wait_idle ;;
  *) echo "usage: $0 start|stop|status|kill-node N|start-node N" >&2; exit 2 ;;
esac
