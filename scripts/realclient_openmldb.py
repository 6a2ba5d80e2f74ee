#!/usr/bin/env python3
"""Drive the unmodified upstream OpenMLDB SDK (PyPI `openmldb`, its C++ `_sql_router_sdk`
behind the Python DB-API) through a rollout; run by scripts/realclient.sh openmldb.

It connects as an application does (`openmldb.dbapi.connect(zk=..., zkPath=...,
database=...)`), then runs `INSERT INTO <table> VALUES ('<key>', <n>)` for keys
<prefix>0, <prefix>1, ... in a loop until --stop-file exists or --duration passes, each
insert with its own retry budget (--op-budget, 6 s): the SDK itself never retries a put
nor re-routes on an error, and routes anew only when its ZooKeeper watch on
<root>/table/notify fires (docs/upstream/openmldb-sdk.md section 3.7). It then writes the
acknowledged keys to --acked-file and prints exactly one JSON line on stdout:

  {"client": {...}, "completed": N, "acked": N, "first_try_errors": {"...": n},
   "failed_after_retries": N, ...}

Lost and wrong writes are counted by scripts/realclient.sh against what the emulated
tablets hold (a SQL read would need the tablet's query engine, which the emulator lacks).

The SDK reports every failed insert as `[2000] ...`; first-try errors are counted by that
text with the row number removed ("insert values failed" for a put the tablet refused or
that timed out, "fail to get tablets" when a partition had no leader in its catalog).

Exit status: 0 done; 2 could not connect; 3 the watchdog fired.
"""
import argparse
import json
import os
import re
import sys
import threading
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--zk", required=True, help="ZooKeeper HOST:PORT")
    p.add_argument("--zk-path", required=True, help="the cluster's ZooKeeper root")
    p.add_argument("--database", default="demo_db")
    p.add_argument("--tables", default="t1", help="comma-separated tables, written in turn")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of writes at most")
    p.add_argument("--stop-file", default=None,
                   help="writes stop once this file exists (the rollout ended)")
    p.add_argument("--op-budget", type=float, default=6.0,
                   help="seconds one insert may take, retries included")
    p.add_argument("--retry-sleep", type=float, default=0.2)
    p.add_argument("--rate", type=float, default=50.0, help="inserts started per second")
    p.add_argument("--key-prefix", default="k")
    p.add_argument("--acked-file", required=True,
                   help="where the acknowledged (key, table, n) go, one JSON per line")
    p.add_argument("--glog-dir", default=None, help="the SDK's own log directory")
    return p.parse_args()


ARGS = parse_args()


def client_identity():
    version = "unknown"
    try:
        from importlib import metadata
        version = metadata.version("openmldb")
    except Exception:
        pass
    return {"name": "openmldb", "version": version,
            "python": "%d.%d.%d" % sys.version_info[:3]}


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.completed = 0
        self.acked = 0
        self.acked_after_retry = 0
        self.first_try_errors = {}
        self.failed_after_retries = 0
        self.last_errors_of_failed = {}
        self.attempts = 0
        self.phase = "init"
        self.started = time.monotonic()
        self.printed = False

    def line(self, **extra):
        d = {
            "client": client_identity(),
            "completed": self.completed,
            "acked": self.acked,
            "acked_after_retry": self.acked_after_retry,
            "first_try_errors": dict(sorted(self.first_try_errors.items())),
            "failed_after_retries": self.failed_after_retries,
            "last_error_of_failed": dict(sorted(self.last_errors_of_failed.items())),
            "attempts": self.attempts,
            "phase": self.phase,
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "op_budget_s": ARGS.op_budget,
        }
        d.update(extra)
        return json.dumps(d, sort_keys=True)

    def emit_once(self, **extra):
        with self.lock:
            if self.printed:
                return False
            self.printed = True
            sys.stdout.write(self.line(**extra) + "\n")
            sys.stdout.flush()
            return True


STATS = Stats()


def error_kind(e):
    """The SDK's error text without row numbers: `[2000] insert values 1 failed, failed
    rows peek: 0` becomes `[2000] insert values failed`."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "fail to get" in text and "tablet" in text:
        return "[2000] fail to get tablets"
    m = re.match(r"\[(\d+)\]\s*insert values \d+ failed", text)
    if m:
        return "[%s] insert values failed" % m.group(1)
    return re.sub(r"\d+", "N", text)[:80]


def watchdog(limit):
    def fire():
        if STATS.emit_once(incomplete=True, error="watchdog after %.0f s" % limit):
            sys.stderr.write("realclient_openmldb: watchdog fired in phase %s\n" % STATS.phase)
            sys.stderr.flush()
        os._exit(3)
    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()


def main():
    watchdog(ARGS.duration + ARGS.op_budget + 60)
    if ARGS.glog_dir:
        os.makedirs(ARGS.glog_dir, exist_ok=True)
    import openmldb.dbapi
    options = {"zk": ARGS.zk, "zkPath": ARGS.zk_path, "database": ARGS.database}
    if ARGS.glog_dir:
        options["glogDir"] = ARGS.glog_dir
    try:
        conn = openmldb.dbapi.connect(**options)
        cursor = conn.cursor()
    except Exception as e:  # the SDK raises a bare Exception when its init fails
        STATS.emit_once(error="connect: %s" % e)
        return 2
    tables = [t for t in ARGS.tables.split(",") if t]
    STATS.phase = "writing"
    acked = open(ARGS.acked_file, "w")
    end = time.monotonic() + ARGS.duration
    interval = 1.0 / ARGS.rate if ARGS.rate > 0 else 0.0
    next_start = time.monotonic()
    n = 0
    while time.monotonic() < end and not (ARGS.stop_file and os.path.exists(ARGS.stop_file)):
        now = time.monotonic()
        if now < next_start:
            time.sleep(next_start - now)
        next_start = max(next_start + interval, time.monotonic() - 1.0)
        key = "%s%d" % (ARGS.key_prefix, n)
        table = tables[n % len(tables)]
        sql = "INSERT INTO %s VALUES ('%s', %d)" % (table, key, n)
        deadline = time.monotonic() + ARGS.op_budget
        first = True
        last = None
        while True:
            STATS.attempts += 1
            try:
                cursor.execute(sql)
                ok = True
            except Exception as e:
                ok = False
                last = error_kind(e)
                if first:
                    STATS.first_try_errors[last] = STATS.first_try_errors.get(last, 0) + 1
            if ok:
                STATS.acked += 1
                if not first:
                    STATS.acked_after_retry += 1
                acked.write(json.dumps({"key": key, "table": table, "n": n}) + "\n")
                break
            first = False
            if time.monotonic() + ARGS.retry_sleep > deadline:
                STATS.failed_after_retries += 1
                STATS.last_errors_of_failed[last] = STATS.last_errors_of_failed.get(last, 0) + 1
                break
            time.sleep(ARGS.retry_sleep)
        STATS.completed += 1
        n += 1
    acked.close()
    STATS.phase = "done"
    STATS.emit_once()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
