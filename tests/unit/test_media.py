"""The media server's pure parts: amounts in words, the prompts file, the receptionist's menu, its settings."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from kemi.paths import ROOT
from media import numwords, prompts
from media.menu import Menu, Play, Redirect, Stop
from media.settings import SettingsError, load

# -- numwords ---------------------------------------------------------------------------------------
AMOUNTS = [
    (0, "zéro euro", "zero euros"),
    (1, "un centime", "one cent"),
    (34, "trente-quatre centimes", "thirty-four cents"),
    (100, "un euro", "one euro"),
    (101, "un euro un", "one euro and one cent"),
    (200, "deux euros", "two euros"),
    (1234, "douze euros trente-quatre", "twelve euros and thirty-four cents"),
    (2100, "vingt et un euros", "twenty-one euros"),
    (7100, "soixante et onze euros", "seventy-one euros"),
    (7700, "soixante-dix-sept euros", "seventy-seven euros"),
    (8000, "quatre-vingts euros", "eighty euros"),
    (8100, "quatre-vingt-un euros", "eighty-one euros"),
    (9100, "quatre-vingt-onze euros", "ninety-one euros"),
    (9999, "quatre-vingt-dix-neuf euros quatre-vingt-dix-neuf", "ninety-nine euros and ninety-nine cents"),
    (10000, "cent euros", "one hundred euros"),
    (20000, "deux cents euros", "two hundred euros"),
    (20100, "deux cent un euros", "two hundred one euros"),
    (100000, "mille euros", "one thousand euros"),
    (200000, "deux mille euros", "two thousand euros"),
    (8000000, "quatre-vingt mille euros", "eighty thousand euros"),
    (20000000, "deux cent mille euros", "two hundred thousand euros"),
    (100000000, "un million d'euros", "one million euros"),
    (200000000, "deux millions d'euros", "two million euros"),
    (150000000, "un million cinq cent mille euros", "one million five hundred thousand euros"),
    (20000000000, "deux cents millions d'euros", "two hundred million euros"),
    (8000000000, "quatre-vingts millions d'euros", "eighty million euros"),
    (100000000000, "un milliard d'euros", "one billion euros"),
    (100000000000000, "un billion d'euros", "one trillion euros"),
    (numwords.MAX_MINOR, "neuf billions neuf cent quatre-vingt-dix-neuf milliards neuf cent quatre-vingt-dix-neuf "
     "millions neuf cent quatre-vingt-dix-neuf mille neuf cent quatre-vingt-dix-neuf euros quatre-vingt-dix-neuf",
     "nine trillion nine hundred ninety-nine billion nine hundred ninety-nine million nine hundred ninety-nine "
     "thousand nine hundred ninety-nine euros and ninety-nine cents"),
]


@pytest.mark.parametrize("minor, fr, en", AMOUNTS)
def test_amounts_in_words(minor, fr, en):
    assert numwords.amount(minor, "EUR", "fr") == fr
    assert numwords.amount(minor, "EUR", "en") == en


def test_other_currencies_and_their_minor_units():
    assert numwords.amount(101, "GBP", "en") == "one pound and one penny"
    assert numwords.amount(250, "GBP", "en") == "two pounds and fifty pence"
    assert numwords.amount(1234, "CHF", "fr") == "douze francs trente-quatre"
    assert numwords.amount(5, "USD", "fr") == "cinq cents"


@pytest.mark.parametrize("args", [(-1, "EUR", "fr"), (numwords.MAX_MINOR + 1, "EUR", "en"), (5, "XYZ", "fr"),
                                  (5, "EUR", "de")])
def test_what_cannot_be_said_is_refused(args):
    with pytest.raises(ValueError):
        numwords.amount(*args)


# A reader of the words, written independently of the speller: words -> number.
_FR = {w: i for i, w in enumerate(["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf",
                                   "dix", "onze", "douze", "treize", "quatorze", "quinze", "seize"])}
_FR.update({"vingt": 20, "vingts": 20, "trente": 30, "quarante": 40, "cinquante": 50, "soixante": 60})
_EN = {w: i for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                   "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                                   "seventeen", "eighteen", "nineteen"])}
_EN.update({w: 10 * i for i, w in enumerate(["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty",
                                              "ninety"], 2)})
_SCALES = {"mille": 10 ** 3, "thousand": 10 ** 3, "million": 10 ** 6, "millions": 10 ** 6, "milliard": 10 ** 9,
           "milliards": 10 ** 9, "billion": None, "billions": 10 ** 12, "trillion": 10 ** 12}


def read_number(words: str, lang: str) -> int:
    table = _FR if lang == "fr" else _EN
    total = current = 0
    previous = None
    for token in re.split(r"[ -]", words):
        if token == "et":
            continue
        if token in ("cent", "cents", "hundred"):
            current = (current or 1) * 100
        elif token in _SCALES:
            scale = _SCALES[token] or (10 ** 12 if lang == "fr" else 10 ** 9)
            total += (current or 1) * scale
            current = 0
        elif token in ("vingt", "vingts") and previous == "quatre":
            current += 80 - 4
        else:
            current += table[token]
        previous = token
    return total + current


@hsettings(max_examples=400)
@given(st.integers(0, 10 ** 15 - 1), st.sampled_from(numwords.LANGUAGES))
def test_every_number_reads_back(n, lang):
    words = numwords.number(n, lang)
    assert read_number(words, lang) == n, words
    assert "  " not in words and words == words.strip()


@hsettings(max_examples=300)
@given(st.integers(0, numwords.MAX_MINOR), st.sampled_from(numwords.LANGUAGES),
       st.sampled_from(sorted(numwords.CURRENCIES)))
def test_every_amount_names_its_units_and_cents(minor, lang, currency):
    words = numwords.amount(minor, currency, lang)
    (major_one, major_many), (minor_one, minor_many) = numwords.CURRENCIES[currency][lang]
    units, cents = divmod(minor, 100)
    if units or not cents:
        assert re.search(rf"\b(d'|de )?({major_one}|{major_many})\b", words), words
    if cents and units and lang == "fr":
        assert words.endswith(numwords.number(cents, "fr"))  # "douze euros trente-quatre"
    elif cents:
        assert words.endswith(f"{numwords.number(cents, lang)} {minor_one if cents == 1 else minor_many}")


# -- prompts ----------------------------------------------------------------------------------------
def test_the_shipped_prompts_file_is_valid_and_complete():
    said = prompts.parse((ROOT / "media" / "prompts.txt").read_text(encoding="utf-8"))
    assert said.say("fr", "balance", amount="douze euros trente-quatre") == \
        "Le solde de votre compte prépayé est de douze euros trente-quatre."
    assert said.say("en", "balance", amount="twelve euros and thirty-four cents") == \
        "Your prepaid balance is twelve euros and thirty-four cents."


@pytest.mark.parametrize("edit, words", [
    (("balance = Your prepaid balance is {amount}.", "balance = Your balance is {amont}."),
     "prompts.txt:22: balance: unknown placeholder {amont} (allowed: {amount})"),
    (("menu = Please dial", "menux = Please dial"), "prompts.txt:24: unknown key 'menux'"),
    (("[en]", "[de]"), "prompts.txt:21: [de]: expected one of fr, en"),
    (("operator = Please hold", "operator Please hold"), "prompts.txt:26: expected `key = text`"),
    (("unknown = Extension {digits}", "unknown = Extension {digits"), "prompts.txt:25: unknown:"),
    (("greeting = Hello, you have reached {company}.\n", ""), "[en] lacks greeting"),
])
def test_a_broken_prompts_file_names_the_line(edit, words):
    text = (ROOT / "media" / "prompts.txt").read_text(encoding="utf-8")
    assert edit[0] in text
    with pytest.raises(prompts.PromptsError) as err:
        prompts.parse(text.replace(edit[0], edit[1]), "prompts.txt")
    assert words in str(err.value)


# -- the receptionist's menu ------------------------------------------------------------------------
def menu() -> Menu:
    return Menu(frozenset({"2001", "2002", "2003"}), "2003", silence_s=10, gap_s=3, tries=3)


def dial(m: Menu, digits: str, at: float = 0.0) -> list:
    out = []
    for d in digits:
        out += m.digit(d, at)
    return out


def test_the_greeting_then_an_extension():
    m = menu()
    assert m.start(0) == [Play((("greeting", {}), ("menu", {})))]
    assert dial(m, "2002", 1) == [Stop(), Redirect("2002", "dialled")]  # the first digit cuts the prompt


def test_zero_is_the_operator_after_saying_so():
    m = menu()
    m.start(0)
    (stop, play) = m.digit("0", 1)
    assert stop == Stop() and play == Play((("operator", {}),), then=Redirect("2003", "operator"))
    assert m.digit("2", 1.5) == []  # being sent to the operator: digits no longer count
    assert m.prompt_done(3) == [Redirect("2003", "operator")]


def test_an_unknown_extension_is_said_then_three_go_to_the_operator():
    m = menu()
    m.start(0)
    m.prompt_done(5)
    assert dial(m, "2999", 6) == [Play((("unknown", {"digits": "2 9 9 9"}), ("menu", {})))]
    assert m.prompt_done(9) == []
    assert dial(m, "2888", 10)[-1] == Play((("unknown", {"digits": "2 8 8 8"}), ("menu", {})))
    last = dial(m, "2777", 11)
    assert last[-1] == Play((("unknown", {"digits": "2 7 7 7"}), ("operator", {})), then=Redirect("2003", "tries"))


def test_a_wrong_extension_then_a_right_one():
    m = menu()
    m.start(0)
    dial(m, "2999", 1)
    assert dial(m, "2001", 2)[-1] == Redirect("2001", "dialled")


def test_silence_after_the_prompt_goes_to_the_operator():
    m = menu()
    m.start(0)
    assert m.tick(100) == []  # the prompt still plays: its end starts the wait
    m.prompt_done(7)
    assert m.tick(16.9) == []
    assert m.tick(17) == [Play((("operator", {}),), then=Redirect("2003", "silence"))]


def test_a_short_extension_ends_with_hash_or_a_pause():
    m = menu()
    m.start(0)
    m.prompt_done(1)
    assert dial(m, "20", 2) == []
    assert m.tick(4.9) == []
    assert m.tick(5) == [Play((("unknown", {"digits": "2 0"}), ("menu", {})))]
    m.prompt_done(6)
    assert dial(m, "21#", 7)[-1] == Play((("unknown", {"digits": "2 1"}), ("menu", {})))


@given(st.lists(st.tuples(st.sampled_from(list("0123456789*#") + ["tick", "done"]),
                          st.floats(0, 5)), max_size=60))
def test_whatever_the_caller_does_the_menu_ends_at_a_known_extension(events):
    m = menu()
    now = 0.0
    out = m.start(now)
    redirects = []
    for what, wait in events + [("done", 0), ("tick", 30), ("done", 0), ("tick", 30), ("done", 0)]:
        now += wait
        if what == "tick":
            out = m.tick(now)
        elif what == "done":
            out = m.prompt_done(now) if m.playing else []
        else:
            out = m.digit(what, now)
        redirects += [a for a in out if isinstance(a, Redirect)]
    assert len(redirects) == 1 and redirects[0].extension in m.extensions
    assert m.wrong <= m.tries


# -- settings ---------------------------------------------------------------------------------------
def test_settings_defaults():
    s = load({"MEDIA_ROLE": "receptionist"})
    assert (s.silence_s, s.tries, s.clock_rate, s.sip_port) == (10, 3, 8000, 5060)


@pytest.mark.parametrize("env, words", [
    ({}, "MEDIA_ROLE is not set"),
    ({"MEDIA_ROLE": "voicemail"}, "MEDIA_ROLE='voicemail': expected one of announcement, receptionist"),
    ({"MEDIA_SIP_PORT": "70000"}, "MEDIA_SIP_PORT=70000: expected 1..65535"),
    ({"MEDIA_SIP_ADDR": "localhost"}, "MEDIA_SIP_ADDR='localhost': expected an IPv4 address"),
    ({"MEDIA_PROXIES": "127.0.0.1,proxy"}, "MEDIA_PROXIES='127.0.0.1,proxy'"),
    ({"MEDIA_RTP_PORT_MIN": "40000", "MEDIA_RTP_PORT_MAX": "40002"}, "at least 4 ports"),
    ({"MEDIA_PROMPTS_FILE": "/nonexistent"}, "MEDIA_PROMPTS_FILE='/nonexistent': no such file"),
    ({"MEDIA_CLOCK_RATE": "11025"}, "MEDIA_CLOCK_RATE=11025: expected 8000 or 16000"),
    ({"MEDIA_SILENCE_S": "1"}, "MEDIA_SILENCE_S=1: expected 2..120"),
])
def test_bad_settings_name_the_variable(env, words):
    env = {"MEDIA_ROLE": "announcement", **env} if "MEDIA_ROLE" not in env and env else env
    with pytest.raises(SettingsError, match=re.escape(words)):
        load(env)


# -- the provisioning file's company fields for the media server ------------------------------------
from kemi.provisioning import ProvisioningError, parse as parse_provisioning  # noqa: E402

COMPANY = """companies:
  - id: acme
    name: Acme
    domain: acme.test
{extra}    extensions:
      - {{number: "2001", name: Alice, password: alice-secret-1}}
      - {{number: "2002", name: Bruno, password: bruno-secret-2}}
"""


def test_language_greeting_and_operator_are_read_and_never_stored():
    (company,) = parse_provisioning(COMPANY.format(extra='    language: en\n    greeting: "Hello, Acme here."\n'
                                                         '    operator: "2002"\n')).companies
    assert (company.language, company.greeting, company.operator) == ("en", "Hello, Acme here.", "2002")
    assert not {"language", "greeting", "operator"} & set(company.to_dict())  # Redis never holds them
    (default,) = parse_provisioning(COMPANY.format(extra="")).companies
    assert (default.language, default.greeting, default.operator) == ("fr", None, None)


@pytest.mark.parametrize("extra, words", [
    ('    operator: "2099"\n', "line 5: companies[0].operator: '2099' is not an extension of this company"),
    ('    operator: "99"\n', "line 5: companies[0].operator: '99' is not an extension number 2XXX"),
    ("    language: de\n", "line 5: companies[0].language: expected one of fr, en"),
    ('    greeting: "Bonjour {company}"\n', "line 5: companies[0].greeting: 'Bonjour {company}' is not a one-line greeting"),
    ('    greeting: "' + "x" * 401 + '"\n', "line 5: companies[0].greeting:"),
])
def test_a_bad_media_field_names_its_line(extra, words):
    with pytest.raises(ProvisioningError) as err:
        parse_provisioning(COMPANY.format(extra=extra))
    assert words in str(err.value)
