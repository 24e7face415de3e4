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

from kemi.sip.app import mod_init  # noqa: E402,F401  (app_python3 calls it)
