"""The Virtual Receptionist's dialog with one caller: digits and time in, what to play and where to
send the caller out. Pure (time is given), so that tables test every path.

The caller hears the greeting and the menu; dials an extension (four digits 2XXX, or fewer and #,
or fewer and a pause of `gap_s`), or 0 for the operator. A dialled digit cuts the prompt short.
An extension the company does not have is said back and the caller dials again; after `tries`
wrong ones, or `silence_s` without a digit after the prompt, the caller is told and sent to the
operator extension.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXTENSION_DIGITS = 4


@dataclass(frozen=True)
class Redirect:
    extension: str
    why: str  # dialled, operator, tries, silence


@dataclass(frozen=True)
class Play:
    items: tuple  # (prompt key, {placeholder: value}) pairs, played one after the other
    then: Redirect | None = None  # where the caller goes once they have been played


@dataclass(frozen=True)
class Stop:
    """Stop the prompt being played (the caller dialled over it)."""


@dataclass
class Menu:
    extensions: frozenset
    operator: str
    silence_s: float
    gap_s: float
    tries: int
    digits: str = ""
    wrong: int = 0
    playing: Play | None = None
    deadline: float | None = None
    done: bool = False
    heard: list = field(default_factory=list)  # every digit, for the log

    def start(self, now: float) -> list:
        return self._play(Play((("greeting", {}), ("menu", {}))))

    def prompt_done(self, now: float) -> list:
        played, self.playing = self.playing, None
        if played is not None and played.then is not None:
            self.done = True
            return [played.then]
        self.deadline = now + (self.gap_s if self.digits else self.silence_s)
        return []

    def digit(self, digit: str, now: float) -> list:
        if self.done or (self.playing is not None and self.playing.then is not None):
            return []  # leaving for the operator: the caller has been told
        self.heard.append(digit)
        out: list = []
        if self.playing is not None:
            self.playing = None
            out.append(Stop())
        if digit == "0" and not self.digits:
            return out + self._leave("operator")
        if digit == "#":
            if self.digits:
                return out + self._decide()
            self.deadline = now + self.silence_s
            return out
        if not digit.isdigit():
            self.deadline = now + (self.gap_s if self.digits else self.silence_s)
            return out  # * and A-D mean nothing here
        self.digits += digit
        if len(self.digits) >= EXTENSION_DIGITS:
            return out + self._decide()
        self.deadline = now + self.gap_s
        return out

    def tick(self, now: float) -> list:
        if self.done or self.playing is not None or self.deadline is None or now < self.deadline:
            return []
        self.deadline = None
        if self.digits:
            return self._decide()
        return self._leave("silence")

    def _decide(self) -> list:
        dialled, self.digits = self.digits, ""
        if dialled in self.extensions:
            self.done = True
            return [Redirect(dialled, "dialled")]
        self.wrong += 1
        if self.wrong >= self.tries:
            return self._leave("tries", (("unknown", {"digits": " ".join(dialled)}),))
        return self._play(Play((("unknown", {"digits": " ".join(dialled)}), ("menu", {}))))

    def _leave(self, why: str, before: tuple = ()) -> list:
        return self._play(Play(before + (("operator", {}),), then=Redirect(self.operator, why)))

    def _play(self, play: Play) -> list:
        self.playing = play
        self.deadline = None
        return [play]
