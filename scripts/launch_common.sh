# Sourced by launch_hostfile.sh and slurm.sbatch: what both launchers do the same way.
# $H200_ROOT must name the repository (the binary, configs/ and env.sh live there), and
# $H200_SCRIPT the launcher's name for its error lines.

# One line on stderr and exit 2, like the binary's own bad-input errors.
h200_die() {
  echo "$H200_SCRIPT: error: $*" >&2
  exit 2
}

# mpirun as root (containers, CI), NVLink multicast off unless the user sets it, and
# NCCL_PROFILE=<name>, which loads configs/nccl/<name>.env under the user's own NCCL_*
# variables (those the user set keep their values).
h200_environment() {
  local mine
  mine=$(export -p | sed -n 's/^declare -x \(NCCL_\)/export \1/p')
  if [ -n "${NCCL_PROFILE:-}" ]; then
    local profile="$H200_ROOT/configs/nccl/${NCCL_PROFILE}.env"
    [ -f "$profile" ] || h200_die "NCCL_PROFILE=$NCCL_PROFILE: no $profile (profiles: $(cd "$H200_ROOT/configs/nccl" && ls | sed 's/\.env$//' | tr '\n' ' '))"
    set -a; . "$profile"; set +a
    eval "$mine"
  fi
  . "$H200_ROOT/scripts/env.sh"
  [ -x "$H200_ROOT/target/release/h200-mpibench" ] || h200_die "no $H200_ROOT/target/release/h200-mpibench: build it (scripts/setup.sh)"
}

# mpirun's -x for every NCCL_* variable of this shell (srun passes the whole environment);
# use as ${H200_FORWARD[@]+"${H200_FORWARD[@]}"}, which set -u takes when it is empty.
h200_forward_nccl() {
  H200_FORWARD=()
  local v
  for v in $(compgen -e | grep '^NCCL_' || true); do H200_FORWARD+=(-x "$v"); done
}

# Prints the command, then becomes it.
h200_run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  exec "$@"
}
