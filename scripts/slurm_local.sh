#!/usr/bin/env bash
# A real single-node SLURM 22.05 cluster on this machine, for ehrgen's scale-out tests and for trying
# the submitit launcher without a site cluster.
#
#   scripts/slurm_local.sh start    install (Debian/apt, as root) if needed, start munged, slurmctld,
#                                   slurmd; wait until the node is idle; print `export SLURM_CONF=...`
#   scripts/slurm_local.sh stop     stop the daemons this script started (by PID file)
#   scripts/slurm_local.sh status   sinfo + squeue
#
# Everything lives under $SLURM_LOCAL_DIR (default /tmp/ehrgen-slurm): slurm.conf, state, spool, logs.
# The daemons only listen on 127.0.0.1. Environment knobs:
#   SLURM_LOCAL_DIR            state directory
#   SLURM_LOCAL_CTLD_PORT      slurmctld port (6817); slurmd uses the next one
#   SLURM_LOCAL_TIMEOUT        seconds to wait for the node to become idle (90)
#   SLURM_LOCAL_CRED_EXPIRE    AuthInfo cred_expire (10): also the delay before a requeued job may
#                              start again (SLURM's default 120 s makes requeue tests crawl)
set -euo pipefail

STATE_DIR="${SLURM_LOCAL_DIR:-/tmp/ehrgen-slurm}"
CONF="$STATE_DIR/slurm.conf"
CTLD_PORT="${SLURM_LOCAL_CTLD_PORT:-6817}"
SLURMD_PORT="$((CTLD_PORT + 1))"
TIMEOUT="${SLURM_LOCAL_TIMEOUT:-90}"
CRED_EXPIRE="${SLURM_LOCAL_CRED_EXPIRE:-10}"
NODE="$(hostname -s)"
MUNGE_SOCKET=/run/munge/munge.socket.2
MUNGE_MARK="$STATE_DIR/munged.started-by-us"
export SLURM_CONF="$CONF"

log() { echo "slurm_local: $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# PID from a pid file if that process is alive, else nothing.
live_pid() {
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(cat "$1")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    ((${#missing[@]} == 0)) && return 0
    [[ $EUID -eq 0 ]] || die "missing ${missing[*]}; run as root (apt-get install) or install them yourself"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and apt-get is not available"
    log "installing ${missing[*]} with apt-get"
    apt-get update -q >&2
    # The packages' init scripts would start daemons with the distribution's config: deny them.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurmctld slurmd slurm-client munge >&2
    ((created_policy)) && rm -f "$policy"
    return 0
}

munge_works() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

start_munge() {
    munge_works && return 0
    local key=/etc/munge/munge.key
    if [[ ! -s $key ]]; then
        log "creating $key"
        install -d -o munge -g munge -m 0700 /etc/munge
        if ! runuser -u munge -- mungekey --create --keyfile="$key" 2>/dev/null; then
            dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge "$key"
    chmod 0400 "$key"
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" || die "munged failed; see /var/log/munge/munged.log"
    touch "$MUNGE_MARK"
    for _ in $(seq 50); do
        munge_works && return 0
        sleep 0.2
    done
    die "munged started but munge -n | unmunge fails; see /var/log/munge/munged.log"
}

write_conf() {
    # The node line comes from slurmd -C so CPUs/sockets/cores/threads match what slurmd detects
    # (a mismatch drains the node); memory is reported a bit low so the node is never "invalid".
    local hw cpus mem
    hw="$(slurmd -C | head -n1)"
    cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
    mem="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
    [[ -n $cpus && -n $mem ]] || die "cannot parse 'slurmd -C' output: $hw"
    mem=$((mem * 9 / 10))
    local topo
    topo="$(grep -o 'Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' <<<"$hw" || true)"
    mkdir -p "$STATE_DIR/state" "$STATE_DIR/spool" "$STATE_DIR/log"
    # Fresh logs per start, so an error report shows this start's lines; keep the last run's.
    local f
    for f in "$STATE_DIR"/log/*.log; do
        [[ -e $f ]] && mv -f "$f" "$f.prev"
    done
    cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: a throw-away single-node test cluster on loopback.
ClusterName=ehrgen
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# Bind to 127.0.0.1 (what SlurmctldHost/NodeAddr resolve to), never to every interface.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=$CRED_EXPIRE
MpiDefault=none
# No cgroups: containers and CI runners rarely delegate them.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SwitchType=switch/none
SchedulerType=sched/backfill
# Schedule pending (e.g. requeued) jobs within seconds, not the default 60 s / 30 s.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
# Memory is bookkeeping only here (nothing enforces it); the default per CPU lets jobs that do
# not ask for --mem run side by side instead of each reserving the whole node.
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((mem / cpus))
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
MailProg=/bin/true
InactiveLimit=0
KillWait=10
MinJobAge=600
SlurmctldTimeout=60
SlurmdTimeout=120
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus $topo RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

# Empty while slurmctld does not answer yet (never fails: the caller polls).
node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 || true; }

show_logs() {
    local f
    for f in "$STATE_DIR/log/slurmctld.log" "$STATE_DIR/log/slurmd.log"; do
        [[ -f $f ]] && {
            echo "---- tail $f" >&2
            tail -n 25 "$f" >&2
        }
    done
}

cmd_start() {
    if live_pid "$STATE_DIR/slurmctld.pid" >/dev/null && live_pid "$STATE_DIR/slurmd.pid" >/dev/null &&
        [[ "$(node_state)" =~ ^(idle|mixed|allocated) ]]; then
        log "already running"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    install_packages
    mkdir -p "$STATE_DIR"
    start_munge
    local t0=$SECONDS
    if ! live_pid "$STATE_DIR/slurmctld.pid" >/dev/null; then
        # Only a fresh controller rewrites the config, so a running slurmd never sees it change.
        live_pid "$STATE_DIR/slurmd.pid" >/dev/null && cmd_stop_daemon slurmd "$STATE_DIR/slurmd.pid"
        write_conf
        # -c: forget jobs and node states of an earlier run; this cluster is disposable.
        slurmctld -c || {
            show_logs
            die "slurmctld failed to start"
        }
    fi
    if ! live_pid "$STATE_DIR/slurmd.pid" >/dev/null; then
        slurmd -N "$NODE" || {
            show_logs
            die "slurmd failed to start"
        }
    fi
    local state=""
    while ((SECONDS - t0 < TIMEOUT)); do
        state="$(node_state)"
        [[ $state =~ ^(idle|mixed|allocated) ]] && break
        sleep 1
    done
    if ! [[ $state =~ ^(idle|mixed|allocated) ]]; then
        show_logs
        die "node $NODE not idle after ${TIMEOUT}s (state: '${state:-no answer}'); logs in $STATE_DIR/log"
    fi
    # A daemon that died after forking (e.g. its port was taken) must not pass for a healthy cluster.
    local daemon
    for daemon in slurmctld slurmd; do
        live_pid "$STATE_DIR/$daemon.pid" >/dev/null || {
            show_logs
            die "$daemon exited after starting; logs in $STATE_DIR/log"
        }
    done
    log "node $NODE is $state after $((SECONDS - t0))s"
    echo "export SLURM_CONF=$CONF"
}

# Stop one daemon by its PID file; wait for it to exit so a restart can bind its port.
cmd_stop_daemon() {
    local name=$1 pidfile=$2 pid
    pid="$(live_pid "$pidfile")" || return 0
    kill "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "$name ($pid) ignored SIGTERM; killing"
    kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
    cmd_stop_daemon slurmd "$STATE_DIR/slurmd.pid"
    cmd_stop_daemon slurmctld "$STATE_DIR/slurmctld.pid"
    if [[ -e $MUNGE_MARK ]]; then
        cmd_stop_daemon munged /run/munge/munged.pid
        rm -f "$MUNGE_MARK"
    fi
    log "stopped"
}

cmd_status() {
    [[ -f $CONF ]] || die "no cluster configured in $STATE_DIR (run: $0 start)"
    live_pid "$STATE_DIR/slurmctld.pid" >/dev/null || die "slurmctld is not running"
    echo "export SLURM_CONF=$CONF"
    sinfo
    squeue
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
