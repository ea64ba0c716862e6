#!/bin/sh
# SPDX-License-Identifier: EPL-2.0
# Container entry point of the mosquitto-chat image.
#   init    create the token secret (if missing) and the schema (idempotent)
#   broker  write /etc/mosquitto/mosquitto.conf from the example, run mosquitto
#   rest    run chat-rest on 0.0.0.0:8080
#   *       run the given command (e.g. chatctl user add alice)
# Settings: CHAT_DB (libpq conninfo), CHAT_TOKEN_SECRET_FILE.
set -eu

: "${CHAT_DB:?set CHAT_DB}"
: "${CHAT_TOKEN_SECRET_FILE:?set CHAT_TOKEN_SECRET_FILE}"

# chatctl and chat-rest read their defaults from here
cat >/etc/mosquitto-chat/chat.conf <<CONF
db = $CHAT_DB
token_secret_file = $CHAT_TOKEN_SECRET_FILE
CONF

sedesc() { printf '%s' "$1" | sed -e 's/[|&\\]/\\&/g'; }

case "${1:-broker}" in
init)
	if [ ! -s "$CHAT_TOKEN_SECRET_FILE" ]; then
		mkdir -p "$(dirname "$CHAT_TOKEN_SECRET_FILE")"
		umask 027
		head -c 48 /dev/urandom | base64 -w0 >"$CHAT_TOKEN_SECRET_FILE"
		echo >>"$CHAT_TOKEN_SECRET_FILE"
		echo "chat-entrypoint: generated $CHAT_TOKEN_SECRET_FILE"
	fi
	chgrp mosquitto "$CHAT_TOKEN_SECRET_FILE"
	chmod 0640 "$CHAT_TOKEN_SECRET_FILE"
	# PostgreSQL may still be starting
	i=0
	until chatctl init; do
		i=$((i + 1))
		[ "$i" -lt 30 ] || exit 1
		sleep 2
	done
	;;
broker)
	mkdir -p /var/lib/mosquitto/chat-spool
	chown mosquitto:mosquitto /var/lib/mosquitto /var/lib/mosquitto/chat-spool
	# the example, with listeners on every address and the log on stdout
	sed -e "s|^plugin_opt_db_conninfo .*|plugin_opt_db_conninfo $(sedesc "$CHAT_DB")|" \
		-e "s|^plugin_opt_token_secret_file .*|plugin_opt_token_secret_file $(sedesc "$CHAT_TOKEN_SECRET_FILE")|" \
		-e "s|^log_dest file .*|log_dest stdout|" \
		-e "s|^listener 1883 127.0.0.1\$|listener 1883|" \
		-e "s|^listener 9001 127.0.0.1\$|listener 9001|" \
		/usr/share/mosquitto-chat/mosquitto.conf.example >/etc/mosquitto/mosquitto.conf
	exec mosquitto -c /etc/mosquitto/mosquitto.conf
	;;
rest)
	exec chat-rest --listen 0.0.0.0:8080 --db "$CHAT_DB" --token-secret-file "$CHAT_TOKEN_SECRET_FILE"
	;;
*)
	exec "$@"
	;;
esac
