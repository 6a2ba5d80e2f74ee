#!/usr/bin/env bash
# The OpenMLDB half of scripts/realclient.sh (read its header): the upstream SDK writes rows
# through a rollout of the emulated cluster; one JSON object as the last stdout line.
#
# Usage: scripts/realclient.sh openmldb [--strategy ha|naive] [--scale N]
#                                       [--server-version 0.8|0.9] [--rate INSERTS_PER_S]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/realclient_lib.sh
source "$ROOT/scripts/realclient_lib.sh"

strategy=ha
scale=1
rate=50
version=0.9
rc_options "$@"
case $version in 0.8|0.9) ;; *) fail "--server-version takes 0.8 or 0.9, not $version" ;; esac

mkdir -p "$DIR"
run=$(mktemp -d "$DIR/run.XXXXXX")
venv=$DIR/venv-openmldb

# The client, installed once: the wheel bundles the SDK's C++ core (about 90 MB).
if ! "$venv/bin/python" -c 'import openmldb.dbapi' >/dev/null 2>&1; then
  command -v "$PY" >/dev/null 2>&1 || fail "no $PY to make the client's virtual environment"
  log "installing openmldb 0.9.2 in $venv"
  "$PY" -m venv "$venv" >&2 || fail "could not make a virtual environment with $PY (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install -q openmldb==0.9.2 >&2 || fail "pip could not install openmldb 0.9.2"
fi

zk=${ROLLOUT_ZK:-}
if [[ -z $zk ]]; then
  zk=$(bash "$ROOT/scripts/zookeeper.sh" start | tail -n1) || fail "ZooKeeper did not start (scripts/zookeeper.sh start)"
fi

log "building the emulator"
(cd "$ROOT" && cargo build -q --release --example openmldb) >&2 || fail "the openmldb example did not build"
bin=$(target_dir)/release/examples/openmldb

deadline=$((SECONDS + LIMIT))

# Hold 15 s before the roll (the client connects and writes first), and 10 s after it for
# the puts in flight before the emulator checks what its tablets hold.
"$bin" --emulate --zk "$zk" --scale "$scale" --strategy "$strategy" \
  --server-version "$version" --hold-before 15 --hold 10 \
  --client-writes "$run/held.json" --json >"$run/emulator.out" 2>"$run/emulator.err" &
emu_pid=$!
root=$(rc_emulator_value "zk root")
log "emulator up (ZooKeeper $zk root $root, ${scale}x time, $strategy, OpenMLDB $version); client writing"

"$venv/bin/python" "$ROOT/scripts/realclient_openmldb.py" --zk "$zk" --zk-path "$root" \
  --tables t1 --duration "$LIMIT" --stop-file "$run/stop" --rate "$rate" \
  --key-prefix "realclient-$$-" --acked-file "$run/acked.jsonl" --glog-dir "$run/glog" \
  >"$run/client.out" 2>"$run/client.err" &
client_pid=$!

rc_wait_roll
touch "$run/stop"
log "rollout finished; waiting for the client's last insert and the emulator's check"
rc_wait_both_end "the client hung after the rollout (see $run/client.err)" \
  "the emulator did not end after its hold"
[[ -s $run/held.json ]] || fail "the emulator wrote no check of the client's rows ($run/emulator.err)"

"$PY" - "$run" "$scale" "$rate" <<'PYEOF'
import json, struct, sys
run, scale, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = json.loads(open(run + "/client.out").read().strip().splitlines()[-1])
try:
    roll = json.loads(open(run + "/emulator.out").read().strip().splitlines()[-1])
except ValueError:
    roll = {}
held = {w["key"]: w for w in json.load(open(run + "/held.json"))}

def row(hexed):
    """(k, v) of a row in the SDK's format for (k string, v bigint): a 6-byte header, a
    1-byte null bitmap, v as 8 bytes little-endian, then k's 1-byte offset and its bytes
    (docs/upstream/openmldb-sdk.md section 3.6)."""
    b = bytes.fromhex(hexed)
    if len(b) < 16 or b[0] != 1:
        return None
    v = struct.unpack_from("<q", b, 7)[0]
    return b[b[15]:].decode("utf-8", "replace"), v

lost = wrong = 0
examples = []
for line in open(run + "/acked.jsonl"):
    a = json.loads(line)
    w = held.get(a["key"])
    if w is None or not w["held"]:
        lost += 1
        continue
    if row(w["value_hex"]) != (a["key"], a["n"]) or w["table"] != int(a["table"][1:]):
        wrong += 1
        if len(examples) < 3:
            examples.append({"acked": a, "held": w})
out = {k: client.get(k) for k in ("client", "acked", "first_try_errors",
                                   "failed_after_retries", "acked_after_retry",
                                   "last_error_of_failed")}
# The SDK shows the application only [2000]; the tablet's own code of each failed put is
# in its glog warnings ("put failed--ReturnCode[103]--table is follower").
import glob, re
codes = {}
for f in glob.glob(run + "/glog/*.WARNING*") + glob.glob(run + "/glog/*warning*"):
    for m in re.finditer(r"due to: put failed--ReturnCode\[(\d+)\]--([^-\n]*)", open(f, errors="replace").read()):
        k = "%s %s" % (m.group(1), m.group(2).strip())
        codes[k] = codes.get(k, 0) + 1
    break
out["put_failures_in_sdk_log"] = codes
out["writes"] = client.get("completed")
out["lost"] = lost
out["wrong"] = wrong
out["wrong_examples"] = examples
out["time_scale"] = scale
out["rate"] = rate
for k in ("strategy", "outcome", "server_version", "restarts", "max_restarts_per_node",
          "knobs_restored", "virtual_secs", "requests_failed", "writes_lost"):
    out["roll_" + k] = roll.get(k)
out["completed"] = bool(client.get("phase") == "done" and roll.get("completed"))
ok = out["completed"] and client.get("failed_after_retries") == 0 and lost == 0 and wrong == 0
print(json.dumps(out, sort_keys=True))
sys.exit(0 if ok else 1)
PYEOF
