#!/usr/bin/env bash
# A real Ray cluster on this machine, for the real-cluster tests (docs/cluster.md): a head node
# and one worker node, each its own `ray start --block` process on loopback, one CPU each.
#
#   PYTHON=.venv-ray/bin/python tests/clusters/ray.sh up     start it (needs the [ray] extra)
#   PYTHON=... tests/clusters/ray.sh down                    stop, by process group, what `up` started
#   tests/clusters/ray.sh status
#
# Idempotent. Each `ray start` leads its own session (setsid), so its node's processes (gcs,
# raylet, workers) are stopped through that process group, never by name. The head listens on
# RAY_PORT (default 6390): jobs join it with hydra.launcher.ray.init.address=127.0.0.1:6390.
# Exit 3: the [ray] extra is not installed for PYTHON (the tests skip on it).
set -euo pipefail

STATE=${CLUSTER_STATE:-/var/tmp/cifar-sweep-ray}
# Ray 2.60 turns token authentication on for a head that finds ~/.ray/auth_token (which a local
# ray.init() leaves behind), and a worker started without the token then cannot join: this
# loopback-only test cluster runs without it, whatever an earlier Ray left in $HOME
export RAY_AUTH_MODE=disabled
PYTHON=${PYTHON:-.venv/bin/python}
PORT=${RAY_PORT:-6390}
RAY="$(dirname "$PYTHON")/ray"

die() { echo "ray.sh: $*" >&2; exit 1; }

alive() {
    local pid
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

start() {  # start NAME ARGS...: `ray start --block` leading its own session
    local name=$1; shift
    alive "$name" && return 0
    setsid "$RAY" start --block --node-ip-address=127.0.0.1 --num-cpus=1 --num-gpus=0 \
        --object-store-memory=200000000 "$@" </dev/null >>"$STATE/$name.log" 2>&1 &
    echo $! >"$STATE/$name.pid"
}

stop() {  # stop NAME: its whole process group, SIGTERM then SIGKILL
    local pid
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 0
    if [ -n "$pid" ]; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/$1.pid"
}

nodes() {  # the number of live nodes
    "$PYTHON" - "$PORT" <<'EOF'
import sys, ray
ray.init(address=f"127.0.0.1:{sys.argv[1]}", logging_level="ERROR", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
EOF
}

up() {
    [ -x "$RAY" ] || { echo "ray.sh: no $RAY: install the [ray] extra for $PYTHON" >&2; exit 3; }
    mkdir -p "$STATE"
    if alive head && alive worker; then
        echo "ray.sh: already up"
        return 0
    fi
    if ! alive head; then  # a new head: the old worker cannot join it
        down >/dev/null
        mkdir -p "$STATE"
        start head --head --port="$PORT" --include-dashboard=false --disable-usage-stats
        for _ in $(seq 60); do "$RAY" status --address="127.0.0.1:$PORT" >/dev/null 2>&1 && break; sleep 1; done
    fi
    stop worker  # what is left of a lost worker node
    start worker --address="127.0.0.1:$PORT"
    for _ in $(seq 60); do [ "$(nodes 2>/dev/null)" = 2 ] && break; sleep 1; done
    [ "$(nodes 2>/dev/null)" = 2 ] || die "the two nodes did not come up (logs: $STATE/*.log)"
    echo "ray.sh: up: head and worker at 127.0.0.1:$PORT"
}

down() {
    stop worker
    stop head
    # `ray start --head` left its address where a later bare ray.init() looks first (and then
    # refuses num_cpus, "connecting to an existing cluster"); `ray stop` removes it, so do we
    local address=/tmp/ray/ray_current_cluster
    if grep -q ":$PORT\$" "$address" 2>/dev/null; then rm -f "$address"; fi
    echo "ray.sh: down"
}

status() {
    local name
    for name in head worker; do
        if alive "$name"; then echo "$name: running, process group $(cat "$STATE/$name.pid")"; fi
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: $0 up | down | status" ;;
esac
