"""The ops CLI against a real redis-server: atomic loads, precise errors, show, help."""

from __future__ import annotations

import pytest

from kemi.settings import Settings
from kemi.store import Connection, Directory
from tests.conftest import CLI_DB, OFFICE
from tests.harness import admin


class Db:
    """This file's database of the session's Redis, as the CLI (url) and a raw client see it."""

    def __init__(self, server):
        self.url = server.url_of(CLI_DB)
        self.raw = server.client(CLI_DB)

    def client(self):
        return self.raw


def snapshot(db) -> dict:
    client = db.client()
    return {k: client.dump(k) for k in sorted(client.keys("*"))}


@pytest.fixture
def fresh(redis_server):
    """An empty database of the session's Redis, this file's own."""
    db = Db(redis_server)
    db.raw.flushdb()
    yield db
    db.raw.flushdb()
    db.raw.close()


def test_load_then_show(fresh):
    out = admin(fresh.url, "load", str(OFFICE)).stdout
    assert "company acme (acme.test): created, 6 extensions, 5 DIDs" in out
    shown = admin(fresh.url, "show").stdout
    assert "acme: Acme Conseil <acme.test>" in shown and "2002  Bruno" in shown
    assert "DID +33142685304 -> 2004, then receptionist" in shown and "receptionist: media server reception" in shown
    assert "secret" not in shown
    assert admin(fresh.url, "show", "globex").stdout.startswith("globex:")


def test_bad_file_changes_nothing_and_names_file_line_field(fresh, tmp_path):
    admin(fresh.url, "load", str(OFFICE))
    before = snapshot(fresh)
    bad = tmp_path / "bad.yaml"
    # (the operator moved off 2003 so that the one problem is the number)
    bad.write_text(OFFICE.read_text().replace('number: "2003"', 'number: "9003"').replace('operator: "2003"', 'operator: "2001"'))
    proc = admin(fresh.url, "load", str(bad), check=False)
    assert proc.returncode == 2
    assert f"{bad}:line 14: companies[0].extensions[2].number: '9003' is not an extension number 2XXX" in proc.stderr
    assert "nothing was changed" in proc.stderr
    assert snapshot(fresh) == before


def test_reload_removes_extensions_missing_from_the_file(fresh, tmp_path):
    admin(fresh.url, "load", str(OFFICE))
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(OFFICE.read_text().replace(
        '      - {number: "2003", name: Chloe, password: chloe-secret-3}\n', "").replace('operator: "2003"', 'operator: "2001"'))
    assert "removed 2003" in admin(fresh.url, "load", str(smaller)).stdout
    assert "2003" not in admin(fresh.url, "show", "acme").stdout
    assert fresh.client().get("{co:acme}:ext:2003") is None


def test_prune_removes_companies_not_in_the_file(fresh, tmp_path):
    admin(fresh.url, "load", str(OFFICE))
    only_acme = tmp_path / "acme.yaml"
    text = OFFICE.read_text()
    only_acme.write_text(text[: text.index("  - id: globex")])
    admin(fresh.url, "load", str(only_acme))
    assert "globex" in admin(fresh.url, "show").stdout  # kept without --prune
    assert "company globex: removed" in admin(fresh.url, "load", "--prune", str(only_acme)).stdout
    assert "globex" not in admin(fresh.url, "show").stdout
    assert fresh.client().get("domain:globex.test") is None


def test_domain_taken_by_another_company_is_refused(fresh, tmp_path):
    admin(fresh.url, "load", str(OFFICE))
    before = snapshot(fresh)
    thief = tmp_path / "thief.yaml"
    thief.write_text("companies:\n  - {id: initech, name: Initech, domain: acme.test}\n")
    proc = admin(fresh.url, "load", str(thief), check=False)
    assert proc.returncode == 2 and "already belongs to company 'acme'" in proc.stderr
    assert snapshot(fresh) == before


def test_show_a_company_without_extensions_or_dids(fresh, tmp_path):
    bare = tmp_path / "bare.yaml"
    bare.write_text("companies:\n  - {id: bare, name: Bare Desk, domain: bare.test}\n")
    admin(fresh.url, "load", str(bare))
    assert admin(fresh.url, "show", "bare").stdout == "bare: Bare Desk <bare.test> main number -\n"


def test_override_set_list_remove_and_bad_prefixes(fresh):
    admin(fresh.url, "load", str(OFFICE))
    assert admin(fresh.url, "override", "set", "+453", "included").stdout.startswith("+453: included")
    assert admin(fresh.url, "override", "list").stdout == "+453             included\n"
    before = snapshot(fresh)
    for prefix in ("+", "+0", "+045", "453", "+45a", "+1234567890123456"):
        proc = admin(fresh.url, "override", "set", prefix, "blocked", check=False)
        assert proc.returncode == 2 and f"PREFIX {prefix!r}: expected" in proc.stderr, proc.stderr
    proc = admin(fresh.url, "override", "set", "+44", "free", check=False)
    assert proc.returncode == 2 and "CLASS 'free'" in proc.stderr
    assert snapshot(fresh) == before
    assert admin(fresh.url, "override", "remove", "+453").stdout == "+453: override removed\n"
    assert admin(fresh.url, "override", "list").stdout.startswith("no overrides")


def test_dry_run_writes_nothing(fresh):
    proc = admin(fresh.url, "load", "--dry-run", str(OFFICE))
    assert "valid, 3 companies" in proc.stdout
    assert snapshot(fresh) == {}


def test_unreachable_redis_is_exit_3(tmp_path):
    proc = admin("redis://127.0.0.1:1/0", "load", str(OFFICE), check=False)
    assert proc.returncode == 3 and "unreachable" in proc.stderr and "nothing was changed" in proc.stderr


def test_missing_file_is_named(fresh):
    proc = admin(fresh.url, "load", "/nonexistent.yaml", check=False)
    assert proc.returncode == 2 and "/nonexistent.yaml: cannot read" in proc.stderr


@pytest.mark.parametrize("name, content, says", [
    ("deep.yaml", "companies: " + "[" * 100_000 + "]" * 100_000, "deep.yaml:line 1: (file): nested deeper than 16"),
    ("deep-block.yaml", "companies:\n" + "".join("  " * i + "- x:\n" for i in range(1000)),
     "deep-block.yaml:line 9: (file): nested deeper than 16"),
    ("laughs.yaml", "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")) + "companies: *i\n",
     "laughs.yaml:line 2: (file): aliases (*name) are not allowed"),
    ("huge.yaml", "# " + "x" * (64 * 1024 * 1024) + "\n", "huge.yaml: larger than 2097152 bytes"),
    ("latin1.yaml", b"companies:\n- id: acme\n  name: Soci\xe9t\xe9\n", "latin1.yaml:line 3: not UTF-8 text (byte 34)"),
])
def test_pathological_files_are_exit_2_with_file_and_place(fresh, tmp_path, name, content, says):
    """Nesting that ends PyYAML's recursion, an alias bomb, a 64 MB file, bytes that are not UTF-8: exit 2 and
    one line naming the file and the place, nothing written, no traceback."""
    admin(fresh.url, "load", str(OFFICE))
    before = snapshot(fresh)
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    proc = admin(fresh.url, "load", str(path), check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert says in proc.stderr and str(tmp_path) in proc.stderr
    assert "Traceback" not in proc.stderr and "Error:" not in proc.stderr
    assert snapshot(fresh) == before


@pytest.mark.parametrize("args, usage, says", [
    ([], "[--redis-url REDIS_URL] [--actor ACTOR] COMMAND ...",
     ["load apply a YAML provisioning file", "history the admin audit: who changed what", "show print what is provisioned", "trunks list the provisioned trunks",
      "override override the billing class of an E.164 prefix", "prepaid Prepaid Account of a company",
      "rate per-minute rates of prepaid destinations", f"(default: $REDIS_URL or {Settings.redis_url})",
      "Amounts (prepaid topup, rate set, --fee) are in the currency's main unit: 50, 50.00 or 0.25 (at most 2 "
      "decimals); cents only with a final c: 2550c is 25.50; anything else is refused, never rounded."]),
    (["load"], "[--prune] [--dry-run] file", ["a file with any error changes nothing",
                                             "also remove companies that are not in the file"]),
    (["show"], "[company]", ["only this company id"]),
    (["trunks"], "", ["in the order outbound calls try them"]),
    (["override"], "{set,remove,list} [prefix] [CLASS]", ["The longest matching prefix wins"]),
])
def test_help_everywhere(args, usage, says, redis_server):
    out = " ".join(admin(redis_server.url, *args, "--help").stdout.split())  # argparse wraps to the terminal
    assert out.startswith(" ".join(["usage: python3 -m kemi.admin", *args, "[-h]", usage]).rstrip()), out
    for words in says:
        assert words in out, (words, out)


def test_the_proxys_trusted_addresses_follow_every_load(fresh, redis_server, tmp_path):
    """Directory.peer_addresses (what the proxy never bans nor rings): the addresses `load` writes, as
    the process's copy holds them, which is checked again at most SCHEMA_RECHECK_S after its last check."""
    now = [0.0]
    directory = Directory(Connection(Settings(redis_url=fresh.url, redis_timeout_ms=10_000), clock=lambda: now[0]))
    admin(fresh.url, "load", str(OFFICE))
    media = {("127.0.0.3", 5060), ("127.0.0.7", 5060)}
    assert directory.peer_addresses() == {("127.0.0.2", 5060), ("127.0.0.4", 5060), ("127.0.0.5", 5060),
                                          ("127.0.0.6", 5060)} | media
    only = tmp_path / "trunks.yaml"
    only.write_text("trunks:\n  - {name: solo, host: 192.0.2.10, port: 5070}\n")
    admin(fresh.url, "load", str(only))
    now[0] += directory.conn.settings.schema_recheck_s - 0.5
    assert ("127.0.0.2", 5060) in directory.peer_addresses()  # within the bound: the copy
    now[0] += 0.5
    assert directory.peer_addresses() == {("192.0.2.10", 5070)} | media


def test_sites_are_stored_kept_replaced_and_read_by_the_proxy(fresh, tmp_path):
    """`sites:` goes to the `sites` hash, is left alone by a file without the section, replaced
    whole by one with it, and reaches Directory.sites() (the proxy's checked copy)."""
    from kemi.model import Site
    admin(fresh.url, "load", str(OFFICE))
    directory = Directory(Connection(Settings(redis_url=fresh.url, redis_timeout_ms=10_000)))
    assert directory.sites() == ()
    building = tmp_path / "building.yaml"
    building.write_text("sites:\n  - name: station-f\n    cidrs: [203.0.113.7/32, '2001:db8:7::/48']\n"
                        "    companies: [acme, globex]\n")
    assert "sites: station-f (2 networks)" in admin(fresh.url, "load", str(building)).stdout
    assert fresh.client().hkeys("sites") == [b"station-f"]
    fresh_copy = Directory(Connection(Settings(redis_url=fresh.url, redis_timeout_ms=10_000)))
    assert fresh_copy.sites() == (Site("station-f", ("203.0.113.7/32", "2001:db8:7::/48"), ("acme", "globex")),)
    admin(fresh.url, "load", str(OFFICE))  # no sites: section: the site stays
    assert fresh.client().hkeys("sites") == [b"station-f"]
    assert admin(fresh.url, "sites").stdout == "station-f: 203.0.113.7/32, 2001:db8:7::/48 (companies acme, globex)\n"
    # what scripts/run.sh hands scripts/sip-conn-limit.sh (TCP_SITE_NETS: IPv4 only)
    assert admin(fresh.url, "sites", "--ipv4-nets").stdout == "203.0.113.7/32\n"
    building.write_text("sites: []\n")
    assert "sites: none" in admin(fresh.url, "load", str(building)).stdout
    assert fresh.client().hkeys("sites") == []
    assert admin(fresh.url, "sites", "--ipv4-nets").stdout == "\n"
    assert "no sites declared" in admin(fresh.url, "sites").stdout


@pytest.mark.parametrize("text, words", [
    # a trunk already provisioned (not in this file) inside the site
    ("sites:\n  - {name: loopback, cidrs: [127.0.0.0/24]}\n",
     "site loopback: 127.0.0.0/24 holds primary (udp:127.0.0.2:5060): trunks and media servers are never part"),
    ("sites:\n  - {name: halle, cidrs: [203.0.113.0/29], companies: [umbrella]}\n",
     "site halle: company 'umbrella' is not provisioned"),
])
def test_a_site_that_would_hold_a_provisioned_peer_or_an_unknown_company_changes_nothing(fresh, tmp_path, text, words):
    admin(fresh.url, "load", str(OFFICE))
    before = snapshot(fresh)
    bad = tmp_path / "site.yaml"
    bad.write_text(text)
    proc = admin(fresh.url, "load", str(bad), check=False)
    assert proc.returncode == 2 and words in proc.stderr and "nothing was changed" in proc.stderr, proc.stderr
    assert snapshot(fresh) == before


def test_a_trunk_moved_into_a_stored_site_is_refused(fresh, tmp_path):
    admin(fresh.url, "load", str(OFFICE))
    site = tmp_path / "site.yaml"
    site.write_text("sites:\n  - {name: halle, cidrs: [203.0.113.0/29]}\n")
    admin(fresh.url, "load", str(site))
    before = snapshot(fresh)
    moved = tmp_path / "trunks.yaml"
    moved.write_text("trunks:\n  - {name: primary, host: 203.0.113.3}\n")
    proc = admin(fresh.url, "load", str(moved), check=False)
    assert proc.returncode == 2 and "site halle: 203.0.113.0/29 holds primary" in proc.stderr, proc.stderr
    assert snapshot(fresh) == before
