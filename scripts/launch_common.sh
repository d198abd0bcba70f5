# Sourced by launch_hostfile.sh and slurm.sbatch: what both launchers do the same way.
# $H200_ROOT must name the repository (the binary, configs/ and env.sh live there).

# One line on stderr and exit 2, like the binary's own bad-input errors.
h200_die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

# mpirun as root (containers, CI), NVLink multicast off, and NCCL_PROFILE=<name>, which loads
# configs/nccl/<name>.env before the user's own NCCL_* variables are forwarded.
h200_environment() {
  . "$H200_ROOT/scripts/env.sh"
  if [ -n "${NCCL_PROFILE:-}" ]; then
    local profile="$H200_ROOT/configs/nccl/${NCCL_PROFILE}.env"
    [ -f "$profile" ] || h200_die "NCCL_PROFILE=$NCCL_PROFILE: no $profile (profiles: $(cd "$H200_ROOT/configs/nccl" && ls | sed 's/\.env$//' | tr '\n' ' '))"
    set -a; . "$profile"; set +a
  fi
  [ -x "$H200_ROOT/target/release/h200-mpibench" ] || h200_die "no $H200_ROOT/target/release/h200-mpibench: build it (scripts/setup.sh)"
}

# mpirun's -x for every NCCL_* variable of this shell (srun passes the whole environment).
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
