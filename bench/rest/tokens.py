#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""tokens.py SECRET_FILE USERS OUT: one line per seeded user for the wrk
scripts: "<user> <token> <partner>". Tokens are JWT HS256 signed with the
token secret exactly as chat-rest issues them (valid for a day), so the
benchmark measures reads, not PBKDF2 logins. The partner (user id xor 1)
is the peer of the user's busy DM thread in seed.sql."""
import base64
import hashlib
import hmac
import json
import sys
import time


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def main():
    secret_file, users, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(secret_file, "rb") as f:
        key = f.read().rstrip(b"\r\n")
    now = int(time.time())
    head = b64u(b'{"alg":"HS256","typ":"JWT"}')
    with open(out, "w") as f:
        for i in range(users):
            user = "u%05d" % i
            body = b64u(json.dumps({"sub": user, "iat": now, "exp": now + 86400},
                                   separators=(",", ":")).encode())
            sig = b64u(hmac.new(key, ("%s.%s" % (head, body)).encode(), hashlib.sha256).digest())
            f.write("%s %s.%s.%s u%05d\n" % (user, head, body, sig, i ^ 1))


if __name__ == "__main__":
    main()
