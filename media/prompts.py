"""The prompts file (media/prompts.txt): what the media server says, per language. Pure."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

# key -> the placeholders its text may use (all optional)
KEYS = {"balance": {"amount"}, "greeting": {"company"}, "menu": set(), "unknown": {"digits"}, "operator": set()}
LANGUAGES = ("fr", "en")
_SECTION = re.compile(r"\[([a-z]{2})\]")
_ENTRY = re.compile(r"([a-z_]+)\s*=\s*(.*)")
MAX_TEXT = 400


class PromptsError(ValueError):
    pass


@dataclass(frozen=True)
class Prompts:
    texts: dict  # (language, key) -> text with {placeholders}

    def say(self, language: str, key: str, **values: str) -> str:
        return self.texts[(language, key)].format(**values)


def parse(text: str, source: str = "prompts.txt") -> Prompts:
    """Every problem of the file at once, each with its line; or the prompts."""
    problems: list[str] = []
    texts: dict[tuple[str, str], str] = {}
    where: dict[tuple[str, str], int] = {}
    language = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        section = _SECTION.fullmatch(line)
        if section:
            language = section.group(1)
            if language not in LANGUAGES:
                problems.append(f"{source}:{number}: [{language}]: expected one of {', '.join(LANGUAGES)}")
                language = None
            continue
        entry = _ENTRY.fullmatch(line)
        if entry is None:
            problems.append(f"{source}:{number}: expected `key = text` or a [language] section")
            continue
        key, value = entry.group(1), entry.group(2).strip()
        if language is None:
            problems.append(f"{source}:{number}: {key}: not under a known [language] section")
            continue
        if key not in KEYS:
            problems.append(f"{source}:{number}: unknown key {key!r} (known: {', '.join(KEYS)})")
            continue
        if (language, key) in where:
            problems.append(f"{source}:{number}: {key} is already given for [{language}] "
                            f"at line {where[(language, key)]}")
            continue
        if not value or len(value) > MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in value):
            problems.append(f"{source}:{number}: {key}: expected 1..{MAX_TEXT} printable characters")
            continue
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            problems.append(f"{source}:{number}: {key}: {exc} (write {{{{ and }}}} for braces)")
            continue
        unknown = names - KEYS[key]
        if unknown:
            allowed = ", ".join(f"{{{n}}}" for n in sorted(KEYS[key])) or "none"
            problems.append(f"{source}:{number}: {key}: unknown placeholder "
                            f"{', '.join(f'{{{n}}}' for n in sorted(unknown))} (allowed: {allowed})")
            continue
        texts[(language, key)] = value
        where[(language, key)] = number
    for language in LANGUAGES:
        missing = [key for key in KEYS if (language, key) not in texts]
        if missing:
            problems.append(f"{source}: [{language}] lacks {', '.join(missing)}")
    if problems:
        raise PromptsError("\n".join(problems))
    return Prompts(texts)
