#!/usr/bin/env bash
# A Slurm cluster on this machine, for the integration tests (tests/test_slurm_cluster.py,
# tests/test_slurm_multinode.py): the node `localhost`, plus $SLURM_TEST_MULTI_NODES (default 2) more nodes
# node1, node2, ... for multi-node jobs, each a slurmd in a network namespace of its own (own address on a
# bridge, own hostname, /etc/hosts naming the nodes), so that jobs spanning them talk over a real network.
#   tests/slurm/cluster.sh start     # munged, mariadbd, slurmdbd, slurmctld, slurmds; waits until nodes are idle
#   tests/slurm/cluster.sh stop      # stops exactly the processes `start` recorded, in reverse order
#   tests/slurm/cluster.sh status    # the recorded processes, and sinfo
# Needs root and the Debian packages of .ci/install-slurm (it installs nothing itself). Runs the daemons
# directly (no systemd). Every node offers this machine's CPUs and memory and $SLURM_TEST_GPUS dummy GPUs.
# Partitions: `cpu` (default) and `gpu` on localhost, `multi` on node1.. ; account `ci` for the current user.
# Limits as a site has them, but small, so that the tests reach them: MaxArraySize $SLURM_TEST_MAX_ARRAY (default
# 4: array indices 0-3) and the user's MaxSubmitJobs $SLURM_TEST_MAX_SUBMIT (default 6 jobs queued or running).
# The namespaces' network is $SLURM_TEST_SUBNET.0/24 (default 10.77.0): the bridge (this machine, where the
# controller runs) is .1, node<i> is .<i+1>; nothing outside this machine is involved.
# State, logs and the database live in $SLURM_TEST_STATE (default /tmp/prefinetune-slurm). The Slurm
# configuration must be at /etc/slurm/ (the executor's job step drops SLURM_CONF before its inner srun), so
# `start` writes slurm.conf, gres.conf and slurmdbd.conf there, refusing to overwrite files it did not write.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${SLURM_TEST_STATE:-/tmp/prefinetune-slurm}"
GPUS="${SLURM_TEST_GPUS:-2}"
DBPORT="${SLURM_TEST_DBPORT:-3307}"
MULTI="${SLURM_TEST_MULTI_NODES:-2}"
SUBNET="${SLURM_TEST_SUBNET:-10.77.0}"
MAXARRAY="${SLURM_TEST_MAX_ARRAY:-4}"
MAXSUBMIT="${SLURM_TEST_MAX_SUBMIT:-6}"
BRIDGE=pfslurm0
ACCOUNT=ci
ETC=/etc/slurm
MARK="# Written by tests/slurm/cluster.sh"
PIDS="$STATE/pids"       # one "name pid" line per daemon started, in start order
NETNS="$STATE/netns"     # the bridge and network namespaces `start` made, for `stop` to remove

die() { echo "cluster.sh: ERROR: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }

# wait_for SECONDS WHAT COMMAND...: retry COMMAND every 0.5 s; on timeout, fail naming WHAT and its log.
wait_for() {
    local seconds=$1 what=$2; shift 2
    local end=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || die "$what not ready after ${seconds}s; see $STATE/log/"
        sleep 0.5
    done
}

# launch NAME COMMAND...: start a daemon in the foreground of its own session, log to $STATE/log/NAME.out,
# and record its pid (the daemon's own: setsid execs without forking in a non-interactive shell).
launch() {
    local name=$1; shift
    setsid "$@" >"$STATE/log/$name.out" 2>&1 </dev/null &
    echo "$name $!" >>"$PIDS"
    sleep 0.2
    kill -0 $! 2>/dev/null || die "$name exited at once: $(tail -5 "$STATE/log/$name.out")"
}

render() {  # render TEMPLATE DEST: fill in the placeholders of a template (@MULTINODES@: a file's lines)
    sed -e "s|@STATE@|$STATE|g" -e "s|@GPUS@|$GPUS|g" -e "s|@LASTGPU@|$((GPUS - 1))|g" \
        -e "s|@DBPORT@|$DBPORT|g" -e "s|@MAXARRAY@|$MAXARRAY|g" -e "s|@DBDHOST@|$( ((MULTI > 0)) && echo "$SUBNET.1" || echo localhost)|g" -e "s|@DBPASS@|$DBPASS|g" -e "s|@NODE@|$NODE|g" \
        -e "/@MULTINODES@/{r $STATE/multinodes.conf" -e "d}" "$HERE/$1" >"$2"
}

# Nodes node1..node$MULTI: their lines in slurm.conf (@MULTINODES@). The controller is reached at the bridge's
# address from every node (SlurmctldAddr); `localhost` in a namespace would be the namespace's own loopback.
# They must come before the node `localhost`: while a node named localhost is the only one defined,
# slurmctld takes every other name for it ("Duplicated NodeHostName").
multi_node_conf() {
    ((MULTI > 0)) || return 0
    echo "# Nodes for multi-node jobs, each slurmd in a network namespace of its own (cluster.sh)."
    echo "SlurmctldAddr=$SUBNET.1"
    for ((i = 1; i <= MULTI; i++)); do
        echo "${NODE/NodeName=localhost/NodeName=node$i NodeAddr=$SUBNET.$((i + 1))} Gres=gpu:$GPUS State=UNKNOWN"
    done
    echo "PartitionName=multi Nodes=node[1-$MULTI] MaxTime=INFINITE State=UP"
}

# A bridge on this machine ($SUBNET.1) and one network namespace per node, joined to it by a veth pair.
make_network() {
    ((MULTI > 0)) || return 0
    ip link add "$BRIDGE" type bridge && echo "link $BRIDGE" >>"$NETNS"
    ip addr add "$SUBNET.1/24" dev "$BRIDGE" && ip link set "$BRIDGE" up
    { echo "127.0.0.1 localhost"; for ((i = 1; i <= MULTI; i++)); do echo "$SUBNET.$((i + 1)) node$i"; done; } >"$STATE/hosts"
    for ((i = 1; i <= MULTI; i++)); do
        mkdir -p "$STATE/slurmd/node$i"
        ip netns add "pfslurm-node$i" && echo "netns pfslurm-node$i" >>"$NETNS"
        ip link add "pfslurm-v$i" type veth peer name eth0 netns "pfslurm-node$i" && echo "link pfslurm-v$i" >>"$NETNS"
        ip link set "pfslurm-v$i" master "$BRIDGE" up
        ip -n "pfslurm-node$i" addr add "$SUBNET.$((i + 1))/24" dev eth0
        ip -n "pfslurm-node$i" link set eth0 up
        ip -n "pfslurm-node$i" link set lo up
    done
}

# slurmd of node<i> in its namespace, with the hostname node<i> and the nodes' hosts file (in a mount
# namespace of its own), so that its jobs resolve and reach each other as on a real cluster.
launch_node() {
    local i=$1
    # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup mount slurmd reads.
    launch slurmd nsenter --net="/run/netns/pfslurm-node$i" unshare --uts --mount --propagation private \
        sh -c "hostname node$i && mount --bind '$STATE/hosts' /etc/hosts && exec slurmd -D -N node$i"
}

remove_network() {
    [ -s "$NETNS" ] || return 0
    local kind name
    tac "$NETNS" | while read -r kind name; do
        if [ "$kind" = netns ]; then ip netns del "$name" 2>/dev/null || log "netns $name was gone"
        else ip link del "$name" 2>/dev/null || true; fi   # a veth goes with its namespace
    done
    : >"$NETNS"
}

start() {
    [ "$(id -u)" = 0 ] || die "must run as root (it starts the Slurm daemons and writes $ETC)"
    for cmd in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sacctmgr sinfo ip nsenter unshare; do
        command -v "$cmd" >/dev/null || die "$cmd not found: install the packages first (.ci/install-slurm)"
    done
    if [ -s "$PIDS" ]; then  # recorded by an earlier start: refuse while any of its daemons runs, else clear it
        local name pid
        while read -r name pid; do
            [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ] || die "already started ($name $pid runs; pids in $PIDS); run '$0 stop' first"
        done <"$PIDS"
        log "none of the daemons recorded in $PIDS runs (a killed session or a reboot): clearing it"
        stop
    fi
    for f in slurm.conf gres.conf slurmdbd.conf; do
        if [ -e "$ETC/$f" ] && ! head -1 "$ETC/$f" | grep -qF "$MARK"; then
            die "$ETC/$f exists and was not written by this script; refusing to overwrite a real configuration"
        fi
    done

    if [ -e "$STATE" ] && [ ! -e "$STATE/pids" ]; then
        die "$STATE exists but is not this script's state directory; refusing to delete it"
    fi

    trap 'log "start failed; stopping what was started"; stop' EXIT
    rm -rf "$STATE" && mkdir -p "$STATE"/{log,slurmctld,slurmd/localhost,dev,mysql}
    : >"$PIDS"
    : >"$NETNS"
    # Dummy GPU device files: character devices (like /dev/null) so that slurmd can count them.
    for ((i = 0; i < GPUS; i++)); do mknod "$STATE/dev/gpu$i" c 1 3; done
    # This machine's CPUs and memory as slurmd detects them, under the node name `localhost`.
    NODE="$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]*/NodeName=localhost/')"
    DBPASS="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    mkdir -p "$ETC"
    multi_node_conf >"$STATE/multinodes.conf"
    render slurm.conf.in "$ETC/slurm.conf"
    make_network
    render gres.conf.in "$ETC/gres.conf"
    render slurmdbd.conf.in "$ETC/slurmdbd.conf" && chmod 600 "$ETC/slurmdbd.conf"

    # 1. munge: authentication between the daemons and the client commands (as user munge, default socket).
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running (not started here, so not stopped either): using it"
    else
        install -d -o munge -g munge -m 0755 /run/munge
        launch munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground
        wait_for 10 munged sh -c 'munge -n | unmunge'
    fi

    # 2. MariaDB in $STATE/mysql on 127.0.0.1:$DBPORT, with a user for slurmdbd (created at every start).
    chown mysql:mysql "$STATE/mysql"
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
        >"$STATE/log/mariadb-install.out" 2>&1 || die "mariadb-install-db failed: see $STATE/log/mariadb-install.out"
    cat >"$STATE/init.sql" <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
    chmod 644 "$STATE/init.sql"
    launch mariadbd mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --socket="$STATE/mysql/mysql.sock" \
        --pid-file="$STATE/mysql/mariadbd.pid" --bind-address=127.0.0.1 --port="$DBPORT" --skip-name-resolve \
        --init-file="$STATE/init.sql" --innodb-buffer-pool-size=64M
    wait_for 60 mariadbd mariadb-admin --socket="$STATE/mysql/mysql.sock" ping

    # 3. slurmdbd, 4. slurmctld, 5. slurmd (in the foreground, -D).
    launch slurmdbd slurmdbd -D
    wait_for 60 slurmdbd sacctmgr -n list cluster
    launch slurmctld slurmctld -D -i
    wait_for 60 slurmctld scontrol ping
    # The cluster registers itself with slurmdbd; give the current user an account to submit under.
    wait_for 60 "cluster registration" sh -c "sacctmgr -n -P list cluster format=cluster | grep -qx prefinetune-ci"
    sacctmgr -i add account "$ACCOUNT" Description="test cluster" Organization=ci >/dev/null
    sacctmgr -i add user "$(id -un)" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" MaxSubmitJobs="$MAXSUBMIT" >/dev/null
    launch slurmd slurmd -D -N localhost
    for ((i = 1; i <= MULTI; i++)); do launch_node "$i"; done
    wait_for 60 "node localhost" sh -c "sinfo -h -n localhost -o %t | grep -qx idle"
    for ((i = 1; i <= MULTI; i++)); do wait_for 60 "node node$i" sh -c "sinfo -h -n node$i -o %t | grep -qx idle"; done
    trap - EXIT
    log "started in ${SECONDS}s: $(sinfo -h -o '%P %D %t %G' | tr '\n' ';') MaxArraySize $MAXARRAY, MaxSubmitJobs $MAXSUBMIT; state in $STATE"
}

stop() {
    [ -s "$PIDS" ] || { log "nothing to stop ($PIDS is empty or missing)"; remove_network; return 0; }
    # First cancel the test cluster's jobs: their processes belong to slurmstepd, which outlives slurmd.
    if scontrol ping >/dev/null 2>&1 && [ -n "$(squeue -h -o %i)" ]; then
        log "cancelling jobs still queued or running: $(squeue -h -o %i | tr '\n' ' ')"
        squeue -h -o %i | xargs -r scancel
        for _ in $(seq 60); do [ -z "$(squeue -h -o %i)" ] && break; sleep 0.5; done
    fi
    # Then the daemons in reverse start order: slurmd, slurmctld, slurmdbd, mariadbd, munged. SIGTERM, then
    # SIGKILL after 15 s; a recorded pid that now belongs to another program (e.g. after a reboot) is left alone.
    local name pid
    tac "$PIDS" | while read -r name pid; do
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then log "$name ($pid) was not running"; continue; fi
        kill -TERM "$pid"
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then log "$name ($pid) ignored SIGTERM; killing"; kill -KILL "$pid"; fi
    done
    : >"$PIDS"
    remove_network
    rm -f "$ETC/slurm.conf" "$ETC/gres.conf" "$ETC/slurmdbd.conf"
    log "stopped"
}

status() {
    [ -s "$PIDS" ] || { echo "not started"; return 1; }
    while read -r name pid; do
        if kill -0 "$pid" 2>/dev/null; then echo "$name $pid running"; else echo "$name $pid DEAD"; fi
    done <"$PIDS"
    sinfo
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
