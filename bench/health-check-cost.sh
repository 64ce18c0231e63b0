#!/usr/bin/env bash
# What a container health check costs the host: the Swarm runtime gives every replica one
# (`ringlb probe` in the container, see src/runtime/swarm.rs), and each check is an exec through
# dockerd, containerd and runc. This starts replicas of ringlb:latest with a check every second,
# then without one, and prints the machine's CPU time (all processes, /proc/stat) in each phase.
#
# Usage: bench/health-check-cost.sh [replicas (3)] [seconds per phase (30)]
# Needs: a Docker engine, curl, the image ringlb:latest (make image). Removes what it starts (by
# its own label), also when interrupted.
set -euo pipefail
replicas=${1:-3}
seconds=${2:-30}
label="ringlb.bench=health-check-$$"
case "${DOCKER_HOST:-unix:///var/run/docker.sock}" in
    unix://*) socket=${DOCKER_HOST:-unix:///var/run/docker.sock}; socket=${socket#unix://} ;;
    *) echo "DOCKER_HOST=$DOCKER_HOST: this script speaks to a unix socket only" >&2; exit 1 ;;
esac

cleanup() {
    ids=$(docker ps -aq --filter "label=$label")
    [ -z "$ids" ] || docker rm -f $ids >/dev/null
}
trap cleanup EXIT

busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
hz=$(getconf CLK_TCK)

# Starts the replicas; $1 is the Healthcheck JSON (or null).
start() {
    for i in $(seq "$replicas"); do
        body=$(printf '{"Image":"ringlb:latest","Cmd":["server"],"Labels":{"ringlb.bench":"health-check-%s"},"Healthcheck":%s}' "$$" "$1")
        id=$(curl -sf --unix-socket "$socket" -H 'content-type: application/json' -X POST \
            "http://docker/containers/create" -d "$body" | sed -n 's/.*"Id":"\([0-9a-f]*\)".*/\1/p')
        [ -n "$id" ] || { echo "cannot create a container of ringlb:latest (make image?)" >&2; exit 1; }
        docker start "$id" >/dev/null
    done
    sleep 3   # let them settle before measuring: start-up is not what is measured
}

# CPU milliseconds the whole machine spent over one phase.
measure() {
    local before after
    before=$(busy_ticks)
    sleep "$seconds"
    after=$(busy_ticks)
    echo $(( (after - before) * 1000 / hz ))
}

start null
quiet=$(measure)
cleanup
start '{"Test":["CMD","/ringlb","probe","--port","5000"],"Interval":1000000000,"Timeout":2000000000,"Retries":3}'
checked=$(measure)
checks=$(docker ps -q --filter "label=$label" | head -1 | xargs docker inspect --format '{{.State.Health.Status}}')
cleanup

extra=$((checked - quiet))
count=$((replicas * seconds))
echo "replicas: $replicas, phase: ${seconds} s, engine: $(docker version --format '{{.Server.Version}}')"
echo "CPU without checks: ${quiet} ms; with a check per replica per second: ${checked} ms (health: $checks)"
echo "per check: $((extra / count)) ms of CPU ($count checks); one every 5 s: $((extra * 100 / count / 5000)).$(( (extra * 1000 / count / 5000) % 10 )) % of a core per replica"
