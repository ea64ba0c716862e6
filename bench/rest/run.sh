#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0
# run.sh: chat-rest read benchmark (a measurement, not a test).
#
#   bench/rest/run.sh            # after cmake --build build
#
# 1. starts a throwaway PostgreSQL cluster (as user postgres when run as
#    root) on a free port with its socket in a temp dir;
# 2. applies schema/001_init.sql (64 partitions) and seed.sql: 1,000,000
#    inbox rows over 10,000 users, shaped as the broker's writer stores them;
# 3. writes EXPLAIN output of every chat-rest statement (explain.py);
# 4. starts build/chat-rest and measures with wrk (rest.lua: a random user
#    and token per request) a full inbox page (GET /v1/inbox?limit=50) and
#    the newest page of 50 of a DM conversation;
# 5. runs the same two SQL statements (taken from chat-rest --print-sql)
#    with pgbench -M prepared on as many connections as chat-rest has
#    workers, random user per transaction, same session settings;
# 6. prints p50/p99 latency and requests (transactions) per second.
#
# Environment: BUILD_DIR (default build), BENCH_USERS (10000), BENCH_DMS
# (450000), BENCH_GMSGS (5000), BENCH_PARTITIONS (64), BENCH_DURATION
# seconds per run (20), BENCH_CONNS wrk connections (16), BENCH_WRK_THREADS
# (2), BENCH_REST_THREADS chat-rest workers = pgbench clients (4),
# BENCH_EXPLAIN_OUT (default bench/rest/EXPLAIN.txt; "" skips it),
# BENCH_KEEP=1 keeps the temp dir. Everything it starts is stopped on exit.
# The cluster runs with fsync=off: it only speeds up seeding; the measured
# part is reads.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
USERS=${BENCH_USERS:-10000}
DMS=${BENCH_DMS:-450000}
GMSGS=${BENCH_GMSGS:-5000}
PARTITIONS=${BENCH_PARTITIONS:-64}
DURATION=${BENCH_DURATION:-20}
CONNS=${BENCH_CONNS:-16}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
REST_THREADS=${BENCH_REST_THREADS:-4}
EXPLAIN_OUT=${BENCH_EXPLAIN_OUT-$HERE/EXPLAIN.txt}
PY=/usr/bin/python3

for tool in wrk pgbench psql; do
	command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (scripts/deps.sh)" >&2; exit 1; }
done
[ -x "$BUILD/chat-rest" ] || { echo "run.sh: $BUILD/chat-rest is missing: build first" >&2; exit 1; }
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$PGBIN/initdb" ] || { echo "run.sh: no PostgreSQL server binaries (set PGBIN)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/chat-rest-bench.XXXXXX)
chmod 755 "$WORK"
PGDIR="$WORK/pg" # data, socket and log: owned by the server's user
PGDATA="$PGDIR/data"
SOCK="$PGDIR/sock"
mkdir -p "$PGDATA" "$SOCK"
chmod 700 "$PGDATA"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
RPORT=$(free_port)
AS=()
if [ "$(id -u)" -eq 0 ]; then
	AS=(runuser -u postgres --)
	chown -R postgres "$PGDIR"
fi

rest_pid=
pg_started=0
cleanup() {
	set +e
	if [ -n "$rest_pid" ]; then kill -TERM "$rest_pid" 2>/dev/null; wait "$rest_pid" 2>/dev/null; fi
	if [ "$pg_started" = 1 ]; then "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1; fi
	if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "[$(date +%H:%M:%S)] $*"; }

say "PostgreSQL: initdb, start on $SOCK port $PGPORT"
"${AS[@]}" "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >"$WORK/initdb.log" 2>&1 ||
	{ cat "$WORK/initdb.log" >&2; exit 1; }
"${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -w -l "$PGDIR/pg.log" -o "-p $PGPORT -k $SOCK -c listen_addresses= \
 -c shared_buffers=512MB -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
 -c max_connections=100 -c max_wal_size=4GB" start >/dev/null
pg_started=1
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PGPORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE chat"
CONNINFO="host=$SOCK port=$PGPORT dbname=chat user=postgres"

say "schema ($PARTITIONS partitions) and seed ($USERS users, $DMS DMs, $GMSGS group messages)"
"${PSQL[@]}" -d chat -c "SET chat.partitions = $PARTITIONS" -f "$ROOT/schema/001_init.sql" >/dev/null
t0=$(date +%s)
"${PSQL[@]}" -d chat -v users="$USERS" -v dms="$DMS" -v gmsgs="$GMSGS" -f "$HERE/seed.sql"
"${PSQL[@]}" -d chat -c "VACUUM ANALYZE"
say "seeded in $(($(date +%s) - t0)) s"

if [ -n "$EXPLAIN_OUT" ]; then
	"$PY" "$HERE/explain.py" "$BUILD/chat-rest" "${PSQL[@]}" -d chat >"$EXPLAIN_OUT"
	say "EXPLAIN written to $EXPLAIN_OUT"
fi

head -c 48 /dev/urandom | base64 >"$WORK/secret"
: >"$WORK/empty.conf"
"$PY" "$HERE/tokens.py" "$WORK/secret" "$USERS" "$WORK/tokens.txt"
CHAT_CONFIG="$WORK/empty.conf" "$BUILD/chat-rest" --listen "127.0.0.1:$RPORT" --db "$CONNINFO" \
	--token-secret-file "$WORK/secret" --threads "$REST_THREADS" >"$WORK/rest.log" 2>&1 &
rest_pid=$!
for _ in $(seq 100); do
	curl -fsS "http://127.0.0.1:$RPORT/healthz" >/dev/null 2>&1 && break
	sleep 0.1
done
curl -fsS "http://127.0.0.1:$RPORT/healthz" >/dev/null

# pgbench scripts: chat-rest's own statements with a random user.
sql_of() { "$BUILD/chat-rest" --print-sql | sed -n "s/^PREPARE $1 AS \(.*\);\$/\1/p"; }
U="('u' || lpad(:uid::text, 5, '0'))"
P="('u' || lpad(:peer::text, 5, '0'))"
{
	echo "\\set uid random(0, $((USERS - 1)))"
	echo "\\set after random(0, 50)"
	sql_of chat_inbox | sed -e "s/\\\$1/$U/g" -e 's/\$2/:after/g' -e 's/\$3/51/g'
	echo ";"
} >"$WORK/inbox.pgb"
{
	echo "\\set uid random(0, $((USERS - 1)))"
	echo "\\set peer :uid # 1"
	sql_of chat_dm_page | sed -e "s/\\\$1/$U/g" -e "s/\\\$2/$P/g" -e 's/\$3/9223372036854775807/g' -e 's/\$4/51/g'
	echo ";"
} >"$WORK/history.pgb"
PGOPT="-c plan_cache_mode=force_generic_plan -c jit=off -c max_parallel_workers_per_gather=0"

run_wrk() { # mode
	wrk -t "$WRK_THREADS" -c "$CONNS" -d "${DURATION}s" -s "$HERE/rest.lua" "http://127.0.0.1:$RPORT" \
		-- "$WORK/tokens.txt" "$1" | tee "$WORK/wrk-$1.txt" | grep '^RESULT'
}
run_pgbench() { # name
	rm -f "$WORK"/pgb_"$1".*
	(cd "$WORK" && PGOPTIONS="$PGOPT" pgbench -n -M prepared -h "$SOCK" -p "$PGPORT" -U postgres \
		-c "$REST_THREADS" -j "$WRK_THREADS" -T "$DURATION" -f "$WORK/$1.pgb" -l --log-prefix="pgb_$1" chat \
		>"$WORK/pgbench-$1.txt" 2>&1)
	"$PY" - "$WORK" "$1" <<'EOF'
import glob, sys
lat = []
for f in glob.glob("%s/pgb_%s.*" % (sys.argv[1], sys.argv[2])):
    for line in open(f):
        p = line.split()
        lat.append(int(p[2]) / 1000.0)
lat.sort()
n = len(lat)
txt = open("%s/pgbench-%s.txt" % (sys.argv[1], sys.argv[2])).read()
tps = [l for l in txt.splitlines() if l.startswith("tps")][0].split()[2]
print("RESULT transactions=%d tps=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f" % (
    n, float(tps), lat[n // 2], lat[int(n * 0.9)], lat[int(n * 0.99)], lat[-1]))
EOF
}

say "warm-up (statements prepared on every worker, caches filled)"
DURATION=5 run_wrk inbox >/dev/null
DURATION=5 run_wrk history >/dev/null

say "chat-rest GET /v1/inbox?limit=50 (wrk -t$WRK_THREADS -c$CONNS, ${DURATION}s, chat-rest --threads $REST_THREADS)"
r1=$(run_wrk inbox)
echo "$r1"
say "pgbench: the same inbox statement (-c $REST_THREADS, ${DURATION}s)"
p1=$(run_pgbench inbox)
echo "$p1"
say "chat-rest GET /v1/conversations/{peer}/messages?limit=50"
r2=$(run_wrk history)
echo "$r2"
say "pgbench: the same history statement"
p2=$(run_pgbench history)
echo "$p2"

field() { sed -n "s/.*$2=\([0-9.]*\).*/\1/p" <<<"$1"; }
echo
echo "== results: $USERS users, $("${PSQL[@]}" -d chat -Atc 'SELECT count(*) FROM messages') inbox rows, $PARTITIONS partitions; $(nproc) cores shared by wrk/pgbench, chat-rest and PostgreSQL"
printf '%-44s %10s %9s %9s\n' "" "req/s" "p50 ms" "p99 ms"
printf '%-44s %10s %9s %9s\n' "chat-rest GET /v1/inbox (page of 50)" "$(field "$r1" rps)" "$(field "$r1" p50_ms)" "$(field "$r1" p99_ms)"
printf '%-44s %10s %9s %9s\n' "pgbench inbox statement" "$(field "$p1" tps)" "$(field "$p1" p50_ms)" "$(field "$p1" p99_ms)"
printf '%-44s %10s %9s %9s\n' "chat-rest GET conversation history (50)" "$(field "$r2" rps)" "$(field "$r2" p50_ms)" "$(field "$r2" p99_ms)"
printf '%-44s %10s %9s %9s\n' "pgbench history statement" "$(field "$p2" tps)" "$(field "$p2" p50_ms)" "$(field "$p2" p99_ms)"
for r in "$r1" "$r2"; do
	if [ "$(field "$r" non2xx)" != 0 ] || [ "$(field "$r" socket_errors)" != 0 ]; then
		echo "run.sh: some requests failed: $r" >&2
		exit 1
	fi
done
