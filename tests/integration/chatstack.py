#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""chatstack.py: the harness every integration test imports.

It runs the real thing: a throwaway PostgreSQL cluster, a fresh database
per stack, `chatctl init`, the system mosquitto loading the freshly built
mosquitto_chat.so from a generated config on free loopback ports, and
optionally chat-rest. Everything is torn down afterwards, also when a test
fails; processes that outlive a crashed test run are reaped by the ctest
fixture (`chatstack.py pg-stop STATE`) through a small registry of pids.

Used as a library (stdlib unittest + paho-mqtt + psycopg2, /usr/bin/python3):

    from chatstack import Stack, StackTestCase, MQTTv311, MQTTv5, main

    with Stack(users={"alice": "pw-a", "bob": "pw-b"}) as s:
        bob = s.client("bob", "pw-b")                  # connected, inbox subscribed
        alice = s.client("alice", "pw-a", device="phone")
        alice.publish("chat/dm/bob", {"cid": "c1", "body": "hi"})   # waits for PUBACK
        ev = bob.wait_event("msg", body="hi")          # parsed JSON of the event
        bob.expect_none(1.0)                           # nothing else arrives
        assert s.connect_raw("alice", "wrong", "alice") != 0

Stack(options=None, rest=False, pg=None, own_pg=False, users=None,
      extra_conf="", persistence=True)
    options: extra plugin_opt_* (keys with or without the prefix; a value of
    None drops a default option). start()/stop(), also a context manager.
    Properties: mqtt_port, ws_port, rest_url, conninfo, dbname, secret_file,
    spool_dir, conf_file, prefix, broker_log (text so far).
    chatctl(*args, input=None, check=True) -> CompletedProcess
    add_user(name, password, wait=None); wait_user(name, password)
    sql(query, params=()) -> list of rows
    client(user, password, device=None, protocol=MQTTv311, subscribe_inbox=True,
           clean_session=True, keepalive=60, client_id=None, transport="tcp",
           properties=None, will=None) -> Client
    connect_raw(user, password, client_id, protocol=MQTTv311) -> CONNACK code
    stop_broker(sig=SIGTERM) / start_broker(); stop_postgres() / start_postgres()
    (those two need Stack(own_pg=True)); http(method, path, body=None,
    token=None) -> (status, json-or-text); login(user, password) -> token.

Client: wait_for(pred=None, timeout=5), wait_event(type=None, timeout=5,
    **fields), expect_none(timeout=1.0, pred=None), drain(), received,
    subscribe(topic, qos=1) -> [codes], unsubscribe(topic),
    publish(topic, payload, qos=1, retain=False) (returns after PUBACK),
    disconnect(), drop() (network cut, no DISCONNECT), connected.

Environment: CHAT_BUILD_DIR (default <source>/build), CHAT_SOURCE_DIR,
CHAT_SANITIZE=ON (broker gets LD_PRELOAD of libasan/libubsan; sanitizer
reports fail the test), CHAT_TEST_STATE (the ctest fixture's directory:
shared cluster + process registry), CHAT_KEEP_TMP=1 (keep temp dirs),
CHAT_BROKER_DEBUG=1 (mosquitto's log_type all; default: no debug lines).

As a script: chatstack.py pg-start STATE | pg-stop STATE | reap STATE.
"""

import atexit
import base64
import json
import os
import pwd
import grp
import random
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt

try:
    import psycopg2
except ImportError:  # a missing driver is a failure, never a skip
    sys.stderr.write("chatstack: python3-psycopg2 is missing (scripts/deps.sh installs it)\n")
    raise

MQTTv311 = mqtt.MQTTv311
MQTTv5 = mqtt.MQTTv5

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("CHAT_SOURCE_DIR") or os.path.join(HERE, "..", ".."))
BUILD_DIR = os.path.abspath(os.environ.get("CHAT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build"))
SANITIZE = os.environ.get("CHAT_SANITIZE", "OFF").upper() in ("ON", "1", "TRUE", "YES")
STATE_DIR = os.environ.get("CHAT_TEST_STATE") or None
KEEP_TMP = os.environ.get("CHAT_KEEP_TMP") == "1"
# Mosquitto's debug log (every PUBLISH in and out) only when asked for:
# it grows to hundreds of megabytes in the big fan-out tests.
BROKER_DEBUG = os.environ.get("CHAT_BROKER_DEBUG") == "1"
IS_ROOT = os.geteuid() == 0
# Sanitizer builds are several times slower: scale every timeout.
SLOW = 3.0 if SANITIZE else 1.0

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                     "AddressSanitizer:DEADLYSIGNAL", "ERROR: UndefinedBehaviorSanitizer")


class HarnessError(Exception):
    """The stack could not be set up (a failure of the test, never a skip)."""


def log(msg):
    sys.stderr.write("chatstack: %s\n" % msg)
    sys.stderr.flush()


# --------------------------------------------------------------------------
# small helpers

_rng = random.Random(int.from_bytes(os.urandom(8), "little"))
_ports_taken = set()


def free_port():
    """A loopback TCP port nobody listens on, below the kernel's ephemeral
    range (so it cannot be taken by an outgoing connection meanwhile)."""
    for _ in range(500):
        p = _rng.randrange(20000, 32000)
        if p in _ports_taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        _ports_taken.add(p)
        return p
    raise HarnessError("no free loopback port found")


def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _clean_env(extra=None):
    """The environment for child processes: no PG* variables and no
    LD_PRELOAD leaking in from the caller."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k not in ("LD_PRELOAD", "CHAT_DB")}
    env.setdefault("ASAN_OPTIONS", "abort_on_error=1:halt_on_error=1:detect_leaks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    if extra:
        env.update(extra)
    return env


def sanitizer_report(text):
    """The first sanitizer report in text, or None."""
    for m in SANITIZER_MARKERS:
        i = text.find(m)
        if i >= 0:
            start = text.rfind("\n", 0, max(0, i - 200)) + 1
            return text[start:start + 6000]
    return None


def tail(text, lines=150):
    return "\n".join(text.splitlines()[-lines:])


_NOISE = ("New connection from", "Sending CONNACK", "disconnected, not authorised",
          "closed its connection", "Received PINGREQ", "Sending PINGRESP")


def log_excerpt(text, lines=60):
    """What matters in a broker log: the plugin's own lines, errors and
    warnings (first 40), then the last lines without connection noise."""
    all_lines = text.splitlines()
    key = [l for l in all_lines if "chat:" in l or "rror" in l or "arning" in l
           or "Sanitizer" in l or "runtime error" in l][:40]
    rest = [l for l in all_lines if not any(n in l for n in _NOISE)][-lines:]
    return ("-- plugin/error lines --\n%s\n-- last lines --\n%s" % ("\n".join(key),
                                                                   "\n".join(rest)))


def _ids_of(user):
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


def _chown(path, user, group=None):
    if not IS_ROOT:
        return
    uid, gid = _ids_of(user)
    if group is not None:
        gid = grp.getgrnam(group).gr_gid
    os.chown(path, uid, gid)


def _world_reachable(path):
    """True when any user can read path (every parent dir has o+x)."""
    path = os.path.realpath(path)
    if not os.stat(path).st_mode & 0o004:
        return False
    d = os.path.dirname(path)
    while True:
        if not os.stat(d).st_mode & 0o001:
            return False
        if d == "/":
            return True
        d = os.path.dirname(d)


def _proc_starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
        return int(data[data.rfind(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid, starttime=None):
    st = _proc_starttime(pid)
    if st is None:
        return False
    try:  # a zombie is not alive
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except OSError:
        return False
    return starttime is None or st == starttime


# --------------------------------------------------------------------------
# process registry: lets `chatstack.py reap STATE` clean up after a test run
# that was killed (ctest timeout) before its own cleanup ran.

class _Registry:
    def __init__(self, state_dir):
        self.dir = os.path.join(state_dir, "procs") if state_dir else None

    def add(self, kind, **info):
        if not self.dir:
            return None
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, "%s-%d-%s.json" % (kind, os.getpid(), secrets.token_hex(4)))
        info["kind"] = kind
        with open(path, "w") as f:
            json.dump(info, f)
        return path

    @staticmethod
    def remove(path):
        if path:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


REGISTRY = _Registry(STATE_DIR)


def reap(state_dir):
    """Stop everything recorded in state_dir/procs. Returns how many."""
    d = os.path.join(state_dir, "procs")
    n = 0
    if not os.path.isdir(d):
        return 0
    entries = []
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        try:
            with open(path) as f:
                entries.append((path, json.load(f)))
        except (OSError, ValueError):
            _Registry.remove(path)
    # processes first, then clusters, then directories
    order = {"proc": 0, "pg": 1, "dir": 2}
    entries.sort(key=lambda e: order.get(e[1].get("kind"), 3))
    for path, e in entries:
        kind = e.get("kind")
        if kind == "proc":
            pid, st = e["pid"], e.get("starttime")
            if _pid_alive(pid, st):
                log("reaping %s (pid %d)" % (e.get("what", "process"), pid))
                try:
                    os.kill(pid, signal.SIGKILL)
                    n += 1
                except ProcessLookupError:
                    pass
        elif kind == "pg":
            datadir = e["datadir"]
            if os.path.exists(os.path.join(datadir, "postmaster.pid")):
                log("reaping PostgreSQL in %s" % datadir)
                try:
                    _pg_run(e.get("os_user"), [_pg_bin("pg_ctl"), "-D", datadir, "-m", "immediate",
                                               "-w", "-t", "30", "stop"], check=False)
                    n += 1
                except Exception as ex:  # keep reaping the rest
                    log("pg_ctl stop failed: %s" % ex)
        elif kind == "dir":
            if not KEEP_TMP:
                shutil.rmtree(e["path"], ignore_errors=True)
        _Registry.remove(path)
    return n


# --------------------------------------------------------------------------
# PostgreSQL

def _pg_bindir():
    env = os.environ.get("CHAT_PG_BINDIR")
    if env:
        return env
    best = None
    base = "/usr/lib/postgresql"
    if os.path.isdir(base):
        for v in os.listdir(base):
            b = os.path.join(base, v, "bin")
            if os.path.exists(os.path.join(b, "initdb")):
                key = int(v) if v.isdigit() else 0
                if best is None or key > best[0]:
                    best = (key, b)
    if best:
        return best[1]
    w = shutil.which("initdb")
    if w:
        return os.path.dirname(w)
    raise HarnessError("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                       "install postgresql (scripts/deps.sh)")


def _pg_bin(name):
    return os.path.join(_pg_bindir(), name)


def _pg_os_user():
    """The OS user that owns clusters: postgres when we are root (the server
    refuses to run as root), else ourselves."""
    if not IS_ROOT:
        return None
    try:
        pwd.getpwnam("postgres")
        return "postgres"
    except KeyError:
        raise HarnessError("running as root but there is no 'postgres' user to own the cluster "
                           "(install postgresql)")


def _pg_run(os_user, argv, check=True, timeout=120):
    kw = {}
    if os_user and IS_ROOT:
        uid, gid = _ids_of(os_user)
        kw = dict(user=uid, group=gid, extra_groups=[])
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout,
                       cwd="/", env=_clean_env({"LC_ALL": "C"}), **kw)
    if check and r.returncode != 0:
        raise HarnessError("%s failed (%d):\n%s" % (" ".join(argv), r.returncode, r.stdout))
    return r


class Postgres:
    """A throwaway PostgreSQL cluster: data and unix socket in a temp dir,
    TCP on a free 127.0.0.1 port, trust authentication, superuser
    `postgres`. stop()/start() again on the same data dir and port
    simulates an outage."""

    SUPERUSER = "postgres"

    def __init__(self, port=None):
        self.os_user = _pg_os_user()
        self.port = port
        self.dir = None
        self.owned = True
        self._reg = []
        self._running = False
        self._ever_started = False

    # -- layout
    @property
    def datadir(self):
        return os.path.join(self.dir, "data")

    @property
    def socket_dir(self):
        return self.dir

    @property
    def logfile(self):
        return os.path.join(self.dir, "postgres.log")

    def conninfo(self, dbname="postgres"):
        return "host=%s port=%d dbname=%s user=%s" % (self.socket_dir, self.port, dbname,
                                                       self.SUPERUSER)

    # -- lifecycle
    def init(self):
        self.dir = tempfile.mkdtemp(prefix="chatpg-")
        os.chmod(self.dir, 0o755)  # the socket must be reachable by every user
        self._reg.append(REGISTRY.add("dir", path=self.dir))
        if self.os_user:
            _chown(self.dir, self.os_user)
        _pg_run(self.os_user, [_pg_bin("initdb"), "-D", self.datadir, "-U", self.SUPERUSER,
                               "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\n# chatstack: throwaway test cluster\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "max_connections = 300\nshared_buffers = 64MB\n"
                    "log_min_messages = warning\nlog_line_prefix = '%m [%p] '\n")
        self._reg.append(REGISTRY.add("pg", datadir=self.datadir, os_user=self.os_user))

    def start(self, timeout=60):
        if self.dir is None:
            self.init()
        for attempt in range(5):
            if self.port is None:
                self.port = free_port()
            opts = "-c port=%d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s" % (
                self.port, self.socket_dir)
            r = _pg_run(self.os_user, [_pg_bin("pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                                       "-o", opts, "-w", "-t", str(timeout), "start"], check=False)
            if r.returncode == 0:
                self._running = self._ever_started = True
                return self
            logtext = self.log_text()
            if "already in use" in logtext and attempt < 4 and not self._ever_started:
                log("port %d taken, retrying PostgreSQL on another port" % self.port)
                self.port = None
                continue
            raise HarnessError("PostgreSQL did not start (pg_ctl %d):\n%s\n%s" % (
                r.returncode, r.stdout, tail(logtext, 40)))
        raise HarnessError("PostgreSQL did not start")

    def stop(self, mode="fast"):
        if self.dir is None or not os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            self._running = False
            return
        _pg_run(self.os_user, [_pg_bin("pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "-t", "60",
                               "stop"], check=False)
        self._running = False

    def destroy(self):
        if not self.owned:
            return
        try:
            self.stop("fast")
        finally:
            if self.dir and not KEEP_TMP:
                shutil.rmtree(self.dir, ignore_errors=True)
            for p in self._reg:
                _Registry.remove(p)
            self._reg = []

    @property
    def running(self):
        return self._running

    def log_text(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- SQL
    def connect(self, dbname="postgres"):
        c = psycopg2.connect(self.conninfo(dbname), connect_timeout=10)
        c.autocommit = True
        return c

    def execute(self, query, params=(), dbname="postgres"):
        c = self.connect(dbname)
        try:
            with c.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        finally:
            c.close()

    def create_database(self, name):
        self.execute('CREATE DATABASE "%s"' % name)

    def drop_database(self, name):
        self.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)

    # -- sharing through the fixture's state dir
    def save(self, state_dir):
        os.makedirs(state_dir, exist_ok=True)
        with open(os.path.join(state_dir, "pg.json"), "w") as f:
            json.dump({"dir": self.dir, "port": self.port, "os_user": self.os_user}, f)

    @classmethod
    def attach(cls, state_dir):
        with open(os.path.join(state_dir, "pg.json")) as f:
            st = json.load(f)
        pg = cls(port=st["port"])
        pg.dir, pg.os_user, pg.owned = st["dir"], st["os_user"], False
        pg._running = pg._ever_started = True
        try:
            pg.execute("SELECT 1")
        except psycopg2.Error as e:
            raise HarnessError("the shared PostgreSQL of %s is not reachable: %s" % (state_dir, e))
        return pg


_shared_pg = None
_shared_lock = threading.Lock()


def shared_postgres():
    """The cluster shared by every stack of this process: the ctest
    fixture's when CHAT_TEST_STATE names one, else one started here (and
    stopped at exit)."""
    global _shared_pg
    with _shared_lock:
        if _shared_pg is None:
            if STATE_DIR and os.path.exists(os.path.join(STATE_DIR, "pg.json")):
                _shared_pg = Postgres.attach(STATE_DIR)
            else:
                pg = Postgres()
                atexit.register(pg.destroy)
                pg.start()
                _shared_pg = pg
        return _shared_pg


# --------------------------------------------------------------------------
# MQTT

class Message:
    """One received PUBLISH."""

    def __init__(self, m):
        self.topic = m.topic
        self.payload = bytes(m.payload)
        self.qos = m.qos
        self.retain = bool(m.retain)
        self.properties = getattr(m, "properties", None)
        self.time = time.monotonic()

    @property
    def text(self):
        return self.payload.decode("utf-8", errors="replace")

    @property
    def json(self):
        try:
            return json.loads(self.payload)
        except ValueError:
            return None

    def __repr__(self):
        t = self.text
        return "<%s%s %s>" % (self.topic, " (retained)" if self.retain else "",
                              t if len(t) < 300 else t[:300] + "...")


class ConnectRefused(Exception):
    def __init__(self, rc, client_id):
        super().__init__("CONNECT of %r refused: %s" % (client_id, rc))
        self.rc = rc


def _rc_value(rc):
    return rc.value if hasattr(rc, "value") else int(rc)


class Client:
    """A connected paho client on its own loop thread (no automatic
    reconnect). Every message received is recorded in order."""

    def __init__(self, host, port, user, password, client_id, protocol=MQTTv311,
                 clean_session=True, keepalive=60, transport="tcp", properties=None, will=None,
                 name=None):
        self.user, self.client_id, self.protocol = user, client_id, protocol
        self.name = name or client_id
        self._cond = threading.Condition()
        self._pending = []
        self.received = []  # every message ever received, in order
        self._acks = {}
        self._connack = None
        self._connected = False
        self._disconnected_rc = None
        self._stop = threading.Event()
        if protocol == MQTTv5:
            self.c = mqtt.Client(client_id=client_id, protocol=MQTTv5, transport=transport,
                                 reconnect_on_failure=False)
        else:
            self.c = mqtt.Client(client_id=client_id, clean_session=clean_session,
                                 protocol=protocol, transport=transport,
                                 reconnect_on_failure=False)
        if user is not None:
            self.c.username_pw_set(user, password)
        if will:
            self.c.will_set(**will)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        kw = {}
        if protocol == MQTTv5:
            kw["clean_start"] = bool(clean_session)
            if properties is None and not clean_session:
                from paho.mqtt.properties import Properties
                from paho.mqtt.packettypes import PacketTypes
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = 3600
            if properties is not None:
                kw["properties"] = properties
        self.c.connect(host, port, keepalive, **kw)
        self._thread = threading.Thread(target=self._loop, name="mqtt-%s" % client_id, daemon=True)
        self._thread.start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._connack is not None or self._stopped(),
                                       timeout=10 * SLOW):
                self._shutdown()
                raise AssertionError("no CONNACK for %r within %ss" % (client_id, 10 * SLOW))
        if self._connack is None or self._connack != 0:
            self._shutdown()
            raise ConnectRefused(self._connack, client_id)

    # -- loop
    def _stopped(self):
        return not self._thread.is_alive()

    def _loop(self):
        try:
            while not self._stop.is_set():
                rc = self.c.loop(timeout=0.05)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    break
        finally:
            with self._cond:
                self._connected = False
                self._cond.notify_all()

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        with self._cond:
            self._connack = _rc_value(rc)
            self._connected = self._connack == 0
            self.session_present = bool(flags.get("session present"))
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, rc, properties=None):
        with self._cond:
            self._connected = False
            self._disconnected_rc = _rc_value(rc)
            self._cond.notify_all()

    def _on_message(self, client, userdata, m):
        msg = Message(m)
        with self._cond:
            self._pending.append(msg)
            self.received.append(msg)
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        with self._cond:
            self._acks[mid] = [_rc_value(g) for g in granted]
            self._cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, *rest):
        with self._cond:
            self._acks[mid] = []
            self._cond.notify_all()

    @property
    def connected(self):
        return self._connected and self._thread.is_alive()

    # -- operations
    def subscribe(self, topic, qos=1, timeout=5):
        """Subscribe and return the SUBACK codes (granted QoS, or >= 0x80)."""
        rc, mid = self.c.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError("%s: subscribe %r failed to send: %s" % (self.name, topic, rc))
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._acks or not self.connected,
                                       timeout=timeout * SLOW):
                raise AssertionError("%s: no SUBACK for %r" % (self.name, topic))
            if mid not in self._acks:
                raise AssertionError("%s: disconnected while subscribing to %r" % (self.name, topic))
            return self._acks.pop(mid)

    def unsubscribe(self, topic, timeout=5):
        rc, mid = self.c.unsubscribe(topic)
        with self._cond:
            self._cond.wait_for(lambda: mid in self._acks or not self.connected,
                                timeout=timeout * SLOW)
            self._acks.pop(mid, None)

    def publish(self, topic, payload=b"", qos=1, retain=False, properties=None, timeout=5):
        """Publish; with QoS > 0 return only after the PUBACK/PUBCOMP."""
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError("%s: publish to %r failed: %s" % (self.name, topic,
                                                                  mqtt.error_string(info.rc)))
        deadline = time.monotonic() + timeout * SLOW
        while not info.is_published():
            if time.monotonic() > deadline:
                raise AssertionError("%s: no PUBACK for %r within %ss" % (self.name, topic,
                                                                         timeout * SLOW))
            if not self.connected:
                raise AssertionError("%s: disconnected before the PUBACK for %r" % (self.name,
                                                                                    topic))
            time.sleep(0.005)
        return info

    def wait_for(self, pred=None, timeout=5.0, what=None):
        """Return (and consume) the first received message, not consumed
        yet, for which pred(message) is true. Fails after timeout seconds."""
        pred = pred or (lambda m: True)

        def find():
            for i, m in enumerate(self._pending):
                if pred(m):
                    return i
            return None

        with self._cond:
            idx = [None]

            def ready():
                idx[0] = find()
                return idx[0] is not None

            if not self._cond.wait_for(ready, timeout=timeout * SLOW):
                raise AssertionError("%s: %s did not arrive within %.1fs; unconsumed: %r" % (
                    self.name, what or "expected message", timeout * SLOW, self._pending[-20:]))
            return self._pending.pop(idx[0])

    def wait_event(self, type=None, timeout=5.0, topic=None, **fields):
        """Wait for a JSON message (by default on any topic) whose "type"
        and given top-level fields match; returns the parsed object."""

        def pred(m):
            if topic is not None and m.topic != topic:
                return False
            j = m.json
            if not isinstance(j, dict):
                return False
            if type is not None and j.get("type") != type:
                return False
            return all(k in j and j[k] == v for k, v in fields.items())

        desc = "event type=%s %s" % (type, fields) if fields or type else "JSON event"
        return self.wait_for(pred, timeout, what=desc).json

    def expect_none(self, timeout=1.0, pred=None, what=None):
        """Wait timeout seconds and fail if a message (matching pred) arrived
        and was not consumed."""
        pred = pred or (lambda m: True)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                bad = [m for m in self._pending if pred(m)]
                if bad:
                    raise AssertionError("%s: unexpected %s: %r" % (self.name,
                                                                     what or "message", bad))
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def drain(self):
        """Consume and return everything received so far."""
        with self._cond:
            out, self._pending = self._pending, []
            return out

    def wait_disconnected(self, timeout=5.0):
        with self._cond:
            return self._cond.wait_for(lambda: not self.connected, timeout=timeout * SLOW)

    def disconnect(self):
        if self.connected:
            try:
                self.c.disconnect()
            except Exception:
                pass
            self.wait_disconnected(2)
        self._shutdown()

    close = disconnect

    def drop(self):
        """Cut the network connection without a DISCONNECT (fires the Will,
        like a lost phone)."""
        self._stop.set()
        self._thread.join(5)
        s = self.c.socket()
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._connected = False

    def _shutdown(self):
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)
        try:
            s = self.c.socket()
            if s is not None:
                s.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.disconnect()


def _mqtt_str(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_raw(port, user, password, client_id, protocol=MQTTv311, host="127.0.0.1",
                timeout=5.0):
    """Send one CONNECT and return the CONNACK return/reason code (0 =
    accepted), or None when the server closed the connection without a
    CONNACK. Disconnects cleanly when accepted."""
    flags = 0x02  # clean session / clean start
    payload = _mqtt_str(client_id)
    if user is not None:
        flags |= 0x80
        payload += _mqtt_str(user)
        if password is not None:
            flags |= 0x40
            payload += _mqtt_str(password)
    var = _mqtt_str("MQTT") + bytes([5 if protocol == MQTTv5 else 4, flags]) + struct.pack("!H", 30)
    if protocol == MQTTv5:
        var += b"\x00"  # no properties
    body = var + payload
    pkt = b"\x10" + _varint(len(body)) + body
    with socket.create_connection((host, port), timeout=timeout * SLOW) as s:
        s.settimeout(timeout * SLOW)
        s.sendall(pkt)
        buf = b""
        try:
            while len(buf) < 4:
                chunk = s.recv(256)
                if not chunk:
                    break
                buf += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        if len(buf) < 4 or buf[0] != 0x20:
            return None
        # fixed header, remaining length (1 byte for a CONNACK), flags, code
        rc = buf[3]
        if rc == 0:
            try:
                s.sendall(b"\xe0\x00")
            except OSError:
                pass
        return rc


# --------------------------------------------------------------------------
# the stack

# Preloading libasan into the uninstrumented system mosquitto leaves ASan
# to initialise lazily, on the first malloc, which happens inside
# libgpg-error's constructor while glibc's gettext lock (_nl_state_lock) is
# write-held. ASan's init then calls dlerror() for its failed
# dlsym("swift_demangle"), which takes that lock again and leaves it
# corrupted: the next bindtextdomain (libpq's first connection) deadlocks.
# Exporting a swift_demangle (returning NULL: not a Swift name) from a tiny
# preloaded object makes that dlsym succeed, so init takes no lock.
_SWIFT_SHIM_SRC = """
#include <stddef.h>
char *swift_demangle(const char *m, size_t n, char *out, size_t *outn, unsigned flags)
{ (void)m; (void)n; (void)out; (void)outn; (void)flags; return NULL; }
"""
_shim_path = None


def _asan_shim():
    global _shim_path
    if _shim_path is None:
        d = tempfile.mkdtemp(prefix="chatasan-")
        os.chmod(d, 0o755)
        reg = REGISTRY.add("dir", path=d)

        def cleanup():
            shutil.rmtree(d, ignore_errors=True)
            _Registry.remove(reg)

        atexit.register(cleanup)
        out = os.path.join(d, "chat_asan_swift_shim.so")
        r = subprocess.run(["gcc", "-shared", "-fPIC", "-nostdlib", "-O2", "-o", out, "-x", "c", "-"],
                           input=_SWIFT_SHIM_SRC, text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise HarnessError("cannot build the ASan preload shim: %s" % r.stdout)
        os.chmod(out, 0o755)
        _shim_path = out
    return _shim_path


def _asan_preload():
    """LD_PRELOAD for the broker under CHAT_SANITIZE: the sanitizer runtimes
    (first, as ASan requires) and the shim above."""
    libs = []
    for name in ("libasan.so", "libubsan.so"):
        try:
            p = subprocess.run(["gcc", "-print-file-name=" + name], stdout=subprocess.PIPE,
                               text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            p = name
        if not os.path.isabs(p) or not os.path.exists(p):
            raise HarnessError("CHAT_SANITIZE=ON but %s was not found (gcc -print-file-name)" % name)
        libs.append(os.path.realpath(p))
    libs.append(_asan_shim())
    return ":".join(libs)


class Stack:
    """One broker (+ optional chat-rest) on its own database."""

    def __init__(self, options=None, rest=False, pg=None, own_pg=False, users=None,
                 extra_conf="", persistence=True, rest_args=()):
        self.options = dict(options or {})
        self.want_rest = rest
        self.rest_args = list(rest_args)
        self.extra_conf = extra_conf
        self.persistence = persistence
        self.initial_users = dict(users or {})
        self._pg_given, self.own_pg = pg, own_pg
        self.pg = None
        self.dir = None
        self.dbname = None
        self.mqtt_port = self.ws_port = self.rest_port = None
        self.broker = self.rest = None
        self._broker_expected = False
        self._clients = []
        self._reg = []
        self._broker_reg = self._rest_reg = None
        self._started = False
        self.failures = []

    # -- properties
    @property
    def conninfo(self):
        return self.pg.conninfo(self.dbname)

    @property
    def prefix(self):
        return str(self.options.get("topic_prefix", self.options.get("plugin_opt_topic_prefix",
                                                                       "chat")))

    @property
    def rest_url(self):
        return "http://127.0.0.1:%d" % self.rest_port if self.rest_port else None

    @property
    def broker_log_file(self):
        return os.path.join(self.dir, "broker.log")

    @property
    def broker_log(self):
        try:
            with open(self.broker_log_file, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    @property
    def rest_log(self):
        try:
            with open(os.path.join(self.dir, "rest.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- lifecycle
    def start(self):
        try:
            self._start()
        except BaseException:
            try:
                self.stop(check=False)
            except Exception as e:
                log("cleanup after a failed start: %s" % e)
            raise
        return self

    def _start(self):
        self._started = True
        _live_stacks.add(self)
        for exe in ("chatctl", "mosquitto_chat.so"):
            if not os.path.exists(os.path.join(BUILD_DIR, exe)):
                raise HarnessError("%s/%s is missing: build first (cmake --build)" % (BUILD_DIR,
                                                                                    exe))
        self.dir = tempfile.mkdtemp(prefix="chatstack-")
        os.chmod(self.dir, 0o755)  # mosquitto runs as user mosquitto when we are root
        self._reg.append(REGISTRY.add("dir", path=self.dir))

        if self.own_pg:
            self.pg = Postgres()
            self.pg.start()
        else:
            self.pg = self._pg_given or shared_postgres()
        self.dbname = "chat_%d_%s" % (os.getpid(), secrets.token_hex(4))
        self.pg.create_database(self.dbname)

        # token secret: 48 random bytes, base64, readable by the broker's group
        self.secret_file = os.path.join(self.dir, "token.secret")
        with open(self.secret_file, "w") as f:
            f.write(base64.b64encode(os.urandom(48)).decode() + "\n")
        os.chmod(self.secret_file, 0o640)
        if IS_ROOT:
            _chown(self.secret_file, "root", "mosquitto")
        self.chat_conf = os.path.join(self.dir, "chat.conf")
        with open(self.chat_conf, "w") as f:
            f.write("db = %s\ntoken_secret_file = %s\n" % (self.conninfo, self.secret_file))

        self.chatctl("init")
        for name, pw in self.initial_users.items():
            self.add_user(name, pw, wait=False)

        self.spool_dir = os.path.join(self.dir, "spool")
        self.persist_dir = os.path.join(self.dir, "persist")
        for d in (self.spool_dir, self.persist_dir):
            os.mkdir(d, 0o700)
            if IS_ROOT:
                _chown(d, "mosquitto")
        self.plugin_path = os.path.join(BUILD_DIR, "mosquitto_chat.so")
        if IS_ROOT and not _world_reachable(self.plugin_path):
            # the broker drops to user mosquitto, which cannot reach the
            # build tree: give it a copy
            copy = os.path.join(self.dir, "mosquitto_chat.so")
            shutil.copy2(self.plugin_path, copy)
            os.chmod(copy, 0o755)
            self.plugin_path = copy
        self.mqtt_port, self.ws_port = free_port(), free_port()
        self.conf_file = os.path.join(self.dir, "mosquitto.conf")
        self.start_broker()
        if self.initial_users:
            name, pw = next(iter(self.initial_users.items()))
            self.wait_user(name, pw)
        if self.want_rest:
            self.start_rest()

    def plugin_options(self):
        opts = {"db_conninfo": self.conninfo, "token_secret_file": self.secret_file,
                "spool_dir": self.spool_dir}
        for k, v in self.options.items():
            k = k[len("plugin_opt_"):] if k.startswith("plugin_opt_") else k
            if v is None:
                opts.pop(k, None)
            else:
                opts[k] = v
        return opts

    def write_conf(self):
        lines = ["# generated by chatstack.py", "per_listener_settings false",
                 "allow_anonymous true",
                 "persistence %s" % ("true" if self.persistence else "false"),
                 "persistence_location %s/" % self.persist_dir,
                 "log_dest stderr"]
        if BROKER_DEBUG:
            lines.append("log_type all")
        else:
            lines += ["log_type %s" % t for t in ("error", "warning", "notice", "information",
                                                   "subscribe", "unsubscribe")]
        lines += ["set_tcp_nodelay true",
                 "connection_messages true",
                 "log_timestamp_format %Y-%m-%dT%H:%M:%S",
                 "plugin %s" % self.plugin_path]
        for k, v in self.plugin_options().items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            lines.append("plugin_opt_%s %s" % (k, v))
        if self.extra_conf:
            lines.append(self.extra_conf.strip())
        lines += ["listener %d 127.0.0.1" % self.mqtt_port,
                  "listener %d 127.0.0.1" % self.ws_port, "protocol websockets"]
        with open(self.conf_file, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.conf_file, 0o644)

    def _broker_env(self):
        extra = {}
        if SANITIZE:
            extra["LD_PRELOAD"] = _asan_preload()
            # mosquitto itself is not instrumented and does not free
            # everything at exit: leak checking would only report that.
            extra["ASAN_OPTIONS"] = ("detect_leaks=0:abort_on_error=1:halt_on_error=1:"
                                     "handle_abort=1:detect_stack_use_after_return=0:"
                                     "print_summary=1")
            extra["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        env = _clean_env(extra)
        if not SANITIZE:
            env.pop("ASAN_OPTIONS", None)
            env.pop("UBSAN_OPTIONS", None)
        return env

    def start_broker(self, timeout=20):
        """Start mosquitto on the stack's config (same ports, same spool) and
        wait until both listeners accept connections."""
        if self.broker is not None and self.broker.poll() is None:
            raise HarnessError("broker already running")
        for attempt in range(4):
            self.write_conf()
            start_len = len(self.broker_log)
            with open(self.broker_log_file, "ab") as logf:
                logf.write(("---- chatstack: starting mosquitto (ports %d, %d) ----\n" % (
                    self.mqtt_port, self.ws_port)).encode())
                logf.flush()
                self.broker = subprocess.Popen(["mosquitto", "-c", self.conf_file],
                                               stdin=subprocess.DEVNULL, stdout=logf,
                                               stderr=subprocess.STDOUT, env=self._broker_env(),
                                               cwd=self.dir)
            self._broker_reg = REGISTRY.add("proc", pid=self.broker.pid, what="mosquitto",
                                            starttime=_proc_starttime(self.broker.pid))
            deadline = time.monotonic() + timeout * SLOW
            while time.monotonic() < deadline:
                if self.broker.poll() is not None:
                    break
                if port_open(self.mqtt_port) and port_open(self.ws_port):
                    self._broker_expected = True
                    return
                time.sleep(0.05)
            rc = self.broker.poll()
            newlog = self.broker_log[start_len:]
            if rc is None:
                self.broker.kill()
                self.broker.wait()
            _Registry.remove(self._broker_reg)
            if rc is not None and "Address already in use" in newlog and attempt < 3:
                log("broker port taken, retrying on other ports")
                self.mqtt_port, self.ws_port = free_port(), free_port()
                continue
            raise HarnessError("mosquitto did not come up (exit %s); log:\n%s\nconfig:\n%s" % (
                rc, tail(newlog, 80), open(self.conf_file).read()))

    def stop_broker(self, sig=signal.SIGTERM, timeout=20):
        """Stop the broker with sig (SIGKILL simulates a crash). Returns its
        exit status. Sanitizer reports still fail the test at stop()."""
        if self.broker is None:
            return None
        self._broker_expected = False
        if self.broker.poll() is None:
            self.broker.send_signal(sig)
            try:
                self.broker.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.failures.append("mosquitto did not exit within %ss of signal %d" % (
                    timeout * SLOW, sig))
                self.broker.kill()
                self.broker.wait()
        _Registry.remove(self._broker_reg)
        return self.broker.returncode

    def restart_broker(self):
        self.stop_broker()
        self.start_broker()

    @property
    def broker_running(self):
        return self.broker is not None and self.broker.poll() is None

    def start_rest(self, timeout=20):
        exe = os.path.join(BUILD_DIR, "chat-rest")
        if not os.path.exists(exe):
            raise HarnessError("%s is missing: build first" % exe)
        self.rest_port = free_port()
        logf = open(os.path.join(self.dir, "rest.log"), "ab")
        argv = [exe, "--listen", "127.0.0.1:%d" % self.rest_port, "--db", self.conninfo,
                "--token-secret-file", self.secret_file] + self.rest_args
        env = _clean_env({"CHAT_CONFIG": self.chat_conf})
        self.rest = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        logf.close()
        self._rest_reg = REGISTRY.add("proc", pid=self.rest.pid, what="chat-rest",
                                      starttime=_proc_starttime(self.rest.pid))
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            if self.rest.poll() is not None:
                break
            try:
                st, _ = self.http("GET", "/healthz")
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise HarnessError("chat-rest did not answer /healthz (exit %s); log:\n%s" % (
            self.rest.poll(), tail(self.rest_log, 60)))

    def stop_rest(self, timeout=15):
        if self.rest is None:
            return None
        if self.rest.poll() is not None:
            self.failures.append("chat-rest died during the test (exit %s); log:\n%s" % (
                self.rest.returncode, tail(self.rest_log, 60)))
        else:
            self.rest.terminate()
            try:
                self.rest.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.failures.append("chat-rest did not exit within %ss of SIGTERM" % timeout)
                self.rest.kill()
                self.rest.wait()
            if self.rest.returncode not in (0, -signal.SIGTERM):
                self.failures.append("chat-rest exited with %s on SIGTERM; log:\n%s" % (
                    self.rest.returncode, tail(self.rest_log, 60)))
        rep = sanitizer_report(self.rest_log)
        if rep:
            self.failures.append("sanitizer report in chat-rest's output:\n" + rep)
        _Registry.remove(self._rest_reg)
        rc, self.rest = self.rest.returncode, None
        return rc

    def stop(self, check=True):
        """Tear everything down. Fails (AssertionError) when the broker or
        chat-rest crashed, did not stop cleanly, or a sanitizer reported."""
        if not self._started:
            return
        self._started = False
        _live_stacks.discard(self)
        for c in self._clients:
            try:
                c.disconnect()
            except Exception:
                pass
        self._clients = []
        try:
            self.stop_rest()
        except Exception as e:
            self.failures.append("stopping chat-rest: %s" % e)
        if self.broker is not None:
            if self._broker_expected and self.broker.poll() is not None:
                self.failures.append("mosquitto died during the test (exit %s)" %
                                     self.broker.returncode)
            elif self.broker.poll() is None:
                rc = self.stop_broker()
                if rc not in (0, -signal.SIGTERM):
                    self.failures.append("mosquitto exited with %s on SIGTERM" % rc)
            rep = sanitizer_report(self.broker_log)
            if rep:
                self.failures.append("sanitizer report in the broker's output:\n" + rep)
        try:
            if self.pg is not None and self.dbname and self.pg.running:
                self.pg.drop_database(self.dbname)
        except Exception as e:
            log("drop database %s: %s" % (self.dbname, e))
        if self.own_pg and self.pg is not None:
            self.pg.destroy()
        failures, self.failures = self.failures, []
        if failures and self.broker is not None:
            failures.append("broker log:\n" + log_excerpt(self.broker_log, 100))
        if self.dir and not KEEP_TMP:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif self.dir:
            log("kept %s" % self.dir)
        for p in self._reg:
            _Registry.remove(p)
        self._reg = []
        if failures and check:
            raise AssertionError("\n".join(failures))

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.stop(check=exc_type is None)
        return False

    # -- PostgreSQL outage
    def stop_postgres(self, mode="fast"):
        if not self.own_pg:
            raise HarnessError("stop_postgres() needs Stack(own_pg=True)")
        self.pg.stop(mode)

    def start_postgres(self):
        if not self.own_pg:
            raise HarnessError("start_postgres() needs Stack(own_pg=True)")
        self.pg.start()

    # -- tools
    def chatctl(self, *args, input=None, check=True, timeout=60):
        argv = [os.path.join(BUILD_DIR, "chatctl"), "--db", self.conninfo] + [str(a) for a in args]
        env = _clean_env({"CHAT_TOKEN_SECRET_FILE": self.secret_file,
                          "CHAT_CONFIG": self.chat_conf})
        r = subprocess.run(argv, input=input if input is not None else "", text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                           timeout=timeout * SLOW)
        rep = sanitizer_report(r.stderr)
        if rep:
            raise AssertionError("sanitizer report from chatctl %s:\n%s" % (" ".join(map(str, args)),
                                                                           rep))
        if check and r.returncode != 0:
            raise AssertionError("chatctl %s failed (%d): %s" % (
                " ".join(map(str, args)), r.returncode, r.stderr.strip()))
        return r

    def add_user(self, name, password, wait=None):
        """chatctl user add NAME (password on stdin). When the broker runs,
        wait (by default) until the plugin has picked the user up."""
        self.chatctl("user", "add", name, input=password + "\n")
        if wait is None:
            wait = self.broker_running
        if wait:
            self.wait_user(name, password)

    def token(self, name, *args):
        return self.chatctl("token", name, *args).stdout.strip()

    def wait_user(self, name, password, timeout=10.0):
        """Poll CONNECT until the user is accepted."""
        deadline = time.monotonic() + timeout * SLOW
        rc = None
        while time.monotonic() < deadline:
            rc = self.connect_raw(name, password, "%s:chatstack-probe" % name)
            if rc == 0:
                return
            time.sleep(0.1)
        raise AssertionError("user %s cannot connect within %ss (last CONNACK %s); broker log:\n%s"
                             % (name, timeout * SLOW, rc, log_excerpt(self.broker_log)))

    def sql(self, query, params=()):
        """Run one statement on the stack's database; rows (or [])."""
        return self.pg.execute(query, params, dbname=self.dbname)

    def client(self, user, password, device=None, protocol=MQTTv311, subscribe_inbox=True,
               clean_session=True, keepalive=60, client_id=None, transport="tcp",
               properties=None, will=None):
        """A connected Client. client_id defaults to user or user:device.
        With subscribe_inbox, {prefix}/inbox/{user} is subscribed (QoS 1)."""
        if client_id is None:
            if user is None:
                client_id = "anon-%s" % secrets.token_hex(4)
            else:
                client_id = user if device is None else "%s:%s" % (user, device)
        port = self.ws_port if transport == "websockets" else self.mqtt_port
        c = Client("127.0.0.1", port, user, password, client_id, protocol=protocol,
                   clean_session=clean_session, keepalive=keepalive, transport=transport,
                   properties=properties, will=will)
        self._clients.append(c)
        if subscribe_inbox and user is not None:
            codes = c.subscribe("%s/inbox/%s" % (self.prefix, user), 1)
            if not codes or codes[0] >= 0x80:
                raise AssertionError("%s could not subscribe to its own inbox: %s" % (client_id,
                                                                                     codes))
        return c

    def connect_raw(self, user, password, client_id, protocol=MQTTv311, port=None):
        """One CONNECT; the CONNACK code (0 accepted) or None (closed)."""
        return connect_raw(port or self.mqtt_port, user, password, client_id, protocol)

    # -- REST
    def http(self, method, path, body=None, token=None, headers=None, timeout=10):
        """(status, parsed JSON or text) from chat-rest."""
        if not self.rest_port:
            raise HarnessError("chat-rest is not running (Stack(rest=True))")
        data = None
        h = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        if token:
            h["Authorization"] = "Bearer " + token
        req = urllib.request.Request(self.rest_url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout * SLOW) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode("utf-8", errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def login(self, user, password):
        st, body = self.http("POST", "/v1/login", {"user": user, "password": password})
        if st != 200:
            raise AssertionError("login %s: %s %s" % (user, st, body))
        return body["token"]


# --------------------------------------------------------------------------
# unittest glue

class StackTestCase(unittest.TestCase):
    """One Stack per test class (self.stack / cls.stack). Class attributes:
    stack_options, stack_rest, stack_users, stack_own_pg, stack_extra_conf.
    When a test fails, the tail of the broker log is printed."""

    stack_options = None
    stack_rest = False
    stack_users = None
    stack_own_pg = False
    stack_extra_conf = ""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.stack = Stack(options=cls.stack_options, rest=cls.stack_rest, users=cls.stack_users,
                          own_pg=cls.stack_own_pg, extra_conf=cls.stack_extra_conf)
        cls.stack.start()

    @classmethod
    def tearDownClass(cls):
        st = getattr(cls, "stack", None)
        if st is not None:
            cls.stack = None
            st.stop()
        super().tearDownClass()

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result else 0
        out = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            st = getattr(type(self), "stack", None)
            if st is not None and st.dir:
                sys.stderr.write("\n---- broker log of %s ----\n%s\n----\n" % (
                    self.id(), log_excerpt(st.broker_log)))
        return out


_live_stacks = set()


def _on_signal(signum, frame):
    # unittest would record a SystemExit as one test's error and go on:
    # stop what this process started and leave at once instead.
    signal.signal(signum, signal.SIG_DFL)
    log("signal %d: stopping %d stack(s)" % (signum, len(_live_stacks)))
    for st in list(_live_stacks):
        try:
            st.stop(check=False)
        except Exception as e:
            log("stop: %s" % e)
    pg = _shared_pg
    if pg is not None and pg.owned:
        try:
            pg.destroy()
        except Exception as e:
            log("stop PostgreSQL: %s" % e)
    os._exit(128 + signum)


def main():
    """unittest.main with verbose output; SIGTERM/SIGHUP still clean up."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    unittest.main(verbosity=2)


# --------------------------------------------------------------------------
# command line: the ctest fixture

def _cli(argv):
    if len(argv) != 3 or argv[1] not in ("pg-start", "pg-stop", "reap"):
        sys.stderr.write("usage: chatstack.py pg-start|pg-stop|reap STATE_DIR\n")
        return 2
    cmd, state = argv[1], os.path.abspath(argv[2])
    global REGISTRY
    REGISTRY = _Registry(state)
    if cmd == "pg-start":
        os.makedirs(state, exist_ok=True)
        reap(state)  # leftovers of an earlier, killed run
        try:
            os.unlink(os.path.join(state, "pg.json"))
        except FileNotFoundError:
            pass
        pg = Postgres()
        pg.start()
        pg.save(state)
        print("PostgreSQL %s on 127.0.0.1:%d (socket dir %s)" % (
            _pg_bindir(), pg.port, pg.socket_dir))
        return 0
    if cmd == "pg-stop":
        n = reap(state)  # stops stray brokers, then the cluster, then temp dirs
        try:
            os.unlink(os.path.join(state, "pg.json"))
        except FileNotFoundError:
            pass
        print("stopped the shared PostgreSQL (%d processes/clusters stopped)" % n)
        return 0
    n = reap(state)
    print("reaped %d" % n)
    return 0


if __name__ == "__main__":
    sys.exit(_cli(sys.argv))
