# Settings of the proxy, the local Redis and the tests, with their defaults.
# Sourced by scripts/run.sh and scripts/test.sh; every value can be overridden
# from the environment, e.g. `SIP_PORT=5070 REDIS_PORT=6390 scripts/run.sh`.
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export ROOT
export SIP_ADDR=${SIP_ADDR:-127.0.0.1}          # address the proxy listens on (UDP and TCP)
export SIP_PORT=${SIP_PORT:-5060}               # SIP port (UDP and TCP)
export SIP_CHILDREN=${SIP_CHILDREN:-4}          # worker processes per transport
export LOG_LEVEL=${LOG_LEVEL:-2}                # Kamailio debug level: 0 warn, 1 notice, 2 info, 3 debug
export REDIS_PORT=${REDIS_PORT:-6379}           # port of the local redis-server that scripts/run.sh starts
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:${REDIS_PORT}/0}  # where the proxy and the CLI find the data
export REDIS_TIMEOUT_MS=${REDIS_TIMEOUT_MS:-250} # per Redis command; a slower store is treated as down
export SCHEMA_RECHECK_S=${SCHEMA_RECHECK_S:-5}  # how often each proxy process re-reads schema:version
export PROVISION_FILE=${PROVISION_FILE:-$ROOT/redis-schema/demo-office.yaml}  # loaded by scripts/run.sh at start
export KEMI_SCRIPT=${KEMI_SCRIPT:-$ROOT/kemi/kamailio_entry.py}
export KEMI_VENV=${KEMI_VENV:-$ROOT/.venv}      # venv of Debian's /usr/bin/python3 (the one app_python3 embeds)
export RUN_DIR=${RUN_DIR:-$ROOT/.run}           # pid files, Redis data, the control socket
export KAMAILIO_CTL=${KAMAILIO_CTL:-unix:$RUN_DIR/kamailio-$SIP_PORT.ctl}
export TRUNK_TIMEOUT_MS=${TRUNK_TIMEOUT_MS:-3000} # a trunk silent this long is skipped for the next one
# Last-resort emergency routes when Redis is down and no trunk list is cached:
# "udp:IP:PORT[,tcp:IP:PORT...]". Empty: only provisioned emergency trunks are used.
export EMERGENCY_TRUNKS=${EMERGENCY_TRUNKS:-}
export PREPAID_MAX_CALL_S=${PREPAID_MAX_CALL_S:-7200}   # longest prepaid call one reservation pays for
export PREPAID_SETUP_S=${PREPAID_SETUP_S:-120}          # announcement + ringing allowance of a prepaid call
export PREPAID_TTL_MARGIN_S=${PREPAID_TTL_MARGIN_S:-60} # slack before an orphaned reservation frees its money
# Abuse limits (notes/sec-edge-recipes.md). Requests per source address: more than PIKE_REQS in
# PIKE_WINDOW_S seconds bans the address for BAN_S seconds (trusted trunks and media servers exempt;
# emergency calls from an address with a current registration are never dropped).
export PIKE_REQS=${PIKE_REQS:-30}
export PIKE_WINDOW_S=${PIKE_WINDOW_S:-2}
export BAN_S=${BAN_S:-300}
# Failed digest checks per source address AND user: AUTH_FAIL_MAX within AUTH_FAIL_WINDOW_S seconds
# blocks that user from that address for AUTH_BAN_S seconds (other users behind the same NAT, and the
# same user elsewhere, keep working).
export AUTH_FAIL_MAX=${AUTH_FAIL_MAX:-10}
export AUTH_FAIL_WINDOW_S=${AUTH_FAIL_WINDOW_S:-600}
export AUTH_BAN_S=${AUTH_BAN_S:-900}
# Requests whose User-Agent contains one of these (case-insensitive, comma-separated) are dropped unanswered.
export SCANNER_USER_AGENTS=${SCANNER_USER_AGENTS:-friendly-scanner,friendly-request,sipcli,sipvicious,sip-scan,VaxSIPUserAgent,pplsip,iWar,SIVuS,smap}
export MAX_CONTACTS=${MAX_CONTACTS:-4}            # registrations per extension; one DID call rings at most this many
export TCP_MAX_CONNECTIONS=${TCP_MAX_CONNECTIONS:-2048}  # open TCP connections, all sources together
export TCP_IDLE_S=${TCP_IDLE_S:-60}               # a TCP connection silent this long is closed: phones on TCP keep alive more often
export KAMAILIO_SHM_MB=${KAMAILIO_SHM_MB:-512}  # shared memory: transactions, dialogs, registrations
export KAMAILIO_PKG_MB=${KAMAILIO_PKG_MB:-16}   # private memory per process (the embedded Python lives here too)
