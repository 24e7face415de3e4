"""Ops CLI: `python3 -m kemi.admin --help`.

Every command validates fully before it writes, and writes in one Redis
transaction or atomic script, so an error changes nothing. Errors go to stderr
naming the file, line and field at fault; the exit code is 2 for bad input and
3 when Redis cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import sys

import redis

from kemi import provisioning
from kemi.settings import Settings, SettingsError
from kemi.store import Connection, Directory, StoreUnavailable

EXIT_BAD_INPUT = 2
EXIT_STORE_DOWN = 3


class CliError(Exception):
    """A refusal with the message to print; nothing was changed."""


def cmd_load(args, directory: Directory) -> None:
    try:
        with open(args.file, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise CliError(f"{args.file}: cannot read: {exc.strerror}") from None
    prov = provisioning.parse(text, args.file)
    if args.dry_run:
        print(f"{args.file}: valid, {len(prov.companies)} companies (dry run, nothing written)")
        return
    try:
        summary = directory.apply(prov, prune=args.prune)
    except ValueError as exc:
        raise CliError(f"{args.file}: {exc}; nothing was changed") from None
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
        for ext in company.extensions:
            extra = f"forwards to {ext.forward}" if ext.type == "virtual" else "phone"
            print(f"  {ext.number}  {ext.name:<24} DID {ext.did or '-':<14} {extra}, rings {ext.ring_timeout}s")
    if not companies:
        print("nothing provisioned")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m kemi.admin", description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", help="Redis to manage (default: $REDIS_URL or redis://127.0.0.1:6379/0)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    load = sub.add_parser("load", help="apply a YAML provisioning file (companies, extensions)",
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    try:
        settings = Settings.from_env(env)
        conn = Connection(settings)
        args.func(args, Directory(conn))
    except provisioning.ProvisioningError as exc:
        print(f"error: {exc.source}: {len(exc.problems)} problem(s), nothing was changed", file=sys.stderr)
        for problem in exc.problems:
            print(f"{exc.source}:{problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (CliError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (StoreUnavailable, redis.ConnectionError, redis.TimeoutError) as exc:
        print(f"error: {exc}; nothing was changed", file=sys.stderr)
        return EXIT_STORE_DOWN
    return 0


if __name__ == "__main__":
    sys.exit(main())
