#!/usr/bin/env bash
# swarm_node.sh - throw-away extra Docker daemons ("nodes") for multi-node Swarm tests.
#
# Why this exists: the Swarm runtime of ringlb has to be tested against a real
# cluster with more than one node, and failover has to be tested by killing a
# whole node. A CI machine has one Docker daemon, and that daemon must not be
# touched (other tests and people use it). So this script starts additional,
# fully separate dockerd instances on the same machine:
#
#   * each node gets its own network namespace (ip netns "ringlb-node-NAME")
#     with one interface, eth0, holding the address given on the command line;
#   * all node interfaces plug into a Linux bridge that lives in its own
#     namespace ("ringlb-hub"), so no rule of the host's iptables (where the
#     main dockerd keeps FORWARD at DROP and bridge-nf-call-iptables=1) is
#     involved or changed; the host gets 10.231.0.1 on a veth into the hub, so
#     it can reach the nodes' addresses directly;
#   * each dockerd has its own data root, exec root, pid file, unix socket,
#     cgroup parent, daemon.json (the host's /etc/docker/daemon.json is not
#     read) and its own containerd, which dockerd spawns itself.
#
# Usage (as root):
#   swarm_node.sh bridge-up               create hub namespace + bridge (idempotent)
#   swarm_node.sh start NAME IP           start node NAME at IP (10.231.0.X); prints
#                                         its DOCKER_HOST (unix socket)
#   swarm_node.sh kill NAME               SIGKILL the node's dockerd, containerd,
#                                         shims and containers (simulated crash);
#                                         its namespace and data are left in place
#   swarm_node.sh stop NAME               kill the node and remove its namespace,
#                                         mounts and data
#   swarm_node.sh bridge-down             stop every node, remove hub and bridge
#   swarm_node.sh status                  list nodes and whether they are alive
#
# Nodes are then driven with the normal CLI, e.g.
#   docker -H unix:///run/ringlb-node-a/docker.sock swarm init --advertise-addr 10.231.0.2
# Images cannot be pulled here: build one on each node (FROM scratch) or
# `docker save IMG | docker -H unix:///run/ringlb-node-X/docker.sock load`.
#
# What works on the CI kernel (no IPVS built in) and what does not:
#   * overlay networks (VXLAN) between nodes, attachable, embedded DNS: yes
#   * services with --endpoint-mode dnsrr: yes; the default VIP mode starts
#     tasks but connections to the VIP time out (no IPVS in the kernel)
#   * --publish mode=host: yes, reachable from the host at NODE_IP:PORT;
#     mode=ingress (routing mesh): no, needs IPVS
#   * node failure: `kill b` = every process of the node SIGKILLed; the manager
#     marks it Down after ~2-4 s with `swarm init --dispatcher-heartbeat 1s`
#     (~11-15 s with the default 5 s), and re-creates its tasks elsewhere
#     after the service's restart delay (default 5 s; --restart-delay 0s).
#   * `start` always gives a fresh node (old data is wiped): after a kill, the
#     manager keeps the dead node as Down; `docker node rm --force` it, then
#     start and join again.
#
# Environment knobs: RINGLB_NODE_STORAGE (storage driver, default overlay2;
# fuse-overlayfs and vfs work too), RINGLB_NODE_START_TIMEOUT (seconds to wait
# for the API, default 60).
set -euo pipefail

SUBNET_PREFIX=10.231.0
HUB_NS=ringlb-hub
HUB_BR=br0
HOST_IF=ringlb-host          # host end of the host<->hub veth (10.231.0.1)
HOST_IP=${SUBNET_PREFIX}.1
STORAGE=${RINGLB_NODE_STORAGE:-overlay2}
START_TIMEOUT=${RINGLB_NODE_START_TIMEOUT:-60}

die() { echo "swarm_node.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

ns_of()   { echo "ringlb-node-$1"; }
run_of()  { echo "/run/ringlb-node-$1"; }
data_of() { echo "/var/lib/ringlb-node-$1"; }

check_name() {
    [[ "$1" =~ ^[a-z0-9]{1,8}$ ]] || die "node name must be 1-8 chars of [a-z0-9]: '$1'"
}

hub() { ip netns exec "$HUB_NS" "$@"; }

bridge_up() {
    if ! ip netns list | grep -qw "^$HUB_NS"; then
        ip netns add "$HUB_NS"
    fi
    hub ip link set lo up
    if ! hub ip link show "$HUB_BR" >/dev/null 2>&1; then
        hub ip link add "$HUB_BR" type bridge
    fi
    hub ip link set "$HUB_BR" up
    if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
        ip link add "$HOST_IF" type veth peer name h-host netns "$HUB_NS"
    fi
    hub ip link set h-host master "$HUB_BR" up
    ip addr replace "$HOST_IP/24" dev "$HOST_IF"
    ip link set "$HOST_IF" up
}

bridge_down() {
    local d n
    for d in /run/ringlb-node-*; do
        [ -d "$d" ] || continue
        n=${d#/run/ringlb-node-}
        stop_node "$n" || true
    done
    for n in $(ip netns list | awk '{print $1}' | grep '^ringlb-node-' || true); do
        stop_node "${n#ringlb-node-}" || true
    done
    ip link del "$HOST_IF" 2>/dev/null || true
    ip netns del "$HUB_NS" 2>/dev/null || true
}

# Only live processes count: after SIGKILL a process stays a zombie until its
# parent reaps it, and the parent of a daemonized dockerd/shim is pid 1, which
# in some sandboxes reaps only every second or so.
alive() {
    local p st
    while read -r p; do
        [ -n "$p" ] || continue
        st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) || continue
        case "$st" in Z|X|"") ;; *) echo "$p" ;; esac
    done
}

# pids that belong to node NAME: its dockerd, containerd and shims (each has
# the node's own exec root on its command line; matching that path and the
# program name, never a pid file, keeps a recycled pid from being hit) and
# every process in the node's container cgroups (cgroup-parent below).
node_pids() {
    local name=$1 run p comm cg
    run=$(run_of "$name")
    for p in $(pgrep -f -- "$run/exec( |/|\$)" || true); do
        comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
        case "$comm" in
            dockerd|containerd|containerd-shim*|docker-proxy) echo "$p" ;;
        esac
    done
    for cg in /sys/fs/cgroup/*/"ringlb-node-$name"; do
        [ -d "$cg" ] || continue
        find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
    done
    return 0
}

kill_node() {
    local name=$1 pids i
    for i in $(seq 1 50); do
        pids=$(node_pids "$name" | sort -u | alive)
        [ -z "$pids" ] && return 0
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        sleep 0.1
    done
    pids=$(node_pids "$name" | sort -u | alive)
    [ -z "$pids" ] || echo "swarm_node.sh: warning: node $name still has pids: $pids" >&2
}

remove_cgroups() {
    local name=$1 cg
    for cg in /sys/fs/cgroup/*/"ringlb-node-$name"; do
        [ -d "$cg" ] || continue
        find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
}

unmount_under() {
    local dir=$1 m
    # deepest first
    for m in $(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
}

stop_node() {
    local name=$1 ns run data
    check_name "$name"
    ns=$(ns_of "$name"); run=$(run_of "$name"); data=$(data_of "$name")
    kill_node "$name"
    unmount_under "$run"
    unmount_under "$data"
    remove_cgroups "$name"
    ip netns del "$ns" 2>/dev/null || true
    hub ip link del "n-$name" >/dev/null 2>&1 || true
    rm -rf "$run" "$data"
}

start_node() {
    local name=$1 ip=$2 ns run data octet t0 i
    check_name "$name"
    [[ "$ip" =~ ^${SUBNET_PREFIX//./\\.}\.([0-9]+)$ ]] || die "IP must be in ${SUBNET_PREFIX}.0/24: '$ip'"
    octet=${BASH_REMATCH[1]}
    { [ "$octet" -ge 2 ] && [ "$octet" -le 254 ]; } || die "last octet must be 2..254"
    ns=$(ns_of "$name"); run=$(run_of "$name"); data=$(data_of "$name")
    bridge_up
    # a leftover of an earlier run would only get in the way: start clean
    stop_node "$name"

    ip netns add "$ns"
    ip netns exec "$ns" ip link set lo up
    hub ip link add "n-$name" type veth peer name eth0 netns "$ns"
    hub ip link set "n-$name" master "$HUB_BR" up
    ip netns exec "$ns" ip addr add "$ip/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    ip netns exec "$ns" ip route add default via "$HOST_IP"

    mkdir -p "$run/exec" "$data"
    # Own config file: the host's /etc/docker/daemon.json sets data-root etc.
    # and dockerd refuses options given both as flag and in the file.
    cat >"$run/daemon.json" <<EOF
{
  "storage-driver": "$STORAGE",
  "bip": "172.30.$octet.1/24",
  "default-address-pools": [{"base": "172.31.0.0/16", "size": 24}],
  "cgroup-parent": "/ringlb-node-$name",
  "userland-proxy": false,
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
EOF
    t0=$(date +%s%N)
    # nsenter --net (not `ip netns exec`): ip netns exec also makes a new mount
    # namespace with a fresh /sys, which hides /sys/fs/cgroup from dockerd.
    # unshare --uts + hostname: Swarm names a node after the daemon's hostname;
    # without this every node is called like the host, and placement
    # constraints on node.hostname cannot tell them apart.
    nsenter --net="/run/netns/$ns" -- \
        unshare --uts -- sh -c 'hostname "$0" && exec setsid "$@"' "ringlb-node-$name" \
        /usr/sbin/dockerd \
        --config-file "$run/daemon.json" \
        --data-root "$data" \
        --exec-root "$run/exec" \
        --pidfile "$run/dockerd.pid" \
        -H "unix://$run/docker.sock" \
        >"$run/dockerd.log" 2>&1 </dev/null &
    for i in $(seq 1 $((START_TIMEOUT * 5))); do
        if docker -H "unix://$run/docker.sock" version >/dev/null 2>&1; then
            echo "node $name up in $(( ($(date +%s%N) - t0) / 1000000 )) ms" >&2
            echo "unix://$run/docker.sock"
            return 0
        fi
        if ! kill -0 $! 2>/dev/null; then
            tail -20 "$run/dockerd.log" >&2
            die "dockerd for node $name exited"
        fi
        sleep 0.2
    done
    tail -20 "$run/dockerd.log" >&2
    die "dockerd for node $name did not answer within ${START_TIMEOUT}s"
}

status() {
    local d n p
    for d in /run/ringlb-node-*; do
        [ -d "$d" ] || continue
        n=${d#/run/ringlb-node-}
        p=$(pgrep -f -- "--exec-root $d/exec( |\$)" | head -1 || true)
        if [ -n "$p" ]; then
            echo "$n up pid=$p unix://$d/docker.sock"
        else
            echo "$n down"
        fi
    done
}

cmd=${1:-}
case "$cmd" in
    bridge-up)   bridge_up ;;
    bridge-down) bridge_down ;;
    start)       [ $# -eq 3 ] || die "usage: $0 start NAME IP"; start_node "$2" "$3" ;;
    stop)        [ $# -eq 2 ] || die "usage: $0 stop NAME"; stop_node "$2" ;;
    kill)        [ $# -eq 2 ] || die "usage: $0 kill NAME"; check_name "$2"; kill_node "$2" ;;
    status)      status ;;
    *) die "usage: $0 {bridge-up|bridge-down|start NAME IP|stop NAME|kill NAME|status}" ;;
esac
