#!/usr/bin/env bash
# Start or stop a throwaway standalone ZooKeeper on loopback for tests and examples.
#
# Usage:
#   scripts/zookeeper.sh start    start it (or find the one already running);
#                                 the LAST stdout line is HOST:PORT
#   scripts/zookeeper.sh stop     stop it and remove its data (exit 0 when nothing runs)
#   scripts/zookeeper.sh restart  stop the server and start it again on the same port,
#                                 keeping its data (sessions and znodes survive, as in
#                                 a server restart); the LAST stdout line is HOST:PORT
#   scripts/zookeeper.sh status   print HOST:PORT and exit 0 when it runs, else exit 1
#
#   e.g.  ZK=$(scripts/zookeeper.sh start | tail -n1)
#
# Installs Debian's `zookeeper` package with apt-get when it is missing (needs root
# or sudo). Runs the JVM detached (no systemd needed), client port on 127.0.0.1
# only, admin server off, four-letter words on, tickTime 1000 ms with sessions of
# 2..60 s. Everything else goes to stderr.
#
# Environment:
#   ROLLOUT_ZK_DIR      working dir: config, data, log, pid (default /tmp/rollout-zookeeper)
#   ROLLOUT_ZK_PORT     client port (default 2181 when free, else another free port)
#   ROLLOUT_ZK_TIMEOUT  seconds to wait for it to answer (default 60)
#   ROLLOUT_ZK_JVMFLAGS extra JVM flags (default -Xmx256m)
set -euo pipefail

HOST=127.0.0.1
DIR=${ROLLOUT_ZK_DIR:-/tmp/rollout-zookeeper}
CFG=$DIR/zoo.cfg
DATA=$DIR/data
LOG=$DIR/zookeeper.log
PIDFILE=$DIR/zookeeper.pid
TIMEOUT=${ROLLOUT_ZK_TIMEOUT:-60}
ZK_JAR=/usr/share/java/zookeeper.jar
MAIN=org.apache.zookeeper.server.quorum.QuorumPeerMain

NAME=zookeeper.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_installed() {
    if [[ -f $ZK_JAR ]] && command -v java >/dev/null 2>&1; then
        return
    fi
    apt_install zookeeper
    [[ -f $ZK_JAR ]] || die "$ZK_JAR is missing after installing zookeeper"
    command -v java >/dev/null 2>&1 || die "java is missing after installing zookeeper"
}

# The pid of the ZooKeeper this script started, when it still runs.
our_pid() {
    local pid
    [[ -f $PIDFILE ]] || return 1
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: it must be a ZooKeeper on our config.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$MAIN $CFG" || return 1
    printf '%s\n' "$pid"
}

cfg_port() {
    [[ -f $CFG ]] || return 1
    sed -n 's/^clientPort=\([0-9][0-9]*\)$/\1/p' "$CFG" | head -n1 | grep .
}

# Whether a ZooKeeper on HOST:$1 serves requests (`srvr` answers with its mode).
answers() {
    local port=$1 reply
    # shellcheck disable=SC2016 # expanded by the inner shell
    reply=$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf srvr >&3
        cat <&3' "$HOST" "$port" 2>/dev/null) || true
    [[ $reply == *"Mode: "* ]]
}

write_cfg() {
    local port=$1
    cat >"$CFG" <<EOF
# Written by scripts/zookeeper.sh; removed by \`scripts/zookeeper.sh stop\`.
tickTime=1000
minSessionTimeout=2000
maxSessionTimeout=60000
initLimit=10
syncLimit=5
dataDir=$DATA
clientPort=$port
clientPortAddress=$HOST
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=*
autopurge.purgeInterval=0
EOF
}

# Waits for pid $1 to serve on port $2. Returns 0 when it answers, 1 when it
# exited, 2 on timeout.
wait_ready() {
    local pid=$1 port=$2 deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if answers "$port"; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.5
    done
    return 2
}

# Launches the JVM detached and records its pid. The classpath is Debian's
# zookeeper.jar (its manifest lists the other jars) plus slf4j-simple so that
# the log says something (Debian's scripts put no slf4j binding on the path).
launch() {
    local cp=$ZK_JAR jvmflags
    [[ -f /usr/share/java/slf4j-simple.jar ]] && cp+=:/usr/share/java/slf4j-simple.jar
    read -r -a jvmflags <<<"${ROLLOUT_ZK_JVMFLAGS:--Xmx256m}"
    rm -f "$PIDFILE"
    : >"$LOG"
    # New session so that the caller's process group and terminal do not take it
    # down; all fds redirected (and the lock fd closed) so that `$(... start)`
    # returns. The inner shell writes its own pid and execs java, so the pid
    # file holds the JVM's pid even if setsid has to fork.
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
        java "-Dzookeeper.log.dir=$DIR" \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss.SSS" \
        -Dzookeeper.jmx.log4j.disable=true \
        -XX:+HeapDumpOnOutOfMemoryError "-XX:HeapDumpPath=$DIR" \
        "${jvmflags[@]}" \
        -cp "$cp" "$MAIN" "$CFG" \
        </dev/null >>"$LOG" 2>&1 9>&- &
    local i
    for i in $(seq 1 50); do
        [[ -s $PIDFILE ]] && break
        sleep 0.1
    done
    [[ -s $PIDFILE ]] || die "the JVM did not record its pid in $PIDFILE"
    cat "$PIDFILE"
}

cmd_start() {
    local pid port rc _
    lock
    if pid=$(our_pid); then
        port=$(cfg_port) || die "ZooKeeper (pid $pid) runs but $CFG has no clientPort"
        if [[ -n ${ROLLOUT_ZK_PORT:-} && $ROLLOUT_ZK_PORT != "$port" ]]; then
            die "ZooKeeper already runs on $HOST:$port, not ROLLOUT_ZK_PORT=$ROLLOUT_ZK_PORT; run stop first"
        fi
        rc=0
        wait_ready "$pid" "$port" || rc=$?
        if ((rc == 0)); then
            log "already running (pid $pid)"
            echo "$HOST:$port"
            return
        fi
        log "ZooKeeper pid $pid does not answer on $HOST:$port; restarting it"
        log_tail
        kill_pid "$pid"
    fi

    ensure_installed
    rm -rf "$DATA" "$PIDFILE"
    mkdir -p "$DATA"

    for _ in 1 2 3; do
        if [[ -n ${ROLLOUT_ZK_PORT:-} ]]; then
            port=$ROLLOUT_ZK_PORT
            [[ $port =~ ^[0-9]+$ ]] || die "ROLLOUT_ZK_PORT=$port is not a port number"
            if port_in_use "$port"; then
                die "ROLLOUT_ZK_PORT=$port is already in use"
            fi
        else
            port=$(pick_port 2181)
        fi
        write_cfg "$port"
        log "starting ZooKeeper on $HOST:$port (dir $DIR, log $LOG)"
        pid=$(launch)
        rc=0
        wait_ready "$pid" "$port" || rc=$?
        if ((rc == 0)); then
            log "ZooKeeper is up (pid $pid)"
            echo "$HOST:$port"
            return
        fi
        if ((rc == 2)); then
            log "ZooKeeper did not answer on $HOST:$port within ${TIMEOUT}s"
            log_tail
            kill_pid "$pid"
            rm -f "$PIDFILE"
            exit 1
        fi
        # It exited. Another process may have taken an automatically picked port
        # between the check and the bind: try another one.
        if [[ -z ${ROLLOUT_ZK_PORT:-} ]] && grep -q 'Address already in use' "$LOG"; then
            log "port $port was taken meanwhile; trying another"
            continue
        fi
        break
    done
    log "ZooKeeper exited during startup"
    log_tail
    rm -f "$PIDFILE"
    exit 1
}

cmd_stop() {
    local pid
    if [[ ! -d $DIR ]]; then
        log "not running"
        return
    fi
    lock
    if pid=$(our_pid); then
        log "stopping ZooKeeper (pid $pid)"
        kill_pid "$pid"
        if kill -0 "$pid" 2>/dev/null; then
            die "pid $pid is still alive"
        fi
    else
        log "not running"
    fi
    # Keep the log for post-mortems; the next start truncates it.
    rm -rf "$DATA" "$PIDFILE" "$CFG"
}

cmd_restart() {
    local pid port rc
    lock
    pid=$(our_pid) || die "not running; use start"
    port=$(cfg_port) || die "ZooKeeper (pid $pid) runs but $CFG has no clientPort"
    log "restarting ZooKeeper (pid $pid) on $HOST:$port, keeping its data"
    kill_pid "$pid"
    kill -0 "$pid" 2>/dev/null && die "pid $pid is still alive"
    pid=$(launch)
    rc=0
    wait_ready "$pid" "$port" || rc=$?
    if ((rc != 0)); then
        log "ZooKeeper did not come back on $HOST:$port"
        log_tail
        exit 1
    fi
    log "ZooKeeper is up again (pid $pid)"
    echo "$HOST:$port"
}

cmd_status() {
    local pid port
    pid=$(our_pid) || { log "not running"; exit 1; }
    port=$(cfg_port) || { log "pid $pid runs but $CFG has no clientPort"; exit 1; }
    answers "$port" || { log "pid $pid runs but does not answer on $HOST:$port"; exit 1; }
    echo "$HOST:$port"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_restart ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 start|stop|restart|status" >&2
        exit 2
        ;;
esac
