#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for clplat's `launcher=slurm` tests and for
# trying a sweep before taking it to a real cluster:
#
#   .ci/slurm_cluster.sh start    # install (Debian/Ubuntu, as root) if needed, configure, start; idempotent
#   .ci/slurm_cluster.sh status   # the daemons, the partitions and the queue
#   .ci/slurm_cluster.sh stop     # stop every daemon this script started; idempotent
#
# Daemons: munged (authentication), mariadb + slurmdbd (accounting: submitit follows its jobs
# through `sacct`, which needs the accounting database), slurmctld (controller) and slurmd (the
# one compute node, this machine). Jobs run as the submitting user (root in CI).
#
# Partitions, both on this node with all its cores (`nproc`; 2 on the CI machine):
#   debug   (default)  MaxTime=60 min, jobs in it can be preempted (requeued) by `urgent`
#   urgent             PriorityTier=2: a job here preempts running `debug` jobs (PreemptMode=REQUEUE)
#
# It writes /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf, and refuses to overwrite such a
# file that it did not write (a real cluster's). Logs: /var/log/slurm/{slurmctld,slurmd,slurmdbd}.log.
# Environment: CLPLAT_SLURM_NO_INSTALL=1 skips the apt-get step (fail instead when missing).
set -euo pipefail

MARK="# written by clplat .ci/slurm_cluster.sh"
MARK_PREFIX="# written by clplat"  # what marks a file as ours (any version of this script)
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
RUN_DIR=/run/slurm
CLUSTER=clplat
DB_USER=slurm
DB_PASS=clplat-slurm-db
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

log() { echo "slurm_cluster: $*" >&2; }
die() { echo "slurm_cluster: error: $*" >&2; exit 1; }

node_name() { hostname -s; }

install_packages() {
    local missing=0 tool
    for tool in slurmctld slurmd slurmdbd sbatch sacct munged mariadbd; do
        command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null 2>&1 || missing=1
    done
    [[ $missing == 0 ]] && return 0
    [[ "${CLPLAT_SLURM_NO_INSTALL:-0}" == 1 ]] && die "SLURM is not installed (apt-get install ${PACKAGES[*]})"
    [[ $(id -u) == 0 ]] || die "SLURM is not installed and installing it needs root: apt-get install ${PACKAGES[*]}"
    command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get: install ${PACKAGES[*]} by hand"
    log "installing ${PACKAGES[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
}

# write $2 to $1 unless a file not written by this script is there
write_conf() {
    local path=$1 text=$2
    if [[ -f $path ]] && ! head -n1 "$path" | grep -qF "$MARK_PREFIX"; then
        die "$path exists and was not written by this script (a real cluster's?); not touching it"
    fi
    printf '%s\n%s\n' "$MARK" "$text" >"$path"
}

configure() {
    local node cpus mem_mb
    node=$(node_name)
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$RUN_DIR"
    write_conf "$CONF_DIR/slurm.conf" "ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# no cgroups needed (containers): processes tracked through /proc, cores pinned by affinity
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# a requeued job runs again; a stopped job gets KillWait seconds between SIGTERM and SIGKILL
JobRequeue=1
KillWait=15
MinJobAge=600
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=60 PriorityTier=1 State=UP
PartitionName=urgent Nodes=$node MaxTime=60 PriorityTier=2 State=UP"
    write_conf "$CONF_DIR/slurmdbd.conf" "AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db"
    chmod 600 "$CONF_DIR/slurmdbd.conf"
}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for <seconds> <what> <command...>
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$((seconds * 2))"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "$what did not come up in ${seconds}s (logs in $LOG_DIR)"
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    [[ -s /etc/munge/munge.key ]] || { /usr/sbin/mungekey --create 2>/dev/null || create-munge-key -f; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged
    wait_for 20 munged sh -c 'munge -n </dev/null | unmunge'
}

sql() { mysql --protocol=socket -uroot -e "$1"; }

start_database() {
    if ! mysqladmin --protocol=socket -uroot ping >/dev/null 2>&1; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        (cd / && setsid /usr/bin/mysqld_safe --skip-syslog </dev/null >/dev/null 2>&1 &)
        wait_for 60 mariadb mysqladmin --protocol=socket -uroot ping
    fi
    sql "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
         CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
         GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurm() {
    if ! running "$RUN_DIR/slurmdbd.pid"; then
        /usr/sbin/slurmdbd
    fi
    wait_for 60 slurmdbd sacctmgr -n show cluster
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    running "$RUN_DIR/slurmctld.pid" || /usr/sbin/slurmctld
    wait_for 60 slurmctld scontrol ping
    running "$RUN_DIR/slurmd.pid" || /usr/sbin/slurmd -N "$(node_name)"
    wait_for 60 "the compute node" sh -c "sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'"
}

ours_and_up() {  # our configuration, and the controller answers with the node ready
    [[ -f $CONF_DIR/slurm.conf ]] && head -n1 "$CONF_DIR/slurm.conf" | grep -qF "$MARK_PREFIX" &&
        scontrol ping >/dev/null 2>&1 && sacct -n -X -S now >/dev/null 2>&1 &&
        sinfo -h -N -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
}

start() {
    if ours_and_up; then  # nothing to do (and no root needed)
        log "cluster '$CLUSTER' is already up"
        return 0
    fi
    install_packages
    [[ $(id -u) == 0 ]] || die "starting the cluster's daemons needs root"
    configure
    start_munge
    start_database
    start_slurm
    log "cluster '$CLUSTER' is up: $(sinfo -h -o '%P %D node(s) %c cores %T' | paste -sd';' -)"
}

stop_pidfile() {  # stop_pidfile <pidfile> <name>
    local pid
    running "$1" || return 0
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
    log "$2 (pid $pid) did not stop in 30s; killing it"
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    stop_pidfile "$RUN_DIR/slurmd.pid" slurmd
    stop_pidfile "$RUN_DIR/slurmctld.pid" slurmctld
    stop_pidfile "$RUN_DIR/slurmdbd.pid" slurmdbd
    if command -v mysqladmin >/dev/null && mysqladmin --protocol=socket -uroot ping >/dev/null 2>&1; then
        mysqladmin --protocol=socket -uroot shutdown
    fi
    stop_pidfile /run/munge/munged.pid munged
    log "stopped"
}

status() {
    local daemon
    for daemon in slurmdbd slurmctld slurmd; do
        if running "$RUN_DIR/$daemon.pid"; then echo "$daemon: running (pid $(cat "$RUN_DIR/$daemon.pid"))"
        else echo "$daemon: stopped"; fi
    done
    if scontrol ping >/dev/null 2>&1; then sinfo; squeue; else return 1; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
