#!/usr/bin/env bash
# Install the system packages the kit and its tests need (OpenSSH server and client, rsync,
# iproute2; promtool; chromium for the status page's browser tests; Slurm and munge; for the lab
# in tests/lab: systemd, util-linux's unshare/nsenter, procps, sudo, and the venv module of the
# system Python the lab's hosts build their venvs with), but only those missing, so a second run
# is instant and needs no network.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v rrsync >/dev/null 2>&1 || [ -x /usr/bin/rrsync ] || need+=(rsync)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# promtool checks and unit-tests docs/prometheus-alerts.yml (tests/webapi/test_metrics.py).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# A real Slurm for the batch-scheduler tests (tests/fixtures/slurm.py), and the PBS-compatible
# qsub/qstat/qdel of slurm-wlm-torque over it.
command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || need+=(munge)
command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ] || need+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || [ -x /usr/sbin/slurmd ] || need+=(slurmd)
command -v sbatch >/dev/null 2>&1 || need+=(slurm-client)
command -v qsub >/dev/null 2>&1 || need+=(slurm-wlm-torque)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
# The lab (tests/lab, docs/testing.md): hosts are systemd in namespaces over this machine's root.
[ -x /lib/systemd/systemd ] && command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v unshare >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
# The hosts are reached as an account with sudo (docs/setup.md), root included: ansible's become.
command -v sudo >/dev/null 2>&1 || need+=(sudo)
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3 python3-venv)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
echo "bootstrap: installing system packages: ${need[*]}"
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "bootstrap: missing ${need[*]} and not root (no sudo): install them, then run this again." >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
