#!/usr/bin/env bash
# make test-slurm: profiles/slurm against a single-node SLURM cluster on this machine.
#  1. installs Debian's slurm-wlm and munge if missing (apt-get, noninteractive; sudo when not root)
#  2. starts munged, slurmctld and slurmd in a temporary state dir (scripts/slurm/start_cluster.sh)
#  3. runs tests/slurm/test_cluster.py with KD_SLURM_TEST=1, SLURM_CONF and PATH pointing at that cluster
#  4. stops the daemons it started, also when the tests fail or are interrupted (trap)
# The state dir (logs of slurmctld, slurmd, munged and the jobs) is kept when something failed.
# Usage: scripts/slurm/test.sh [pytest args, default tests/slurm/test_cluster.py]
#        (PYTHON: the interpreter with kd_core and the plugin, default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
export PATH=$PATH:/usr/sbin:/sbin   # munged, slurmctld, slurmd (not on a user's PATH on Debian)

missing=()
for tool in slurmctld slurmd sbatch squeue scontrol scancel sinfo; do
    command -v "$tool" >/dev/null || { missing+=(slurm-wlm); break; }
done
command -v munged >/dev/null || missing+=(munge)
if ((${#missing[@]})); then
    sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    echo "test-slurm: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { "${sudo[@]}" apt-get update -q && "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; }
fi
"$PYTHON" -c "import snakemake_executor_plugin_slurm" 2>/dev/null \
    || { echo "test-slurm: snakemake-executor-plugin-slurm is not installed (pip install -e '.[dev]')" >&2; exit 1; }

state=$(mktemp -d "${TMPDIR:-/tmp}/kd-slurm.XXXXXX")
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((rc == 0)); then
        scripts/slurm/stop_cluster.sh "$state"
        rm -rf "$state"
    else
        KEEP_STATE=1 scripts/slurm/stop_cluster.sh "$state"
        echo "test-slurm: failed (exit $rc); cluster logs in $state/log" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

conf=$(scripts/slurm/start_cluster.sh "$state")   # export SLURM_CONF=...
eval "$conf"
echo "test-slurm: cluster up ($(sinfo -h -o '%P %D %c %G' | tr '\n' ' '))"
# tests/slurm/test_profile_dryrun.py needs no cluster: it runs in `make test`
KD_SLURM_TEST=1 "$PYTHON" -m pytest -q -ra -p no:cacheprovider "${@:-tests/slurm/test_cluster.py}"
