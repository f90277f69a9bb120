"""ETC's settings (specs/etc.md), the checks made before any work, and the work folder's stage keys.

Every field declares which stage reads it (``read_by``): the token vectors (§1-§3, ``TOKENS``), the eraser
(§4, ``ERASE``), noise injection-restore (§5, ``NIR``), or none (``LOCATION``: where the work goes, not what it
computes). A stage's work folder is keyed by the fields its results depend on (``stage_key``), so a setting added
to a stage enters the key where it is declared, and a rerun never reuses work made under another value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from erasekit.concepts.pairs import ConceptSet, first_duplicate
from erasekit.errors import UserError
from erasekit.utils.validation import (
    AT_LEAST_ONE,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    SHARE,
    Range,
    check_numbers,
)

TOKENS, ERASE, NIR, LOCATION = "tokens", "erase", "nir", "location"
STAGES = (TOKENS, ERASE, NIR, LOCATION)


def read_by(stage: str, default: Any, *, keyed_if: str | None = None) -> Any:
    """A config field read by ``stage`` (one of ``STAGES``); ``keyed_if``: it enters the stage's key only when that
    other field is set (a setting that matters only then)."""
    if stage not in STAGES:
        raise ValueError(f"unknown ETC stage {stage!r}")
    return field(default=default, metadata={"stage": stage, "keyed_if": keyed_if})


@dataclass
class ETCConfig:
    # contexts per concept (§1, §1b): sampled from the backbone's world (concepts/contexts.py; ShapeWorld: its
    # caption grammar), the same number for every concept so that encoding cost does not grow with the context space
    contexts: int = read_by(TOKENS, 120)
    # the share of each concept's contexts held out of the fit: the eraser's decision (the keyed radius θ) is
    # calibrated on them, never on the contexts the distributions were fitted on (§1b)
    holdout: float = read_by(TOKENS, 0.2)
    # a user's own contexts (one {} each), added to every concept's sample
    templates: tuple[str, ...] = read_by(TOKENS, ())
    # concepts given by example prompts (§1c, ``--target-prompts``): the prompts, and which of their states make the
    # distribution: "eot" (the end-of-text token), "tokens" (every token between the special ones) or "both"
    target_prompts: tuple[str, ...] = read_by(TOKENS, ())
    # measured best on the unsafe task (docs/etc_examples.md)
    prompt_states: str = read_by(TOKENS, "eot", keyed_if="target_prompts")
    # keyed: "relative" rewrites a token within θ of a target centre only when no preserved key (the mapping pool's
    # centres, the contexts' other words) is nearer; "radius" uses θ alone
    rule: str = read_by(TOKENS, "relative")
    # keyed, relative rule: k-means centres of the contexts' other tokens
    preserved_context_keys: int = read_by(TOKENS, 256)
    # [reading] "phrase": one distribution per sub-token of the phrase (position from its end), each mapped onto
    # the same position of the triplet's members; "last": the spec's last sub-token only. On ShapeWorld (MiniLM is
    # bidirectional) the last token does not carry the concept: swapping it for a mapping concept's last token
    # keeps the erased triple in 55% of images (as many as the original), swapping every phrase token in 0%
    tokens: str = read_by(TOKENS, "phrase")
    pca_dim: int = read_by(TOKENS, 32)
    components: int = read_by(TOKENS, 4)
    dof: float = read_by(TOKENS, 2.0)
    em_iterations: int = read_by(TOKENS, 200)
    target_samples: int = read_by(TOKENS, 64)  # per target concept, inside the core (§2; the reference uses 2,048)
    anchor_samples: int = read_by(TOKENS, 32)  # per target concept, boundary anchors outside the shell
    mapping_samples: int = read_by(TOKENS, 16)  # per mapping-pool concept, preserved
    core: float = read_by(TOKENS, 0.9)
    # [reading] the spec's anchors outside the 80% region overlap its 90% core: the ring between the two contours
    # would be both erased and preserved. Outside 95% leaves a gap. 300 triples, 400 steps, no NIR
    # (benchmarks/etc_sweep.py --fit-only): boundary anchors moved 0.137 -> 0.050, erase error 0.76 -> 0.65
    shell: float = read_by(TOKENS, 0.95)
    # [reading §2] boundary anchors off the concept's PCA plane too (tmm.off_plane): per target distribution, core
    # samples moved r x its spread out of the plane, r ~ U(off_plane_radius). 2,000 triples, 200 steps, cached
    # tokens (etc_token_fit.py's measurement, from a scratch script): held-out triples' tokens moved 0.39 -> 0.18 of
    # W x; radius (0.5, 1.2) gave 0.18 too. Images, 2,000 triples, 800 steps (docs/etc_scale.md): held-out Acc_s
    # 0.574 -> 0.695 of the original's, Acc_e 0.495 -> 0.580, H 0.509 -> 0.501: a point further along the same
    # erase / preserve trade-off, with less collateral damage. 0 turns them off (the spec)
    off_plane_samples: int = read_by(TOKENS, 32)
    off_plane_radius: tuple[float, float] = read_by(TOKENS, (0.3, 0.8))
    # Monte Carlo draws per distribution that place each HPD threshold (§2): its (1 - c) quantile of log p. At
    # 2,000 the core's 10% quantile has a standard error of 0.7% of coverage; 10,000 took 19% of a 2,000-triple run
    hpd_samples: int = read_by(TOKENS, 2000)
    chunk: int = read_by(TOKENS, 1024)  # target distributions fitted, sampled and transported at a time (memory)
    triplet: int = read_by(TOKENS, 3)
    # [reading §4] "keyed" (methods/etc/keyed.py): a token near one of a target distribution's centres (k-means of
    # its real tokens, whitened) is moved by that distribution's transport shift, in closed form; "moe": the spec's
    # MoEraser, trained. 100 triples, held-out phrasings (docs/etc_heldout.md): keyed Acc_e 0.04 (original 0.88),
    # held-out Acc_s 1.000 of the original's; MoEraser (400 steps) 0.25 / 0.818
    eraser: str = read_by(ERASE, "keyed")
    # keyed: the share of the targets' real tokens (every template, every sub-token) within the rewrite radius θ
    # 1,000 triples, held-out phrasings (docs/etc_heldout.md): 0.99 -> Acc_e 0.28, 1.0 -> 0.055 with held-out Acc_s
    # 0.991 of the original's (the whole-concept and relative rules keep the neighbours)
    coverage: float = read_by(ERASE, 1.0)
    # keyed: θ at least the (1 - tail) quantile of a log-normal fitted to those distances (0: off). The sample
    # maximum (coverage 1.0) grows with the number of concepts (held-out distances of 10 triples: max 5.9; 2,000:
    # 9.4); the fitted 1e-4 quantile does not (9.1-9.2 at every size; docs/etc_heldout.md)
    tail: float = read_by(ERASE, 1e-4)
    # keyed: ridge of the pooled within-distribution covariance, times its top eigenvalue
    whiten_ridge: float = read_by(TOKENS, 1e-3)
    # keyed: k-means centres of each target distribution's real tokens
    keys_per_distribution: int = read_by(TOKENS, 32)
    # keyed: distributions searched per token (those with the nearest whitened means); the whole-concept rule needs
    # each sub-token's own distribution among them, where thousands of concepts share the word
    candidates: int = read_by(ERASE, 32)
    # keyed: share ρ of a rewritten token's offset from its distribution's mean that the rewrite keeps (keyed.py);
    # 0 (measured against 1 in docs/etc_heldout.md: style's short prompts leak with 1)
    residual: float = read_by(ERASE, 0.0)
    # moe: the MoEraser (§4) and its training
    experts: int = read_by(ERASE, 8)
    # ShapeWorld, 50 triples, 200 steps, no NIR (benchmarks/etc_sweep.py): hidden 32 -> Acc_e 0.12, held-out Acc_s
    # 0.72 of the original; 96 -> 0.10 / 0.80 (about 1 s a step on 2 cores); 192 -> 0.08 / 0.70 (2 s a step)
    hidden: int = read_by(ERASE, 96)
    top_k: int = read_by(ERASE, 2)
    shared_weight: float = read_by(ERASE, 0.1)
    steps: int = read_by(ERASE, 400)
    batch_size: int = read_by(ERASE, 1024)  # target tokens per step (as many anchor tokens)
    lr: float = read_by(ERASE, 1e-2)
    # erase overshoot (§4). [reading] The spec's 0.5 leaves a star in 4% of the instance task's images: MiniLM's CLS
    # and SEP states still carry the rewritten word; 1.0 outweighs them (docs/etc_heldout.md, "The overshoot γ").
    # Every prompt x 4 seeds (docs/single_concepts_seeds.md): Acc_e 0.042 -> 0.010, H 0.917 -> 0.931 (UCE 0.933)
    gamma: float = read_by(ERASE, 1.0)
    # [reading] the spec's 300 (relative to its loss normalisation) keeps the erasers at zero on ShapeWorld: 50
    # triples, 200 steps, last sub-token only (benchmarks/etc_sweep.py): weight 300 -> Acc_e 0.78 (original 0.76);
    # 10 -> 0.60 with held-out Acc_s 0.885 of the original; 1 -> 0.58 / 0.852. Every sub-token, hidden 32: 10 ->
    # 0.12 / 0.72, 30 -> 0.38 / 0.93. 2,000 triples with off-plane anchors, 400 steps, images (Acc_e / held-out Acc_s
    # of the original; original Acc_e 0.91): 10 -> 0.83 / 0.99, 3 -> 0.57 / 0.73 (H 0.52, the best), 1 -> 0.27 / 0.31
    preserve_weight: float = read_by(ERASE, 3.0)
    layer_weighting: str = read_by(ERASE, "spectral")  # λ_l: "spectral" or "uniform"
    nir: bool = read_by(NIR, True)
    # [reading] the spec's ρ = 0.5 leaves ShapeWorld's images intact (16 test prompts: every factor kept; ρ = 5:
    # 38% kept), so removal would hand the concepts back. The restore is exact at any ρ (moeraser.restoring_eraser)
    nir_rho: float = read_by(NIR, 5.0)
    nir_seed: int | None = read_by(NIR, None)  # None: a fresh secret seed, stored nowhere
    seed: int = read_by(TOKENS, 0)  # the token stage's generator, and the erasers' initialisation and batches
    # embedding cache and training checkpoints (an interrupted run resumes)
    work_dir: str | None = read_by(LOCATION, None)

    MAPS_ONTO_POOL: ClassVar = True  # the targets map onto a mapping pool (§3), not onto an anchor concept
    APPLIES_WHEN: ClassVar = {  # settings of one eraser: given for the other, they are refused, not ignored
        **dict.fromkeys(("coverage", "residual", "tail", "keys_per_distribution", "candidates"), ("eraser", "keyed")),
        **dict.fromkeys(("steps", "lr", "hidden", "experts", "top_k", "batch_size"), ("eraser", "moe")),
    }
    RANGES: ClassVar = {
        **dict.fromkeys(("holdout", "core", "shell"), FRACTION),
        **dict.fromkeys(("dof", "whiten_ridge", "lr", "off_plane_radius"), POSITIVE),
        **dict.fromkeys(
            ("contexts", "anchor_samples", "off_plane_samples", "shared_weight", "gamma", "preserve_weight", "nir_rho"),
            NON_NEGATIVE,
        ),
        **dict.fromkeys(
            "preserved_context_keys pca_dim components em_iterations target_samples mapping_samples hpd_samples "
            "chunk triplet keys_per_distribution candidates experts hidden top_k batch_size".split(),
            AT_LEAST_ONE,
        ),
        "coverage": Range(0, 1, low_open=True),
        "tail": Range(0, 1, high_open=True),
        "residual": SHARE,
        "steps": Range(1, 1_000_000),
        "nir_seed": SEED,
        "seed": SEED,
    }

    def __post_init__(self) -> None:
        check_numbers(self, "ETC")


def stage_of(config_field: Field) -> str:
    return config_field.metadata["stage"]


def fields_read_by(stage: str) -> tuple[str, ...]:
    """The names of the config fields ``stage`` reads."""
    return tuple(f.name for f in fields(ETCConfig) if stage_of(f) == stage)


TOKEN_FIELDS = fields_read_by(TOKENS)  # what the token vectors (§1-§3) depend on


def stage_settings(config: ETCConfig, stage: str) -> dict[str, Any]:
    """The settings a stage's work is keyed by: the token vectors (§1-§3) by the fields the token stage reads (a
    ``keyed_if`` field only when its condition is set); the erase stage by every field but NIR's and the work folder
    (an edit with and one without NIR share their trained erasers)."""
    values = asdict(config)
    if stage == TOKENS:
        return {
            f.name: values[f.name]
            for f in fields(config)
            if stage_of(f) == TOKENS and (f.metadata["keyed_if"] is None or getattr(config, f.metadata["keyed_if"]))
        }
    if stage == ERASE:
        return {f.name: values[f.name] for f in fields(config) if stage_of(f) in (TOKENS, ERASE)}
    raise ValueError(f"no work folder for the ETC stage {stage!r}")


def stage_key(concepts: ConceptSet, config: ETCConfig, stage: str) -> str:
    """The name of a stage's work folder: the stage and a hash of the concepts and ``stage_settings``."""
    # format: bumped when the work folder's contents or the training change meaning (2: stratified preserve
    # batches, 3: off-plane anchors, 4: the keyed eraser's centres, means, whitening and distances, 5: contexts from
    # the world, held-out calibration, preserved keys, 6: each distribution's concept)
    blob = json.dumps(
        {"format": 6, "targets": concepts.targets, "pool": concepts.preserve, "config": stage_settings(config, stage)},
        sort_keys=True,
    )
    return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def stage_folder(concepts: ConceptSet, config: ETCConfig, stage: str) -> Path | None:
    """The stage's work folder under ``work_dir`` (None without one)."""
    return Path(config.work_dir) / stage_key(concepts, config, stage) if config.work_dir else None


def fit_count(config: ETCConfig) -> int:
    """Contexts per concept that the distributions are fitted on (the rest calibrate the decision)."""
    total = config.contexts + len(config.templates)
    return total - min(total - 1, max(1, round(config.holdout * total)))


ERASERS = ("keyed", "moe")
RULES = ("relative", "radius")
PROMPT_STATES = ("eot", "tokens", "both")
TOKEN_MODES = ("phrase", "last")


def check_concepts(concepts: ConceptSet, config: ETCConfig) -> None:
    """Before any work: the choices, the counts the numbers' ranges cannot express, and the mapping pool."""
    for name, value, choices in (
        ("eraser", config.eraser, ERASERS),
        ("rule", config.rule, RULES),
        ("prompt_states", config.prompt_states, PROMPT_STATES),
    ):
        if value not in choices:
            raise UserError(f"ETC {name} must be one of {', '.join(choices)}, got {value!r}")
    if config.contexts + len(config.templates) < 2:  # each number's own range: ETCConfig.RANGES
        raise UserError(
            "ETC needs at least 2 contexts per concept (sampled plus --templates), got "
            f"{config.contexts} + {len(config.templates)}"
        )
    if config.target_prompts and len(concepts.targets) != 1:
        raise UserError("ETC target prompts describe one concept: give exactly one target name with them")
    if config.target_prompts and len(config.target_prompts) < 4:
        raise UserError(f"ETC target prompts: need at least 4 example prompts, got {len(config.target_prompts)}")
    # the keyed eraser's setting (ETCConfig.APPLIES_WHEN); for the MoEraser, memory_keys takes at most that many
    if config.eraser == "keyed" and config.keys_per_distribution > fit_count(config):
        raise UserError(
            f"ETC keys_per_distribution must be at most the fitted contexts ({fit_count(config)}), "
            f"got {config.keys_per_distribution}"
        )
    if config.tokens not in TOKEN_MODES:
        raise UserError(f"ETC tokens must be one of {', '.join(TOKEN_MODES)}, got {config.tokens!r}")
    radius = config.off_plane_radius
    if len(radius) != 2 or not radius[0] <= radius[1]:
        raise UserError(f"ETC off_plane_radius must be [low, high] with low <= high, got {list(radius)}")
    if config.hpd_samples < 100:
        raise UserError(f"ETC hpd_samples must be at least 100 to place an HPD threshold, got {config.hpd_samples}")
    check_mapping_pool(concepts.preserve, config.triplet)


def check_mapping_pool(pool: Sequence[str], triplet: int) -> None:
    """At least a triplet of distinct mapping-pool concepts (§3)."""
    if len(pool) < triplet:
        raise UserError(f"ETC needs a mapping pool of at least {triplet} concepts, got {len(pool)}")
    if (repeat := first_duplicate(pool)) is not None:
        first, again = repeat
        raise UserError(f"duplicate mapping-pool concept: {pool[again]!r} (entries {first + 1} and {again + 1})")
