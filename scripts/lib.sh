# shellcheck shell=bash
# Helpers shared by scripts/zookeeper.sh and scripts/sshd.sh: sourced, not run.
# The sourcing script sets NAME (for messages), HOST, DIR, LOG and TIMEOUT first.

log() { printf '%s: %s\n' "$NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Runs as root directly, else through sudo when there is one.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# Installs Debian package $1 with apt-get.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "$1 is not installed and there is no apt-get"
    log "installing Debian's $1 package"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$1" >&2
}

# Whether something on HOST accepts a TCP connection on port $1.
accepts() {
    # shellcheck disable=SC2016 # expanded by the inner shell
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# Whether anything listens on TCP port $1 (any address, v4 or v6).
port_in_use() {
    local port=$1 hex f
    hex=$(printf '%04X' "$port")
    for f in /proc/net/tcp /proc/net/tcp6; do
        [[ -r $f ]] || continue
        # local_address is column 2 (ADDR:PORT in hex), state 0A is LISTEN.
        if awk -v p="$hex" 'NR > 1 && $4 == "0A" { split($2, a, ":"); if (a[2] == p) found = 1 }
                            END { exit !found }' "$f"; then
            return 0
        fi
    done
    # Fallback when /proc/net is not readable: does something accept a connection?
    accepts "$port"
}

# Port $1 when it is free, else a free one at random.
pick_port() {
    local port i
    if ! port_in_use "$1"; then
        echo "$1"
        return
    fi
    for i in $(seq 1 200); do
        port=$((20000 + (RANDOM * 32768 + RANDOM + i) % 40000))
        if ! port_in_use "$port"; then
            echo "$port"
            return
        fi
    done
    die "no free TCP port found"
}

log_tail() {
    if [[ -f $LOG ]]; then
        log "last lines of $LOG:"
        tail -n 40 "$LOG" >&2
    fi
}

# TERM, then KILL after 10 s.
kill_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    log "pid $pid ignored TERM for 10 s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 25); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
}

# Makes DIR (mode $1 when given) and holds its lock (fd 9) for the rest of the script.
# shellcheck disable=SC2120 # the mode is optional
lock() {
    mkdir -p "$DIR"
    [[ -z ${1:-} ]] || chmod "$1" "$DIR"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$DIR/.lock"
        flock -w $((TIMEOUT + 30)) 9 || die "another $NAME holds $DIR/.lock"
    fi
}
