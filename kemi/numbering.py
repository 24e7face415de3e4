"""Numbering plan: what a dialled string is, and how the call is billed.

Pure Python on purpose: no KSR, no Redis, no I/O, so the routing script can call
it on the hot path and the tests can hammer it without a running Kamailio.

Phones are in France and dial with no outside-line prefix. The product rules are
in shared/reference/numbering.md; the *shape* of French short codes and national
ranges is written by hand here (ARCEP plan), but whether a number is allocated
and what type of line it is always comes from Google's libphonenumber metadata
(PyPI `phonenumbers`), never from hand-written prefix lists.

Where the metadata cannot settle a billing question, the answer is a named
constant below (section "Product decisions"), each with its reason, and ops can
override any E.164 prefix (for every company) through `overrides` without a code change.
One exception to "never hand-written prefix lists": a country whose landlines the
metadata cannot tell from mobiles (Denmark) gets its regulator's published series
table, shipped as versioned data in kemi/data/ with its source and date, read once
at import (no I/O per call).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType, ValidationResult

from kemi.model import E164_MAX_DIGITS

CATEGORIES = ("internal", "emergency", "free", "domestic", "international", "directory", "special", "invalid")
BILLING_CLASSES = ("included", "prepaid", "blocked")
EMERGENCY_CODES = frozenset({"15", "17", "18", "112", "114", "115", "119", "191", "196", "197"})


@dataclass(frozen=True)
class Policy:
    """Per-company settings, provisioned by ops."""

    # Company allows premium-rate / shared-cost / 3BPQ / satellite numbers.
    # Even then they are 'prepaid', never 'included'.
    allow_special: bool = False


@dataclass(frozen=True)
class Decision:
    category: str  # one of CATEGORIES
    billing: str  # one of BILLING_CLASSES
    reason: str  # printable ASCII, <= 60 chars: it goes into a SIP reason phrase
    dialled: str  # normalised digits as dialled ('+' kept); '' for garbage
    e164: str | None = None  # None for internal, invalid and short codes
    country: str | None = None  # ISO 3166 region from phonenumbers; set iff e164 is
    line_type: str | None = None  # PhoneNumberType name; set iff e164 is
    refuse_code: int | None = None  # 'invalid' only: 484 incomplete, 404 not routable
    overridden: bool = False  # an ops prefix override decided the billing class


# --------------------------------------------------------------------------
# Product decisions the metadata cannot make (each one is tested)
# --------------------------------------------------------------------------

# Landlines in these countries are included in the plan (product page).
INCLUDED_COUNTRIES = frozenset({"AT", "BE", "DK", "DE", "IT", "IE", "LU", "NL", "PT", "ES", "CH", "GB"})
# Only plain FIXED_LINE is included abroad. Crown dependencies (GG, JE, IM) and the
# Vatican (VA) share +44 / +39 but phonenumbers gives them their own region: they
# are not in the list, so they are prepaid.

# A number the metadata calls FIXED_LINE_OR_MOBILE (NANP +1, and Danish series
# outside the table below) may be a mobile: prepaid, so a mobile is never included
# by accident; ops can override a known landline prefix to 'included'.
FIXED_LINE_OR_MOBILE_BILLING = "prepaid"

# Included countries whose landlines the metadata cannot tell from mobiles get the
# national plan's series table (kemi/data/<file>: source, date and format in its
# header). Of the twelve, only Denmark: its landline and mobile patterns overlap,
# while the other eleven give every number FIXED_LINE or MOBILE (the README's table;
# tests/unit/test_numbering.py checks this against the installed metadata).
SERIES_FILES = {"DK": "dk_series.csv"}
# What a designation in a series table means, as the line type the rules below
# apply. 'spare' (not designated) leaves the metadata's type as it is.
SERIES_DESIGNATIONS = {
    "landline": PhoneNumberType.FIXED_LINE,
    "mobile": PhoneNumberType.MOBILE,
    "m2m": PhoneNumberType.MOBILE,
    "split-charge": PhoneNumberType.SHARED_COST,
    "freephone": PhoneNumberType.TOLL_FREE,
    "premium": PhoneNumberType.PREMIUM_RATE,
    "spare": None,
}
# The table refines only these types: a number the metadata already knows as
# premium, toll-free, VoIP... keeps that type.
_SERIES_REFINES = frozenset({PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE,
                             PhoneNumberType.FIXED_LINE_OR_MOBILE})

# UK 03 numbers (phonenumbers type UAN) are non-geographic but Ofcom requires them
# to be charged like 01/02 geographic calls and to count in inclusive minutes, so
# they are included like a UK landline. Other UAN (UK 055/056 corporate numbers,
# UAN in other countries) are priced by the operator: prepaid.
INCLUDED_UAN_PREFIXES = ("+443",)

# Line types abroad that are callable but never included. The reasons say why.
FOREIGN_PREPAID_REASONS = {
    PhoneNumberType.FIXED_LINE: "Landline abroad needs Prepaid Account",
    PhoneNumberType.MOBILE: "Mobile abroad needs Prepaid Account",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "Landline or mobile abroad, Prepaid Account",
    # International toll-free numbers are free only from inside their country.
    PhoneNumberType.TOLL_FREE: "Toll-free abroad is not free from France",
    # Personal numbers, pagers, VoIP, UAN, voicemail: rates set by each operator.
    PhoneNumberType.VOIP: "VoIP number abroad needs Prepaid Account",
    PhoneNumberType.PERSONAL_NUMBER: "Personal number abroad needs Prepaid Account",
    PhoneNumberType.PAGER: "Pager abroad needs Prepaid Account",
    PhoneNumberType.UAN: "Non-geographic number abroad, Prepaid Account",
    PhoneNumberType.VOICEMAIL: "Voicemail abroad needs Prepaid Account",
}

# Premium-rate and shared-cost anywhere: blocked unless the company allows them.
SURCHARGED_TYPES = frozenset({PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST})

# Satellite networks (Inmarsat 870, GMSS 881, international networks 882/883) and
# every other phonenumbers non-geographic entity (region '001': +800 freephone,
# +808 shared cost, +979 premium, ...) are treated like premium-rate.
SATELLITE_CODES = frozenset({870, 881, 882, 883})
NON_GEO_REGION = "001"

# French overseas departments (Reunion and Mayotte +262, Guadeloupe +590 with
# Saint-Barthelemy and Saint-Martin, French Guiana +594, Martinique +596) are in the
# French national plan: dialled from mainland France as 10-digit national numbers
# (0262..., 0690...) and, like any French number, their landlines and mobiles are
# included and their 08 ranges follow the French rules (080X free, 081X-089X
# surcharged). phonenumbers files them under their own country codes, so a national
# number is tried against these regions first (FR's metadata also accepts some of
# their blocks, which must still go out as +262..., +596...), and the international
# forms (+262..., 00262...) get the same French decision.
OVERSEAS_REGIONS = ("RE", "GP", "MQ", "GF")  # RE covers YT, GP covers BL/MF

# --------------------------------------------------------------------------
# Reasons (printable ASCII, <= 60 chars)
# --------------------------------------------------------------------------
R_INTERNAL = "Internal extension"
R_EMERGENCY = "Emergency call"
R_EU_SOCIAL = "EU harmonised social number, free"
R_TOLL_FREE = "Toll-free number"
R_DOMESTIC = "Domestic call included"
R_OVERSEAS = "French overseas number included"
R_DIRECTORY = "Directory service needs Prepaid Account"
R_SURCHARGED_BLOCKED = "Premium-rate or shared-cost number blocked"
R_SURCHARGED_PREPAID = "Premium-rate or shared-cost number, prepaid"
R_SHORT_BLOCKED = "Short service number blocked"
R_SHORT_PREPAID = "Short service number, prepaid"
R_CARRIER_SELECTION = "Carrier selection prefix not allowed"
R_SATELLITE_BLOCKED = "Satellite or non-geographic number blocked"
R_SATELLITE_PREPAID = "Satellite or non-geographic number, prepaid"
R_INCLUDED_ABROAD = "Landline in included country"
R_SERIES_LANDLINE = "Landline series of an included country"
R_UK_03 = "UK 03 number, charged as geographic"
R_PREPAID_ABROAD = "International call needs Prepaid Account"
R_INCOMPLETE = "Address incomplete"
R_NOT_DIALABLE = "Not a dialable number"
R_UNALLOCATED = "Unallocated number"
R_UNKNOWN_COUNTRY = "Unknown country code"
R_TOO_LONG = "Number too long"

MAX_DIGITS = 20
NATIONAL_LENGTH = 10  # '0' + 9 digits

# Shapes of French short codes ('#' = any digit). A digit string that is a
# proper prefix of one of them is a truncated number (484), not garbage (404).
_SHORT_SHAPES = ("2###", "3###", "10##", "116###", "118###") + tuple(EMERGENCY_CODES)

_SEPARATORS = str.maketrans("", "", " .-()/")
_COUNTRY_CODES = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
_TYPE_NAMES = {value: name for name, value in vars(PhoneNumberType).items()
               if name.isupper() and isinstance(value, int)}
# Their trunk prefix is '0' like mainland France, so the national number minus
# its '0' is the national significant number under the region's country code.
_OVERSEAS_CODES = tuple(phonenumbers.country_code_for_region(r) for r in OVERSEAS_REGIONS)
_OVERSEAS_CODE_SET = frozenset(_OVERSEAS_CODES)
_TYPE_DESCS = ("fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number", "voip",
               "pager", "uan", "voicemail")


def _overseas_patterns() -> re.Pattern:
    """Every line-type pattern of every region under the overseas country codes, as one regex.

    A number is valid in a region only if one of these matches its national significant
    number, so testing this first (about 1 us) spares the four exact look-ups (about
    30 us) for the mainland numbers that make most calls; it is built from the
    metadata, so it follows every phonenumbers upgrade.
    """
    patterns = []
    for code in _OVERSEAS_CODES:
        for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]:
            meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
            for name in _TYPE_DESCS:
                desc = getattr(meta, name, None)
                if desc is not None and desc.national_number_pattern:
                    patterns.append(desc.national_number_pattern)
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.ASCII)


_OVERSEAS_NSN = _overseas_patterns()
_DEFAULT_POLICY = Policy()
_E164 = phonenumbers.PhoneNumberFormat.E164
_DATA = Path(__file__).with_name("data")
_SERIES_RE = re.compile(r"[0-9]{1,4}", re.ASCII)


# --------------------------------------------------------------------------
# Series tables (read once, at import)
# --------------------------------------------------------------------------

class SeriesTableError(ValueError):
    """A series table that cannot be trusted: the proxy must not start with it."""


def parse_series(text: str, source: str) -> dict[str, str]:
    """{series digits: designation} from a series table's text ('#' lines are comments).

    Strict: a header, then SERIES,DESIGNATION rows; anything else (an unknown
    designation, a series given twice, a stray column) raises, naming the line.
    """
    table: dict[str, str] = {}
    header_seen = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not header_seen:
            if line != "SERIES,DESIGNATION":
                raise SeriesTableError(f"{source}:line {number}: expected the header 'SERIES,DESIGNATION'")
            header_seen = True
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2:
            raise SeriesTableError(f"{source}:line {number}: expected SERIES,DESIGNATION, got {line!r}")
        series, designation = fields
        if not _SERIES_RE.fullmatch(series):
            raise SeriesTableError(f"{source}:line {number}: series {series!r}: expected 1 to 4 digits")
        if designation not in SERIES_DESIGNATIONS:
            raise SeriesTableError(f"{source}:line {number}: designation {designation!r}: expected one of "
                                   f"{', '.join(SERIES_DESIGNATIONS)}")
        if series in table:
            raise SeriesTableError(f"{source}:line {number}: series {series} given twice")
        table[series] = designation
    if not table:
        raise SeriesTableError(f"{source}: no series")
    return table


def _load_series() -> dict[str, dict[str, str]]:
    return {region: parse_series((_DATA / name).read_text(encoding="utf-8"), f"kemi/data/{name}")
            for region, name in SERIES_FILES.items()}


SERIES = _load_series()


def series_designation(table: Mapping[str, str], nsn: str) -> str | None:
    """The designation of the longest series of `table` that starts `nsn`, None if none does."""
    for end in range(min(len(nsn), 4), 0, -1):
        designation = table.get(nsn[:end])
        if designation is not None:
            return designation
    return None


# --------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------

def _split(dialled: object) -> tuple[str, str] | None:
    """('+' or '', digits) with separators removed, or None if not digits.

    Unlike normalise(), a lone '+' gives ('+', '') so classify() can answer
    484 (the user has only started dialling) rather than 404.
    """
    if not isinstance(dialled, str):
        return None
    # Decode once only: '%252B' stays '%2B' and is refused, as it should be.
    text = unquote(dialled) if "%" in dialled else dialled
    text = text.translate(_SEPARATORS)
    plus = "+" if text[:1] == "+" else ""
    digits = text[1:] if plus else text
    # isascii() first: str.isdigit() alone accepts '²' or Arabic-Indic digits.
    if digits and not (digits.isascii() and digits.isdigit()):
        return None
    if len(digits) > MAX_DIGITS:
        return None
    return plus, digits


def normalise(dialled: str) -> str | None:
    """'+digits' or 'digits' without separators; None if anything else remains."""
    parts = _split(dialled)
    if parts is None or not parts[1]:
        return None
    return parts[0] + parts[1]


def is_emergency(dialled: str) -> bool:
    """Cheap test for the hot path: only the short codes, as dialled."""
    if not isinstance(dialled, str):
        return False
    if dialled in EMERGENCY_CODES:
        return True
    parts = _split(dialled)
    return parts is not None and not parts[0] and parts[1] in EMERGENCY_CODES


# --------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------

def classify(dialled: str, policy: Policy = _DEFAULT_POLICY,
             overrides: dict[str, str] | None = None) -> Decision:
    """Decide category and billing class for a dialled string. Never raises."""
    try:
        # Only a real True opens surcharged numbers: a mis-provisioned value
        # such as the string "0" must fail closed.
        allow_special = getattr(policy, "allow_special", False) is True
        decision = _classify(dialled, allow_special)
        if overrides:
            decision = _apply_overrides(decision, overrides)
        return decision
    except Exception:  # the router must always get an answer; tests keep this unreached
        return _refuse("", 404, R_NOT_DIALABLE)


def _classify(dialled: str, allow_special: bool) -> Decision:
    parts = _split(dialled)
    if parts is None:
        return _refuse("", 404, R_NOT_DIALABLE)
    plus, digits = parts
    if plus:
        return _international(digits, "+" + digits, allow_special)
    if not digits:
        return _refuse("", 404, R_NOT_DIALABLE)
    if digits[:2] == "00":
        return _international(digits[2:], digits, allow_special)
    if digits[0] == "0":
        return _national(digits, digits, allow_special)
    return _short_code(digits, allow_special)


def _refuse(dialled: str, code: int, reason: str) -> Decision:
    return Decision("invalid", "blocked", reason, dialled, refuse_code=code)


def _gate(allow_special: bool, blocked_reason: str, prepaid_reason: str) -> tuple[str, str]:
    """Billing of surcharged numbers: blocked, or prepaid if the company allows them."""
    return ("prepaid", prepaid_reason) if allow_special else ("blocked", blocked_reason)


def _short_code(digits: str, allow_special: bool) -> Decision:
    """Digits not starting with 0: extensions and French short codes."""
    if digits in EMERGENCY_CODES:
        return Decision("emergency", "included", R_EMERGENCY, digits)
    length, head = len(digits), digits[:3]
    if length == 4:
        if digits[0] == "2":
            return Decision("internal", "included", R_INTERNAL, digits)
        if digits[:2] == "10":  # carrier selection would bypass our trunk
            return Decision("special", "blocked", R_CARRIER_SELECTION, digits)
        if digits[0] == "3":  # 3BPQ service numbers, often surcharged
            billing, reason = _gate(allow_special, R_SHORT_BLOCKED, R_SHORT_PREPAID)
            return Decision("special", billing, reason, digits)
    elif length == 6 and head == "116":
        return Decision("free", "included", R_EU_SOCIAL, digits)
    elif length == 6 and head == "118":
        return Decision("directory", "prepaid", R_DIRECTORY, digits)
    if _is_truncated_short_code(digits):
        return _refuse(digits, 484, R_INCOMPLETE)
    return _refuse(digits, 404, R_NOT_DIALABLE)


def _is_truncated_short_code(digits: str) -> bool:
    return any(len(digits) < len(shape)
               and all(s == "#" or s == d for s, d in zip(shape, digits))
               for shape in _SHORT_SHAPES)


def _national(national: str, dialled: str, allow_special: bool) -> Decision:
    """A French national number '0' + 9 digits (never '00...')."""
    if len(national) < NATIONAL_LENGTH:
        return _refuse(dialled, 484, R_INCOMPLETE)
    if len(national) > NATIONAL_LENGTH:
        return _refuse(dialled, 404, R_TOO_LONG)
    # Overseas first: FR's metadata also accepts some overseas blocks (0269, 0596,
    # 0976...) that the overseas regions' metadata places exactly, and the E.164
    # form must carry the right country code. 08 numbers are national (one plan
    # for mainland and overseas): mainland, unless only an overseas region knows them.
    if national[1] != "8":
        overseas = _overseas(national, dialled, allow_special)
        if overseas is not None:
            return overseas
    # Built directly rather than parsed: the digits are already clean, and the
    # first digit after '0' is 1-9 so int() loses no leading zero.
    number = phonenumbers.PhoneNumber(country_code=33, national_number=int(national[1:]))
    number_type = _valid_type(number)
    if number_type is None:
        overseas = _overseas(national, dialled, allow_special) if national[1] == "8" else None
        return overseas if overseas is not None else _refuse(dialled, 404, R_UNALLOCATED)
    return _french(national, dialled, "+33" + national[1:], "FR", number_type, R_DOMESTIC, allow_special)


def _french(national: str, dialled: str, e164: str, region: str, number_type: int, included_reason: str,
            allow_special: bool) -> Decision:
    """The French rules, read from the national form '0' + 9 digits of a valid number."""
    line_type = _TYPE_NAMES.get(number_type)

    def decide(category: str, billing: str, reason: str) -> Decision:
        return Decision(category, billing, reason, dialled, e164, region, line_type)

    if national[1] != "8":  # 01-05 geographic, 06/07 mobile, 09 VoIP
        return decide("domestic", "included", included_reason)
    if national[2] == "0":  # 080X: free to the caller
        return decide("free", "included", R_TOLL_FREE)
    # 081X-089X shared-cost and premium-rate services
    return decide("special", *_gate(allow_special, R_SURCHARGED_BLOCKED, R_SURCHARGED_PREPAID))


def _overseas(national: str, dialled: str, allow_special: bool) -> Decision | None:
    """An overseas-department number dialled in national form, or None."""
    if not _OVERSEAS_NSN.fullmatch(national, 1):
        return None
    for code in _OVERSEAS_CODES:
        number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national[1:]))
        number_type = _valid_type(number)
        if number_type is not None:
            return _overseas_french(number, number_type, dialled, allow_special)
    return None


def _overseas_french(number: phonenumbers.PhoneNumber, number_type: int, dialled: str,
                     allow_special: bool) -> Decision:
    """A valid overseas-department number, in whichever form it was dialled: French rules."""
    nsn = phonenumbers.national_significant_number(number)
    region = phonenumbers.region_code_for_number(number)
    e164 = phonenumbers.format_number(number, _E164)
    if len(nsn) != NATIONAL_LENGTH - 1:  # every valid one has 9 digits; anything else is not French-shaped
        return _foreign(number, number_type, dialled, allow_special)
    return _french("0" + nsn, dialled, e164, region, number_type, R_OVERSEAS, allow_special)


def _valid_type(number: phonenumbers.PhoneNumber) -> int | None:
    """The PhoneNumberType of a valid number, None if the number is not valid.

    phonenumbers.is_valid_number() is exactly number_type() != UNKNOWN (both
    match the national number against the region's type patterns), and each
    costs ~15 us: asking once halves the cost of the common case.
    """
    number_type = phonenumbers.number_type(number)
    return None if number_type == PhoneNumberType.UNKNOWN else number_type


def _international(digits: str, dialled: str, allow_special: bool) -> Decision:
    """Digits after '+' or '00': country code + national significant number."""
    if not digits:
        return _refuse(dialled, 484, R_INCOMPLETE)
    if digits[0] == "0":
        return _refuse(dialled, 404, R_NOT_DIALABLE)
    code = next((digits[:n] for n in (1, 2, 3) if digits[:n] in _COUNTRY_CODES), None)
    if code is None:
        # Country codes are at most 3 digits: '+9' or '+99' may still become one.
        if len(digits) < 3 and any(c.startswith(digits) for c in _COUNTRY_CODES):
            return _refuse(dialled, 484, R_INCOMPLETE)
        return _refuse(dialled, 404, R_UNKNOWN_COUNTRY)
    if code == "33":
        return _france_international(digits[2:], dialled, allow_special)
    if len(digits) == len(code):
        return _refuse(dialled, 484, R_INCOMPLETE)
    try:
        number = phonenumbers.parse("+" + digits, None)
    except NumberParseException as exc:
        if exc.error_type in (NumberParseException.TOO_SHORT_NSN,
                              NumberParseException.TOO_SHORT_AFTER_IDD):
            return _refuse(dialled, 484, R_INCOMPLETE)
        return _refuse(dialled, 404, R_NOT_DIALABLE)
    number_type = _valid_type(number)
    if number_type is not None:
        if number.country_code in _OVERSEAS_CODE_SET:
            return _overseas_french(number, number_type, dialled, allow_special)
        return _foreign(number, number_type, dialled, allow_special)
    # Invalid: tell a truncated number (484) from an unallocated one (404).
    # Validity is tested first because a few valid numbers (e.g. Canadian
    # 310-xxxx) have lengths the possible-length check calls too short.
    return _length_refusal(number, dialled) or _refuse(dialled, 404, R_UNALLOCATED)


def _france_international(rest: str, dialled: str, allow_special: bool) -> Decision:
    """+33 / 0033: same decision as the national form."""
    # Contacts often hold '+33 (0)6 12 34 56 78': drop that written trunk '0'.
    if len(rest) == NATIONAL_LENGTH and rest[0] == "0":
        rest = rest[1:]
    if rest[:1] == "0":  # '+3300...' would loop back into international
        return _refuse(dialled, 404, R_NOT_DIALABLE)
    return _national("0" + rest, dialled, allow_special)


def _length_refusal(number: phonenumbers.PhoneNumber, dialled: str) -> Decision | None:
    """484 for a number cut short, 404 for one too long; None if the length is possible."""
    result = phonenumbers.is_possible_number_with_reason(number)
    if result == ValidationResult.IS_POSSIBLE:
        return None
    if result in (ValidationResult.TOO_SHORT, ValidationResult.IS_POSSIBLE_LOCAL_ONLY):
        return _refuse(dialled, 484, R_INCOMPLETE)
    if result == ValidationResult.TOO_LONG:
        return _refuse(dialled, 404, R_TOO_LONG)
    if result == ValidationResult.INVALID_LENGTH:
        # Between two possible lengths: shorter than the longest one means the
        # number may be truncated, so 484 gives the caller the better hint.
        region = phonenumbers.region_code_for_country_code(number.country_code)
        meta = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(number.country_code, region)
        lengths = meta.general_desc.possible_length if meta and meta.general_desc else ()
        nsn = phonenumbers.national_significant_number(number)
        if lengths and len(nsn) < max(lengths):
            return _refuse(dialled, 484, R_INCOMPLETE)
        return _refuse(dialled, 404, R_UNALLOCATED)
    return _refuse(dialled, 404, R_UNKNOWN_COUNTRY)  # INVALID_COUNTRY_CODE


def _foreign(number: phonenumbers.PhoneNumber, number_type: int, dialled: str,
             allow_special: bool) -> Decision:
    """A valid number outside France: always category 'international'."""
    e164 = phonenumbers.format_number(number, _E164)
    if len(e164) > 1 + E164_MAX_DIGITS:
        # phonenumbers accepts some longer ones (German PBX direct-dial numbers up
        # to 15 national digits), but no carrier routes beyond the E.164 limit.
        return _refuse(dialled, 404, R_TOO_LONG)
    region = phonenumbers.region_code_for_number(number)

    def decide(billing: str, reason: str) -> Decision:
        return Decision("international", billing, reason, dialled, e164, region,
                        _TYPE_NAMES.get(number_type))

    if number.country_code in SATELLITE_CODES or region == NON_GEO_REGION:
        return decide(*_gate(allow_special, R_SATELLITE_BLOCKED, R_SATELLITE_PREPAID))
    table = SERIES.get(region)
    if table is not None and number_type in _SERIES_REFINES:
        number_type = _series_type(table, number, number_type)
        if number_type == PhoneNumberType.FIXED_LINE and region in INCLUDED_COUNTRIES:
            return decide("included", R_SERIES_LANDLINE)
    if number_type in SURCHARGED_TYPES:
        return decide(*_gate(allow_special, R_SURCHARGED_BLOCKED, R_SURCHARGED_PREPAID))
    if number_type == PhoneNumberType.FIXED_LINE and region in INCLUDED_COUNTRIES:
        return decide("included", R_INCLUDED_ABROAD)
    if number_type == PhoneNumberType.UAN and e164.startswith(INCLUDED_UAN_PREFIXES):
        return decide("included", R_UK_03)
    if number_type == PhoneNumberType.FIXED_LINE_OR_MOBILE:
        return decide(FIXED_LINE_OR_MOBILE_BILLING, FOREIGN_PREPAID_REASONS[number_type])
    return decide("prepaid", FOREIGN_PREPAID_REASONS.get(number_type, R_PREPAID_ABROAD))


def _series_type(table: Mapping[str, str], number: phonenumbers.PhoneNumber, number_type: int) -> int:
    """The line type a national series table gives a number the metadata could not place."""
    resolved = SERIES_DESIGNATIONS.get(series_designation(table, phonenumbers.national_significant_number(number)))
    if resolved is None:  # spare, or in no series: the metadata's type stands
        return number_type
    if resolved == PhoneNumberType.FIXED_LINE and number_type == PhoneNumberType.MOBILE:
        return number_type  # the metadata knows a mobile range the table does not: never include a mobile
    return resolved


# --------------------------------------------------------------------------
# Ops overrides
# --------------------------------------------------------------------------

def _apply_overrides(decision: Decision, overrides: dict[str, str]) -> Decision:
    """Longest matching E.164 prefix with a valid billing class replaces the billing.

    Only numbers with an E.164 form can match, so emergency, internal, short
    codes and invalid numbers are never overridden. Walking the prefixes of the
    number (at most 16 look-ups) makes the cost independent of the table size;
    keys that are not '+digits' strings simply never match.
    """
    e164 = decision.e164
    if e164 is None or decision.category in ("emergency", "internal", "invalid"):
        return decision
    if not isinstance(overrides, Mapping):
        return decision
    for end in range(len(e164), 1, -1):
        prefix = e164[:end]
        billing = overrides.get(prefix)
        if isinstance(billing, str) and billing in BILLING_CLASSES:
            return Decision(decision.category, billing, f"Ops override {prefix}: {billing}",
                            decision.dialled, e164, decision.country, decision.line_type,
                            overridden=True)
    return decision
