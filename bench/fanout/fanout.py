#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""fanout.py: group fan-out benchmark.

For groups of 10, 100 and 1,000 members, all connected and subscribed to
their inboxes, one member sends ~20 messages one at a time; for each, the
time from writing the PUBLISH to the arrival of the last member's copy is
measured (the message is stored - one group_messages row and one inbox row
per member, committed - before anything is delivered). Prints a table of
p50/p90/max of that, plus the first member's copy and the sender's own
acknowledgement.

It runs the real stack through tests/integration/chatstack.py (a throwaway
PostgreSQL, the system mosquitto loading build/mosquitto_chat.so) and the
C client fanout-client (bench/fanout/fanout-client.c: one epoll loop, one
MQTT connection per member). Users are made with chatctl (cheap PBKDF2:
--iterations 1000); groups with `chatctl group create`, their members are
inserted with one SQL statement (the broker's directory thread picks them
up through the same NOTIFY as chatctl's changes; the per-add group events
are not what is measured here).

    bench/fanout/fanout.py [--sizes 10,100,1000] [--messages 20]
                           [--client PATH] [--build-dir DIR]

Everything it starts is stopped at the end, also on failure or Ctrl-C.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, "..", ".."))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100,1000", help="group sizes (comma-separated)")
    ap.add_argument("--messages", type=int, default=20, help="measured messages per size")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured messages first")
    ap.add_argument("--gap-ms", type=int, default=50, help="pause between messages")
    ap.add_argument("--build-dir", default=os.environ.get("CHAT_BUILD_DIR") or
                    os.path.join(SOURCE, "build"))
    ap.add_argument("--client", help="fanout-client binary (default: BUILD_DIR/fanout-client, "
                    "else built into a temp dir)")
    ap.add_argument("--debounce-ms", type=int, default=500)
    ap.add_argument("--nodelay", action="store_true",
                    help="run the broker with set_tcp_nodelay true (default: Mosquitto's default, "
                    "Nagle on)")
    return ap.parse_args()


def find_client(args, tmp):
    for p in (args.client, os.path.join(args.build_dir, "fanout-client")):
        if p and os.access(p, os.X_OK):
            return p
    if args.client:
        sys.exit("fanout: %s is not executable" % args.client)
    bdir = os.path.join(tmp, "fanout-build")
    print("fanout: building fanout-client in %s" % bdir, file=sys.stderr)
    subprocess.run(["cmake", "-S", HERE, "-B", bdir], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", bdir], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(bdir, "fanout-client")


def main():
    args = parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    os.environ["CHAT_BUILD_DIR"] = os.path.abspath(args.build_dir)
    # 1,000 connections on each side: raise the descriptor limit the broker inherits
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(sizes) * 2 + 512
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
    import chatstack  # noqa: E402  (after CHAT_BUILD_DIR is set)

    tmp = tempfile.mkdtemp(prefix="fanout-")
    try:
        return run(args, sizes, chatstack, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, sizes, chatstack, tmp):
    client = find_client(args, tmp)
    results = []
    opts = {"presence_debounce_ms": args.debounce_ms}
    extra = "set_tcp_nodelay true" if args.nodelay else ""
    with chatstack.Stack(options=opts, extra_conf=extra) as s:
        n_users = max(sizes)
        names = ["fb%04d" % i for i in range(n_users)]
        t = time.monotonic()

        def add(u):
            s.chatctl("--iterations", "1000", "user", "add", u, input="pw-%s\n" % u)

        with ThreadPoolExecutor(8) as ex:
            list(ex.map(add, names))
        s.wait_user(names[-1], "pw-" + names[-1])
        print("fanout: %d users in %.1f s" % (n_users, time.monotonic() - t), file=sys.stderr)

        for n in sizes:
            gid = "fanout-%d" % n
            s.chatctl("group", "create", gid, "--owner", names[0])
            s.sql("INSERT INTO group_members (group_id, user_id) SELECT %s, id FROM users "
                  "WHERE id = ANY(%s) ON CONFLICT DO NOTHING", (gid, names[:n]))
            # the broker's directory thread reloads on the NOTIFY within
            # milliseconds; the warm-up messages check that every member is in
            time.sleep(1.0)
            members = os.path.join(tmp, "members-%d.txt" % n)
            with open(members, "w") as f:
                for u in names[:n]:
                    f.write("%s pw-%s\n" % (u, u))
            argv = [client, "--port", str(s.mqtt_port), "--group", gid, "--members", members,
                    "--messages", str(args.messages), "--warmup", str(args.warmup),
                    "--gap-ms", str(args.gap_ms), "--settle-ms", str(args.debounce_ms + 1500),
                    "--tag", "n%d" % n]
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=600)
            sys.stderr.write(r.stderr)
            line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
            if r.returncode != 0 or not line:
                print("fanout: the client failed for %d members (exit %d):\n%s%s" % (
                    n, r.returncode, r.stdout, chatstack.tail(s.broker_log, 40)), file=sys.stderr)
                results.append((n, None))
                continue
            kv = dict(x.split("=", 1) for x in line[0].split()[1:])
            stored = s.sql("SELECT count(*) FROM messages m JOIN group_messages g ON "
                           "g.group_id = m.group_id AND g.gseq = m.gseq WHERE m.group_id = %s",
                           (gid,))[0][0]
            kv["rows"] = stored
            results.append((n, kv))

    print()
    print("Group fan-out: send -> delivery to every member (all members connected, QoS 1,")
    print("stored in PostgreSQL before delivery); %d messages per size after %d warm-up; "
          "broker set_tcp_nodelay %s" % (args.messages, args.warmup,
                                         "true" if args.nodelay else "false (default)"))
    print()
    hdr = "%8s %9s %12s %12s %12s %12s %14s %14s %12s" % (
        "members", "messages", "last p50 ms", "last p90 ms", "last min ms", "last max ms",
        "first p50 ms", "sender ack ms", "inbox rows")
    print(hdr)
    print("-" * len(hdr))
    ok = True
    for n, kv in results:
        if kv is None:
            print("%8d %9s %12s" % (n, "-", "FAILED"))
            ok = False
            continue
        print("%8d %9s %12s %12s %12s %12s %14s %14s %12s" % (
            n, kv["messages"], kv["last_p50_ms"], kv["last_p90_ms"], kv["last_min_ms"],
            kv["last_max_ms"], kv["first_p50_ms"], kv["ack_p50_ms"], kv["rows"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
