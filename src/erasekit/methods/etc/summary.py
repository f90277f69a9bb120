"""ETC's rows in the summary the CLI prints after an erase (the registry's ``describe`` hook, methods/base.py)."""

from __future__ import annotations

ANCHOR_LABELS = {  # the preserved tokens' kinds (TokenData.anchor_kinds), as the summary names them
    "boundary": "boundary-anchor",
    "off_plane": "off-plane-anchor",
    "mapping": "mapping-sample",
    "context": "context-token",
}
HELDOUT_LABELS = {  # the keyed decision on held-out contexts (checks.heldout_decisions)
    "heldout_target_rewritten": "held-out target tokens rewritten",
    "heldout_pool_rewritten": "held-out mapping-pool tokens rewritten",
}


def describe(metrics: dict) -> list[tuple[str, str]]:
    """(label, value) rows of an ETC edit's ``metrics`` (its summary, with "seconds" and "peak_mib"): what it erased
    onto, the keyed memory, the held-out decisions, the fit checks, the NIR restore, its time and memory."""
    rows = [("targets", str(metrics["targets"])), ("mapping pool", str(metrics["pool"]))]
    if "keys" in metrics:
        rows += [
            ("keys", str(metrics["keys"])),
            ("rewrite radius θ (held-out contexts)", f"{metrics['threshold']:.3f}"),
        ]
    rows += [(label, f"{metrics[key]:.3f}") for key, label in HELDOUT_LABELS.items() if key in metrics]
    if "erase_error" in metrics:
        rows.append(("erase error (worst layer)", f"{metrics['erase_error']:.3f}"))
    rows += [
        (f"{label} change (worst layer)", f"{metrics[f'{kind}_change']:.3f}")
        for kind, label in ANCHOR_LABELS.items()
        if f"{kind}_change" in metrics
    ]
    restore = f"{metrics['restore_error']:.3f}" if "restore_error" in metrics else "off"
    return rows + [
        ("NIR restore error (worst layer)", restore),
        ("total seconds", f"{metrics['seconds']:.1f}"),
        ("peak memory (MiB)", f"{metrics['peak_mib']:.0f}"),
    ]
