"""The Stable Diffusion protocol (specs/evaluation.md, "Protocols"): ``protocol`` (generation and metrics.json),
``clip`` (CLIP score, zero-shot, the CLIP judge of attacks), ``quality`` (FID / KID), ``nudenet`` (NudeNet counts)
and ``report`` (the HTML page)."""
