"""ETC — Erasing Thousands of Concepts (specs/etc.md): tMM concept distributions, boundary anchors,
affine optimal transport to a merged mapping triplet, the MoEraser and noise injection-restore."""
