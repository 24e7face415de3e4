"""The shared-memory alert (monitoring/prometheus/ledger.rules.yml, CoworkProxySharedMemoryHigh) reads
series the running proxy really exports; the Call-ID memory's expiry is unit-tested
(tests/unit/sip/test_in_dialog_and_app.py) and measured by bench/shm_soak.py."""

from __future__ import annotations

import yaml

from kemi.paths import ROOT


def test_the_shared_memory_alert_reads_what_the_proxy_exports(proxy):
    metrics = proxy.metrics()
    rules = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "ledger.rules.yml").read_text(encoding="utf-8"))
    [expr] = [r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == "CoworkProxySharedMemoryHigh"]
    used, total = metrics["kamailio_shmem_real_used_size"], metrics["kamailio_shmem_total_size"]
    assert "kamailio_shmem_real_used_size / kamailio_shmem_total_size" in expr
    # the pool Kamailio was given (-m), less the allocator's own few bytes
    assert 0 <= int(proxy.env().get("KAMAILIO_SHM_MB") or 512) * 2**20 - total < 2**20, total
    assert 0 < used / total < 0.70, (used, total)  # a test proxy is nowhere near the alert
