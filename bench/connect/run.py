#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""bench/connect/run.py: 2,000 sequential authenticated connects (CONNECT,
CONNACK, DISCONNECT) against the chat plugin and against a plain Mosquitto
with a password_file, in the same run, and the ratio.

Usage: bench/connect/run.py [COUNT]   (CHAT_BUILD_DIR: build tree, default build/)
"""
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
import chatstack  # noqa: E402

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
BENCH = os.path.join(chatstack.BUILD_DIR, "connect_bench")
PW = "bench-password"


def run(port, user, password):
    out = subprocess.run([BENCH, "127.0.0.1", str(port), user, password, str(COUNT)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        sys.exit("connect_bench failed: %s %s" % (out.stdout, out.stderr))
    line = out.stdout.strip()
    rate = float(line.split("rate=")[1].split("/s")[0])
    return rate, line


def plain_broker():
    d = tempfile.mkdtemp(prefix="connect-bench-")
    os.chmod(d, 0o755)
    pwfile = os.path.join(d, "passwd")
    open(pwfile, "w").close()
    subprocess.run(["mosquitto_passwd", "-b", pwfile, "alice", PW], check=True)
    os.chmod(pwfile, 0o644)
    port = chatstack.free_port()
    conf = os.path.join(d, "m.conf")
    with open(conf, "w") as f:
        f.write("listener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\n"
                "log_dest none\nset_tcp_nodelay true\n" % (port, pwfile))
    os.chmod(conf, 0o644)
    p = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if chatstack.port_open(port):
            break
        time.sleep(0.05)
    return p, port


def main():
    with chatstack.Stack(extra_conf="log_type none\n") as s:
        s.add_user("alice", PW)
        token = s.token("alice")
        chat_pw, chat_line = run(s.mqtt_port, "alice", PW)
        chat_tok, tok_line = run(s.mqtt_port, "alice", token)
    p, port = plain_broker()
    try:
        plain, plain_line = run(port, "alice", PW)
    finally:
        p.terminate()
        p.wait(10)
    print("%d sequential authenticated connects" % COUNT)
    print("  chat plugin, password : %s" % chat_line)
    print("  chat plugin, token    : %s" % tok_line)
    print("  plain mosquitto (password_file): %s" % plain_line)
    print("  ratio chat/plain: password %.2f, token %.2f" % (chat_pw / plain, chat_tok / plain))


if __name__ == "__main__":
    main()
