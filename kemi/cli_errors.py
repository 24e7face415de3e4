"""How the ops CLI (kemi.admin and the commands it adds) fails: its exceptions and exit codes.

A module of its own so that every command module can raise these without importing
kemi.admin, which imports the command modules (no import cycle, and no second copy
of an exception class when kemi.admin runs as __main__).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNRECONCILED = 1  # prepaid audit: at least one balance does not equal its ledger
EXIT_BAD_INPUT = 2   # refused: bad arguments, a bad file, a ledger refusal; nothing was changed
EXIT_STORE_DOWN = 3  # Redis unreachable (nothing changed) or silent after a write (check, or repeat)
EXIT_UNREPLICATED = 4  # a money change applied on the primary that no replica confirmed (REDIS_WAIT_*)


class CliError(Exception):
    """A refusal with the message to print; nothing was changed (exit 2)."""


class OutcomeUnknown(Exception):
    """Redis stopped answering after a write was sent: it may have been applied (exit 3)."""


class Unreconciled(Exception):
    """The audit found balances that do not equal their ledger (exit 1); its report is printed."""
