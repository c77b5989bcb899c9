#!/bin/sh
# endpoint.sh ROUTER OTHER_SUBNET -- COMMAND...: the set-up every endpoint (client, server)
# does before its command.
#  - checksum offload off (`ethtool -K eth0 tx off`, which also turns off TSO/GSO): the router
#    forwards frames as it reads them, so they must carry full checksums and be at most one MTU;
#  - the other network only through the router (the Docker gateway .1 stays the default
#    route, and Docker's own rules keep the two bridges apart);
#  - one ping to the router, so it learns this endpoint's MAC before any data needs it.
set -eu
via=$1; net=$2; shift 3
dev=$(ip -o -4 route show default | awk '{print $5; exit}')
[ -n "$dev" ] || dev=eth0
if [ "${OFFLOAD:-off}" = off ]; then
    ethtool -K "$dev" tx off >/dev/null 2>&1 || echo "endpoint: ethtool -K $dev tx off failed (needs NET_ADMIN)" >&2
fi
ip route replace "$net" via "$via" dev "$dev"
ping -c 1 -W 1 "$via" >/dev/null 2>&1 || true
echo "endpoint: $(hostname) $(ip -o -4 addr show dev "$dev" | awk '{print $4}') on $dev, $net via $via, tx offload ${OFFLOAD:-off}, congestion control $(cat /proc/sys/net/ipv4/tcp_congestion_control)" >&2
exec "$@"
