"""Where the project's own files are, for code that reads them at run time.

The one place that knows the layout of the checkout: kemi/ sits at its top, next
to redis-schema/. Everything else asks here instead of walking out of its own
package. (kemi/kamailio_entry.py is the exception: it must find the checkout
before kemi is importable.)
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The Redis Functions that move money (`FUNCTION LOAD` by kemi.store.prepaid.PrepaidLedger.load_functions).
PREPAID_LUA = ROOT / "redis-schema" / "prepaid.lua"
# The Redis ACL rules of the proxy's user and of `default` (kemi.store.acl; Ansible's roles/redis).
ACL_DIR = ROOT / "redis-schema" / "acl"
