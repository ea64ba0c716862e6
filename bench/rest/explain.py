#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""explain.py CHAT_REST PSQL_ARGS... > EXPLAIN.txt

EXPLAIN (ANALYZE, BUFFERS) of every statement chat-rest prepares, taken
from `chat-rest --print-sql` (so it is the SQL the daemon runs), executed
with chat-rest's session settings on a database seeded by seed.sql.

Run-time pruned partitions show as "(never executed)" subtrees, one per
partition; they are folded into one line "[N partitions: never executed]"
so the plans stay readable. What is left is what each statement touches.
"""
import re
import subprocess
import sys

SESSION = ("SET plan_cache_mode = force_generic_plan; SET jit = off; "
           "SET max_parallel_workers_per_gather = 0;")

# (statement, arguments, analyze?) for a user of the benchmark seed:
# u00042 talks mostly with u00043 and is a member of g00002.
CALLS = [
    ("chat_inbox", "'u00042', 10, 51", True),
    ("chat_group_bodies", "'g00002', '{1,2,3}'", True),
    ("chat_group_bodies_many", "'{g00002,g00003,g00004,g00005}', '{1,2,3,4}'", True),
    ("chat_dm_page", "'u00042', 'u00043', 9223372036854775807, 51", True),
    ("chat_group_access", "'u00042', 'g00002'", True),
    ("chat_group_page", "'u00042', 'g00002', 9223372036854775807, 51", True),
    ("chat_conversations", "'u00042', 500", True),
    ("chat_presence", "'u00042', '{u00043,u00040,u00999,nobody}'", True),
    ("chat_user_enabled", "'u00042'", True),
    ("chat_login_user", "'u00042'", True),
    ("chat_set_verifier", "'u00042', 'x', 'y'", False),
    ("chat_plugin_stats", "", True),
]


def fold(lines):
    out, skip_indent, run, run_indent = [], None, 0, None

    def flush():
        nonlocal run
        if run:
            out.append(" " * run_indent + "->  [%d partition%s: never executed]" % (
                run, "s" if run > 1 else ""))
            run = 0

    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        if skip_indent is not None and indent > skip_indent:
            continue  # inside a folded subtree
        skip_indent = None
        if "(never executed)" in line:
            if run and indent != run_indent:
                flush()
            run_indent = indent
            run += 1
            skip_indent = indent
            continue
        flush()
        out.append(line)
    flush()
    return out


def main():
    exe, psql = sys.argv[1], sys.argv[2:]
    prep = subprocess.run([exe, "--print-sql"], capture_output=True, text=True, check=True).stdout
    script = [SESSION, prep]
    for name, args, analyze in CALLS:
        opts = "ANALYZE, BUFFERS, COSTS OFF" if analyze else "COSTS OFF"
        call = "EXECUTE %s(%s)" % (name, args) if args else "EXECUTE %s" % name
        script.append("\\echo '=== %s'" % call.replace("'", ""))
        # twice: the first run also builds the generic plan
        script.append("%s;" % call if not analyze else "EXPLAIN (%s) %s;" % (opts, call))
        script.append("EXPLAIN (%s) %s;" % (opts, call))
    r = subprocess.run(psql + ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-P", "pager=off"],
                       input="\n".join(script), capture_output=True, text=True, check=True)
    # keep the second EXPLAIN of each statement
    blocks = re.split(r"^=== ", r.stdout, flags=re.M)
    print(__doc__.split("\n\n", 1)[1].strip())
    print()
    print("Session: " + SESSION)
    for b in blocks[1:]:
        title, _, rest = b.partition("\n")
        plans = re.split(r"^\s*QUERY PLAN\s*\n-+\n", rest, flags=re.M)
        plan = plans[-1].strip("\n")
        plan = re.sub(r"\n\(\d+ rows?\)\s*$", "", plan)
        print("\n=== " + title)
        print("\n".join(fold(plan.splitlines())))


if __name__ == "__main__":
    main()
