# Settings of the scripts, kamailio.cfg and the local Redis, with their defaults.
# Sourced by scripts/run.sh and scripts/test.sh; every value can be overridden
# from the environment, e.g. `SIP_PORT=5070 REDIS_PORT=6390 scripts/run.sh`.
# The routing core's own settings (REDIS_URL, REDIS_TIMEOUT_MS, SCHEMA_RECHECK_S,
# TRUNK_TIMEOUT_MS, EMERGENCY_TRUNKS, PREPAID_*) are deliberately not set here:
# their defaults and ranges live in kemi/settings.py only (README, Settings).
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export ROOT
export SIP_ADDR=${SIP_ADDR:-127.0.0.1}          # address the proxy listens on (UDP and TCP)
export SIP_PORT=${SIP_PORT:-5060}               # SIP port (UDP and TCP)
# SIP over TLS for phones: the listener and its certificate chain and key (PEM). With both unset,
# scripts/run.sh makes a self-signed demo certificate for TLS_ADDR under $RUN_DIR/tls/ (and says so);
# a real deployment gives its own.
export TLS_ADDR=${TLS_ADDR:-$SIP_ADDR}          # address of the TLS listener
export TLS_PORT=${TLS_PORT:-5061}               # its port (TCP)
export TLS_CERT=${TLS_CERT:-}                   # certificate (chain) file; empty: the demo certificate
export TLS_KEY=${TLS_KEY:-}                     # its private key file; empty: the demo key
export SIP_CHILDREN=${SIP_CHILDREN:-4}          # worker processes per transport
export LOG_LEVEL=${LOG_LEVEL:-2}                # Kamailio debug level: 0 warn, 1 notice, 2 info, 3 debug
export LOG_FORMAT=${LOG_FORMAT:-plain}          # plain, or json: one JSON object per line with its Call-ID
export REDIS_PORT=${REDIS_PORT:-6379}           # port of the local redis-server that scripts/run.sh starts
export PROVISION_FILE=${PROVISION_FILE:-$ROOT/redis-schema/demo-office.yaml}  # loaded by scripts/run.sh at start
export KEMI_SCRIPT=${KEMI_SCRIPT:-$ROOT/kemi/kamailio_entry.py}
export KEMI_VENV=${KEMI_VENV:-$ROOT/.venv}      # venv of Debian's /usr/bin/python3 (the one app_python3 embeds)
export RUN_DIR=${RUN_DIR:-$ROOT/.run}           # pid files, Redis data, the control socket, logs
# scripts/run.sh only: stand-ins (sipp-scenarios/standin-*.xml) for the provisioning file's trunks and
# media servers on loopback addresses, so that outside calls get an answer (0: start none).
export STANDINS=${STANDINS:-1}
export STANDIN_EXTENSION=${STANDIN_EXTENSION:-2002}  # where the receptionist stand-in sends every caller
# Who plays the loopback receptionist and announcement media servers: `media` (the media server,
# media/, pjsua2: greeting, DTMF, the spoken balance) or `sipp` (the SIPp stand-ins).
export MEDIA_SERVERS=${MEDIA_SERVERS:-media}
export MEDIA_HTTP_PORT=${MEDIA_HTTP_PORT:-9190}  # each media server's /metrics and /health, on its own address
export START_TIMEOUT_S=${START_TIMEOUT_S:-30}    # scripts/run.sh gives up when the proxy does not answer by then
# The control socket. A unix socket's path holds at most 104 bytes for Kamailio's ctl module (it then
# refuses to start): under a deep RUN_DIR it goes to the temporary directory, named after RUN_DIR so that
# two run directories never share one.
if [ -z "${KAMAILIO_CTL:-}" ]; then
  KAMAILIO_CTL="unix:$RUN_DIR/kamailio-$SIP_PORT.ctl"
  if [ ${#KAMAILIO_CTL} -gt 104 ]; then
    KAMAILIO_CTL="unix:${TMPDIR:-/tmp}/cowork-ctl-$(printf %s "$RUN_DIR" | cksum | cut -d' ' -f1)-$SIP_PORT.ctl"
  fi
fi
export KAMAILIO_CTL
# Abuse limits that Kamailio's own modules enforce (kamailio.cfg reads them with #!defenv, so they
# must be set). Requests per source address: more than PIKE_REQS in PIKE_WINDOW_S seconds makes
# pike report a flood (the routes then ban the address; see BAN_S in the README's settings).
export PIKE_REQS=${PIKE_REQS:-30}
export PIKE_WINDOW_S=${PIKE_WINDOW_S:-2}
export MAX_CONTACTS=${MAX_CONTACTS:-4}            # registrations per extension; one DID call rings at most this many
export TCP_MAX_CONNECTIONS=${TCP_MAX_CONNECTIONS:-2048}  # open TCP connections, all sources together
# Per source address (scripts/sip-conn-limit.sh, nftables; installed by scripts/run.sh when it runs as
# root with nft, and by the Ansible role): at most TCP_PER_SOURCE_MAX open TCP and TLS connections to the
# SIP ports from one address (0: no limit installed); TCP_PER_SITE_MAX from an address in TCP_SITE_NETS
# (comma-separated IPv4 addresses or CIDRs: the public addresses of declared sites, a building behind one
# NAT with many TLS phones).
export TCP_PER_SOURCE_MAX=${TCP_PER_SOURCE_MAX:-64}
export TCP_PER_SITE_MAX=${TCP_PER_SITE_MAX:-1024}
export TCP_SITE_NETS=${TCP_SITE_NETS:-}
# Prometheus metrics (xhttp_prom, GET /metrics over HTTP) on their own TCP socket: a private
# address, never the SIP one (kamailio.cfg). Loopback by default: scrape it from the host, or set a
# private address that only the Prometheus server reaches.
export METRICS_ADDR=${METRICS_ADDR:-127.0.0.1}
export METRICS_PORT=${METRICS_PORT:-9494}
export TCP_IDLE_S=${TCP_IDLE_S:-60}               # a TCP connection silent this long is closed: phones on TCP keep alive more often
# NAT traversal (kamailio.cfg, nathelper): phones registered from behind a NAT get an OPTIONS every
# NATPING_S seconds (keeps the NAT's UDP binding open: many routers drop it after 30 s), and are
# removed when they answered none for NAT_KEEPALIVE_TIMEOUT_S.
export NATPING_S=${NATPING_S:-20}
export NAT_KEEPALIVE_TIMEOUT_S=${NAT_KEEPALIVE_TIMEOUT_S:-120}
# Media relay (rtpengine, started by scripts/run.sh; docs/deploying-behind-nat.md). RTP_ADDR is the
# address rtpengine relays on and writes into every SDP: the proxy's public address in production.
# Behind a 1:1 NAT (a cloud VM) write PRIVATE!PUBLIC: it binds PRIVATE and advertises PUBLIC.
# RTP_PORT_MIN..RTP_PORT_MAX (UDP) must be open inbound: two ports (RTP, RTCP) per party per call.
# RTPENGINE_NG_PORT: its control port (NG protocol), on 127.0.0.1 only; kamailio.cfg reaches it at
# RTPENGINE_SOCK.
export RTP_ADDR=${RTP_ADDR:-$SIP_ADDR}
export RTP_PORT_MIN=${RTP_PORT_MIN:-30000}
export RTP_PORT_MAX=${RTP_PORT_MAX:-39999}
export RTPENGINE_NG_PORT=${RTPENGINE_NG_PORT:-2223}
export RTPENGINE_SOCK=${RTPENGINE_SOCK:-udp:127.0.0.1:$RTPENGINE_NG_PORT}
# A site of several proxies sharing their registrations (README, A site of two proxies; kamailio.cfg
# "Site"): LOCATION_STORE=redis keeps them in Redis (memory: this proxy's own, lost at a restart);
# SERVER_ID (1, 2, ...) is this proxy's number in the site, LOCATION_TIMER_S how often it removes expired
# contacts from Redis. REDIS_START=0 (scripts/run.sh): use the Redis already on REDIS_PORT (the site's
# first proxy's) instead of starting one. SITE_PROXIES (the other proxies) is a routing setting (README).
export LOCATION_STORE=${LOCATION_STORE:-memory}
export SERVER_ID=${SERVER_ID:-1}
export LOCATION_TIMER_S=${LOCATION_TIMER_S:-60}
export LOCATION_REDIS_DB=${LOCATION_REDIS_DB:-1}  # the location's own Redis database (kemi/store/db_redis.py)
export REDIS_START=${REDIS_START:-1}
export KAMAILIO_SHM_MB=${KAMAILIO_SHM_MB:-512}  # shared memory: transactions, dialogs, registrations
export KAMAILIO_PKG_MB=${KAMAILIO_PKG_MB:-16}   # private memory per process (the embedded Python lives here too)
# Redis for a site (scripts/redis-site.sh; scripts/run.sh starts it when REDIS_SITE=1, instead of one
# redis-server): a primary and a replica on REDIS_SITE_NODE_PORTS, three Sentinels on
# REDIS_SITE_SENTINEL_PORTS naming the primary REDIS_SITE_MASTER, and an HAProxy on 127.0.0.1:$REDIS_PORT
# that routes to the primary only. Timings: a primary silent for REDIS_SENTINEL_DOWN_AFTER_MS is failed
# over; HAProxy re-checks which server is the primary every REDIS_SITE_CHECK_MS. The demo values fail over
# in about 2 s; production's (Ansible role redis) say why they are longer.
export REDIS_SITE=${REDIS_SITE:-0}
export REDIS_SITE_NODE_PORTS=${REDIS_SITE_NODE_PORTS:-"$((REDIS_PORT + 1)) $((REDIS_PORT + 2))"}
export REDIS_SITE_SENTINEL_PORTS=${REDIS_SITE_SENTINEL_PORTS:-"$((REDIS_PORT + 20000)) $((REDIS_PORT + 20001)) $((REDIS_PORT + 20002))"}
export REDIS_SITE_MASTER=${REDIS_SITE_MASTER:-cowork}
export REDIS_SENTINEL_DOWN_AFTER_MS=${REDIS_SENTINEL_DOWN_AFTER_MS:-1000}
export REDIS_SENTINEL_FAILOVER_TIMEOUT_MS=${REDIS_SENTINEL_FAILOVER_TIMEOUT_MS:-10000}
export REDIS_SITE_CHECK_MS=${REDIS_SITE_CHECK_MS:-250}
