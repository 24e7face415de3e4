"""Numbering plan: table tests for every product rule, property tests for robustness."""
import ast
import dataclasses
import pathlib
import re

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kemi import numbering
from kemi.numbering import (
    BILLING_CLASSES,
    CATEGORIES,
    EMERGENCY_CODES,
    Decision,
    Policy,
    classify,
    is_emergency,
    normalise,
)

ALLOW = Policy(allow_special=True)
OVERSEAS_CODES = {262, 590, 594, 596}
DENY = Policy()
_REASON_RE = re.compile(r"[\x20-\x7e]{1,60}")


def assert_well_formed(d: Decision) -> None:
    """Invariants every decision must satisfy, whatever the input."""
    assert isinstance(d, Decision)
    assert d.category in CATEGORIES
    assert d.billing in BILLING_CLASSES
    assert _REASON_RE.fullmatch(d.reason), d.reason
    if d.category == "invalid":
        assert d.refuse_code in (404, 484)
        assert d.billing == "blocked"
        assert d.e164 is None
    else:
        assert d.refuse_code is None
    if d.category == "emergency":
        assert d.billing == "included" and not d.overridden
    # country and line type come with an E.164 form and only with it
    assert (d.country is None) == (d.e164 is None)
    if d.e164 is not None:
        assert re.fullmatch(r"\+[1-9]\d{1,15}", d.e164)


# ---------------------------------------------------------------------------
# Table: (dialled, policy, category, billing, e164, line_type)
# ---------------------------------------------------------------------------
def case(dialled, category, billing, e164=None, line_type=None, policy=DENY, id=None):
    return pytest.param(dialled, policy, category, billing, e164, line_type, id=id or dialled)


ROUTABLE = [
    # emergency: every code, never billed
    *[case(code, "emergency", "included") for code in sorted(EMERGENCY_CODES)],
    *[case(code, "emergency", "included", policy=ALLOW, id=f"{code}-allow") for code in sorted(EMERGENCY_CODES)],
    # internal extensions
    case("2000", "internal", "included"),
    case("2999", "internal", "included"),
    # EU harmonised social numbers
    case("116000", "free", "included"),
    case("116006", "free", "included"),
    case("116111", "free", "included"),
    case("116117", "free", "included"),
    # French national ranges
    case("0142685300", "domestic", "included", "+33142685300", "FIXED_LINE"),
    case("0212345678", "domestic", "included", "+33212345678", "FIXED_LINE"),
    case("0312345678", "domestic", "included", "+33312345678", "FIXED_LINE"),
    case("0412345678", "domestic", "included", "+33412345678", "FIXED_LINE"),
    case("0512345678", "domestic", "included", "+33512345678", "FIXED_LINE"),
    case("0612345678", "domestic", "included", "+33612345678", "MOBILE"),
    case("0740123456", "domestic", "included", "+33740123456", "MOBILE"),
    case("0750000000", "domestic", "included", "+33750000000", "MOBILE"),
    case("0912345678", "domestic", "included", "+33912345678", "VOIP"),
    case("0800123456", "free", "included", "+33800123456", "TOLL_FREE"),
    case("0805123456", "free", "included", "+33805123456", "TOLL_FREE"),
    case("0810123456", "special", "blocked", "+33810123456", "SHARED_COST"),
    case("0820123456", "special", "blocked", "+33820123456", "SHARED_COST"),
    case("0836123456", "special", "blocked", "+33836123456", "PREMIUM_RATE"),
    case("0899123456", "special", "blocked", "+33899123456", "PREMIUM_RATE"),
    case("0810123456", "special", "prepaid", "+33810123456", "SHARED_COST", ALLOW, "0810-allow"),
    case("0899123456", "special", "prepaid", "+33899123456", "PREMIUM_RATE", ALLOW, "0899-allow"),
    case("0142685300", "domestic", "included", "+33142685300", "FIXED_LINE", ALLOW, "01-allow"),
    # short codes
    case("118712", "directory", "prepaid"),
    case("118218", "directory", "prepaid", policy=ALLOW, id="118218-allow"),
    case("3631", "special", "blocked"),
    case("3949", "special", "blocked"),
    case("3631", "special", "prepaid", policy=ALLOW, id="3631-allow"),
    case("1010", "special", "blocked"),
    case("1099", "special", "blocked", policy=ALLOW, id="1099-allow"),
    # France in international form: same as national
    case("+33142685300", "domestic", "included", "+33142685300", "FIXED_LINE"),
    case("0033142685300", "domestic", "included", "+33142685300", "FIXED_LINE"),
    case("+33800123456", "free", "included", "+33800123456", "TOLL_FREE"),
    case("+33899123456", "special", "blocked", "+33899123456", "PREMIUM_RATE"),
    case("0033899123456", "special", "prepaid", "+33899123456", "PREMIUM_RATE", ALLOW, "0033899-allow"),
    # the 12 included countries: landline included, mobile prepaid
    case("+4312345678", "international", "included", "+4312345678", "FIXED_LINE"),
    case("+436641234567", "international", "prepaid", "+436641234567", "MOBILE"),
    case("+3225123456", "international", "included", "+3225123456", "FIXED_LINE"),
    case("+32470123456", "international", "prepaid", "+32470123456", "MOBILE"),
    case("+4930123456", "international", "included", "+4930123456", "FIXED_LINE"),
    case("+4915112345678", "international", "prepaid", "+4915112345678", "MOBILE"),
    case("+390612345678", "international", "included", "+390612345678", "FIXED_LINE"),
    case("+393123456789", "international", "prepaid", "+393123456789", "MOBILE"),
    case("+35312345678", "international", "included", "+35312345678", "FIXED_LINE"),
    case("+353851234567", "international", "prepaid", "+353851234567", "MOBILE"),
    case("+35226123456", "international", "included", "+35226123456", "FIXED_LINE"),
    case("+352621123456", "international", "prepaid", "+352621123456", "MOBILE"),
    case("+31201234567", "international", "included", "+31201234567", "FIXED_LINE"),
    case("+31612345678", "international", "prepaid", "+31612345678", "MOBILE"),
    case("+351213456789", "international", "included", "+351213456789", "FIXED_LINE"),
    case("+351912345678", "international", "prepaid", "+351912345678", "MOBILE"),
    case("+34912345678", "international", "included", "+34912345678", "FIXED_LINE"),
    case("+34612345678", "international", "prepaid", "+34612345678", "MOBILE"),
    case("+41446681800", "international", "included", "+41446681800", "FIXED_LINE"),
    case("+41791234567", "international", "prepaid", "+41791234567", "MOBILE"),
    case("+442079460000", "international", "included", "+442079460000", "FIXED_LINE"),
    case("+447912345678", "international", "prepaid", "+447912345678", "MOBILE"),
    # Denmark: libphonenumber says FIXED_LINE_OR_MOBILE, the national series table (kemi/data/dk_series.csv) decides
    case("+4533123456", "international", "included", "+4533123456", "FIXED_LINE"),  # Copenhagen landline
    case("004533123456", "international", "included", "+4533123456", "FIXED_LINE"),
    case("0045 33 12 34 56", "international", "included", "+4533123456", "FIXED_LINE"),
    case("+4532123456", "international", "included", "+4532123456", "FIXED_LINE"),
    case("+4543223456", "international", "included", "+4543223456", "FIXED_LINE"),  # 43 landline...
    case("+4543123456", "international", "prepaid", "+4543123456", "MOBILE"),  # ...but 43-1x mobile
    case("+4544123456", "international", "prepaid", "+4544123456", "MOBILE"),  # 441 mobile
    case("+4549102345", "international", "included", "+4549102345", "FIXED_LINE"),  # 49-10 landline
    case("+4549112345", "international", "prepaid", "+4549112345", "MOBILE"),  # 49-11 mobile
    case("+4555312345", "international", "included", "+4555312345", "FIXED_LINE"),
    case("+4555112345", "international", "prepaid", "+4555112345", "MOBILE"),  # 551 mobile
    case("+4586123456", "international", "included", "+4586123456", "FIXED_LINE"),  # Aarhus
    case("+4599123456", "international", "included", "+4599123456", "FIXED_LINE"),
    case("+4520123456", "international", "prepaid", "+4520123456", "MOBILE"),
    case("004529123456", "international", "prepaid", "+4529123456", "MOBILE"),
    case("+4530123456", "international", "prepaid", "+4530123456", "MOBILE"),
    case("+4540123456", "international", "prepaid", "+4540123456", "MOBILE"),
    case("+4551123456", "international", "prepaid", "+4551123456", "MOBILE"),
    case("+4561123456", "international", "prepaid", "+4561123456", "MOBILE"),
    case("+4571123456", "international", "prepaid", "+4571123456", "MOBILE"),
    case("+4581123456", "international", "prepaid", "+4581123456", "MOBILE"),
    case("+4593123456", "international", "prepaid", "+4593123456", "MOBILE"),
    case("+4582912345", "international", "prepaid", "+4582912345", "MOBILE"),  # 829 mobile in landline 82
    case("+4567123456", "international", "prepaid", "+4567123456", "FIXED_LINE_OR_MOBILE"),  # spare: not a landline
    case("+4570101155", "international", "blocked", "+4570101155", "SHARED_COST"),  # split charge
    case("+4570101155", "international", "prepaid", "+4570101155", "SHARED_COST", ALLOW, "+4570-allow"),
    case("+4580123456", "international", "prepaid", "+4580123456", "TOLL_FREE"),  # freephone, not free from France
    # the 00 form of included countries
    case("00442079460000", "international", "included", "+442079460000", "FIXED_LINE"),
    case("00 49 30 123456", "international", "included", "+4930123456", "FIXED_LINE"),
    # '+44 (0)20 ...' written form: phonenumbers drops the trunk 0
    case("+44 (0)20 7946 0000", "international", "included", "+442079460000", "FIXED_LINE"),
    # elsewhere
    case("+12125551234", "international", "prepaid", "+12125551234", "FIXED_LINE_OR_MOBILE"),
    case("0012125551234", "international", "prepaid", "+12125551234", "FIXED_LINE_OR_MOBILE"),
    case("+18005551234", "international", "prepaid", "+18005551234", "TOLL_FREE"),  # not free from France
    case("+44800123456", "international", "prepaid", "+44800123456", "TOLL_FREE"),
    case("+447011234567", "international", "prepaid", "+447011234567", "PERSONAL_NUMBER"),
    case("+447640123456", "international", "prepaid", "+447640123456", "PAGER"),
    case("+447624123456", "international", "prepaid", "+447624123456", "MOBILE"),  # Isle of Man
    case("+443001234567", "international", "included", "+443001234567", "UAN"),  # UK 03: geographic rate
    case("+445512345678", "international", "prepaid", "+445512345678", "UAN"),  # UK 055: not geographic
    # premium / shared cost abroad and satellite: blocked unless allowed, then prepaid
    case("+449012345678", "international", "blocked", "+449012345678", "PREMIUM_RATE"),
    case("+448712345678", "international", "blocked", "+448712345678", "PREMIUM_RATE"),
    case("+449012345678", "international", "prepaid", "+449012345678", "PREMIUM_RATE", ALLOW, "+4490-allow"),
    case("+8816123456789", "international", "blocked", "+8816123456789", "MOBILE"),
    case("008816123456789", "international", "blocked", "+8816123456789", "MOBILE"),
    case("+8816123456789", "international", "prepaid", "+8816123456789", "MOBILE", ALLOW, "+8816-allow"),
    case("+870773111632", "international", "blocked", "+870773111632", "MOBILE"),
    case("+883510012345", "international", "blocked", "+883510012345", "VOIP"),
    case("+80012345678", "international", "blocked", "+80012345678", "TOLL_FREE"),  # region 001
    case("+4590123456", "international", "blocked", "+4590123456", "PREMIUM_RATE"),
    # French overseas departments: French numbers, national or international form, French rules
    case("0262123456", "domestic", "included", "+262262123456", "FIXED_LINE"),  # Reunion
    case("02 62 12 34 56", "domestic", "included", "+262262123456", "FIXED_LINE"),
    case("+262262123456", "domestic", "included", "+262262123456", "FIXED_LINE"),
    case("00262262123456", "domestic", "included", "+262262123456", "FIXED_LINE"),
    case("+262 (0)262 12 34 56", "domestic", "included", "+262262123456", "FIXED_LINE"),
    case("0692123456", "domestic", "included", "+262692123456", "MOBILE"),
    case("+262692123456", "domestic", "included", "+262692123456", "MOBILE"),
    case("0269601234", "domestic", "included", "+262269601234", "FIXED_LINE"),  # Mayotte
    case("0639012345", "domestic", "included", "+262639012345", "MOBILE"),
    case("0590201234", "domestic", "included", "+590590201234", "FIXED_LINE"),  # Guadeloupe
    case("0690123456", "domestic", "included", "+590690123456", "MOBILE"),
    case("00590690123456", "domestic", "included", "+590690123456", "MOBILE"),
    case("0590271234", "domestic", "included", "+590590271234", "FIXED_LINE"),  # Saint-Barthelemy (+590)
    case("0596301234", "domestic", "included", "+596596301234", "FIXED_LINE"),  # Martinique
    case("0696201234", "domestic", "included", "+596696201234", "MOBILE"),
    case("+596696201234", "domestic", "included", "+596696201234", "MOBILE"),
    case("0594101234", "domestic", "included", "+594594101234", "FIXED_LINE"),  # French Guiana
    case("0694201234", "domestic", "included", "+594694201234", "MOBILE"),
    case("+594694201234", "domestic", "included", "+594694201234", "MOBILE"),
    case("+596976612345", "domestic", "included", "+596976612345", "VOIP"),  # 09 VoIP, as in France
    case("+262801234567", "free", "included", "+262801234567", "TOLL_FREE"),  # 080X free, as in France
    case("+262891123456", "special", "blocked", "+262891123456", "PREMIUM_RATE"),  # 089X
    case("+262810123456", "special", "blocked", "+262810123456", "SHARED_COST"),  # 081X
    case("00590810123456", "special", "blocked", "+590810123456", "PREMIUM_RATE"),
    case("+262891123456", "special", "prepaid", "+262891123456", "PREMIUM_RATE", ALLOW, "+26289-allow"),
    # other French territories with their own country code and plan stay international
    case("+508411234", "international", "prepaid", "+508411234", "FIXED_LINE"),  # Saint-Pierre-et-Miquelon
    case("+68940412345", "international", "prepaid", "+68940412345", "FIXED_LINE"),  # French Polynesia
]


@pytest.mark.parametrize("dialled, policy, category, billing, e164, line_type", ROUTABLE)
def test_routable(dialled, policy, category, billing, e164, line_type):
    d = classify(dialled, policy)
    assert_well_formed(d)
    assert (d.category, d.billing, d.e164, d.line_type) == (category, billing, e164, line_type)
    assert d.refuse_code is None and not d.overridden
    assert d.dialled == normalise(dialled)
    if e164 is not None:
        assert d.country == phonenumbers.region_code_for_number(phonenumbers.parse(e164))


def test_short_codes_have_no_e164():
    for dialled in ("112", "15", "2001", "116000", "118712", "3631", "1010"):
        d = classify(dialled)
        assert (d.e164, d.country, d.line_type) == (None, None, None)
        assert d.dialled == dialled


def test_country_codes():
    assert classify("+4930123456").country == "DE"
    assert classify("0612345678").country == "FR"
    assert classify("+8816123456789").country == "001"  # phonenumbers' non-geographic region


def test_reasons():
    assert classify("0899123456").reason == "Premium-rate or shared-cost number blocked"
    assert classify("1010").reason == "Carrier selection prefix not allowed"
    assert classify("0712345678").reason == "Unallocated number"
    assert classify("061234").reason == "Address incomplete"


# ---------------------------------------------------------------------------
# Normalisation: every form of the same mobile gives the same decision
# ---------------------------------------------------------------------------
MOBILE_FORMS = [
    "0612345678", "06 12 34 56 78", "06.12.34.56.78", "06-12-34-56-78", "(06) 12 34 56 78",
    "06/12/34/56/78", "06%2012%2034%2056%2078", "%2B33612345678", "%2b33612345678", "+33612345678",
    "+33 6 12 34 56 78", "+33.6.12.34.56.78", "+33 (0)6 12 34 56 78", "0033612345678",
    "00 33 6 12 34 56 78", "0033 (0)6 12 34 56 78",
]


@pytest.mark.parametrize("dialled", MOBILE_FORMS)
def test_normalisation_forms(dialled):
    d = classify(dialled)
    assert (d.category, d.billing, d.e164, d.country, d.line_type) == (
        "domestic", "included", "+33612345678", "FR", "MOBILE")


@pytest.mark.parametrize("dialled, expected", [
    ("06 12 34 56 78", "0612345678"),
    ("%2B33612345678", "+33612345678"),
    ("06%2012%2034%2056%2078", "0612345678"),
    ("(+33) 6-12.34/56 78", "+33612345678"),
    ("1 1 2", "112"),
    ("", None),
    ("+", None),
    ("   ", None),
    ("06 12 34 56 7a", None),
    ("*31#0612345678", None),
    ("0612345678;user=phone", None),
    ("0612345678@evil", None),
    ("06\r\n12345678", None),
    ("06\t12345678", None),
    ("+33+612345678", None),
    ("33+", None),
    ("%252B33612345678", None),  # decoded once only
    ("%", None),
    ("%zz", None),
    ("\u0660\u0666", None),  # Arabic-Indic digits are not ASCII digits
    ("\uff10\uff16", None),  # full-width digits
    ("1" * 20, "1" * 20),
    ("1" * 21, None),
    ("+" + "1" * 20, "+" + "1" * 20),
])
def test_normalise(dialled, expected):
    assert normalise(dialled) == expected


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dialled, code", [
    # incomplete: 484
    ("0", 484), ("06", 484), ("061234", 484), ("061234567", 484), ("0033", 484), ("00", 484),
    ("+", 484), ("+33", 484), ("+336", 484), ("+3361234", 484), ("+4", 484), ("+35", 484),
    ("1", 484), ("11", 484), ("116", 484), ("11600", 484), ("118", 484), ("19", 484),
    ("2", 484), ("200", 484), ("3", 484), ("363", 484), ("10", 484), ("101", 484),
    ("+441234", 484), ("+4930", 484), ("+881", 484), ("+33112", 484),
    # not routable: 404
    ("", 404), (" ", 404), ("abc", 404), ("*", 404), ("#", 404), ("*31#", 404),
    ("0612345678;foo", 404), ("0612345678@evil", 404), ("500&SIP/x", 404),
    ("06123456789", 404), ("1" * 21, 404), ("0712345678", 404), ("+33712345678", 404),
    ("0033712345678", 404), ("0700000000", 404), ("+447700900123", 404),
    ("+999123456", 404), ("+0123", 404), ("000", 404), ("+3300612345678", 404),
    ("16", 404), ("500", 404), ("20000", 404), ("36311", 404), ("1161234", 404),
    ("612345678", 404), ("+44207946000000", 404), ("+49300000000000000", 404), ("+4930123456789012", 404), ("1\u0661\u0662", 404),
    ("sip:0612345678@example.com", 404), ("0612345678\x00", 404), ("06 12\n34 56 78", 404),
])
def test_refused(dialled, code):
    d = classify(dialled)
    assert_well_formed(d)
    assert d.category == "invalid"
    assert d.refuse_code == code, d


def test_garbage_has_empty_dialled():
    assert classify("0612345678@evil").dialled == ""
    assert classify("0712345678").dialled == "0712345678"


def test_non_string_input_does_not_raise():
    for junk in (None, 112, b"112", ["112"], 0.5):
        d = classify(junk)  # type: ignore[arg-type]
        assert d.category == "invalid" and d.refuse_code == 404
        assert is_emergency(junk) is False  # type: ignore[arg-type]


def test_bad_policy_is_treated_as_default():
    assert classify("0899123456", None).billing == "blocked"  # type: ignore[arg-type]
    assert classify("0899123456", Policy(allow_special="yes")).billing == "blocked"  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# is_emergency
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dialled", sorted(EMERGENCY_CODES) + ["1 1 2", "1-5", "%31%31%32"])
def test_is_emergency_true(dialled):
    assert is_emergency(dialled)


@pytest.mark.parametrize("dialled", ["+33112", "0033112", "+112", "00112", "1120", "0112", "16", "", "112;x", "112@a"])
def test_is_emergency_false(dialled):
    assert not is_emergency(dialled)


# ---------------------------------------------------------------------------
# Ops overrides
# ---------------------------------------------------------------------------
def test_override_longest_prefix_wins():
    overrides = {"+44": "blocked", "+4420": "prepaid", "+44207": "included", "+447": "blocked"}
    d = classify("+442079460000", overrides=overrides)
    assert (d.billing, d.overridden) == ("included", True)
    assert "+44207" in d.reason
    assert_well_formed(d)
    d = classify("+442812345678", overrides=overrides)  # only '+44' matches
    assert (d.billing, d.overridden) == ("blocked", True)


def test_overrides_win_over_the_danish_series_table():
    d = classify("+4533123456", overrides={"+4533": "prepaid"})  # a landline series, made prepaid by ops
    assert (d.category, d.billing, d.line_type, d.overridden) == ("international", "prepaid", "FIXED_LINE", True)
    d = classify("+4520123456", overrides={"+4520": "included"})  # a mobile series, included by ops
    assert (d.billing, d.line_type, d.overridden) == ("included", "MOBILE", True)
    d = classify("+4543123456", overrides={"+4543": "blocked"})
    assert (d.billing, d.overridden) == ("blocked", True)
    d = classify("+4520123456", overrides={"+453": "included"})  # another series' override: untouched
    assert (d.billing, d.overridden) == ("prepaid", False)


def test_overrides_win_over_the_overseas_rule():
    d = classify("0262123456", overrides={"+262": "prepaid"})
    assert (d.category, d.billing, d.e164, d.overridden) == ("domestic", "prepaid", "+262262123456", True)
    d = classify("+590690123456", overrides={"+59069": "blocked"})
    assert (d.billing, d.reason) == ("blocked", "Ops override +59069: blocked")


def test_override_applies_to_national_form_through_e164():
    d = classify("0899123456", overrides={"+33899": "prepaid"})
    assert (d.category, d.billing, d.overridden) == ("special", "prepaid", True)


def test_override_never_affects_emergency_or_internal():
    everything = {"+": "blocked", "+3": "blocked", "+33": "blocked", "112": "blocked", "15": "blocked",
                  "2001": "blocked", "+33112": "blocked"}
    for code in sorted(EMERGENCY_CODES):
        d = classify(code, overrides=everything)
        assert (d.category, d.billing, d.overridden) == ("emergency", "included", False)
    d = classify("2001", overrides=everything)
    assert (d.category, d.billing, d.overridden) == ("internal", "included", False)


def test_override_never_makes_invalid_routable():
    d = classify("0712345678", overrides={"+33": "included", "+337": "included"})
    assert (d.category, d.refuse_code, d.overridden) == ("invalid", 404, False)


def test_invalid_override_values_are_ignored():
    d = classify("+4520123456", overrides={"+4520": "free", "+452": None, "+45": "included"})
    assert (d.billing, d.overridden) == ("included", True)  # falls back to the valid shorter prefix
    d = classify("+4520123456", overrides={"+4520": "INCLUDED", 4520: "included", None: "x",
                                           "4520": "included", "+45 20": "included"})
    assert (d.billing, d.overridden) == ("prepaid", False)


def test_invalid_overrides_container_is_ignored():
    for junk in (["+45", "included"], "+45", 42, {("+45",): "included"}):
        d = classify("+4520123456", overrides=junk)  # type: ignore[arg-type]
        assert (d.billing, d.overridden) == ("prepaid", False)


# ---------------------------------------------------------------------------
# Documented decisions
# ---------------------------------------------------------------------------
def test_documented_decisions():
    assert numbering.FIXED_LINE_OR_MOBILE_BILLING == "prepaid"
    assert numbering.INCLUDED_COUNTRIES == {"AT", "BE", "DK", "DE", "IT", "IE", "LU", "NL", "PT", "ES", "CH", "GB"}
    assert numbering.SATELLITE_CODES == {870, 881, 882, 883}
    assert numbering.SERIES_FILES == {"DK": "dk_series.csv"}
    assert set(numbering.OVERSEAS_REGIONS) == {"RE", "GP", "MQ", "GF"}
    # NANP stays FIXED_LINE_OR_MOBILE: prepaid
    assert classify("+12125551234").billing == "prepaid"


def test_every_metadata_example_number_is_routable_and_follows_the_rules():
    """Sweep phonenumbers' own example numbers: none refused, billing follows the rules."""
    seen = 0
    for region in phonenumbers.SUPPORTED_REGIONS:
        for number_type in numbering.FOREIGN_PREPAID_REASONS.keys() | numbering.SURCHARGED_TYPES:
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is None or not phonenumbers.is_valid_number(example):
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            d = classify(e164)
            assert_well_formed(d)
            assert d.category != "invalid", (region, e164, d)
            seen += 1
            if example.country_code == 33 or example.country_code in OVERSEAS_CODES:
                assert d.category in ("domestic", "free", "special"), (e164, d)  # French rules
                continue
            assert d.category == "international"
            if d.country in numbering.SERIES:
                continue  # the series table decides: see the Danish tests below
            real_type = phonenumbers.number_type(example)
            if real_type in numbering.SURCHARGED_TYPES:
                assert d.billing == "blocked", (e164, d)
            elif real_type == phonenumbers.PhoneNumberType.FIXED_LINE and d.country in numbering.INCLUDED_COUNTRIES:
                assert d.billing == "included", (e164, d)
            elif d.billing == "included":
                assert d.e164.startswith("+443") and d.line_type == "UAN", (e164, d)
            else:
                assert d.billing == "prepaid", (e164, d)
    assert seen > 500
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            d = classify(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
            assert (d.category, d.billing) == ("international", "blocked"), d


def test_module_is_pure():
    """No KSR, no Redis, no I/O: only phonenumbers, a few stdlib modules and kemi.model's plain constants."""
    tree = ast.parse(pathlib.Path(numbering.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert {name.split(".")[0] for name in imported} <= {
        "__future__", "collections", "dataclasses", "pathlib", "re", "urllib", "phonenumbers", "kemi"}
    assert {name for name in imported if name.split(".")[0] == "kemi"} <= {"kemi.model"}


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------
digit_strings = st.builds(
    lambda prefix, digits: prefix + digits,
    st.sampled_from(["", "+", "00", "0", "+33", "0033", "+44", "+45", "+1", "+88"]),
    st.text(alphabet="0123456789", max_size=22),
)
phone_like = st.text(alphabet="0123456789 .-()/+%2Bab*#;@\r\n", max_size=30)
overrides_strategy = st.dictionaries(
    st.one_of(st.text(max_size=8), st.from_regex(r"\+[0-9]{0,6}", fullmatch=True)),
    st.one_of(st.sampled_from(BILLING_CLASSES), st.text(max_size=8), st.none()),
    max_size=6,
)


def check_properties(dialled, policy=DENY, overrides=None):
    d = classify(dialled, policy, overrides)
    assert_well_formed(d)
    assert is_emergency(dialled) == (d.category == "emergency")
    n = normalise(dialled)
    if n is not None:
        assert re.fullmatch(r"\+?[0-9]{1,20}", n)
        assert normalise(n) == n  # idempotent
        assert d.dialled == n  # and the catch-all in classify() was not reached
        undecorated = classify(n, policy, overrides)
        assert undecorated == d  # separators and URL-encoding change nothing
    return d


@settings(max_examples=600, deadline=None)
@given(st.text())
def test_property_arbitrary_text(dialled):
    check_properties(dialled)


@settings(max_examples=1500, deadline=None)
@given(digit_strings, st.booleans())
@example("1000", True)
@example("0899123456", True)
@example("+449012345678", False)
def test_property_digit_strings(dialled, allow):
    d = check_properties(dialled, Policy(allow_special=allow))
    if len(dialled.lstrip("+")) > 20:
        assert (d.dialled, d.refuse_code) == ("", 404)  # too long to be a number
    elif dialled:
        assert d.dialled == dialled  # already normalised
    if d.reason == numbering.R_CARRIER_SELECTION:
        assert (d.category, d.billing) == ("special", "blocked")  # even when allowed
    elif d.category == "special" or d.line_type in ("PREMIUM_RATE", "SHARED_COST"):
        assert d.billing == ("prepaid" if allow else "blocked")


@settings(max_examples=600, deadline=None)
@given(phone_like)
def test_property_phone_like_text(dialled):
    check_properties(dialled)


@settings(max_examples=600, deadline=None)
@given(digit_strings, overrides_strategy)
def test_property_overrides_never_raise(dialled, overrides):
    d = check_properties(dialled, DENY, overrides)
    base = classify(dialled)
    assert (d.category, d.e164, d.refuse_code) == (base.category, base.e164, base.refuse_code)
    if d.overridden:
        assert d.category not in ("emergency", "internal", "invalid")
        assert any(d.e164.startswith(p) and v == d.billing for p, v in overrides.items()
                   if isinstance(p, str))
    else:
        assert d == base


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_property_normalise_idempotent(text):
    n = normalise(text)
    if n is not None:
        assert normalise(n) == n


# ---------------------------------------------------------------------------
# Danish series table (kemi/data/dk_series.csv) against its sources and the metadata
# ---------------------------------------------------------------------------
DK_TABLE = numbering.SERIES["DK"]
DK_FILE = pathlib.Path(numbering.__file__).with_name("data") / "dk_series.csv"
# Copied from the sources the file's header names, so that a wrong or lost row shows here.
SDFI_MOBILE = "2, 30, 31, 40, 41, 42, 50, 51, 52, 53, 60, 61, 71, 81, 91, 92, 93"
SDFI_MOBILE_IN_LANDLINE = (
    "342, 344-349, 356-357, 359, 362, 365-366, 389, 398, 431, 441, 462, 466, 468, 472, 474, 476, 478, 485-486, "
    "488-489, 493-496, 498-499, 542-543, 545, 551-552, 556, 571-574, 577, 579, 584, 586-587, 589, 597-598, 627, "
    "629, 641, 649, 658, 662-665, 667, 692-694, 697, 771-772, 782-783, 785-786, 788-789, 826-827, 829")
WIKIPEDIA_LANDLINE = "32-36, 38-39, 43-49, 54-59, 62-66, 69, 72-79, 82, 86-89, 96-99"
WIKIPEDIA_OTHER = {"37": "m2m", "70": "split-charge", "80": "freephone", "90": "premium", "4911": "mobile",
                   **{s: "spare" for s in ("67", "68", "83", "84", "85", "94", "95")}}


def expand(ranges: str) -> list[str]:
    """'342, 344-346' -> ['342', '344', '345', '346']."""
    out = []
    for part in ranges.split(", "):
        low, _, high = part.partition("-")
        out += [str(n) for n in range(int(low), int(high or low) + 1)]
    return out


def test_dk_table_is_the_published_plan():
    mobile = expand(SDFI_MOBILE) + expand(SDFI_MOBILE_IN_LANDLINE) + ["4911"]
    expected = {**{s: "landline" for s in expand(WIKIPEDIA_LANDLINE)}, **{s: "mobile" for s in mobile},
                **WIKIPEDIA_OTHER}
    assert DK_TABLE == expected
    # every 8-digit series 2-9 is designated
    assert all(numbering.series_designation(DK_TABLE, f"{n}000000") for n in range(20, 100))


def test_dk_table_file_names_its_source_and_date():
    header = "\n".join(line for line in DK_FILE.read_text().splitlines() if line.startswith("#"))
    assert "https://sdfi.dk/digital-infrastruktur/telefoni/numre/den-samlede-danske-nummerplan" in header
    assert "Telephone numbers in Denmark" in header and "Energistyrelsen" in header
    assert re.search(r"consulted \d{4}-\d{2}-\d{2}, data version \d{4}-\d{2}-\d{2}", header)


def test_dk_table_agrees_with_the_metadata():
    """Every series the metadata knows as mobile only is mobile in the table, and no landline series of
    the table is a mobile-only range of the metadata (a phonenumbers upgrade that changes this shows here)."""
    mobile_only = PhoneNumberType.MOBILE
    for head in range(200, 1000):
        types = {phonenumbers.number_type(phonenumbers.PhoneNumber(country_code=45, national_number=int(f"{head}{tail}")))
                 for tail in ("00000", "12345", "99999")}
        designation = numbering.series_designation(DK_TABLE, f"{head}12345")
        if types == {mobile_only}:
            assert designation in ("mobile", "m2m"), head
        if designation == "landline":
            assert mobile_only not in types, head


@pytest.mark.parametrize("text, problem", [
    ("", "no series"),
    ("# only comments\n", "no series"),
    ("SERIES,DESIGNATION\n", "no series"),
    ("32,landline\n", "line 1: expected the header"),
    ("SERIES,DESIGNATION\n32,fixed\n", "line 2: designation 'fixed'"),
    ("SERIES,DESIGNATION\n32\n", "line 2: expected SERIES,DESIGNATION"),
    ("SERIES,DESIGNATION\n32,landline,x\n", "line 2: expected SERIES,DESIGNATION"),
    ("SERIES,DESIGNATION\n+4532,landline\n", "line 2: series '+4532'"),
    ("SERIES,DESIGNATION\n32345,landline\n", "line 2: series '32345'"),
    ("SERIES,DESIGNATION\n,landline\n", "line 2: series ''"),
    ("SERIES,DESIGNATION\n32,landline\n# x\n32,mobile\n", "line 4: series 32 given twice"),
])
def test_a_broken_series_table_is_refused_naming_the_line(text, problem):
    with pytest.raises(numbering.SeriesTableError) as raised:
        numbering.parse_series(text, "t.csv")
    assert problem in str(raised.value) and str(raised.value).startswith("t.csv")


def test_series_table_tolerates_comments_blank_lines_and_spaces():
    assert numbering.parse_series("# a\n\nSERIES,DESIGNATION\n 32 , landline \n\n# b\n321,mobile\n", "t") == {
        "32": "landline", "321": "mobile"}


@pytest.mark.parametrize("region", sorted(numbering.INCLUDED_COUNTRIES))
def test_only_denmark_needs_a_series_table(region):
    """The README's table: in the other eleven countries every number of the metadata's landline and mobile
    patterns is FIXED_LINE or MOBILE, so the metadata tells them apart; in Denmark it cannot."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    code = meta.country_code
    seen = set()

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from([meta.fixed_line.national_number_pattern, meta.mobile.national_number_pattern])
           .flatmap(lambda pattern: st.from_regex(re.compile(pattern, re.ASCII), fullmatch=True)))
    def sample(nsn):
        number = phonenumbers.PhoneNumber(country_code=code, national_number=int(nsn))
        if nsn.startswith("0"):  # Italian landlines keep their leading zero
            number.italian_leading_zero = True
            number.number_of_leading_zeros = len(nsn) - len(nsn.lstrip("0"))
        seen.add(phonenumbers.number_type(number))

    sample()
    ambiguous = PhoneNumberType.FIXED_LINE_OR_MOBILE in seen
    assert ambiguous == (region in numbering.SERIES), (region, seen)


dk_numbers = st.integers(20_000_000, 99_999_999).map(str)


@settings(max_examples=1500, deadline=None)
@given(dk_numbers, st.booleans())
@example("33123456", False)
@example("43123456", False)
@example("49112345", False)
@example("70101155", True)
def test_property_danish_numbers_follow_the_series_table(national, allow):
    policy = Policy(allow_special=allow)
    d = check_properties("+45" + national, policy)
    same = dataclasses.replace(d, dialled="")
    assert dataclasses.replace(classify("0045" + national, policy), dialled="") == same
    assert dataclasses.replace(classify("0045 " + national, policy), dialled="") == same
    metadata_type = phonenumbers.number_type(phonenumbers.parse("+45" + national))
    if metadata_type == PhoneNumberType.UNKNOWN:
        assert d.category == "invalid"
        return
    designation = numbering.series_designation(DK_TABLE, national)
    landline = designation == "landline" and metadata_type != PhoneNumberType.MOBILE
    assert (d.billing == "included") == landline, (national, designation, d)
    if landline:
        assert (d.line_type, d.reason) == ("FIXED_LINE", numbering.R_SERIES_LANDLINE)
    if designation in ("mobile", "m2m"):
        assert (d.billing, d.line_type) == ("prepaid", "MOBILE")
    if designation in ("split-charge", "premium"):
        assert d.billing == ("prepaid" if allow else "blocked")


@settings(max_examples=400, deadline=None)
@given(dk_numbers, st.integers(3, 11), st.sampled_from(BILLING_CLASSES))
def test_property_ops_overrides_win_over_the_series_table(national, length, billing):
    e164 = "+45" + national
    d = classify(e164, overrides={e164[:length]: billing})
    if d.category != "invalid":
        assert (d.billing, d.overridden) == (billing, True)


# ---------------------------------------------------------------------------
# French overseas departments: every form, French rules
# ---------------------------------------------------------------------------
def overseas_numbers(kinds):
    """(region, kind, 9-digit NSN) drawn from the overseas regions' own metadata patterns."""
    choices = []
    for region in ("RE", "YT", "GP", "BL", "MF", "MQ", "GF"):
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        for kind in kinds:
            desc = getattr(meta, kind)
            if desc is not None and desc.national_number_pattern:
                choices.append((region, kind, desc.national_number_pattern))
    return st.sampled_from(choices).flatmap(lambda c: st.tuples(
        st.just(c[0]), st.just(c[1]), st.from_regex(re.compile(c[2], re.ASCII), fullmatch=True)))


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(overseas_numbers(("fixed_line", "mobile", "voip")), st.booleans())
def test_property_overseas_lines_are_included_in_every_form(drawn, allow):
    region, kind, nsn = drawn
    code = phonenumbers.country_code_for_region(region)
    policy = Policy(allow_special=allow)
    international = [check_properties(form, policy) for form in (f"+{code}{nsn}", f"00{code}{nsn}",
                                                                 f"+{code} (0){nsn}")]
    national = check_properties("0" + nsn, policy)
    for d in international + [national]:
        if nsn[0] == "8":  # 0806-0809 landlines: 080X, free as in France
            assert (d.category, d.billing, d.reason) == ("free", "included", numbering.R_TOLL_FREE), d
        else:
            assert (d.category, d.billing, d.reason) == ("domestic", "included", numbering.R_OVERSEAS), d
    assert {d.e164 for d in international} == {f"+{code}{nsn}"}
    if nsn[0] != "8":
        # a block two regions' metadata both claim goes to the first of OVERSEAS_REGIONS, never to France
        assert national.e164.endswith(nsn) and national.e164[:4] in ("+262", "+590", "+594", "+596"), national


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(overseas_numbers(("toll_free", "premium_rate", "shared_cost")), st.booleans())
def test_property_overseas_special_ranges_follow_the_french_rules(drawn, allow):
    region, kind, nsn = drawn
    code = phonenumbers.country_code_for_region(region)
    d = check_properties(f"+{code}{nsn}", Policy(allow_special=allow))
    mainland = classify(f"0{nsn}", Policy(allow_special=allow))  # the same digits dialled in France
    assert (d.category, d.billing) == (mainland.category, mainland.billing), (d, mainland)
    if nsn[:2] == "80":
        assert (d.category, d.billing) == ("free", "included")
    else:
        assert (d.category, d.billing) == ("special", "prepaid" if allow else "blocked")
