"""The SIP side of the proxy, one room per call role (see app.py for the map).

Only shell.py speaks KSR; mod_init() is what app_python3 calls (kemi/kamailio_entry.py).
"""
