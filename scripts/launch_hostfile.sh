#!/usr/bin/env bash
# Starts h200-mpibench on the hosts of an Open MPI hostfile, GPUS_PER_HOST ranks (one per GPU)
# on each distinct host, from wherever you stand:
#   scripts/launch_hostfile.sh HOSTFILE GPUS_PER_HOST [h200-mpibench flags...]
# Hostfile lines as Open MPI reads them: `host [slots=N] [max_slots=N]`, `#` comments; a host
# named twice is one host. NCCL_PROFILE=infiniband (or any configs/nccl/<name>.env) loads a
# NCCL profile; every NCCL_* variable of this shell reaches every rank.
set -euo pipefail
H200_ROOT=$(cd "$(dirname "$0")/.." && pwd) H200_SCRIPT=launch_hostfile.sh
. "$H200_ROOT/scripts/launch_common.sh"
usage="usage: $0 HOSTFILE GPUS_PER_HOST [h200-mpibench flags...]"
[ $# -ge 2 ] || h200_die "$usage"
hostfile=$1 per_host=$2
shift 2
[ -f "$hostfile" ] || h200_die "hostfile '$hostfile': no such file ($usage)"
[ -r "$hostfile" ] || h200_die "hostfile '$hostfile': not readable"
[[ "$per_host" =~ ^[1-9][0-9]*$ ]] || h200_die "GPUS_PER_HOST '$per_host': must be a whole number of ranks per host, at least 1 ($usage)"
hostfile=$(realpath "$hostfile")
# Distinct hosts, and the first word Open MPI would not take (slots, slot, count, max_slots);
# a host's slots (summed over its lines, as Open MPI does) must hold GPUS_PER_HOST ranks where
# the file gives them.
{ read -r hosts; read -r bad; } < <(awk -v want="$per_host" '
  { sub(/#.*/, "") }
  NF == 0 { next }
  {
    if (!($1 in slots)) { order[++n] = $1; slots[$1] = 0 }
    for (i = 2; i <= NF; i++) {
      if ($i ~ /^(slots|slot|count)=[0-9]+$/) { split($i, kv, "="); slots[$1] += kv[2]; given[$1] = 1 }
      else if ($i !~ /^max[-_]slots=[0-9]+$/) { if (!bad) bad = "line " NR ": \047" $i "\047 is not slots=N or max_slots=N" }
    }
  }
  END {
    for (h = 1; h <= n && !bad; h++)
      if (given[order[h]] && slots[order[h]] < want) bad = order[h] " has slots=" slots[order[h]] ", fewer than GPUS_PER_HOST " want
    print n + 0; print (bad ? bad : "-")
  }' "$hostfile")
[ "$bad" = "-" ] || h200_die "hostfile $hostfile: $bad"
[ "$hosts" -gt 0 ] || h200_die "hostfile $hostfile names no host"
h200_environment
h200_forward_nccl
h200_run mpirun --hostfile "$hostfile" -np $((hosts * per_host)) --map-by "ppr:${per_host}:node" --bind-to none \
  ${H200_FORWARD[@]+"${H200_FORWARD[@]}"} "$H200_ROOT/target/release/h200-mpibench" "$@"
