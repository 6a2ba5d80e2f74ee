# shellcheck shell=bash
# Helpers shared by the two halves of scripts/realclient.sh: sourced, not run, right at the
# start. The sourcing script then sets run (its working directory), deadline (in SECONDS),
# and emu_pid and client_pid as it starts the emulator and the client.

NAME=realclient.sh
DIR=${ROLLOUT_REALCLIENT_DIR:-/tmp/rollout-realclient}
LIMIT=${ROLLOUT_REALCLIENT_LIMIT:-1800}
PY=${PYTHON:-python3}

log() { printf '%s: %s\n' "$NAME" "$*" >&2; }
fail() { log "error: $*"; exit 2; }

# Reads the options both halves take into strategy, scale, rate and version (the caller
# sets their defaults first and checks the version itself).
rc_options() {
  while [[ $# -gt 0 ]]; do
    case $1 in
      --strategy) strategy=${2:?}; shift 2 ;;
      --scale) scale=${2:?}; shift 2 ;;
      --rate) rate=${2:?}; shift 2 ;;
      --server-version) version=${2:?}; shift 2 ;;
      *) fail "unknown option $1" ;;
    esac
  done
  case $strategy in ha|naive) ;; *) fail "--strategy takes ha or naive, not $strategy" ;; esac
  [[ $scale =~ ^[0-9]+$ && $scale -ge 1 ]] || fail "--scale takes a whole number >= 1, not $scale"
  [[ $rate =~ ^[0-9]+$ && $rate -ge 1 ]] || fail "--rate takes a whole number >= 1, not $rate"
}

emu_pid=
client_pid=
rc_cleanup() {
  [[ -n $client_pid ]] && kill "$client_pid" 2>/dev/null || true
  [[ -n $emu_pid ]] && kill "$emu_pid" 2>/dev/null || true
}
trap rc_cleanup EXIT

# Prints what the emulator wrote after "$1: " on a line of its stdout, once it has; fails
# when the emulator exits first or the limit passes.
rc_emulator_value() {
  local value=
  while [[ -z $value ]]; do
    kill -0 "$emu_pid" 2>/dev/null || { tail -5 "$run/emulator.err" >&2; fail "the emulator exited before serving"; }
    (( SECONDS < deadline )) || fail "the emulator printed no $1 within the limit"
    value=$(sed -n "s/^$1: //p" "$run/emulator.out" | head -1)
    [[ -n $value ]] || sleep 0.5
  done
  printf '%s\n' "$value"
}

# Returns once the emulator printed "rollout finished"; fails when the emulator or the
# client exits first, or the limit passes.
rc_wait_roll() {
  until grep -q '^rollout finished' "$run/emulator.out"; do
    if ! kill -0 "$emu_pid" 2>/dev/null; then
      tail -5 "$run/emulator.err" >&2
      fail "the emulator exited before the rollout finished"
    fi
    if ! kill -0 "$client_pid" 2>/dev/null; then
      tail -5 "$run/client.err" >&2
      fail "the client exited during the rollout: $(tail -1 "$run/client.out")"
    fi
    (( SECONDS < deadline )) || fail "the rollout did not finish within the limit"
    sleep 1
  done
}

# Waits for the client, then the emulator, to end by themselves (each failing with its own
# line when it outlives the limit: $1 for the client, $2 for the emulator).
rc_wait_both_end() {
  while kill -0 "$client_pid" 2>/dev/null; do
    (( SECONDS < deadline )) || fail "$1"
    sleep 1
  done
  wait "$client_pid" || true
  client_pid=
  while kill -0 "$emu_pid" 2>/dev/null; do
    (( SECONDS < deadline )) || fail "$2"
    sleep 1
  done
  wait "$emu_pid" || true
  emu_pid=
}

# Cargo's target directory for builds run from $ROOT: $CARGO_TARGET_DIR (relative to $ROOT
# when relative), else $ROOT/target.
target_dir() {
  local t=${CARGO_TARGET_DIR:-target}
  [[ $t == /* ]] || t=$ROOT/$t
  printf '%s\n' "$t"
}
