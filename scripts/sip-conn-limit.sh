#!/usr/bin/env bash
# The per-source limit of TCP and TLS connections to the proxy's SIP ports, in nftables: Kamailio 5.6
# has no per-source limit of its own (tcp_accept_iplimit is 5.8), so one address could hold every one
# of the TCP_MAX_CONNECTIONS slots (one CRLF keepalive every 20 s each keeps them from the idle timer)
# and the proxy then resets everyone else's connections.
#
#   scripts/sip-conn-limit.sh ruleset   print the table (for review)
#   scripts/sip-conn-limit.sh install   load it, replacing the table of that name atomically; prints
#                                       "installed", or "unchanged" when the same table is loaded already
#                                       (TCP_PER_SOURCE_MAX=0: removes it, "removed")
#   scripts/sip-conn-limit.sh remove    delete the table (nothing if it is not there)
#
# A new connection to SIP_ADDR:SIP_PORT or TLS_ADDR:TLS_PORT from an address that already has
# TCP_PER_SOURCE_MAX open is refused with a TCP reset; from an address in TCP_SITE_NETS (the public
# addresses of declared sites: a building's NAT, with many TLS phones behind one address) the limit is
# TCP_PER_SITE_MAX instead. The set can also be filled while the proxy runs (until the next install):
#   nft add element inet $NFT_TABLE site_nets '{ 203.0.113.7 }'
# Its own table, so no other firewall rule is touched; IPv4 (the proxy's listeners are IPv4).
# Used by scripts/run.sh (as root, with nft) and the Ansible role (ansible/roles/kamailio).
set -euo pipefail
# scripts/env.sh's defaults in a checkout; the Ansible role installs this script alone and sets every variable
here=$(dirname "${BASH_SOURCE[0]}")
if [ -f "$here/env.sh" ]; then source "$here/env.sh"; fi
NFT_TABLE=${NFT_TABLE:-cowork_sip}

ruleset() {
  local nets="" ports
  [[ $TCP_PER_SOURCE_MAX =~ ^[1-9][0-9]{0,5}$ ]] ||
    { echo "sip-conn-limit: TCP_PER_SOURCE_MAX=$TCP_PER_SOURCE_MAX: expected 1..999999 (0: no limit)" >&2; exit 2; }
  [[ $TCP_PER_SITE_MAX =~ ^[1-9][0-9]{0,5}$ ]] ||
    { echo "sip-conn-limit: TCP_PER_SITE_MAX=$TCP_PER_SITE_MAX: expected 1..999999" >&2; exit 2; }
  local net
  for net in ${TCP_SITE_NETS//,/ }; do
    [[ $net =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?$ ]] ||
      { echo "sip-conn-limit: TCP_SITE_NETS: $net is not an IPv4 address or CIDR" >&2; exit 2; }
    nets+="${nets:+, }$net"
  done
  ports="$SIP_ADDR . $SIP_PORT, $TLS_ADDR . $TLS_PORT"
  local elements=""
  [ -z "$nets" ] || elements=$'\n\t\t'"elements = { $nets }"
  cat <<EOF
table inet $NFT_TABLE {
	set site_nets {
		type ipv4_addr
		flags interval
		auto-merge$elements
	}
	set conns {
		type ipv4_addr
		flags dynamic
		size 65535
	}
	set site_conns {
		type ipv4_addr
		flags dynamic
		size 65535
	}
	chain input {
		type filter hook input priority filter - 1; policy accept;
		meta l4proto != tcp accept
		ip daddr . tcp dport != { $ports } accept
		ct state != new accept
		ip saddr @site_nets add @site_conns { ip saddr ct count over $TCP_PER_SITE_MAX } counter reject with tcp reset
		ip saddr != @site_nets add @conns { ip saddr ct count over $TCP_PER_SOURCE_MAX } counter reject with tcp reset
	}
}
EOF
}

case ${1:-} in
  ruleset) ruleset ;;
  install)
    if [ "$TCP_PER_SOURCE_MAX" = 0 ]; then  # no limit wanted: none left behind either
      if nft list table inet "$NFT_TABLE" > /dev/null 2>&1; then
        nft delete table inet "$NFT_TABLE"; echo removed
      else
        echo unchanged
      fi
      exit 0
    fi
    text=$(ruleset)
    # the table carries the digest of what it was made from: an unchanged install changes nothing
    # (and keeps the elements added by hand, and the counts)
    digest=$(printf %s "$text" | sha256sum | cut -c1-16)
    # (read whole, then matched: `nft list | grep -q` under pipefail fails whenever grep's early exit
    # makes nft die of SIGPIPE, and an unchanged table was reinstalled: "changed" on every Ansible run)
    loaded=$(nft list table inet "$NFT_TABLE" 2>/dev/null) || loaded=""
    if [[ $loaded == *"comment \"sip-conn-limit $digest\""* ]]; then
      echo unchanged
      exit 0
    fi
    # declare, delete, define: one transaction, so there is never a moment without the limit
    { echo "table inet $NFT_TABLE"; echo "delete table inet $NFT_TABLE"
      printf '%s\n' "$text" | sed "1a\\	comment \"sip-conn-limit $digest\""; } | nft -f -
    echo installed ;;
  remove) nft delete table inet "$NFT_TABLE" 2>/dev/null || true ;;
  *) echo "usage: $0 ruleset|install|remove" >&2; exit 2 ;;
esac
