"""ETC — Erasing Thousands of Concepts (specs/etc.md): tMM concept distributions, boundary anchors,
affine optimal transport to a merged mapping triplet, the MoEraser and noise injection-restore. Registered as
``etc``, with its artifact plug-ins (kinds.py): the MoEraser and keyed eraser modules and their shared memory."""

from erasekit.methods.etc import kinds, method  # noqa: F401  (register)
