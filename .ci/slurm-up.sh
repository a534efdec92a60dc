#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for the `weave slurm` test: Debian's munge,
# slurmctld, slurmd and slurm-client, started by hand (no systemd). Idempotent: a cluster
# already up is left as it is. Exits non-zero (and says why) when it cannot start one.
set -euo pipefail

if command -v sinfo >/dev/null 2>&1 && sinfo -h -o %T 2>/dev/null | grep -qx idle; then
  echo "slurm: already up"
  exit 0
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 || ! command -v sbatch >/dev/null 2>&1; then
  apt-get update -qq
  # policy-rc.d refuses to start services inside the install: expected, they start below.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    munge slurmctld slurmd slurm-client >/dev/null
fi

# munge: the key the package made (made here if missing), then the daemon.
if [ ! -f /etc/munge/munge.key ]; then
  mungekey --create
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge
chown munge:munge /run/munge
chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(free -m | awk '/^Mem:/ {print $2}') * 9 / 10 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=weave-ci
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
cat > /etc/slurm/cgroup.conf <<CONF
CgroupPlugin=autodetect
IgnoreSystemd=yes
CONF

pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd

for _ in $(seq 1 120); do
  state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null || true)
  if [ "$state" = "idle" ]; then
    echo "slurm: node $host idle ($cpus CPUs, ${mem} MB)"
    exit 0
  fi
  sleep 0.5
done
echo "slurm: the node did not become idle within 60 s" >&2
sinfo || true
scontrol show node || true
tail -n 30 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log || true
exit 1
