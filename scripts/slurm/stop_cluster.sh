#!/usr/bin/env bash
# Stop the test cluster that scripts/slurm/start_cluster.sh STATE_DIR started: only the daemons
# whose pids it recorded in STATE_DIR/pids (slurmd, slurmctld, munged; in that order), never
# by name. Safe to call twice or after a failed start. KEEP_STATE=1 keeps STATE_DIR (logs).
set -uo pipefail

STATE=${1:?usage: stop_cluster.sh STATE_DIR}
[[ -d $STATE/pids ]] || exit 0
export SLURM_CONF=$STATE/etc/slurm.conf

# jobs still queued or running (an interrupted test): cancel them while slurmctld is up
if [[ -s $STATE/pids/slurmctld.pid ]] && kill -0 "$(cat "$STATE/pids/slurmctld.pid")" 2>/dev/null; then
    if timeout 10 scancel --quiet --user "$(id -un)" 2>/dev/null; then
        # until their job steps have exited (slurmd, still up, kills them)
        for _ in $(seq 30); do
            [[ -z $(timeout 10 squeue -h -u "$(id -un)" -t RUNNING,COMPLETING -o %i 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
fi

for d in slurmd slurmctld munged; do
    f=$STATE/pids/$d.pid
    [[ -s $f ]] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$f"
done
[[ ${KEEP_STATE:-0} == 1 ]] || rm -rf "$STATE"/spool "$STATE"/run "$STATE"/munge
exit 0
