"""The media server: the Virtual Receptionist and the balance announcement (docs/media-server-contract.md).

Its own process beside the proxy (python -m media), on PJSIP's pjsua2; kemi/ is never imported
at run time except kemi.provisioning and kemi.model, pure modules that read the same provisioning
file the proxy loads.
"""
