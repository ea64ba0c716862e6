#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0
# deps.sh: install the Debian 12 packages mosquitto-chat needs to build,
# run and test. Quick when everything is there (one dpkg-query, no apt).
# As root it installs what is missing, non-interactively; as another user
# it prints the apt-get command to run and fails.
# Services in the installed packages (mosquitto, postgresql) are kept from
# starting on their default ports during the install: the project starts
# its own instances (scripts/run.sh, scripts/test.sh).
set -euo pipefail

PACKAGES=(
	build-essential cmake pkg-config
	mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev
	libjansson-dev libssl-dev libpq-dev libcmocka-dev libmicrohttpd-dev
	libcurl4-openssl-dev
	postgresql postgresql-contrib
	python3 python3-paho-mqtt python3-psycopg2
	curl wrk ca-certificates
)

missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
	exit 0
fi

echo "deps: missing packages: ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: run as root:  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Keep package scripts from starting services (a stock mosquitto on 1883 or
# a PostgreSQL "main" cluster on 5432) while installing; an existing
# policy-rc.d is left alone.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
	made_policy=1
fi
cleanup() { if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

apt-get update </dev/null
apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
echo "deps: installed ${missing[*]}" >&2
