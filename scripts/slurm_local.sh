#!/usr/bin/env bash
# A real one-node Slurm cluster on this host, for integration tests (Debian 12, as root, no systemd).
#   scripts/slurm_local.sh start   # install if missing, start munged + slurmctld + slurmd, wait for idle
#   scripts/slurm_local.sh stop    # cancel jobs, stop the daemons this script started
# State, logs and slurm.conf live in $SLURM_LOCAL_DIR (default /tmp/h200-slurm). /etc/slurm/slurm.conf
# is pointed at that slurm.conf, so plain sinfo/srun/sbatch work without SLURM_CONF.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/h200-slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)
die() { echo "slurm_local: $*" >&2; exit 1; }
# True when the pid file names a live process of that command (guards against stale pid files).
alive() { local p; p=$(cat "$2" 2>/dev/null) && [ -n "$p" ] && [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$1" ]; }
node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1; }

start() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  local t0=$SECONDS
  # libpmix-dev is needed at run time: Slurm's mpi_pmix plugin dlopens the unversioned
  # .../pmix2/lib/libpmix.so, which only the -dev package ships.
  if ! command -v slurmd >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null ||
     [ ! -e /usr/lib/x86_64-linux-gnu/pmix2/lib/libpmix.so ]; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge libpmix-dev; } >"/tmp/h200-slurm-apt.log" 2>&1 ||
      die "apt-get install failed, see /tmp/h200-slurm-apt.log"
  fi
  mkdir -p "$DIR/spool" "$DIR/state" /run/munge
  chown munge:munge /run/munge

  # Munge's postinst normally creates the key; make one if a previous cleanup removed it.
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi

  # CPUs=4 on a 2-core host: config_overrides makes slurmd trust the config instead of the
  # hardware, so 4 tasks fit without --overcommit. No cgroups (none delegated here), no slurmdbd:
  # exit codes come from sbatch --wait, scontrol (kept MinJobAge seconds) and the jobcomp file.
  local cpus mem tmp
  cpus=$(( $(nproc) > 4 ? $(nproc) : 4 ))
  mem=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) * 9 / 10 ))
  tmp=$(mktemp); chmod 644 "$tmp"
  cat >"$tmp" <<EOF
ClusterName=h200local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
InactiveLimit=0
KillWait=5
SchedulerParameters=batch_sched_delay=0
MailProg=/bin/true
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  local changed=0 up=0
  alive slurmctld "$DIR/slurmctld.pid" && up=1
  cmp -s "$tmp" "$CONF" && rm -f "$tmp" || { mv "$tmp" "$CONF"; changed=1; }
  export SLURM_CONF=$CONF

  if ! alive munged "$DIR/munged.pid" && ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid ||
      die "munged failed to start, see /var/log/munge/munged.log"
    # Copy munged's pid file so stop knows we own this one (a munged we found running is left alone).
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$DIR/munged.pid"
  fi
  # A controller that answers but is not ours (another state dir) would make the checks below lie.
  if ! alive slurmctld "$DIR/slurmctld.pid" && scontrol ping 2>/dev/null | grep -q UP; then
    die "another slurmctld already runs on $HOST; stop it first"
  fi
  # Leave a real, hand-written /etc/slurm/slurm.conf alone; replace only a link or nothing.
  if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
    mkdir -p /etc/slurm; ln -sfn "$CONF" /etc/slurm/slurm.conf
  fi
  # -c: start with no jobs recovered from an earlier run, so job ids and state are fresh.
  alive slurmctld "$DIR/slurmctld.pid" || /usr/sbin/slurmctld -c -f "$CONF" ||
    die "slurmctld failed to start, see $DIR/slurmctld.log"
  alive slurmd "$DIR/slurmd.pid" || /usr/sbin/slurmd -f "$CONF" ||
    die "slurmd failed to start, see $DIR/slurmd.log"
  # Daemons already up from an earlier start with a different config pick the new one up here.
  [ "$changed$up" != 11 ] || scontrol reconfigure >/dev/null || die "scontrol reconfigure failed"

  local st=""
  for _ in $(seq 300); do
    st=$(node_state)
    case $st in idle|mixed|allocated) break ;; esac
    sleep 0.1
  done
  case $st in idle|mixed|allocated) ;;
    *) die "node $HOST is '${st:-unreachable}' after 30 s, see $DIR/slurmd.log and $DIR/slurmctld.log" ;;
  esac
  echo "slurm_local: ready: node $HOST $st, $cpus CPUs, SLURM_CONF=$CONF ($((SECONDS - t0)) s)"
}

stop() {
  export SLURM_CONF=$CONF
  # slurmstepd outlives slurmd, so end the jobs first while slurmctld can still reach them.
  if alive slurmctld "$DIR/slurmctld.pid"; then
    squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.1; done
  fi
  # Each daemon takes ~2 s to exit, so signal all three at once and then wait.
  local d p pids=()
  for d in slurmd slurmctld munged; do
    if alive "$d" "$DIR/$d.pid"; then p=$(cat "$DIR/$d.pid"); kill "$p"; pids+=("$d:$p"); fi
  done
  for d in "${pids[@]}"; do
    for _ in $(seq 100); do [ -d /proc/"${d#*:}" ] || break; sleep 0.1; done
    [ ! -d /proc/"${d#*:}" ] || die "${d%:*} (pid ${d#*:}) did not stop within 10 s"
  done
  rm -f "$DIR"/{slurmd,slurmctld,munged}.pid
  echo "slurm_local: stopped"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
