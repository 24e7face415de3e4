"""The file Kamailio's app_python3 loads (modparam "load").

Kamailio embeds Debian's /usr/bin/python3; the project's venv was made with
that interpreter (scripts/setup.sh), so its site-packages are put on sys.path
before anything imports redis, msgpack or phonenumbers.
"""

import glob
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_VENV = os.environ.get("KEMI_VENV") or os.path.join(_ROOT, ".venv")
for _site in sorted(glob.glob(os.path.join(_VENV, "lib", "python3*", "site-packages"))):
    if _site not in sys.path:
        sys.path.insert(0, _site)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# `kamcmd app_python.reload` makes every process run this file again before its next message
# (then mod_init): drop the kemi modules imported the previous time, or the old code of kemi/
# would keep running and only this file would be new (ansible/ reloads instead of restarting).
for _name in [name for name in sys.modules if name == "kemi" or name.startswith("kemi.")]:
    del sys.modules[_name]

from kemi.sip.app import mod_init  # noqa: E402,F401  (app_python3 calls it)
