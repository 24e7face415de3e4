"""python -m media [check]: run the media server of MEDIA_ROLE, or check its settings and files
(provisioning, prompts) and render every company's prompts into the cache, then exit."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from kemi.provisioning import ProvisioningError
    from media import settings as settings_mod
    from media.prompts import PromptsError
    from media.tts import TtsError

    try:
        settings = settings_mod.load()
    except settings_mod.SettingsError as exc:
        print(f"media: {exc}", file=sys.stderr)
        return 2
    from media.server import Server
    try:
        server = Server(settings)
    except (OSError, UnicodeDecodeError, ProvisioningError, PromptsError) as exc:
        print(f"media: {exc}", file=sys.stderr)
        return 2
    if argv[:1] == ["check"]:
        try:
            for company in server.companies.values():
                for key in ("greeting", "menu", "unknown", "operator"):
                    server.render([server.item(_Probe(company), key, {"digits": "2 0 0 9"})])
        except (TtsError, OSError) as exc:
            print(f"media: speech: {exc}", file=sys.stderr)
            return 1
        print(f"media: {settings.role}: settings, {settings.provision_file} and {settings.prompts_file} are valid; "
              f"{len(server.companies)} companies' prompts rendered")
        return 0
    if argv:
        print("usage: python -m media [check]", file=sys.stderr)
        return 2
    import pjsua2
    try:
        server.start()
    except pjsua2.Error as exc:
        print(f"media: cannot start: {exc.info()}", file=sys.stderr)
        return 1
    server.run()
    return 0


class _Probe:
    def __init__(self, company):
        self.company = company


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
