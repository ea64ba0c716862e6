#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0
# run-dm-bench.sh: build what the DM benchmark needs and run it.
#   bench/run-dm-bench.sh [--keep-logs] [dm_bench options]
# e.g.  bench/run-dm-bench.sh --pairs 20 --rates 100,5000 --duration 10
# Builds dm_bench, mosquitto_chat.so and chatctl in $CHAT_BUILD_DIR (default
# build/), then bench/run-dm-bench.py starts a private PostgreSQL (fsync on),
# mosquitto with the plugin and a plain mosquitto on free loopback ports,
# runs dm_bench against both and prints one table. Everything it starts is
# stopped again, also on failure or Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${CHAT_BUILD_DIR:-$ROOT/build}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
	cmake -S "$ROOT" -B "$BUILD" >/dev/null
fi
cmake --build "$BUILD" -j"$(nproc)" --target dm_bench mosquitto_chat chatctl >/dev/null
export CHAT_BUILD_DIR=$BUILD
exec /usr/bin/python3 "$ROOT/bench/run-dm-bench.py" "$@"
