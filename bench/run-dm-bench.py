#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""run-dm-bench.py: set up both brokers and run dm_bench against them.

  * a private PostgreSQL cluster with the durability settings of a real
    server (fsync, synchronous_commit and full_page_writes on; the test
    harness turns them off), its data on the local disk;
  * mosquitto loading the freshly built mosquitto_chat.so (tests/integration/
    chatstack.py starts it), with bench users {prefix}s{i} and {prefix}r{i};
  * a second, plain mosquitto without the plugin;
both on free loopback ports, with the same broker settings (no per-message
logging, TCP_NODELAY, unlimited per-client queue so that overload shows as
latency instead of silent drops). Then `dm_bench --chat ... --plain ...` runs with
the remaining arguments, and everything is stopped again, also on failure.

Usage: bench/run-dm-bench.py [--keep-logs] [dm_bench options...]
  --keep-logs   copy both brokers' logs to a new /tmp/dm-bench-logs-* directory
Environment: CHAT_BUILD_DIR (default <source>/build); CHAT_DM_BENCH (another
dm_bench binary); CHAT_BENCH_PG_CONF ("name = value; ..." appended to
postgresql.conf, e.g. "log_min_duration_statement = 5"); CHAT_BENCH_PG_LOG
(copy the PostgreSQL log there at the end).
"""

import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))

import chatstack  # noqa: E402

BUILD = chatstack.BUILD_DIR
PASSWORD = "bench-password"

# The same settings on both brokers.
BROKER_COMMON = [
    "log_dest stderr",
    "log_type error",
    "log_type warning",
    "log_type notice",
    "connection_messages false",
    "set_tcp_nodelay true",
    "max_queued_messages 0",
]


class BenchStack(chatstack.Stack):
    """The test harness's stack, minus its per-message debug logging."""

    def write_conf(self):
        super().write_conf()
        with open(self.conf_file) as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            key = line.split(" ", 1)[0]
            if key in ("log_dest", "log_type", "connection_messages", "set_tcp_nodelay"):
                continue
            out.append(line)
        # before the listeners: they start per-listener sections
        i = next(k for k, l in enumerate(out) if l.startswith("listener "))
        out[i:i] = BROKER_COMMON
        with open(self.conf_file, "w") as f:
            f.write("\n".join(out) + "\n")


def durable_postgres():
    pg = chatstack.Postgres()
    pg.init()
    with open(os.path.join(pg.datadir, "postgresql.conf"), "a") as f:
        f.write("\n# run-dm-bench: a real server's durability (later lines win)\n"
                "fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n"
                "shared_buffers = 256MB\n")
        extra = os.environ.get("CHAT_BENCH_PG_CONF")
        if extra:  # e.g. "log_min_duration_statement = 5" to find slow statements
            f.write(extra.replace(";", "\n") + "\n")
    pg.start()
    return pg


def pg_settings(stack):
    names = ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method", "server_version")
    return {n: stack.sql("SHOW %s" % n)[0][0] for n in names}


def fsync_rate(directory):
    """fdatasync()s per second on the disk under directory (pg_test_fsync)."""
    exe = os.path.join(chatstack._pg_bindir(), "pg_test_fsync")
    if not os.path.exists(exe):
        return None
    path = os.path.join(directory, "fsync-probe")
    try:
        r = subprocess.run([exe, "-s", "1", "-f", path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    m = re.search(r"^\s+fdatasync\s+([\d.]+) ops/sec", r.stdout, re.M)
    return float(m.group(1)) if m else None


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def start_plain(dirpath):
    port = chatstack.free_port()
    conf = os.path.join(dirpath, "plain.conf")
    with open(conf, "w") as f:
        f.write("\n".join(["# run-dm-bench: plain mosquitto, no plugin", "per_listener_settings false",
                           "allow_anonymous true", "persistence false"] + BROKER_COMMON +
                          ["listener %d 127.0.0.1" % port]) + "\n")
    os.chmod(conf, 0o644)
    logf = open(os.path.join(dirpath, "plain.log"), "ab")
    proc = subprocess.Popen(["mosquitto", "-c", conf], stdin=subprocess.DEVNULL, stdout=logf,
                            stderr=subprocess.STDOUT, cwd=dirpath)
    logf.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("plain mosquitto exited (%s); see %s/plain.log" % (proc.returncode,
                                                                                  dirpath))
        if chatstack.port_open(port):
            return proc, port
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError("plain mosquitto did not open port %d" % port)


def main(argv):
    keep = "--keep-logs" in argv
    args = [a for a in argv if a != "--keep-logs"]
    if "-h" in args or "--help" in args:
        print(__doc__)
        subprocess.run([os.path.join(BUILD, "dm_bench"), "--help"])
        return 0
    pairs = 20
    prefix = "bench-"
    for i, a in enumerate(args):
        if a == "--pairs" and i + 1 < len(args):
            pairs = int(args[i + 1])
        if a == "--user-prefix" and i + 1 < len(args):
            prefix = args[i + 1]
    for exe in ("dm_bench", "chatctl", "mosquitto_chat.so"):
        if not os.path.exists(os.path.join(BUILD, exe)):
            sys.stderr.write("run-dm-bench: %s/%s is missing: build first\n" % (BUILD, exe))
            return 1

    pg = stack = plain = None
    rc = 1
    try:
        pg = durable_postgres()
        stack = BenchStack(pg=pg, persistence=False)
        stack.start()
        settings = pg_settings(stack)
        t0 = time.monotonic()
        names = ["%s%s%d" % (prefix, k, i) for i in range(pairs) for k in ("s", "r")]
        for n in names:
            stack.add_user(n, PASSWORD, wait=False)
        stack.wait_user(names[-1], PASSWORD, timeout=30)
        sys.stderr.write("run-dm-bench: %d users in %.1fs\n" % (len(names), time.monotonic() - t0))
        plain, plain_port = start_plain(stack.dir)
        fsyncs = fsync_rate(pg.dir)

        print("run-dm-bench: %s, %d CPUs, kernel %s, %s" % (
            platform.node(), os.cpu_count(), platform.release(), platform.python_version()))
        print("PostgreSQL %s: fsync=%s synchronous_commit=%s full_page_writes=%s wal_sync_method=%s;"
              " data on %s%s" % (settings["server_version"], settings["fsync"],
                                 settings["synchronous_commit"], settings["full_page_writes"],
                                 settings["wal_sync_method"], pg.dir,
                                 "" if fsyncs is None else " (%.0f fdatasync/s there)" % fsyncs))
        print("chat broker 127.0.0.1:%d (plugin %s), plain broker 127.0.0.1:%d" % (
            stack.mqtt_port, stack.plugin_path, plain_port))
        print("load average before: %s" % loadavg())
        sys.stdout.flush()
        exe = os.environ.get("CHAT_DM_BENCH") or os.path.join(BUILD, "dm_bench")
        cmd = [exe, "--chat", "127.0.0.1:%d" % stack.mqtt_port,
               "--plain", "127.0.0.1:%d" % plain_port, "--password", PASSWORD] + args
        r = subprocess.run(cmd)
        rc = r.returncode
        print("load average after: %s" % loadavg())
        stats = stack.sql("SELECT name, value FROM plugin_stats ORDER BY name")
        if stats:
            print("plugin_stats: " + ", ".join("%s=%s" % s for s in stats))
        if stack.broker_running is False:
            print("run-dm-bench: the chat broker died during the run")
            rc = rc or 1
        with open(os.path.join(stack.dir, "plain.log"), errors="replace") as f:
            plain_log = f.read()
        for what, text in (("chat broker", stack.broker_log), ("plain broker", plain_log)):
            bad = [l for l in text.splitlines() if re.search(r"(?i)error|warning|denied", l)]
            if bad:
                print("%s log, warnings and errors (%d):\n  %s" % (what, len(bad),
                                                                   "\n  ".join(bad[-20:])))
        if keep:
            dest = tempfile.mkdtemp(prefix="dm-bench-logs-")
            shutil.copy(stack.broker_log_file, os.path.join(dest, "chat-broker.log"))
            shutil.copy(os.path.join(stack.dir, "plain.log"), os.path.join(dest, "plain-broker.log"))
            print("logs kept in %s" % dest)
    finally:
        if plain is not None and plain.poll() is None:
            plain.send_signal(signal.SIGTERM)
            try:
                plain.wait(20)
            except subprocess.TimeoutExpired:
                plain.kill()
                plain.wait()
        if stack is not None:
            try:
                stack.stop()
            except AssertionError as e:
                sys.stderr.write("run-dm-bench: %s\n" % e)
                rc = rc or 1
        if pg is not None:
            if os.environ.get("CHAT_BENCH_PG_LOG"):
                shutil.copy(pg.logfile, os.environ["CHAT_BENCH_PG_LOG"])
            pg.destroy()
    return rc


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))
    sys.exit(main(sys.argv[1:]))
