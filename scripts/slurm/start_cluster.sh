#!/usr/bin/env bash
# Start a single-node SLURM test cluster on this host, for `make test-slurm` (tests/slurm/).
#
#   eval "$(scripts/slurm/start_cluster.sh STATE_DIR)"   # when the node is up: SLURM_CONF, PATH
#   sbatch|squeue|scancel ...                               # (STATE_DIR/bin: wrappers naming its config)
#   scripts/slurm/stop_cluster.sh STATE_DIR      # stops exactly the daemons started here
#
# Everything lives in STATE_DIR (created if missing): slurm.conf + gres.conf, a private munge key
# and socket, spool and state directories, logs, and pids/<daemon>.pid for each daemon this script
# started. Nothing is written to /etc, no system service is touched, and a munged / slurmctld
# already running on the machine is left alone (this cluster has its own socket and ports), so
# the clients must be pointed at it: SLURM_CONF, or the wrappers in STATE_DIR/bin.
#
# The node: this host's name, its CPUs (nproc) and memory (free), two partitions (`cpu`, the
# default, and `gpu`) and KD_TEST_GPUS (default 2) fake GPUs: GRES gpu with a count and no
# device files (AutoDetect=off), so `sbatch --gpus=1` is scheduled like on a GPU node; jobs see
# no device and the smoke config runs on the CPU. No accounting (no slurmdbd, sacct does not
# work): job states come from squeue, and MinJobAge=3600 keeps finished jobs visible to it.
# The node advertises at least KD_TEST_MIN_CPUS CPUs (default 16) and KD_TEST_MIN_MEM_MB
# memory (default 65536) even on a smaller host (SlurmdParameters=config_overrides), so the
# profile's real requests (8 CPUs per GPU, 32 GB for block distillation) are submitted
# unchanged; nothing enforces them (no cgroups), OMP_NUM_THREADS and the jobs' threads do.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin   # munged, slurmctld, slurmd (not on a user's PATH on Debian)

STATE=${1:?usage: start_cluster.sh STATE_DIR}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
# ports: KD_TEST_SLURM_PORT and the one above it, else the first free pair from 16817 on
listening() { (: >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
CTLD_PORT=${KD_TEST_SLURM_PORT:-16817}
if [[ -z ${KD_TEST_SLURM_PORT:-} ]]; then
    while listening "$CTLD_PORT" || listening $((CTLD_PORT + 1)); do CTLD_PORT=$((CTLD_PORT + 2)); done
fi
SLURMD_PORT=$((CTLD_PORT + 1))
GPUS=${KD_TEST_GPUS:-2}
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(free -m | awk '/^Mem:/ {print $2}')
NODE_CPUS=$(( CPUS > ${KD_TEST_MIN_CPUS:-16} ? CPUS : ${KD_TEST_MIN_CPUS:-16} ))
NODE_MEM=$(( MEM_MB > ${KD_TEST_MIN_MEM_MB:-65536} ? MEM_MB : ${KD_TEST_MIN_MEM_MB:-65536} ))

for tool in munged slurmctld slurmd sinfo sbatch squeue scancel; do
    command -v "$tool" >/dev/null || { echo "start_cluster.sh: $tool not found (apt-get install slurm-wlm munge)" >&2; exit 1; }
done

mkdir -p "$STATE"/{etc,munge,spool/ctld,spool/d,log,run,pids}
chmod 700 "$STATE/munge"

# our own daemons must not be running already (a second start would orphan them)
for d in munged slurmctld slurmd; do
    if [[ -s $STATE/pids/$d.pid ]] && kill -0 "$(cat "$STATE/pids/$d.pid")" 2>/dev/null; then
        echo "start_cluster.sh: $d already running from $STATE (pid $(cat "$STATE/pids/$d.pid")); stop_cluster.sh first" >&2
        exit 1
    fi
done

# a failed start stops whatever it had started
trap 'rc=$?; if (( rc != 0 )); then KEEP_STATE=1 "$(dirname "$0")/stop_cluster.sh" "$STATE"; fi' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# munge: a private key (created if missing) and socket
KEY=$STATE/munge/munge.key
if [[ ! -s $KEY ]]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile="$KEY" --force; else dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none; fi
fi
chmod 400 "$KEY"
SOCKET=$STATE/munge/munge.socket
munged --foreground --force --socket="$SOCKET" --key-file="$KEY" \
    --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
    --seed-file="$STATE/munge/munged.seed" </dev/null >>"$STATE/log/munged.out" 2>&1 &
echo $! >"$STATE/pids/munged.pid"

cat >"$STATE/etc/slurm.conf" <<CONF
# single-node test cluster written by scripts/slurm/start_cluster.sh on $(date -u +%FT%TZ)
ClusterName=kdtest
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=${KD_TEST_SLURM_DEBUG:-info}
SlurmdDebug=${KD_TEST_SLURM_DEBUG:-info}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
# backfill, every 2 s: a job waiting for a GPU must not hold up CPU jobs that fit (sched/builtin is strict FIFO)
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,bf_resolution=60
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# finished jobs stay in slurmctld (and squeue --states=all) for an hour: the status source
MinJobAge=3600
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$NODE_MEM Gres=gpu:kdfake:$GPUS State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
CONF

# fake GPUs: Slurm drops a gres/gpu without device files, so each gets an empty regular file
mkdir -p "$STATE/dev"
for ((i = 0; i < GPUS; i++)); do : >"$STATE/dev/fakegpu$i"; done
cat >"$STATE/etc/gres.conf" <<CONF
AutoDetect=off
NodeName=$HOST Name=gpu Type=kdfake File=$STATE/dev/fakegpu[0-$((GPUS - 1))]
CONF

export SLURM_CONF=$STATE/etc/slurm.conf
# client wrappers that name this cluster's config: the jobstep executor of
# snakemake-executor-plugin-slurm drops every SLURM_* variable (SLURM_CONF too) before the
# `srun` inside a job, so a cluster known only through SLURM_CONF needs srun & co. on PATH
# to find it by themselves (a real cluster has /etc/slurm/slurm.conf or runs configless)
mkdir -p "$STATE/bin"
path_without_wrappers=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$STATE/bin" | paste -sd:)
for tool in srun sbatch squeue scancel scontrol sinfo sacct; do
    real=$(PATH=$path_without_wrappers command -v "$tool") || continue
    printf '#!/bin/sh\nSLURM_CONF='"'%s'"' exec '"'%s'"' "$@"\n' "$SLURM_CONF" "$real" >"$STATE/bin/$tool"
    chmod +x "$STATE/bin/$tool"
done

# munged first: slurmctld and slurmd need its socket
for _ in $(seq 50); do [[ -S $SOCKET ]] && break; sleep 0.2; done
[[ -S $SOCKET ]] || { echo "start_cluster.sh: munged did not start, see $STATE/log/munged.*" >&2; exit 1; }

slurmctld -D -i -f "$SLURM_CONF" </dev/null >>"$STATE/log/slurmctld.out" 2>&1 &
echo $! >"$STATE/pids/slurmctld.pid"
slurmd -D -f "$SLURM_CONF" </dev/null >>"$STATE/log/slurmd.out" 2>&1 &
echo $! >"$STATE/pids/slurmd.pid"

# up: the node idle in sinfo
for _ in $(seq 120); do
    state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1 || true)
    [[ $state == idle ]] && break
    sleep 0.5
done
if [[ ${state:-} != idle ]]; then
    echo "start_cluster.sh: node $HOST not idle (state '${state:-none}'), logs in $STATE/log" >&2
    tail -n 20 "$STATE"/log/slurmctld.log "$STATE"/log/slurmd.log >&2 || true
    exit 1
fi
echo "export SLURM_CONF=$SLURM_CONF PATH=$STATE/bin:\$PATH"
