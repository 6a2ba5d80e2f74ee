#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""Drive an unmodified upstream Pegasus Python client (pypegasus3 on Python 3, or
pypegasus 0.1.x on Python 2.7) through a rollout; run by scripts/realclient.sh pegasus.

It writes keys k0, k1, ... (hash key "k<n>", empty sort key) in a loop for --duration
seconds or until --stop-file exists, each write with its own retry budget (--op-budget,
6 s by default), then reads back every acknowledged key through the same client and prints
exactly one JSON line on stdout:

  {"client": {...}, "completed": N, "acked": N, "first_try_errors": {"ERR_X": n},
   "failed_after_retries": N, "lost": N, "wrong": N, ...}

The program ends by itself within --duration + --readback-limit + --init-limit + 10 s,
even if the client or the reactor hangs: a watchdog thread prints the partial result
(with "incomplete": true) and exits with status 3.

Exit status: 0 done; 2 the client never found the table; 3 the watchdog fired.

How the client reports an outcome (pypegasus3 0.0.1.1 and pypegasus 0.1.17):
  - a tuple (code, value): code is a client-local error_types number (ERR_OK.value on
    success, ERR_OBJECT_NOT_FOUND.value for a missing key on get, ERR_TIMEOUT.value when
    the client's own timer fired, ERR_INVALID_STATE.value when it has no session for the
    partition);
  - a bare error_types member: the server's RPC-layer error (ERR_INVALID_STATE, ...);
  - None: the request's deferred failed (connection lost under 0.1.17, a thrift
    exception);
  - a raised exception (AttributeError before the first successful configuration query).
The numbers differ between client versions, so this program reports names.
"""
from __future__ import print_function, division

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time

try:
    _now = time.monotonic
except AttributeError:  # Python 2.7
    _now = time.time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--meta", required=True,
                   help="comma-separated meta addresses, HOST:PORT (IPv4 literals)")
    p.add_argument("--table", default="temp")
    p.add_argument("--duration", type=float, default=60.0,
                   help="seconds of writes at most")
    p.add_argument("--stop-file", default=None,
                   help="writes stop once this file exists (the rollout ended)")
    p.add_argument("--op-budget", type=float, default=6.0,
                   help="seconds one write (or one read-back) may take, retries included")
    p.add_argument("--op-timeout-ms", type=int, default=2000,
                   help="the client's timeout for one attempt (its default is 2000)")
    p.add_argument("--retry-sleep", type=float, default=0.5,
                   help="pause between attempts (the client re-queries the meta on a 2 s tick)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="writers in flight at once")
    p.add_argument("--rate", type=float, default=0.0,
                   help="writes started per second, all writers together (0: as fast as "
                        "the client goes); bounds the read-back")
    p.add_argument("--key-prefix", default="k")
    p.add_argument("--init-limit", type=float, default=30.0,
                   help="seconds to wait for the first configuration")
    p.add_argument("--readback-limit", type=float, default=120.0,
                   help="seconds for the read-back phase; keys not read by then are reported "
                        "as unchecked")
    p.add_argument("--log-dir", default=None,
                   help="where the client's pegasus.log goes (default: a new temp dir)")
    return p.parse_args()


ARGS = parse_args()

# pypegasus configures the root logger from its logger.conf at import time, writing
# 'pegasus.log' into the current directory: import it from a scratch directory.
_LOG_DIR = ARGS.log_dir or tempfile.mkdtemp(prefix="realclient_pegasus_")
if not os.path.isdir(_LOG_DIR):
    os.makedirs(_LOG_DIR)
_CWD = os.getcwd()
os.chdir(_LOG_DIR)
import warnings  # noqa: E402
warnings.filterwarnings("ignore")  # Twisted's service_identity notice
import pypegasus  # noqa: E402
from pypegasus.pgclient import Pegasus  # noqa: E402
from pypegasus.base.ttypes import error_types  # noqa: E402
from twisted.internet import defer, reactor  # noqa: E402
from twisted.internet.defer import inlineCallbacks  # noqa: E402
os.chdir(_CWD)


def client_identity():
    name = "pypegasus3" if sys.version_info[0] >= 3 else "pypegasus"
    version = getattr(pypegasus, "__version__", "unknown")
    try:
        from importlib import metadata  # Python 3.8+
        for dist in ("pypegasus3", "pypegasus"):
            try:
                version = metadata.version(dist)
                name = dist
                break
            except metadata.PackageNotFoundError:
                continue
    except ImportError:
        pass
    return {"name": name, "version": version,
            "python": "%d.%d.%d" % sys.version_info[:3]}


OK = error_types.ERR_OK.value
NOT_FOUND = error_types.ERR_OBJECT_NOT_FOUND.value


def code_name(value):
    try:
        return error_types(value).name
    except Exception:  # a storage status the enum does not name
        return "CODE_%r" % (value,)


def classify(result):
    """(ok, name, value) for whatever the client handed back."""
    if isinstance(result, tuple) and len(result) == 2:
        code, value = result
        if code == OK:
            return True, "ERR_OK", value
        return False, code_name(code), value
    if isinstance(result, error_types):
        return False, result.name, None
    if result is None:
        return False, "NONE_RESULT", None
    return False, "UNEXPECTED_%s" % type(result).__name__, None


class Stats(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.completed = 0
        self.acked = 0
        self.acked_after_retry = 0
        self.first_try_errors = {}
        self.failed_after_retries = 0
        self.last_errors_of_failed = {}
        self.attempts = 0
        self.lost = 0
        self.wrong = 0
        self.wrong_examples = []
        self.read_failed = 0
        self.read_checked = 0
        self.acked_keys = []  # (n, value)
        self.phase = "init"
        self.started = _now()
        self.printed = False

    def bump(self, table, key):
        table[key] = table.get(key, 0) + 1

    def line(self, **extra):
        for _ in range(3):  # the watchdog thread may read while the reactor writes
            try:
                return self._line(**extra)
            except RuntimeError:
                time.sleep(0.01)
        return self._line(**extra)

    def _line(self, **extra):
        d = {
            "client": client_identity(),
            "completed": self.completed,
            "acked": self.acked,
            "first_try_errors": dict(sorted(self.first_try_errors.items())),
            "failed_after_retries": self.failed_after_retries,
            "lost": self.lost,
            "wrong": self.wrong,
            "wrong_examples": self.wrong_examples,
            "acked_after_retry": self.acked_after_retry,
            "last_error_of_failed": dict(sorted(self.last_errors_of_failed.items())),
            "attempts": self.attempts,
            "read_checked": self.read_checked,
            "read_failed": self.read_failed,
            "read_unchecked": max(0, self.acked - self.read_checked),
            "phase": self.phase,
            "elapsed_s": round(_now() - self.started, 3),
            "op_budget_s": ARGS.op_budget,
            "op_timeout_ms": ARGS.op_timeout_ms,
            "concurrency": ARGS.concurrency,
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


def start_watchdog(limit):
    """Prints the partial result and leaves the process, whatever the reactor is doing."""
    def fire():
        if STATS.emit_once(incomplete=True, error="watchdog after %.0f s" % limit):
            sys.stderr.write("realclient_pegasus: watchdog fired in phase %s\n" % STATS.phase)
            sys.stderr.flush()
        os._exit(3)
    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()
    return t


def sleep(seconds):
    d = defer.Deferred()
    reactor.callLater(max(0.0, seconds), d.callback, None)
    return d


def call_with_deadline(seconds, fn, *args, **kwargs):
    """Runs one client call; fires with ('HUNG', None) if the client's deferred does not
    fire within `seconds` (it is left alone, not cancelled, so the client's own state is
    untouched). A raised exception becomes ('EXC_<name>', None)."""
    out = defer.Deferred()
    state = {"done": False}

    def finish(value):
        if not state["done"]:
            state["done"] = True
            if timer.active():
                timer.cancel()
            out.callback(value)

    def on_result(result):
        finish(("RESULT", result))

    def on_failure(failure):
        finish(("EXC_%s" % failure.type.__name__, None))

    timer = reactor.callLater(seconds, finish, ("HUNG", None))
    d = defer.maybeDeferred(fn, *args, **kwargs)
    d.addCallbacks(on_result, on_failure)
    return out


@inlineCallbacks
def attempt(op, *args):
    """One client call, classified: (ok, name, value)."""
    STATS.attempts += 1
    # A grace of 2 s past the client's own timer: the client answers its timeouts itself,
    # so HUNG means a deferred that never fired.
    tag, result = yield call_with_deadline(ARGS.op_timeout_ms / 1000.0 + 2.0, op, *args)
    if tag != "RESULT":
        defer.returnValue((False, tag, None))
    defer.returnValue(classify(result))


def attempt_timeout_ms(deadline):
    left_ms = int((deadline - _now()) * 1000)
    return max(1, min(ARGS.op_timeout_ms, left_ms))


@inlineCallbacks
def write_one(client, n, value):
    key = "%s%d" % (ARGS.key_prefix, n)
    deadline = _now() + ARGS.op_budget
    first = True
    last = None
    while True:
        ok, name, _ = yield attempt(client.set, key, "", value, 0, attempt_timeout_ms(deadline))
        if ok:
            STATS.acked += 1
            if not first:
                STATS.acked_after_retry += 1
            STATS.acked_keys.append((n, value))
            break
        last = name
        if first:
            STATS.bump(STATS.first_try_errors, name)
            first = False
        if _now() + ARGS.retry_sleep + 0.05 >= deadline:
            STATS.failed_after_retries += 1
            STATS.bump(STATS.last_errors_of_failed, last)
            break
        yield sleep(ARGS.retry_sleep)
    STATS.completed += 1


def stopped():
    return ARGS.stop_file is not None and os.path.exists(ARGS.stop_file)


@inlineCallbacks
def writer(client, counter, start, end, run_id):
    while _now() < end and not stopped():
        n = counter[0]
        counter[0] += 1
        if ARGS.rate > 0:
            due = start + n / ARGS.rate
            if due >= end:
                break
            if due > _now():
                yield sleep(due - _now())
        yield write_one(client, n, "v%d-%s" % (n, run_id))


@inlineCallbacks
def read_back(client, read_end):
    for n, value in list(STATS.acked_keys):
        if _now() >= read_end:
            break
        key = "%s%d" % (ARGS.key_prefix, n)
        want = value.encode("utf-8") if not isinstance(value, bytes) else value
        deadline = min(_now() + ARGS.op_budget, read_end)
        while True:
            ok, name, got = yield attempt(client.get, key, "", attempt_timeout_ms(deadline))
            if ok:
                if got != want:
                    STATS.wrong += 1
                    if len(STATS.wrong_examples) < 5:
                        STATS.wrong_examples.append(
                            {"key": key, "want": repr(want), "got": repr(got)})
                break
            if name == "ERR_OBJECT_NOT_FOUND" and got is not None:
                # A (code, value) tuple: the storage engine's not found, i.e. a lost write.
                # (The RPC layer's ERR_OBJECT_NOT_FOUND arrives as a bare enum, got None.)
                STATS.lost += 1
                break
            if _now() + ARGS.retry_sleep + 0.05 >= deadline:
                STATS.read_failed += 1
                break
            yield sleep(ARGS.retry_sleep)
        STATS.read_checked += 1


@inlineCallbacks
def init_client(client, limit):
    end = _now() + limit
    while _now() < end:
        tag, result = yield call_with_deadline(max(1.0, end - _now()), client.init)
        if tag == "RESULT" and result:
            defer.returnValue(True)
        yield sleep(1.0)
    defer.returnValue(False)


@inlineCallbacks
def main():
    code = 0
    client = None
    try:
        metas = [m.strip() for m in ARGS.meta.split(",") if m.strip()]
        client = Pegasus(metas, ARGS.table, ARGS.op_timeout_ms)
        ready = yield init_client(client, ARGS.init_limit)
        if not ready:
            STATS.emit_once(error="the client found no configuration for table %r" % ARGS.table)
            code = 2
            return
        STATS.phase = "write"
        run_id = "%08x" % random.getrandbits(32)
        start = _now()
        end = start + ARGS.duration
        counter = [0]
        workers = [writer(client, counter, start, end, run_id)
                   for _ in range(max(1, ARGS.concurrency))]
        yield defer.DeferredList(workers, consumeErrors=True)
        STATS.phase = "read"
        yield read_back(client, _now() + ARGS.readback_limit)
        STATS.phase = "done"
        STATS.emit_once()
    except Exception as e:  # report, never hang
        STATS.emit_once(incomplete=True, error="%s: %s" % (type(e).__name__, e))
        code = 1
    finally:
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
        EXIT[0] = code
        if reactor.running:
            reactor.stop()


EXIT = [1]

if __name__ == "__main__":
    hard_limit = ARGS.init_limit + ARGS.duration + ARGS.op_budget + ARGS.readback_limit + 10.0
    start_watchdog(hard_limit)
    reactor.callWhenRunning(main)
    reactor.run(installSignalHandlers=True)
    if not STATS.printed:
        STATS.emit_once(incomplete=True, error="the reactor stopped early")
    sys.exit(EXIT[0])
