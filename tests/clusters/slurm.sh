#!/usr/bin/env bash
# A real one-node SLURM 22.05 cluster on this machine, for the real-cluster tests (docs/cluster.md):
# munged, slurmctld and slurmd on loopback, started by hand (no systemd), as root; with
# --accounting also MariaDB and slurmdbd, so that sacct answers.
#
#   tests/clusters/slurm.sh up [--accounting]    install the Debian packages if missing, start
#   tests/clusters/slurm.sh down                 stop, by pid, what `up` started
#   tests/clusters/slurm.sh status
#
# Exit 3: not root, or the packages cannot be installed (the real-cluster tests skip on it).
#
# Idempotent: `up` on a running cluster of the same mode does nothing, of the other mode restarts
# it. Every daemon runs in the foreground under setsid, so the pid recorded in $STATE is the
# daemon's own. TASK_PLUGIN=task/none (default task/affinity) starts it with another task plugin.
# The daemons are system-wide (/etc/slurm/slurm.conf, /run/munge): leave the cluster down.
set -euo pipefail

STATE=${CLUSTER_STATE:-/var/tmp/cifar-sweep-slurm}
TASK_PLUGIN=${TASK_PLUGIN:-task/affinity}
CLUSTER=cifarsweep
DB_PASS=cifar-sweep-local  # MariaDB on loopback only, for slurmdbd's own database

die() { echo "slurm.sh: $*" >&2; exit 1; }

alive() {  # alive NAME: the daemon $STATE/NAME.pid names is running
    local pid
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

wait_until() {  # wait_until SECONDS WHAT COMMAND...
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "timed out after ${seconds} s waiting for $what (logs: $STATE/*.log)"
}

start() {  # start NAME COMMAND...: in the foreground of its own session, its pid recorded
    local name=$1; shift
    alive "$name" && return 0
    setsid "$@" </dev/null >>"$STATE/$name.log" 2>&1 &
    echo $! >"$STATE/$name.pid"
}

stop() {  # stop NAME: SIGTERM, then SIGKILL after 15 s, by the recorded pid only
    local pid
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 0
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/$1.pid"
}

install_packages() {
    local need=()
    command -v slurmctld >/dev/null || need+=(slurm-wlm)
    command -v munged >/dev/null || need+=(munge)
    if [ "$1" = accounting ]; then
        command -v slurmdbd >/dev/null || need+=(slurmdbd)
        command -v mariadbd >/dev/null || need+=(mariadb-server)
    fi
    [ ${#need[@]} -eq 0 ] && return 0
    # exit 3: the packages cannot be had here (the tests skip, saying so)
    command -v apt-get >/dev/null || { echo "slurm.sh: needs ${need[*]}, and apt-get is not here" >&2; exit 3; }
    echo "slurm.sh: installing ${need[*]}"
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${need[@]}" >/dev/null \
        || { echo "slurm.sh: could not install ${need[*]}" >&2; exit 3; }
}

write_slurm_conf() {
    local mode=$1 node accounting
    # the node as slurmd sees it (its cores, sockets, memory): a NodeName line that differs from
    # the hardware drains the node
    node=$(slurmd -C | head -1)
    if [ "$mode" = accounting ]; then
        accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/linux"
    else
        accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
    fi
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
    cat >/etc/slurm/slurm.conf <<EOF
# written by tests/clusters/slurm.sh ($mode): a one-node test cluster on loopback
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# a requeued job waits for its credential to expire: seconds, not the default 2 minutes
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.own.pid
SlurmdPidFile=$STATE/slurmd.own.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=$TASK_PLUGIN
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
KillWait=30
$accounting
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_accounting() {
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    start mariadb mariadbd --user=mysql --bind-address=127.0.0.1 --skip-networking=0 \
        --socket=/run/mysqld/mysqld.sock
    wait_until 60 MariaDB mysqladmin --socket=/run/mysqld/mysqld.sock ping
    mysql --socket=/run/mysqld/mysqld.sock <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
    cat >/etc/slurm/slurmdbd.conf <<EOF
# written by tests/clusters/slurm.sh: slurmdbd over the local MariaDB
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=$STATE/slurmdbd.log
PidFile=$STATE/slurmdbd.own.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF
    chmod 600 /etc/slurm/slurmdbd.conf
    start slurmdbd slurmdbd -D
    wait_until 60 slurmdbd sacctmgr -n list cluster
    # before slurmctld starts: it registers with a cluster that exists
    sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" \
        || sacctmgr -i add cluster "$CLUSTER" >/dev/null
}

up() {
    local mode=plain
    [ "${1:-}" = --accounting ] && mode=accounting
    [ "$(id -u)" = 0 ] || { echo "slurm.sh: must run as root (it starts system daemons)" >&2; exit 3; }
    mkdir -p "$STATE"
    local want="$mode $TASK_PLUGIN"
    if alive slurmctld && alive slurmd; then
        if [ "$(cat "$STATE/mode" 2>/dev/null)" = "$want" ]; then
            echo "slurm.sh: already up ($want)"
            return 0
        fi
        down
        mkdir -p "$STATE"
    fi
    install_packages "$mode"
    mkdir -p /run/munge && chown munge:munge /run/munge
    # munged as its own user (it checks that the key is owned by the user it runs as)
    start munged setpriv --reuid=munge --regid=munge --clear-groups munged -F
    wait_until 20 munged munge -n
    write_slurm_conf "$mode"
    [ "$mode" = accounting ] && start_accounting
    start slurmctld slurmctld -D -i
    wait_until 30 slurmctld scontrol ping
    start slurmd slurmd -D
    wait_until 60 "the node to be idle" bash -c "sinfo -h -o %T | grep -qx idle"
    echo "$want" >"$STATE/mode"
    echo "slurm.sh: up ($want): $(sinfo -h -o '%P %D %c cpus %m MB %T')"
}

down() {
    if alive slurmctld; then  # jobs of this cluster end with it
        scancel --full --user=root 2>/dev/null || true
        local ids
        for _ in $(seq 200); do  # up to KillWait and more: the job steps end
            ids=$(squeue -h -o %A 2>/dev/null || true)
            [ -z "$ids" ] && break
            sleep 0.2
        done
    fi
    stop slurmd
    stop slurmctld
    stop slurmdbd
    stop mariadb
    stop munged
    rm -f "$STATE/mode"
    echo "slurm.sh: down"
}

status() {
    local name
    for name in munged mariadb slurmdbd slurmctld slurmd; do
        if alive "$name"; then echo "$name: running, pid $(cat "$STATE/$name.pid")"; fi
    done
    alive slurmctld && sinfo
    return 0
}

case "${1:-}" in
    up) shift; up "$@" ;;
    down) down ;;
    status) status ;;
    *) die "usage: $0 up [--accounting] | down | status" ;;
esac
