"""bench/route_latency.py reads Kamailio's latency lines by message (pure parsing, no Kamailio)."""

from __future__ import annotations

from bench import route_latency


def test_latency_lines_are_grouped_by_cseq_and_method_and_replies_are_left_out():
    log = (
        ' 2(101) WARNING: {1 1 INVITE 7-1@127.0.0.20} <core> [core/receive.c:531]: receive_msg(): '
        'request-route executed in: 240 usec\n'
        ' 3(102) WARNING: {1 2 INVITE 7-1@127.0.0.20} <core> [core/receive.c:531]: receive_msg(): '
        'request-route executed in: 1200 usec\n'
        ' 1(100) WARNING: {1 2 INVITE 8-1@127.0.0.20} <core> [core/receive.c:531]: receive_msg(): '
        'request-route executed in: 1000 usec\n'
        ' 1(100) WARNING: {2 2 INVITE 8-1@127.0.0.20} <core> [core/receive.c:624]: receive_msg(): '
        'reply-route executed in: 30 usec\n'
        ' 1(100) ERROR: {1 3 BYE 8-1@127.0.0.20} <core> [core/kemi.c:96]: sr_kemi_core_err(): something else\n'
    )
    assert route_latency.latencies(log) == {"1 INVITE": [240], "2 INVITE": [1200, 1000]}


def test_the_table_puts_each_message_of_both_systems_side_by_side():
    text = route_latency.table("outbound", {"1 INVITE": [200, 300], "3 BYE": [900]},
                               {"1 INVITE": [50, 50], "3 BYE": [300]})
    lines = text.splitlines()
    assert lines[0].startswith("outbound:")
    assert lines[2].split()[:3] == ["1", "INVITE", "2"] and lines[2].endswith("5.0x")
    assert lines[3].split()[:3] == ["3", "BYE", "1"] and lines[3].endswith("3.0x")
    assert lines[-1].endswith("product 1 ms, native 0 ms")
