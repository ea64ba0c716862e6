#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0
# run.sh: install, build and start a local mosquitto-chat stack.
#   scripts/run.sh          deps, build, then start (or restart) everything
#   scripts/run.sh stop     stop everything it started
#   scripts/run.sh status   show what is running
# Everything lives in run/ of the checkout: a PostgreSQL cluster (run/pg,
# 127.0.0.1:55432), the token secret (run/secrets), the defaults file
# chatctl and chat-rest read (run/chat.conf), mosquitto's config generated
# from examples/mosquitto.conf (run/mosquitto.conf), the spool and the logs.
# A second run reuses the cluster, the secret and the demo users.
# Ports can be moved with CHAT_PG_PORT, CHAT_MQTT_PORT, CHAT_WS_PORT and
# CHAT_REST_PORT. This is a development stack: the database trusts local
# connections, and everything listens on loopback only.
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN=$ROOT/run
BUILD=$ROOT/build
PG_PORT=${CHAT_PG_PORT:-55432}
MQTT_PORT=${CHAT_MQTT_PORT:-1883}
WS_PORT=${CHAT_WS_PORT:-9001}
REST_PORT=${CHAT_REST_PORT:-8080}
PGSOCK=$RUN/pg
PGDATA_DIR=$RUN/pg/data
DB="host=$PGSOCK port=$PG_PORT dbname=chat user=chat"
SECRET=$RUN/secrets/token.secret
DEMO_USERS=(alice bob)

# Our children must not pick up the caller's database settings.
unset PGHOST PGPORT PGDATABASE PGUSER PGSERVICE CHAT_DB CHAT_CONFIG LD_PRELOAD

say() { printf 'run.sh: %s\n' "$*"; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

pg_bindir() {
	local d best="" bestv=-1 v
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/initdb" ] || continue
		v=$(basename "$(dirname "$d")")
		if [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -gt "$bestv" ]; then
			best=$d
			bestv=$v
		fi
	done
	if [ -z "$best" ] && command -v initdb >/dev/null; then
		best=$(dirname "$(command -v initdb)")
	fi
	[ -n "$best" ] || die "PostgreSQL server binaries not found (install postgresql)"
	printf '%s\n' "$best"
}

# The OS user that owns the cluster: whoever owns an existing one, else
# postgres when we are root (the server refuses to run as root), else us.
pg_os_user() {
	if [ -d "$PGDATA_DIR" ]; then
		stat -c %U "$PGDATA_DIR"
	elif [ "$IS_ROOT" = 1 ]; then
		id postgres >/dev/null 2>&1 || die "no 'postgres' user to own the cluster (install postgresql)"
		echo postgres
	else
		id -un
	fi
}

as_pg() {
	if [ "$IS_ROOT" = 1 ]; then
		(cd / && runuser -u "$PGOS" -- "$@")
	else
		"$@"
	fi
}

psql_admin() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PG_PORT" -U postgres "$@"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid from a pid file, if that process is alive and is the named program
live_pid() {
	local pidfile=$1 comm=$2 pid
	[ -s "$pidfile" ] || return 1
	pid=$(cat "$pidfile")
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	[ -r "/proc/$pid/comm" ] || return 1
	[ "$(cat "/proc/$pid/comm")" = "$comm" ] || return 1
	printf '%s\n' "$pid"
}

stop_pidfile() {
	local pidfile=$1 comm=$2 pid
	if pid=$(live_pid "$pidfile" "$comm"); then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
		say "stopped $comm (pid $pid)"
	fi
	rm -f "$pidfile"
}

pg_running() { [ -d "$PGDATA_DIR" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; }

stop_all() {
	stop_pidfile "$RUN/chat-rest.pid" chat-rest
	stop_pidfile "$RUN/mosquitto.pid" mosquitto
	if [ -d "$PGDATA_DIR" ]; then
		PGBIN=$(pg_bindir)
		PGOS=$(pg_os_user)
		if pg_running; then
			as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null
			say "stopped PostgreSQL ($PGDATA_DIR)"
		fi
	fi
}

status() {
	local pid
	if pid=$(live_pid "$RUN/mosquitto.pid" mosquitto); then
		say "mosquitto running (pid $pid), MQTT 127.0.0.1:$MQTT_PORT, websockets 127.0.0.1:$WS_PORT"
	else
		say "mosquitto not running"
	fi
	if pid=$(live_pid "$RUN/chat-rest.pid" chat-rest); then
		say "chat-rest running (pid $pid), http://127.0.0.1:$REST_PORT"
	else
		say "chat-rest not running"
	fi
	if [ -d "$PGDATA_DIR" ]; then
		PGBIN=$(pg_bindir)
		PGOS=$(pg_os_user)
		if pg_running; then say "PostgreSQL running, 127.0.0.1:$PG_PORT"; else say "PostgreSQL not running"; fi
	else
		say "no PostgreSQL cluster in $PGDATA_DIR"
	fi
}

case "${1:-start}" in
	stop) stop_all; exit 0 ;;
	status) status; exit 0 ;;
	start) ;;
	*) echo "usage: scripts/run.sh [start|stop|status]" >&2; exit 2 ;;
esac

# ---- 1. packages and build --------------------------------------------
bash "$ROOT/scripts/deps.sh" </dev/null
cmake -S "$ROOT" -B "$BUILD" >/dev/null
cmake --build "$BUILD" -j2
for f in mosquitto_chat.so chatctl; do
	[ -e "$BUILD/$f" ] || die "the build did not produce $BUILD/$f"
done

mkdir -p "$RUN"
chmod 0755 "$RUN"

if [ "$IS_ROOT" = 1 ] && ! runuser -u mosquitto -- test -r "$BUILD/mosquitto_chat.so" 2>/dev/null; then
	die "mosquitto drops to the user 'mosquitto', which cannot read $BUILD/mosquitto_chat.so: make the checkout's parent directories world-searchable (chmod o+x) or move it"
fi

# ---- 2. PostgreSQL ------------------------------------------------------
PGBIN=$(pg_bindir)
PGOS=$(pg_os_user)
if [ ${#PGSOCK} -gt 90 ]; then
	die "$PGSOCK is too long for a unix socket path: move the checkout to a shorter path"
fi
if [ ! -s "$PGDATA_DIR/PG_VERSION" ]; then
	say "creating a PostgreSQL cluster in $PGDATA_DIR (owner $PGOS)"
	mkdir -p "$PGSOCK"
	chmod 0755 "$PGSOCK"
	[ "$IS_ROOT" = 1 ] && chown "$PGOS:" "$PGSOCK"
	as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres -A trust -E UTF8 --locale=C >"$RUN/initdb.log" 2>&1 ||
		{ cat "$RUN/initdb.log" >&2; die "initdb failed"; }
fi
if pg_running; then
	say "PostgreSQL already running"
else
	if port_busy "$PG_PORT"; then
		die "port $PG_PORT is taken by another program (set CHAT_PG_PORT)"
	fi
	as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGSOCK/postgres.log" -w -t 60 \
		-o "-c port=$PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGSOCK" \
		start >/dev/null || { tail -n 30 "$PGSOCK/postgres.log" >&2; die "PostgreSQL did not start"; }
	say "PostgreSQL started on 127.0.0.1:$PG_PORT"
fi
if [ "$(psql_admin -d postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'chat'")" != 1 ]; then
	psql_admin -d postgres -c "CREATE ROLE chat LOGIN"
fi
if [ "$(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'chat'")" != 1 ]; then
	psql_admin -d postgres -c "CREATE DATABASE chat OWNER chat"
fi

# ---- 3. secret and defaults file ----------------------------------------
mkdir -p "$RUN/secrets"
chmod 0750 "$RUN/secrets"
if [ ! -s "$SECRET" ]; then
	head -c 48 /dev/urandom | base64 -w0 >"$SECRET.tmp"
	echo >>"$SECRET.tmp"
	mv "$SECRET.tmp" "$SECRET"
	say "generated $SECRET"
fi
chmod 0640 "$SECRET"
if [ "$IS_ROOT" = 1 ]; then
	chgrp mosquitto "$RUN/secrets" "$SECRET"
fi
cat >"$RUN/chat.conf" <<EOF
# written by scripts/run.sh: the defaults chatctl and chat-rest fall back to
db = $DB
token_secret_file = $SECRET
rest_listen = 127.0.0.1:$REST_PORT
EOF
chmod 0644 "$RUN/chat.conf"

chatctl() { "$BUILD/chatctl" --db "$DB" --token-secret-file "$SECRET" "$@"; }

# ---- 4. schema and demo users -------------------------------------------
chatctl init
PWFILE=$RUN/secrets/demo-passwords
touch "$PWFILE"
chmod 0600 "$PWFILE"
declare -A PW
for u in "${DEMO_USERS[@]}"; do
	known=$(awk -v u="$u" '$1 == u { print $2 }' "$PWFILE")
	exists=$(psql_admin -d chat -tAc "SELECT 1 FROM users WHERE id = '$u'")
	if [ "$exists" = 1 ] && [ -n "$known" ]; then
		PW[$u]=$known
		continue
	fi
	pw=$(head -c 12 /dev/urandom | base64 | tr -d '+/=')
	if [ "$exists" = 1 ]; then
		printf '%s\n' "$pw" | chatctl user passwd "$u"
	else
		printf '%s\n' "$pw" | chatctl user add "$u"
	fi
	awk -v u="$u" '$1 != u' "$PWFILE" >"$PWFILE.tmp"
	printf '%s %s\n' "$u" "$pw" >>"$PWFILE.tmp"
	mv "$PWFILE.tmp" "$PWFILE"
	chmod 0600 "$PWFILE"
	PW[$u]=$pw
	say "demo user $u ready"
done

# ---- 5. mosquitto -----------------------------------------------------------
stop_pidfile "$RUN/chat-rest.pid" chat-rest
stop_pidfile "$RUN/mosquitto.pid" mosquitto
for p in "$MQTT_PORT" "$WS_PORT"; do
	if port_busy "$p"; then
		die "port $p is taken by another program (a system mosquitto? stop it, or set CHAT_MQTT_PORT / CHAT_WS_PORT)"
	fi
done

mkdir -p "$RUN/spool" "$RUN/mosquitto-data"
chmod 0700 "$RUN/spool" "$RUN/mosquitto-data"
# mosquitto writes its log and pid file after switching to user mosquitto
touch "$RUN/mosquitto.log" "$RUN/mosquitto.pid"
chmod 0640 "$RUN/mosquitto.log"
chmod 0644 "$RUN/mosquitto.pid"
if [ "$IS_ROOT" = 1 ]; then
	chown mosquitto: "$RUN/spool" "$RUN/mosquitto-data" "$RUN/mosquitto.log" "$RUN/mosquitto.pid"
fi

sedesc() { printf '%s' "$1" | sed -e 's/[|&\\]/\\&/g'; }
conf=$RUN/mosquitto.conf
{
	echo "# generated by scripts/run.sh from examples/mosquitto.conf; edit that file instead"
	sed -e "s|^plugin /usr/lib/mosquitto_chat.so\$|plugin $(sedesc "$BUILD/mosquitto_chat.so")|" \
		-e "s|^plugin_opt_db_conninfo .*|plugin_opt_db_conninfo $(sedesc "$DB")|" \
		-e "s|^plugin_opt_token_secret_file .*|plugin_opt_token_secret_file $(sedesc "$SECRET")|" \
		-e "s|^plugin_opt_spool_dir .*|plugin_opt_spool_dir $(sedesc "$RUN/spool")|" \
		-e "s|^persistence_location .*|persistence_location $(sedesc "$RUN/mosquitto-data")/|" \
		-e "s|^log_dest file .*|log_dest file $(sedesc "$RUN/mosquitto.log")|" \
		-e "s|^listener 1883 127.0.0.1\$|listener $MQTT_PORT 127.0.0.1|" \
		-e "s|^listener 9001 127.0.0.1\$|listener $WS_PORT 127.0.0.1|" \
		"$ROOT/examples/mosquitto.conf"
	echo
	echo "pid_file $RUN/mosquitto.pid"
} >"$conf.tmp"
for want in "plugin $BUILD/mosquitto_chat.so" "plugin_opt_db_conninfo $DB" \
	"plugin_opt_token_secret_file $SECRET" "plugin_opt_spool_dir $RUN/spool" \
	"log_dest file $RUN/mosquitto.log" "listener $MQTT_PORT 127.0.0.1" "listener $WS_PORT 127.0.0.1"; do
	grep -qxF "$want" "$conf.tmp" || die "examples/mosquitto.conf changed: could not set \"$want\""
done
mv "$conf.tmp" "$conf"
chmod 0644 "$conf"

log_lines=$(wc -l <"$RUN/mosquitto.log")
mosquitto -c "$conf" -d
up=0
for _ in $(seq 1 100); do
	if port_busy "$MQTT_PORT" && live_pid "$RUN/mosquitto.pid" mosquitto >/dev/null; then
		up=1
		break
	fi
	sleep 0.1
done
if [ "$up" != 1 ]; then
	tail -n "+$((log_lines + 1))" "$RUN/mosquitto.log" | tail -n 40 >&2
	die "mosquitto did not start (log: $RUN/mosquitto.log)"
fi
say "mosquitto started (pid $(cat "$RUN/mosquitto.pid")), MQTT 127.0.0.1:$MQTT_PORT, websockets 127.0.0.1:$WS_PORT"

# ---- 6. chat-rest ---------------------------------------------------------
REST_URL=
if [ -x "$BUILD/chat-rest" ]; then
	if port_busy "$REST_PORT"; then
		die "port $REST_PORT is taken by another program (set CHAT_REST_PORT)"
	fi
	touch "$RUN/chat-rest.log"
	run_as=()
	if [ "$IS_ROOT" = 1 ]; then
		# no need for root: run it as mosquitto, whose group may read the secret
		chown mosquitto: "$RUN/chat-rest.log"
		run_as=(setpriv --reuid=mosquitto --regid=mosquitto --init-groups --)
	fi
	(cd / && exec setsid "${run_as[@]}" "$BUILD/chat-rest" --listen "127.0.0.1:$REST_PORT" --db "$DB" \
		--token-secret-file "$SECRET" </dev/null >>"$RUN/chat-rest.log" 2>&1) &
	echo $! >"$RUN/chat-rest.pid"
	up=0
	for _ in $(seq 1 100); do
		if curl -fsS -o /dev/null "http://127.0.0.1:$REST_PORT/healthz" 2>/dev/null; then
			up=1
			break
		fi
		live_pid "$RUN/chat-rest.pid" chat-rest >/dev/null || break
		sleep 0.1
	done
	if [ "$up" != 1 ]; then
		tail -n 30 "$RUN/chat-rest.log" >&2
		die "chat-rest did not start (log: $RUN/chat-rest.log)"
	fi
	REST_URL=http://127.0.0.1:$REST_PORT
	say "chat-rest started (pid $(cat "$RUN/chat-rest.pid")), $REST_URL"
else
	say "chat-rest was not built; skipping it"
fi

# ---- 7. how to use it -------------------------------------------------------
A=${PW[alice]}
B=${PW[bob]}
cat <<EOF

mosquitto-chat is running.
  MQTT        127.0.0.1:$MQTT_PORT   (websockets: ws://127.0.0.1:$WS_PORT)
  REST        ${REST_URL:-not running}
  PostgreSQL  127.0.0.1:$PG_PORT, database chat (data in run/pg)
  logs        run/mosquitto.log  run/chat-rest.log  run/pg/postgres.log
  demo users  alice / $A    bob / $B

Bob reads his inbox (one terminal):
  mosquitto_sub -h 127.0.0.1 -p $MQTT_PORT -u bob -P '$B' -i bob -q 1 -t 'chat/inbox/bob'

Alice writes to Bob (another terminal):
  mosquitto_pub -h 127.0.0.1 -p $MQTT_PORT -u alice -P '$A' -i alice -q 1 -t chat/dm/bob -m hello
  mosquitto_pub -h 127.0.0.1 -p $MQTT_PORT -u alice -P '$A' -i alice -q 1 -t chat/dm/bob \\
      -m '{"cid":"m1","body":"hello again"}'
EOF
if [ -n "$REST_URL" ]; then
	cat <<EOF

History over REST:
  curl -s -d '{"user":"bob","password":"$B"}' $REST_URL/v1/login
  curl -s -H "Authorization: Bearer <token>" '$REST_URL/v1/inbox?after=0'
EOF
fi
cat <<EOF

Admin: build/chatctl --help (it reads run/chat.conf); stop everything: scripts/run.sh stop
EOF
