"""The admin audit: who changed what, and when, through kemi.admin. Every top-up, rate change,
activation, override and provisioning load leaves one record after it succeeded, in Redis (the capped
stream keys.ADMIN_AUDIT, kemi.store.audit) and in the log (syslog, ident cowork-admin; and the file
$COWORK_AUDIT_LOG when set, one JSON line each).

The money itself moves only inside the prepaid Functions: the record is written after the change, by
the CLI, and is never part of it. A change whose record could not be written is still made; the CLI
says so on stderr and in the log.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import syslog
import time

# (command, action) pairs of kemi.admin that change something. Reads (show, list, records, audit) are
# not recorded.
AUDITED = {("load", None), ("override", "set"), ("override", "remove"),
           ("prepaid", "activate"), ("prepaid", "deactivate"), ("prepaid", "topup"),
           ("rate", "set"), ("rate", "remove")}


def action_of(args) -> tuple[str, str | None]:
    """The (command, action) of parsed kemi.admin arguments."""
    command = args.command
    action = getattr(args, "action", None) or getattr(args, f"{command}_command", None)
    return command, action


def audited(args) -> bool:
    return action_of(args) in AUDITED and not getattr(args, "dry_run", False)


def actor(explicit: str | None, env: dict[str, str]) -> str:
    """Who: --actor when given (a ticket system, a billing job), else the login behind sudo, else the
    OS user running the command."""
    if explicit:
        return explicit
    if env.get("SUDO_USER"):
        return env["SUDO_USER"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def what(args) -> dict[str, str]:
    """The change as text fields: the command, and its arguments as the operator gave them (a loaded
    file by its path and its SHA-256, since the file may change later)."""
    command, action = action_of(args)
    fields = {"command": " ".join(filter(None, [command, action]))}
    for name in ("company", "amount", "ref", "currency", "prefix", "per_minute", "fee", "increments", "billing"):
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = str(value)
    if command == "load":
        fields["file"] = os.path.abspath(args.file)
        fields["prune"] = "yes" if args.prune else "no"
        try:
            with open(args.file, "rb") as handle:
                fields["sha256"] = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            fields["sha256"] = "?"
    return fields


def record(args, who: str, clock=time.time) -> dict[str, str]:
    """The audit record of a change that succeeded: who, when (UTC, ms), what."""
    at = clock()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"
    return {"actor": who, "at": stamp, "host": os.uname().nodename, **what(args)}


def log(fields: dict[str, str], env: dict[str, str], stored: str | None) -> None:
    """The record in the log: syslog (auth facility: the log ops keep longest) and $COWORK_AUDIT_LOG."""
    line = json.dumps({**fields, "audit_id": stored or "NOT STORED"}, sort_keys=True, ensure_ascii=False)
    syslog.openlog("cowork-admin", 0, syslog.LOG_AUTH)
    syslog.syslog(syslog.LOG_NOTICE, f"audit {line}")
    path = env.get("COWORK_AUDIT_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
