#!/usr/bin/env bash
# Start or stop a throwaway OpenSSH server on loopback for rollout-process's ssh tests.
#
# Usage:
#   scripts/sshd.sh start    start it (or find the one already running); the LAST stdout
#                            line is `127.0.0.1:PORT DIR`
#   scripts/sshd.sh stop     stop it (exit 0 when nothing runs); DIR and its log stay
#   scripts/sshd.sh status   print `127.0.0.1:PORT DIR` and exit 0 when it runs and lets
#                            the current user in, else exit 1
#
#   e.g.  read -r ADDR DIR < <(scripts/sshd.sh start | tail -n1)
#         ssh -i "$DIR/id_ed25519" -o UserKnownHostsFile="$DIR/known_hosts" \
#             -o StrictHostKeyChecking=yes -p "${ADDR##*:}" 127.0.0.1 true
#
# Installs Debian's `openssh-server` package with apt-get when /usr/sbin/sshd is missing
# (needs root or sudo). Runs /usr/sbin/sshd in the foreground of its own session (no
# system service), listening on 127.0.0.1 only, as the current user (as root it also needs
# /run/sshd, which it creates). Each start makes a fresh ed25519 host key and a fresh
# ed25519 key pair for the current user, all in DIR:
#   DIR/id_ed25519, DIR/id_ed25519.pub   the user's key (the only authorized key)
#   DIR/known_hosts                      `[127.0.0.1]:PORT <host key>`, for
#                                        StrictHostKeyChecking=yes
#   DIR/sshd_config, DIR/sshd.pid, DIR/sshd.log, DIR/ssh_host_ed25519_key{,.pub},
#   DIR/authorized_keys
# Public keys only (no passwords, no PAM), StrictModes off (DIR is under /tmp). A start
# returns once `ssh ... 127.0.0.1 true` succeeds with those files. Everything else goes to
# stderr.
#
# Environment:
#   ROLLOUT_SSHD_DIR      working dir (default /tmp/rollout-sshd)
#   ROLLOUT_SSHD_PORT     port (default 2222 when free, else another free port)
#   ROLLOUT_SSHD_TIMEOUT  seconds to wait for it to let the user in (default 30)
set -euo pipefail

HOST=127.0.0.1
DIR=${ROLLOUT_SSHD_DIR:-/tmp/rollout-sshd}
CFG=$DIR/sshd_config
LOG=$DIR/sshd.log
PIDFILE=$DIR/sshd.pid
HOSTKEY=$DIR/ssh_host_ed25519_key
USERKEY=$DIR/id_ed25519
AUTHKEYS=$DIR/authorized_keys
KNOWN=$DIR/known_hosts
TIMEOUT=${ROLLOUT_SSHD_TIMEOUT:-30}
SSHD=/usr/sbin/sshd
DEFAULT_PORT=2222

NAME=sshd.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_installed() {
    if [[ -x $SSHD ]] && command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1; then
        return
    fi
    apt_install openssh-server
    command -v ssh >/dev/null 2>&1 || apt_install openssh-client
    [[ -x $SSHD ]] || die "$SSHD is missing after installing openssh-server"
    command -v ssh-keygen >/dev/null 2>&1 || die "ssh-keygen is missing after installing openssh-client"
}

# The pid of the sshd this script started, when it still runs.
our_pid() {
    local pid
    [[ -f $PIDFILE ]] || return 1
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: it must be an sshd on our config (sshd rewrites its
    # title to `sshd: /usr/sbin/sshd -D -f <cfg> ... [listener] ...`, still naming it).
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-f $CFG" || return 1
    printf '%s\n' "$pid"
}

cfg_port() {
    [[ -f $CFG ]] || return 1
    sed -n "s/^ListenAddress $HOST:\([0-9][0-9]*\)\$/\1/p" "$CFG" | head -n1 | grep .
}

# Whether the user gets in on port $1 with the key and known_hosts of DIR, host key
# checked. `-F /dev/null`: the user's own ssh config plays no part.
lets_in() {
    local port=$1
    timeout 15 ssh -F /dev/null -n \
        -i "$USERKEY" -o IdentitiesOnly=yes \
        -o UserKnownHostsFile="$KNOWN" -o GlobalKnownHostsFile=/dev/null \
        -o StrictHostKeyChecking=yes -o BatchMode=yes \
        -o ControlMaster=no -o ControlPath=none \
        -o ConnectTimeout=5 -o LogLevel=ERROR \
        -l "$(id -un)" -p "$port" "$HOST" true </dev/null >&2
}

# Fresh host key and user key pair; authorized_keys holds the user's key only.
make_keys() {
    rm -f "$HOSTKEY" "$HOSTKEY.pub" "$USERKEY" "$USERKEY.pub"
    ssh-keygen -q -t ed25519 -N '' -C "rollout-sshd host key" -f "$HOSTKEY" </dev/null >&2
    ssh-keygen -q -t ed25519 -N '' -C "rollout-sshd $(id -un)" -f "$USERKEY" </dev/null >&2
    chmod 600 "$HOSTKEY" "$USERKEY"
    cp "$USERKEY.pub" "$AUTHKEYS"
}

write_known_hosts() {
    local port=$1 type key _
    read -r type key _ <"$HOSTKEY.pub"
    printf '[%s]:%s %s %s\n' "$HOST" "$port" "$type" "$key" >"$KNOWN"
}

write_cfg() {
    local port=$1
    cat >"$CFG" <<EOF
# Written by scripts/sshd.sh; rewritten by each \`scripts/sshd.sh start\`.
ListenAddress $HOST:$port
AddressFamily inet
HostKey $HOSTKEY
PidFile $PIDFILE
AuthorizedKeysFile $AUTHKEYS
AuthorizedKeysCommand none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
PermitRootLogin prohibit-password
PermitEmptyPasswords no
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowAgentForwarding no
# The tests open one shared connection per node and several sessions on each.
MaxStartups 100:30:200
MaxSessions 100
LoginGraceTime 30
LogLevel VERBOSE
Subsystem sftp internal-sftp
EOF
}

# Waits for pid $1 to accept connections on port $2 and let the user in. Returns 0 when it
# does, 1 when it exited, 2 on timeout.
wait_ready() {
    local pid=$1 port=$2 deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if accepts "$port" && lets_in "$port"; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.3
    done
    return 2
}

# Launches sshd in the foreground of a new session and records its pid. All fds are
# redirected (and the lock fd closed) so that `$(... start)` returns. The inner shell writes
# its own pid and execs sshd (which writes the same pid to its PidFile).
launch() {
    rm -f "$PIDFILE"
    : >"$LOG"
    # Its early errors (before -E applies) go to the same log, appended.
    # shellcheck disable=SC2016,SC2094 # expanded by the inner shell; both only append
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
        "$SSHD" -D -f "$CFG" -E "$LOG" \
        </dev/null >>"$LOG" 2>&1 9>&- &
    local i
    for i in $(seq 1 50); do
        [[ -s $PIDFILE ]] && break
        sleep 0.1
    done
    [[ -s $PIDFILE ]] || die "sshd did not record its pid in $PIDFILE"
    cat "$PIDFILE"
}

cmd_start() {
    local pid port rc check _
    lock 700
    if pid=$(our_pid); then
        port=$(cfg_port) || die "sshd (pid $pid) runs but $CFG has no ListenAddress"
        if [[ -n ${ROLLOUT_SSHD_PORT:-} && $ROLLOUT_SSHD_PORT != "$port" ]]; then
            die "sshd already runs on $HOST:$port, not ROLLOUT_SSHD_PORT=$ROLLOUT_SSHD_PORT; run stop first"
        fi
        rc=0
        wait_ready "$pid" "$port" || rc=$?
        if ((rc == 0)); then
            log "already running (pid $pid)"
            echo "$HOST:$port $DIR"
            return
        fi
        log "sshd pid $pid does not let $(id -un) in on $HOST:$port; restarting it"
        log_tail
        kill_pid "$pid"
    fi

    ensure_installed
    if [[ $(id -u) -eq 0 ]]; then
        # The privilege separation dir sshd checks for when run as root.
        mkdir -p /run/sshd
        chmod 755 /run/sshd
    fi
    rm -f "$PIDFILE"

    for _ in 1 2 3; do
        if [[ -n ${ROLLOUT_SSHD_PORT:-} ]]; then
            port=$ROLLOUT_SSHD_PORT
            [[ $port =~ ^[0-9]+$ ]] || die "ROLLOUT_SSHD_PORT=$port is not a port number"
            if port_in_use "$port"; then
                die "ROLLOUT_SSHD_PORT=$port is already in use"
            fi
        else
            port=$(pick_port "$DEFAULT_PORT")
        fi
        make_keys
        write_known_hosts "$port"
        write_cfg "$port"
        check=$("$SSHD" -t -f "$CFG" 2>&1) || die "sshd refuses $CFG: $check"
        [[ -z $check ]] || log "sshd -t: $check"
        log "starting sshd on $HOST:$port for user $(id -un) (dir $DIR, log $LOG)"
        pid=$(launch)
        rc=0
        wait_ready "$pid" "$port" || rc=$?
        if ((rc == 0)); then
            log "sshd is up (pid $pid)"
            echo "$HOST:$port $DIR"
            return
        fi
        if ((rc == 2)); then
            log "sshd did not let $(id -un) in on $HOST:$port within ${TIMEOUT}s"
            log_tail
            kill_pid "$pid"
            rm -f "$PIDFILE"
            exit 1
        fi
        # It exited. Another process may have taken an automatically picked port between
        # the check and the bind: try another one.
        if [[ -z ${ROLLOUT_SSHD_PORT:-} ]] && grep -q 'Address already in use' "$LOG"; then
            log "port $port was taken meanwhile; trying another"
            continue
        fi
        break
    done
    log "sshd exited during startup"
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
        log "stopping sshd (pid $pid)"
        kill_pid "$pid"
        if kill -0 "$pid" 2>/dev/null; then
            die "pid $pid is still alive"
        fi
    else
        log "not running"
    fi
    # Keep the keys and the log for post-mortems; the next start makes new keys.
    rm -f "$PIDFILE"
}

cmd_status() {
    local pid port
    pid=$(our_pid) || { log "not running"; exit 1; }
    port=$(cfg_port) || { log "pid $pid runs but $CFG has no ListenAddress"; exit 1; }
    lets_in "$port" || { log "pid $pid runs but does not let $(id -un) in on $HOST:$port"; exit 1; }
    log "running (pid $pid)"
    echo "$HOST:$port $DIR"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
