"""§1-§3 end to end: fit each concept's tMM, sample the targets' cores, boundary shells and off-plane anchors and the
mapping pool's cores, transport the target samples onto their merged triplets, and the keyed eraser's keys; the
result (``TokenData``) kept in the work folder (``cached_tokens``)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from erasekit.backbones.base import Backbone
from erasekit.concepts.pairs import ConceptSet
from erasekit.methods.etc.config import TOKENS, ETCConfig, stage_folder
from erasekit.methods.etc.memory import memory_keys
from erasekit.methods.etc.stage_log import StageLog
from erasekit.methods.etc.tmm import ConceptDistribution, off_plane, sample_spread
from erasekit.methods.etc.tokens import TokenConcepts, TokenData, encode_concepts
from erasekit.methods.etc.transport import merge_triplet, mixture_transport
from erasekit.utils.distributed import all_gather, is_main

Tensor = torch.Tensor


def cached_tokens(backbone: Backbone, concepts: ConceptSet, config: ETCConfig, log: StageLog) -> TokenData:
    """prepare_tokens, kept in the erase stage's work folder: a rerun (an interrupted one, or the same erasure
    without NIR) loads the token vectors instead of recomputing §1-§3."""
    folder = stage_folder(concepts, config, TOKENS)
    path = folder / "tokens.safetensors" if folder else None
    # under accelerate launch: load only if every process sees the file (prepare_tokens has collectives)
    loaded = None
    if path is not None and all(all_gather(path.is_file())):
        with log.stage("tokens from the work folder"):
            loaded = TokenData.load(path)
    if all(all_gather(loaded is not None)):
        return loaded
    data = prepare_tokens(backbone, concepts, config, log)
    if path is not None and is_main():  # the main process writes the work folder
        data.save(path)
    return data


def prepare_tokens(backbone: Backbone, concepts: ConceptSet, config: ETCConfig, log: StageLog) -> TokenData:
    """§1-§3: encode, fit the tMMs, sample targets and anchors, transport the targets, and the keyed eraser's
    keys (fitting contexts) and distances (held-out contexts)."""
    generator = torch.Generator().manual_seed(config.seed)
    encoded_targets, encoded_pool, context = encode_concepts(backbone, concepts, config, log)
    targets, pool = encoded_targets.fit, encoded_pool.fit
    with log.stage("fitting"):
        pool_distributions = ConceptDistribution.fit(pool.samples.double(), generator=generator, **tmm_settings(config))
    with log.stage("sampling"):
        mapping = pool_distributions.sample_core(config.mapping_samples, generator, config.core, config.hpd_samples)
    mapping = mapping.float().reshape(-1, targets.samples.shape[-1])
    triplets = nearest_pool(targets.concept_means(), pool.concept_means(), config.triplet)
    members = pool.at(triplets[targets.owner], targets.from_end[:, None].expand(-1, config.triplet))
    samples = sample_and_transport(targets, pool_distributions, members, config, generator, log)
    with log.stage("keys", per_distribution=config.keys_per_distribution):
        keys = memory_keys(encoded_targets, encoded_pool, context, config, generator)
    return TokenData(
        targets=samples.core,
        mapped=samples.mapped,
        anchors=torch.cat([samples.shell, samples.off_plane, mapping, context]),
        boundary=len(samples.shell),
        off_plane=len(samples.off_plane),
        mapping=len(mapping),
        distributions=len(targets.owner),
        **keys,
    )


def tmm_settings(config: ETCConfig) -> dict:
    """ConceptDistribution.fit's settings (§1)."""
    return dict(k=config.pca_dim, components=config.components, dof=config.dof, max_iter=config.em_iterations)


@dataclass
class TargetSamples:
    """§2-§3 for every target distribution, rows (n, d) float32: core samples, boundary anchors, off-plane anchors
    (none when ``off_plane_samples`` is 0) and the core samples' transport images."""

    core: Tensor
    shell: Tensor
    off_plane: Tensor
    mapped: Tensor


def sample_and_transport(
    targets: TokenConcepts,
    pool: ConceptDistribution,
    members: Tensor,
    config: ETCConfig,
    generator: torch.Generator,
    log: StageLog,
) -> TargetSamples:
    """``chunk_samples`` over the target distributions, ``chunk`` at a time (memory); ``members`` (S, triplet):
    each target distribution's triplet among the ``pool`` distributions."""
    chunks = []
    bar = tqdm(total=len(targets.owner), desc="fit, sample, transport", unit="distribution")
    for start in range(0, len(targets.owner), config.chunk):
        part = slice(start, start + config.chunk)
        chunks.append(chunk_samples(targets.samples[part], pool, members[part], config, generator, log))
        bar.update(len(chunks[-1][0]))
    bar.close()
    d = targets.samples.shape[-1]
    core, shell, off, mapped = ([kind for kind in column if kind is not None] for column in zip(*chunks, strict=True))
    return TargetSamples(
        core=torch.cat(core).reshape(-1, d),
        shell=torch.cat(shell).reshape(-1, d),
        off_plane=torch.cat(off).reshape(-1, d) if off else torch.zeros(0, d),
        mapped=torch.cat(mapped).reshape(-1, d),
    )


def chunk_samples(
    samples: Tensor,
    pool: ConceptDistribution,
    members: Tensor,
    config: ETCConfig,
    generator: torch.Generator,
    log: StageLog,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """For target distributions' token ``samples`` (S, N, d): their tMMs (§1); core samples, boundary anchors (§2)
    and off-plane anchors [reading §2] (None without them), (S, n, d) float32 each; and the core samples'
    transport images (§3), computed from the float64 samples."""
    with log.stage("fitting"):
        distributions = ConceptDistribution.fit(samples.double(), generator=generator, **tmm_settings(config))
    with log.stage("sampling"):
        core = distributions.sample_core(config.target_samples, generator, config.core, config.hpd_samples)
        shell = distributions.sample_shell(config.anchor_samples, generator, config.shell, config.hpd_samples)
        off = None
        if config.off_plane_samples:
            bases = core[:, torch.arange(config.off_plane_samples) % config.target_samples]
            off = off_plane(distributions.pca, bases, sample_spread(samples), config.off_plane_radius, generator)
    with log.stage("transport"):
        mapped = transport_targets(distributions, pool, members, core).float()
    return core.float(), shell.float(), None if off is None else off.float(), mapped


def nearest_pool(target_means: Tensor, pool_means: Tensor, size: int) -> Tensor:
    """(C, size) indices of the most cosine-similar pool concepts of each target (§3 triplets)."""
    sim = nn.functional.normalize(target_means, dim=-1) @ nn.functional.normalize(pool_means, dim=-1).T
    return sim.topk(size, dim=1).indices


def transport_one(source: ConceptDistribution, members: ConceptDistribution, samples: Tensor) -> Tensor:
    """T(t) for one target's samples (n, d): source = its tMM (a one-concept selection), target = the merged
    mixture of its triplet ``members`` (§3), each member's pairs solved in span(W_source, W_member)."""
    merged = merge_triplet(
        list(members.pca.basis),
        list(members.mixture.means),
        list(members.mixture.variances),
        list(members.pca.mean),
        list(members.mixture.weights),
    )
    means, covs = source.lifted_components()
    k = members.mixture.weights.shape[1]
    supports = [
        (torch.arange(i * k, (i + 1) * k), torch.linalg.qr(torch.cat([source.pca.basis[0], basis], 1)).Q)
        for i, basis in enumerate(members.pca.basis)
    ]
    transport = mixture_transport(
        source.mixture.weights[0],
        means[0],
        covs[0],
        merged.weights,
        merged.means,
        merged.covariances,
        basis=merged.basis,
        origin=merged.origin,
        supports=supports,
    )
    return transport(samples.double()).to(samples.dtype)


def transport_targets(
    targets: ConceptDistribution, pool: ConceptDistribution, triplets: Tensor, samples: Tensor
) -> Tensor:
    """T(t) for every target sample (S, n, d), the triplet of target s being the pool distributions
    ``triplets[s]`` (§3). Targets are independent: as many single-threaded workers as torch has threads."""

    def one(s: int) -> Tensor:
        return transport_one(targets.select(slice(s, s + 1)), pool.select(triplets[s]), samples[s])

    with ThreadPoolExecutor(torch.get_num_threads()) as workers, single_threaded_ops():
        return torch.stack(list(workers.map(one, range(len(samples)))))


@contextmanager
def single_threaded_ops() -> Iterator[None]:
    """torch ops on one thread each (the caller runs parallel workers), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
