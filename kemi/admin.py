"""Ops CLI: `python3 -m kemi.admin --help`.

Every command validates fully before it writes, and writes in one Redis
transaction or atomic script, so an error changes nothing. Errors go to stderr
naming the file, line and field at fault; the exit codes are in kemi.cli_errors
(2 for bad input, 3 when Redis cannot be reached).
"""

from __future__ import annotations

import argparse
import os
import sys

from kemi import admin_audit, admin_metrics, admin_prepaid, numbering, provisioning
from kemi.cli_errors import (EXIT_BAD_INPUT, EXIT_OK, EXIT_STORE_DOWN, EXIT_UNRECONCILED, EXIT_UNREPLICATED, CliError,
                             OutcomeUnknown, Unreconciled)
from kemi.model import E164_PREFIX_RE
from kemi.settings import Settings, SettingsError
from kemi.store import Connection, Directory, StoreRefused, StoreUnavailable
from kemi.store import audit as audit_store
from kemi.store.prepaid import Unreplicated
from kemi.store.prepaid import PrepaidLedger


def cmd_load(args, directory: Directory) -> None:
    try:
        with open(args.file, "rb") as handle:
            # never more than parse() accepts: a huge file is refused without being read whole
            data = handle.read(provisioning.MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CliError(f"{args.file}: cannot read: {exc.strerror}") from None
    if len(data) > provisioning.MAX_FILE_BYTES:
        raise CliError(f"{args.file}: larger than {provisioning.MAX_FILE_BYTES} bytes") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise CliError(f"{args.file}:line {line}: not UTF-8 text (byte {exc.start})") from None
    prov = provisioning.parse(text, args.file)
    if args.dry_run:
        print(f"{args.file}: valid, {len(prov.companies)} companies (dry run, nothing written)")
        return
    try:
        summary = directory.apply(prov, prune=args.prune)
    except ValueError as exc:
        raise CliError(f"{args.file}: {exc}; nothing was changed") from None
    # The money scripts belong to the schema: a fresh or restarted store gets them here.
    PrepaidLedger(directory.conn).load_functions()
    for line in summary:
        print(line)
    print(f"{args.file}: applied")


def cmd_show(args, directory: Directory) -> None:
    companies = directory.companies()
    if args.company:
        companies = [c for c in companies if c.id == args.company]
        if not companies:
            raise CliError(f"company {args.company!r}: not provisioned")
    for company in companies:
        print(f"{company.id}: {company.name} <{company.domain}>"
              f" main number {company.main_number or '-'}"
              f"{' allows special numbers' if company.allow_special else ''}")
        if company.location:
            print(f"  location: {company.location}")
        if company.receptionist:
            print(f"  receptionist: media server {company.receptionist}")
        for ext in company.extensions:
            extra = f"forwards to {ext.forward}" if ext.type == "virtual" else "phone"
            print(f"  {ext.number}  {ext.name:<24} DID {ext.did or '-':<14} {extra}, rings {ext.ring_timeout}s")
        for did in company.dids:
            fallback = f", then {did.fallback}" if did.fallback else ""
            print(f"  DID {did.number} -> {did.target}{fallback}")
    if not companies:
        print("nothing provisioned")


def cmd_trunks(args, directory: Directory) -> None:
    trunks = directory.trunks()
    for t in trunks:
        roles = ", ".join(r for r, on in (("outbound", t.outbound), ("emergency", t.emergency)) if on) or "inbound only"
        print(f"{t.priority:>4}  {t.name:<16} {t.transport}:{t.host}:{t.port}  {roles}")
    if not trunks:
        print("no trunks provisioned: outbound calls get 503 No Route To Destination")


def cmd_sites(args, directory: Directory) -> None:
    sites = directory.sites()
    if args.ipv4_nets:
        # for scripts/sip-conn-limit.sh (TCP_SITE_NETS): its nftables set holds IPv4 only
        print(",".join(cidr for site in sites for cidr in site.cidrs if ":" not in cidr))
        return
    for site in sites:
        members = f" (companies {', '.join(site.companies)})" if site.companies else ""
        print(f"{site.name}: {', '.join(site.cidrs)}{members}")
    if not sites:
        print("no sites declared: every address is limited as one sender")


def cmd_override(args, directory: Directory) -> None:
    if args.action == "list":
        overrides = directory.overrides()
        for prefix in sorted(overrides):
            print(f"{prefix:<16} {overrides[prefix]}")
        if not overrides:
            print("no overrides: the numbering plan decides alone")
        return
    prefix = args.prefix or ""
    # not the catch-all '+', nor a country code that starts with 0: neither is a prefix to override
    if not E164_PREFIX_RE.fullmatch(prefix) or prefix[1:2] in ("", "0"):
        raise CliError(f"PREFIX {args.prefix!r}: expected '+' and 1 to 15 digits of an E.164 prefix, e.g. +4475")
    if args.action == "set":
        if args.billing not in numbering.BILLING_CLASSES:
            raise CliError(f"CLASS {args.billing!r}: expected one of {', '.join(numbering.BILLING_CLASSES)}")
        directory.set_override(args.prefix, args.billing)
        print(f"{args.prefix}: {args.billing} (applies to the next call, no restart)")
    elif not directory.remove_override(args.prefix):
        raise CliError(f"PREFIX {args.prefix}: no override to remove")
    else:
        print(f"{args.prefix}: override removed")


def cmd_history(args, directory: Directory) -> None:
    count = admin_prepaid.parse_count(args.count, "--count", 1)
    rows = audit_store.last(directory.conn, count)
    for entry_id, fields in rows:
        rest = "  ".join(f"{k}={v}" for k, v in fields.items() if k not in ("actor", "at", "command", "host"))
        print(f"{entry_id}  {fields.get('at', '?')}  {fields.get('actor', '?')}@{fields.get('host', '?')}  "
              f"{fields.get('command', '?')}  {rest}".rstrip())
    if not rows:
        print("no audit records")


def cmd_metrics(args, directory: Directory) -> None:
    text = admin_metrics.collect(args, directory, admin_prepaid._ledger, admin_prepaid.parse_minor)
    if args.textfile:
        admin_metrics.write_atomically(args.textfile, text)
    else:
        sys.stdout.write(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m kemi.admin", description=__doc__.split("\n")[0],
                                     epilog="Amounts (prepaid topup, rate set, --fee) are "
                                            + admin_prepaid.AMOUNT_HELP + ".")
    parser.add_argument("--redis-url", help=f"Redis to manage (default: $REDIS_URL or {Settings.redis_url})")
    parser.add_argument("--actor", help="who is making the change, for the audit record (default: $SUDO_USER, "
                                        "else the OS user)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    load = sub.add_parser("load", help="apply a YAML provisioning file (companies, extensions, DIDs, trunks, media servers, sites)",
                          description="Apply a YAML provisioning file atomically: each company in the file is "
                                      "replaced by the file's version; a file with any error changes nothing. "
                                      "Format: redis-schema/demo-office.yaml (commented).")
    load.add_argument("file")
    load.add_argument("--prune", action="store_true", help="also remove companies that are not in the file")
    load.add_argument("--dry-run", action="store_true", help="validate only, write nothing")
    load.set_defaults(func=cmd_load)

    show = sub.add_parser("show", help="print what is provisioned", description="Print companies and extensions.")
    show.add_argument("company", nargs="?", help="only this company id")
    show.set_defaults(func=cmd_show)

    trunks = sub.add_parser("trunks", help="list the provisioned trunks (set them in the provisioning file)",
                            description="List trunks in the order outbound calls try them.")
    trunks.set_defaults(func=cmd_trunks)

    sites = sub.add_parser("sites", help="list the declared sites (buildings behind one NAT address)",
                           description="List the sites of the provisioning file: the gate limits their "
                                       "addresses per phone, never as a whole (docs/deploying-behind-nat.md).")
    sites.add_argument("--ipv4-nets", action="store_true",
                       help="print only their IPv4 networks, comma-separated (TCP_SITE_NETS of scripts/sip-conn-limit.sh)")
    sites.set_defaults(func=cmd_sites)

    override = sub.add_parser("override", help="override the billing class of an E.164 prefix",
                              description="Override the numbering plan for a prefix the metadata gets wrong. "
                                          "The longest matching prefix wins; emergency and internal numbers are "
                                          "never overridden. Takes effect on the next call.")
    override.add_argument("action", choices=["set", "remove", "list"])
    override.add_argument("prefix", nargs="?", help="E.164 prefix, e.g. +4475")
    override.add_argument("billing", nargs="?", metavar="CLASS", help="included, prepaid or blocked (with set)")
    override.set_defaults(func=cmd_override)
    admin_prepaid.add_commands(sub)
    history = sub.add_parser("history", help="the admin audit: who changed what, when (top-ups, rates, loads...)",
                             description="Print the most recent admin audit records, oldest first: every "
                                         "change made through this CLI (kemi/admin_audit.py).")
    history.add_argument("--count", default="20", metavar="N", help="how many (default 20)")
    history.set_defaults(func=cmd_history)
    metrics = sub.add_parser("metrics", help="certificate expiry and prepaid balance gauges, for node_exporter",
                             description=admin_metrics.__doc__.split("\n\n")[0])
    metrics.add_argument("--textfile", metavar="PATH",
                         help="write there (atomically; node_exporter's textfile directory, *.prom), not stdout")
    metrics.add_argument("--cert", action="append", default=[], metavar="PEM",
                         help="a TLS certificate whose expiry to export (repeat for several)")
    metrics.add_argument("--low-balance", default="5", metavar="AMOUNT",
                         help="an active account with less available is low (default 5, i.e. 5.00): "
                              + admin_prepaid.AMOUNT_HELP)
    metrics.set_defaults(func=cmd_metrics)
    return parser


def audit(args, conn: Connection, env: dict[str, str]) -> None:
    """The change just made, recorded in Redis and in the log. A record that cannot be written does not
    undo the change: stderr and the log say so."""
    fields = admin_audit.record(args, admin_audit.actor(args.actor, env))
    stored = None
    try:
        stored = audit_store.append(conn, fields)
    except (StoreUnavailable, StoreRefused) as exc:
        print(f"warning: the change was made, but its audit record could not be written to Redis: {exc}",
              file=sys.stderr)
    try:
        admin_audit.log(fields, env, stored)
    except OSError as exc:
        print(f"warning: the audit log could not be written: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    try:
        settings = Settings.from_env(env)
        conn = Connection(settings)
        args.func(args, Directory(conn))
        if admin_audit.audited(args):
            audit(args, conn, env)
    except provisioning.ProvisioningError as exc:
        print(f"error: {exc.source}: {len(exc.problems)} problem(s), nothing was changed", file=sys.stderr)
        for problem in exc.problems:
            print(f"{exc.source}:{problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (CliError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreRefused as exc:  # WRONGTYPE, OOM, BUSY...: Redis answered, and not with a result
        print(f"error: Redis refused the command: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Unreplicated as exc:  # applied, but a failover now could undo it
        print(f"error: {exc}: it is applied, but a Redis failover before the replica catches up would lose it; "
              f"check the replicas (INFO replication), then check with 'prepaid show' and repeat the same "
              f"command if it is gone (a top-up with the same --ref credits once)", file=sys.stderr)
        return EXIT_UNREPLICATED
    except Unreconciled as exc:  # prepaid audit: the report is printed, this is its verdict
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNRECONCILED
    except OutcomeUnknown as exc:  # a write was sent: "nothing was changed" may be false
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE_DOWN
    except StoreUnavailable as exc:
        print(f"error: {exc}; nothing was changed", file=sys.stderr)
        return EXIT_STORE_DOWN
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
