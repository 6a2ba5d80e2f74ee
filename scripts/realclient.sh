#!/usr/bin/env bash
# Runs an unmodified upstream client through a rollout of the emulated cluster and prints
# one JSON object as the last stdout line: client (name, version), completed, acked,
# first_try_errors (by code), failed_after_retries, lost, wrong, plus the roll's outcome.
#
# Usage:
#   scripts/realclient.sh pegasus  [--strategy ha|naive] [--scale N] [--server-version V]
#                                  [--rate WRITES_PER_S]
#   scripts/realclient.sh openmldb [--strategy ha|naive] [--scale N] [--server-version V]
#                                  [--rate INSERTS_PER_S]
#
# pegasus: pypegasus3 (PyPI, Python 3) in a private virtual environment
# ($ROLLOUT_REALCLIENT_DIR/venv-pegasus, made when missing), against
# `cargo run --release --example pegasus -- --emulate`. The client writes keys in a loop
# from before the roll until it ends (each write with a 6 s retry budget, the first-try
# errors counted by name), then reads every acknowledged key back through itself while
# the emulator still serves. The client's timeouts run on the wall clock, so the emulated
# cluster runs at --scale 1 by default (about six minutes); at a faster scale a 2 s client
# timeout stands for that many emulated seconds, and the output says which scale ran.
#
# openmldb: the upstream SDK (PyPI openmldb 0.9.2, its C++ core behind the Python DB-API) in
# $ROLLOUT_REALCLIENT_DIR/venv-openmldb, against `cargo run --release --example openmldb --
# --emulate` in the ZooKeeper that scripts/zookeeper.sh starts (or $ROLLOUT_ZK). The SDK
# reads the tables from ZooKeeper and puts rows over brpc's baidu_std, as against a real
# cluster. Acknowledged rows are checked against what the partition's serving replica
# holds in the emulated cluster once the roll is over (the emulator has no query engine
# for a SQL read): `lost` a row not held, `wrong` a held row whose key or value differs;
# `put_failures_in_sdk_log` counts the tablets' codes the SDK logged (all attempts).
# At --scale 1 (the default) a roll takes about nine minutes.
#
# Exit status: 0 when the client completed with no write failed after its retries and none
# lost or wrong; 1 otherwise; 2 when a part could not start. The whole run has a time limit
# ($ROLLOUT_REALCLIENT_LIMIT seconds, default 1800).
#
# Environment:
#   ROLLOUT_REALCLIENT_DIR    working dir (default /tmp/rollout-realclient)
#   ROLLOUT_REALCLIENT_LIMIT  seconds for the whole run (default 1800)
#   PYTHON                    the Python 3 that makes the venv (default python3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/realclient_lib.sh
source "$ROOT/scripts/realclient_lib.sh"

system=${1:-}
[[ -n $system ]] || fail "which system? usage: scripts/realclient.sh pegasus|openmldb [options]"
shift

case $system in
  openmldb) exec bash "$ROOT/scripts/realclient_openmldb.sh" "$@" ;;
  pegasus) ;;
  *) fail "unknown system ${system:?}: expected pegasus or openmldb" ;;
esac

strategy=ha
scale=1
rate=100
version=2.5
rc_options "$@"
# pypegasus3 cannot parse master's host-name fields in configurations.
case $version in 2.4|2.5) ;; *) fail "pypegasus3 reads 2.4 and 2.5 configurations only, not $version" ;; esac

mkdir -p "$DIR"
run=$(mktemp -d "$DIR/run.XXXXXX")
venv=$DIR/venv-pegasus

# The client, installed once.
if ! "$venv/bin/python" -c 'import pypegasus' >/dev/null 2>&1; then
  command -v "$PY" >/dev/null 2>&1 || fail "no $PY to make the client's virtual environment"
  log "installing pypegasus3 in $venv"
  "$PY" -m venv "$venv" >&2 || fail "could not make a virtual environment with $PY (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install -q pypegasus3 >&2 || fail "pip could not install pypegasus3"
fi

log "building the emulator"
(cd "$ROOT" && cargo build -q --release --example pegasus) >&2 || fail "the pegasus example did not build"
bin=$(target_dir)/release/examples/pegasus

deadline=$((SECONDS + LIMIT))

# Hold 15 s before the roll (the client finds the table and writes first), and after it
# long enough for the read-back.
readback=180
"$bin" --emulate --scale "$scale" --strategy "$strategy" --server-version "$version" \
  --hold-before 15 --hold $((readback + 20)) --json >"$run/emulator.out" 2>"$run/emulator.err" &
emu_pid=$!
metas=$(rc_emulator_value "meta servers")
log "emulator up (metas $metas, ${scale}x time, $strategy, Pegasus $version); client writing"

"$venv/bin/python" "$ROOT/scripts/realclient_pegasus.py" --meta "$metas" --table temp \
  --duration "$LIMIT" --stop-file "$run/stop" --readback-limit "$readback" \
  --rate "$rate" --concurrency 4 --key-prefix "realclient-$$-" \
  --log-dir "$run" >"$run/client.out" 2>"$run/client.err" &
client_pid=$!

rc_wait_roll
touch "$run/stop"
log "rollout finished; the client reads back what it wrote"
rc_wait_both_end "the client hung in its read-back (see $run/client.err)" \
  "the emulator did not end after its hold"

client_json=$(tail -1 "$run/client.out")
roll_json=$(tail -1 "$run/emulator.out")
"$PY" - "$client_json" "$roll_json" "$scale" "$rate" <<'PYEOF'
import json, sys
client = json.loads(sys.argv[1])
try:
    roll = json.loads(sys.argv[2])
except ValueError:
    roll = {}
out = {k: client.get(k) for k in ("client", "acked", "first_try_errors",
                                   "failed_after_retries", "lost", "wrong",
                                   "acked_after_retry", "read_unchecked",
                                   "wrong_examples")}
out["writes"] = client.get("completed")
out["time_scale"] = int(sys.argv[3])
out["rate"] = int(sys.argv[4])
for k in ("strategy", "outcome", "server_version", "restarts",
          "max_restarts_per_node", "knobs_restored", "virtual_secs"):
    out["roll_" + k] = roll.get(k)
out["completed"] = bool(client.get("phase") == "done" and roll.get("completed"))
ok = (out["completed"] and client.get("failed_after_retries") == 0
      and client.get("lost") == 0 and client.get("wrong") == 0
      and client.get("read_unchecked", 0) == 0)
print(json.dumps(out, sort_keys=True))
sys.exit(0 if ok else 1)
PYEOF
