"""Amounts of money in words, French and English: pure, so that tables and properties can test it.

The proxy sends the balance as an integer of minor units (X-Balance) and its ISO 4217 code
(X-Currency); `amount(minor, currency, lang)` is what the caller hears after "Your prepaid balance
is". French follows the traditional spelling (hyphens below a hundred, "et" in 21..71, "quatre-vingts"
and "deux cents" lose their s before a number but keep it before million/milliard, which are nouns,
"un million d'euros"); English writes "one hundred five", without the "and" that would blur the
"euros and cents" that follows.
"""

from __future__ import annotations

LANGUAGES = ("fr", "en")
# The largest balance spoken: 10^15 - 1 minor units (X-Balance has at most 15 digits); far above
# any prepaid account, and every scale word below it is in both tables.
MAX_MINOR = 10 ** 15 - 1

# singular, plural of the major and minor units; every currency here has two decimals.
CURRENCIES = {
    "EUR": {"fr": (("euro", "euros"), ("centime", "centimes")), "en": (("euro", "euros"), ("cent", "cents"))},
    "USD": {"fr": (("dollar", "dollars"), ("cent", "cents")), "en": (("dollar", "dollars"), ("cent", "cents"))},
    "GBP": {"fr": (("livre", "livres"), ("penny", "pence")), "en": (("pound", "pounds"), ("penny", "pence"))},
    "CHF": {"fr": (("franc", "francs"), ("centime", "centimes")), "en": (("franc", "francs"), ("centime", "centimes"))},
}

_FR_UNITS = ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix", "onze",
             "douze", "treize", "quatorze", "quinze", "seize"]
_FR_TENS = {20: "vingt", 30: "trente", 40: "quarante", 50: "cinquante", 60: "soixante"}
_EN_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
             "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
# scale, French singular/plural, English
_SCALES = [(10 ** 12, "billion", "billions", "trillion"), (10 ** 9, "milliard", "milliards", "billion"),
           (10 ** 6, "million", "millions", "million"), (10 ** 3, "mille", "mille", "thousand")]


def _fr_below_100(n: int) -> str:
    if n <= 16:
        return _FR_UNITS[n]
    if n < 20:
        return "dix-" + _FR_UNITS[n - 10]
    if n < 70:
        tens, unit = divmod(n, 10)
        word = _FR_TENS[tens * 10]
        if unit == 0:
            return word
        return f"{word} et un" if unit == 1 else f"{word}-{_FR_UNITS[unit]}"
    if n < 80:  # soixante-dix .. soixante-dix-neuf
        return "soixante et onze" if n == 71 else "soixante-" + _fr_below_100(n - 60)
    if n == 80:
        return "quatre-vingts"
    return "quatre-vingt-" + _fr_below_100(n - 80)


def _fr_below_1000(n: int, plural_ok: bool) -> str:
    """`plural_ok`: nothing but a noun (million, milliard) or the end follows, so "quatre-vingts"
    and "deux cents" keep their s; before "mille" or more digits they lose it."""
    hundreds, rest = divmod(n, 100)
    parts = []
    if hundreds:
        if hundreds == 1:
            parts.append("cent")
        else:
            parts.append(f"{_FR_UNITS[hundreds]} cent" + ("s" if rest == 0 and plural_ok else ""))
    if rest or not hundreds:
        word = _fr_below_100(rest)
        if word == "quatre-vingts" and not plural_ok:
            word = "quatre-vingt"
        parts.append(word)
    return " ".join(parts)


def _en_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    parts = []
    if hundreds:
        parts.append(f"{_EN_UNITS[hundreds]} hundred")
    if rest or not hundreds:
        if rest < 20:
            parts.append(_EN_UNITS[rest])
        else:
            tens, unit = divmod(rest, 10)
            parts.append(_EN_TENS[tens] + (f"-{_EN_UNITS[unit]}" if unit else ""))
    return " ".join(parts)


def number(n: int, lang: str) -> str:
    """A whole number 0 <= n < 10^15 in words."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: expected one of {', '.join(LANGUAGES)}")
    if not 0 <= n < 10 ** 15:
        raise ValueError(f"{n} is out of range (0 .. 10^15 - 1)")
    if n == 0:
        return _FR_UNITS[0] if lang == "fr" else _EN_UNITS[0]
    parts = []
    rest = n
    for scale, fr_one, fr_many, en in _SCALES:
        count, rest = divmod(rest, scale)
        if not count:
            continue
        if lang == "en":
            parts.append(f"{number(count, 'en')} {en}")
        elif scale == 1000:
            parts.append("mille" if count == 1 else f"{_fr_below_1000(count, plural_ok=False)} mille")
        else:
            words = number(count, "fr") if count >= 1000 else _fr_below_1000(count, plural_ok=True)
            parts.append(f"{words} {fr_one if count == 1 else fr_many}")
    if rest:
        parts.append(_fr_below_1000(rest, plural_ok=True) if lang == "fr" else _en_below_1000(rest))
    return " ".join(parts)


def amount(minor: int, currency: str, lang: str) -> str:
    """`minor` units of `currency` in words: "douze euros trente-quatre", "twelve euros and
    thirty-four cents", "zéro euro", "un million d'euros", "thirty-four cents"."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: expected one of {', '.join(LANGUAGES)}")
    if currency not in CURRENCIES:
        raise ValueError(f"currency {currency!r}: expected one of {', '.join(CURRENCIES)}")
    if not 0 <= minor <= MAX_MINOR:
        raise ValueError(f"{minor} minor units is out of range (0 .. {MAX_MINOR})")
    (major_one, major_many), (minor_one, minor_many) = CURRENCIES[currency][lang]
    units, cents = divmod(minor, 100)
    if lang == "fr":
        # "zéro euro", "un euro": singular below 2; "un million d'euros": de before a bare noun scale
        unit_name = major_one if units < 2 else major_many
        words = number(units, "fr")
        if units >= 10 ** 6 and units % 10 ** 6 == 0:
            major = f"{words} d'{unit_name}" if unit_name[0] in "aeiouy" else f"{words} de {unit_name}"
        else:
            major = f"{words} {unit_name}"
        if not cents:
            return major
        if not units:
            return f"{number(cents, 'fr')} {minor_one if cents == 1 else minor_many}"
        return f"{major} {number(cents, 'fr')}"
    major = f"{number(units, 'en')} {major_one if units == 1 else major_many}"
    if not cents:
        return major
    cents_words = f"{number(cents, 'en')} {minor_one if cents == 1 else minor_many}"
    return cents_words if not units else f"{major} and {cents_words}"
