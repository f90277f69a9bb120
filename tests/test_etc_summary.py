"""ETC's rows in the CLI's erase summary (methods/etc/summary.py, the registry's ``describe`` hook)."""

from __future__ import annotations

from erasekit.methods.base import get_method
from erasekit.methods.etc.summary import describe

COMMON = {"targets": 2, "pool": 5, "distributions": 6, "seconds": 12.345, "peak_mib": 321.6, "stages": []}
CHANGES = {"boundary_change": 0.01234, "off_plane_change": 0.5, "mapping_change": 0.25, "context_change": 0.125}


def test_etc_registers_its_summary_rows():
    assert get_method("etc").describe is describe


def test_a_keyed_edit_shows_its_memory_and_held_out_decisions():
    metrics = COMMON | CHANGES | {"keys": 24, "threshold": 1.23456, "preserved_keys": 3, "restore_error": 1e-7}
    metrics |= {"heldout_target_rewritten": 0.875, "heldout_pool_rewritten": 0.0}
    assert describe(metrics) == [
        ("targets", "2"),
        ("mapping pool", "5"),
        ("keys", "24"),
        ("rewrite radius θ (held-out contexts)", "1.235"),
        ("held-out target tokens rewritten", "0.875"),
        ("held-out mapping-pool tokens rewritten", "0.000"),
        ("boundary-anchor change (worst layer)", "0.012"),
        ("off-plane-anchor change (worst layer)", "0.500"),
        ("mapping-sample change (worst layer)", "0.250"),
        ("context-token change (worst layer)", "0.125"),
        ("NIR restore error (worst layer)", "0.000"),
        ("total seconds", "12.3"),
        ("peak memory (MiB)", "322"),
    ]


def test_a_moeraser_edit_without_nir_shows_its_erase_error_and_nir_off():
    metrics = COMMON | {"erase_loss": 0.5, "erase_error": 0.3333, "mapping_change": 0.25}
    assert describe(metrics) == [
        ("targets", "2"),
        ("mapping pool", "5"),
        ("erase error (worst layer)", "0.333"),
        ("mapping-sample change (worst layer)", "0.250"),
        ("NIR restore error (worst layer)", "off"),
        ("total seconds", "12.3"),
        ("peak memory (MiB)", "322"),
    ]
