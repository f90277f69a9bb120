"""Time, memory and artifact size of erasekit at Stable Diffusion 1.5 (or SDXL) scale, with random weights, on this
machine.

The pipeline is built from our own configs in benchmarks/sd_configs/ (the published SD 1.5 architecture: CLIP
ViT-L/14 text encoder, the 860M UNet, the SD VAE, a CLIP-size BPE tokenizer written locally; --size sdxl: SDXL
base's, from sd_configs/sdxl/: CLIP ViT-L/14 and OpenCLIP ViT-bigG/14, the 2.6B UNet), saved once under
--work and loaded with ``load_backbone(folder)`` as a user's folder would be. The weights are random, so no quality
figure means anything here: only seconds, prompts/s, peak memory and bytes on disk are measured.

Parts, each written to docs/sd_scale.{md,json} as soon as it finishes (a run cut short leaves the parts it did):
    encode   CLIP text-encoder throughput (prompts/s) and the extrapolation to 2,000 / 10,000 concepts x 120 contexts
    edit     UCE and ErasePro edit seconds for 1 and 5 concepts, interleaved, and ErasePro / UCE
    etc10    ETC at 10 concepts: total and per-stage seconds (metrics["stages"])
    etc100   ETC at 100 concepts
    etc10-default, etc100-default  ETC at 10 / 100 concepts with all of ETC's own settings (120 contexts), pool 30
Run:
    nice .venv/bin/python benchmarks/sd_scale.py [--size sd15|sdxl|tiny] [--parts encode edit etc10 etc100]
        [--work runs/sd-scale] [--dtype float32|float16] [--docs docs]
Finished parts are kept in --work/results-<size>.json: a rerun skips them (--fresh redoes them).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "sd_configs"
DOCS = ROOT / "docs"
WORK = ROOT / "runs" / "sd-scale"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
ETC_PARTS = ("etc10", "etc100", "etc10-default", "etc100-default")
PARTS = ("encode", "edit", *ETC_PARTS)

# Shrunk copies of the SD 1.5 configs for --size tiny (a smoke test in seconds); the structure stays the same.
TINY = {
    "text_encoder": dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, projection_dim=32
    ),
    "unet": dict(
        sample_size=8,
        block_out_channels=[32, 32, 64, 64],
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=32,
        attention_head_dim=4,
    ),
    "vae": dict(block_out_channels=[8, 8, 16, 16], layers_per_block=1, norm_num_groups=4, sample_size=64),
    "tokenizer": dict(vocab_size=2048),
}

FIRST = "anna maria sofia elena laura clara julia lucia nora ida emil oskar hugo leon felix paul max theo jonas karl"
LAST = "keller berger huber moser wagner fischer weber becker schulz richter wolf braun vogel lang frank"
OBJECTS = "violin lantern teapot bicycle tractor harp kettle compass anchor saddle canoe piano camera clock umbrella"


ARCHITECTURES = {  # size -> (title, what the folder holds)
    "sd15": (
        "Stable Diffusion 1.5",
        "SD 1.5's architecture (benchmarks/sd_configs/: CLIP ViT-L/14 text encoder, 12 layers, 768 wide, 77 tokens; "
        "the 860M UNet; the SD VAE; a locally built BPE tokenizer with CLIP's 49,408 tokens)",
    ),
    "sdxl": (
        "Stable Diffusion XL",
        "SDXL base's architecture (benchmarks/sd_configs/sdxl/: CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text "
        "encoders, 12 + 32 layers, 768 + 1280 wide, 77 tokens; the 2.6B UNet; the SDXL VAE; a locally built BPE "
        "tokenizer with CLIP's 49,408 tokens for both encoders)",
    ),
    "tiny": ("Stable Diffusion 1.5 (tiny smoke-test copy)", "SD 1.5's structure at toy width (TINY below)"),
}


def config(name: str, size: str) -> dict:
    own = CONFIGS / size / f"{name}.json"  # sd_configs/sdxl/ holds what differs from SD 1.5
    data = json.loads((own if own.exists() else CONFIGS / f"{name}.json").read_text())
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    return data | (TINY.get(name, {}) if size == "tiny" else {})


def concept_names(count: int, offset: int = 0) -> list[str]:
    """``count`` plausible person names, distinct, starting at ``offset``: the 300 first x last names, then
    first x middle x last (5,700 more)."""
    first, last = FIRST.split(), LAST.split()
    names = [f"{f} {sur}" for sur in last for f in first]
    names += [f"{f} {m} {sur}" for sur in last for m in first for f in first if m != f]
    return names[offset : offset + count]


def pool_names(count: int = 30) -> list[str]:
    """Mapping-pool / preserved concepts: everyday objects and names not among the targets."""
    return (OBJECTS.split() + concept_names(count, offset=200))[:count]


def word_list() -> list[str]:
    """Every word of the concept names and of erasekit's prompt templates (each becomes one token)."""
    from erasekit.concepts.contexts import NARRATIVE_TEMPLATES
    from erasekit.concepts.embeddings import CONTEXT_TEMPLATES
    from erasekit.concepts.pairs import TEMPLATES

    text = " ".join(
        [FIRST, LAST, OBJECTS, *NARRATIVE_TEMPLATES, *CONTEXT_TEMPLATES, *(t for v in TEMPLATES.values() for t in v)]
    )
    return sorted(set(re.findall(r"[a-z0-9]+", text.lower())))


def bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: merge the lowest-ranked adjacent pair until none is ranked."""
    while len(pieces) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(pieces, pieces[1:], strict=False))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2 :]]
    return pieces


def bpe_files(folder: Path, vocab_size: int) -> None:
    """vocab.json and merges.txt of a CLIP-format byte-level BPE with ``vocab_size`` tokens (see tokenizer.json)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_pipelines import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    seen, ranks = set(tokens), {}
    for word in word_list():
        # the pieces today's merges leave, joined left to right by new merges ranked after every existing one: a new
        # merge fires only where no older one applies, so words made one token earlier stay one token
        pieces = bpe([*word[:-1], word[-1] + "</w>"], ranks)
        left = pieces[0]
        for right in pieces[1:]:
            ranks.setdefault((left, right), len(ranks))
            left += right
            if left not in seen:
                seen.add(left)
                tokens.append(left)
    merges = [f"{a} {b}" for a, b in ranks]
    if len(tokens) > vocab_size - 2:
        raise SystemExit(f"the word list needs {len(tokens)} tokens, more than {vocab_size - 2}")
    tokens += [f"<|filler{i}|>" for i in range(vocab_size - 2 - len(tokens))] + [BOS, EOS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n", encoding="utf-8")


def build_pipeline(folder: Path, size: str = "sd15", dtype: str = "float32", seed: int = 0) -> Path:
    """The random-weight pipeline folder (built once: a folder with model_index.json is reused)."""
    folder = Path(folder)
    if (folder / "model_index.json").exists():
        return folder
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer

    torch.manual_seed(seed)
    spec = config("tokenizer", size)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    bpe_files(staging / "bpe", spec["vocab_size"])
    tokenizer = CLIPTokenizer.from_pretrained(str(staging / "bpe"), model_max_length=spec["model_max_length"])
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    ids |= dict(pad_token_id=tokenizer.pad_token_id, max_position_embeddings=spec["model_max_length"])

    def text_config(name: str) -> CLIPTextConfig:
        return CLIPTextConfig(**config(name, size) | dict(vocab_size=len(tokenizer)) | ids)

    unet, vae = UNet2DConditionModel(**config("unet", size)), AutoencoderKL(**config("vae", size))
    pipe = _pipeline(size, unet, vae, text_config, tokenizer)
    pipe.to(getattr(torch, dtype))
    pipe.save_pretrained(str(staging / "pipe"), safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    (staging / "pipe").rename(folder)
    shutil.rmtree(staging)
    return folder


def _pipeline(size: str, unet, vae, text_config, tokenizer):
    """The family's pipeline around the built components: SD 1.5 (DDIM), or SDXL (Euler) with its second encoder."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    text_encoder = CLIPTextModel(text_config("text_encoder"))
    if size == "sdxl":
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=CLIPTextModelWithProjection(text_config("text_encoder_2")),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=EulerDiscreteScheduler(**config("scheduler", size)),
        )
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=DDIMScheduler(**config("scheduler", size)),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def folder_mib(path: Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def parameters(backbone) -> dict[str, int]:
    components = {**backbone.text_encoders(), "unet": backbone.pipe.unet, "vae": backbone.pipe.vae}
    return {n: sum(p.numel() for p in module.parameters()) for n, module in components.items()}


# --- parts --------------------------------------------------------------------------------------------------------


def part_encode(backbone, size: str) -> dict:
    from erasekit.concepts.contexts import NARRATIVE_TEMPLATES
    from erasekit.utils.profiling import measure

    count = 16 if size == "tiny" else 128
    prompts = [NARRATIVE_TEMPLATES[i % len(NARRATIVE_TEMPLATES)].format(n) for i, n in enumerate(concept_names(count))]
    backbone.encode(prompts[:4])  # warm-up
    runs = []
    for _ in range(2):
        with measure() as usage:
            backbone.encode(prompts)
        runs.append(usage)
    best = min(runs, key=lambda u: u.seconds)
    rate = count / best.seconds
    extrapolated = {f"{n}x120": n * 120 / rate for n in (2000, 10000)}
    return {
        "prompts": count,
        "batch": count,
        "tokens_per_prompt": int(backbone.pipe.tokenizer.model_max_length),
        "seconds": [u.seconds for u in runs],
        "prompts_per_second": rate,
        "peak_mib": max(u.peak_mib for u in runs),
        "extrapolated_seconds": extrapolated,
    }


def part_edit(backbone, work: Path, size: str, rounds: int = 2, sizes: tuple[int, ...] = (1, 5)) -> dict:
    """UCE and ErasePro on each number of concepts: one untimed warm-up each, then ``rounds`` interleaved rounds."""
    import erasekit

    out = {}
    for n in sizes:
        targets = concept_names(n)
        seconds: dict[str, list[float]] = {"uce": [], "erasepro": []}
        peak: dict[str, float] = {}
        sizes: dict[str, float] = {}
        for r in range(rounds + 1):
            for method in ("uce", "erasepro"):
                artifact = erasekit.erase(backbone, targets, method=method, anchor="a person", preserve=pool_names(5))
                if r == 0:
                    path = artifact.save(work / "artifacts" / f"{method}-{n}", overwrite=True)
                    sizes[method] = folder_mib(path)
                    continue
                seconds[method].append(artifact.metrics["seconds"])
                peak[method] = max(peak.get(method, 0.0), artifact.metrics["peak_mib"])
        ratios = [e / u for e, u in zip(seconds["erasepro"], seconds["uce"], strict=True)]
        out[str(n)] = {
            "concepts": n,
            "seconds": seconds,
            "best_seconds": {m: min(s) for m, s in seconds.items()},
            "erasepro_over_uce": sorted(ratios)[len(ratios) // 2],
            "peak_mib": peak,
            "artifact_mib": sizes,
        }
    return out


def part_etc(backbone, work: Path, n: int, size: str, etc: dict) -> dict:
    from erasekit.concepts.pairs import ConceptSet
    from erasekit.methods.base import erase_to_artifact

    options = {k: v for k, v in etc.items() if k != "pool" and v is not None}
    if size == "tiny":
        options = dict(contexts=8, pca_dim=4, components=2, target_samples=16, anchor_samples=8, mapping_samples=8)
        options |= dict(keys_per_distribution=4)
    concepts = ConceptSet.build(concept_names(n), "", pool_names(etc["pool"]))
    artifact = erase_to_artifact(backbone, concepts, "etc", options)
    path = artifact.save(work / "artifacts" / f"etc-{n}", overwrite=True)
    stages = [
        {k: s[k] for k in ("stage", "seconds", "peak_mib") if k in s}
        for s in artifact.metrics["stages"]
        if "seconds" in s
    ]
    return {
        "concepts": n,
        "pool": etc["pool"],
        "options": options,
        "seconds": artifact.metrics["seconds"],
        "peak_mib": artifact.metrics["peak_mib"],
        "stages": stages,
        "artifact_mib": folder_mib(path),
        "prefix_encoding": getattr(backbone, "encode_prefix", None) is not None,
    }


# --- report -------------------------------------------------------------------------------------------------------


def markdown(record: dict) -> str:
    r = record["results"]
    title, architecture = ARCHITECTURES[record["size"]]
    lines = [
        f"# erasekit at {title} scale (random weights, CPU)",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine']}. Measured {record['finished'] or 'partly (run not finished)'}.",
        "",
        f"The pipeline has {architecture} and "
        "**random weights**: no quality figure would mean anything, so only time, memory and size are measured. "
        "Seconds are wall time on a shared 2-core CPU (one run unless a list is shown); peak memory is the growth of "
        "the process's resident memory during the step (erasekit.utils.profiling.measure).",
        "",
        *(
            [
                f"Parts {', '.join(record['kept'])}: measured by an earlier run into the same work folder and kept: "
                + "; ".join(
                    f"{k} by `{r[k].get('command', 'nice .venv/bin/python benchmarks/sd_scale.py')}`"
                    for k in record["kept"]
                )
                + ".",
                "",
            ]
            if record.get("kept")
            else []
        ),
        *([record["note"], ""] if record.get("note") else []),
        "## Model",
        "",
    ]
    model = r.get("model", {})
    if model:
        lines += [
            f"Parameters: {', '.join(f'{k} {v / 1e6:.1f}M' for k, v in model['parameters'].items())}. "
            f"Folder on disk ({model['dtype']}): {model['folder_mib']:.0f} MiB. "
            f"Build: {model['build_seconds']:.0f} s (when the folder was first built); "
            f"`load_backbone`: {model['load_seconds']:.1f} s.",
            "",
        ]
    lines += ["## Text-encoder throughput", ""]
    if "encode" in r:
        e = r["encode"]
        lines += [
            f"{e['prompts']} prompts in one batch, padded to {e['tokens_per_prompt']} tokens: "
            f"**{e['prompts_per_second']:.1f} prompts/s** (best of {len(e['seconds'])}: "
            f"{', '.join(f'{s:.2f}' for s in e['seconds'])} s), peak +{e['peak_mib']:.0f} MiB.",
            "",
            "Full-length prompts at that rate (extrapolated, not measured; encoding only): "
            + "; ".join(
                f"{k.replace('x', ' concepts x ')} contexts = {v / 3600:.1f} h"
                for k, v in e["extrapolated_seconds"].items()
            )
            + " on this CPU. UCE and ErasePro encode full prompts; ETC's own encoding rate is in its section.",
            "",
        ]
    else:
        lines += ["Not run (the run ended before this part).", ""]
    lines += ["## UCE and ErasePro edit time", ""]
    if "edit" in r:
        rows = []
        for n, d in r["edit"].items():
            if not isinstance(d, dict):
                continue
            rows.append(
                f"| {n} | {d['best_seconds']['uce']:.2f} | {d['best_seconds']['erasepro']:.2f} | "
                f"{d['erasepro_over_uce']:.2f}x | {d['peak_mib']['uce']:.0f} / {d['peak_mib']['erasepro']:.0f} | "
                f"{d['artifact_mib']['uce']:.2f} / {d['artifact_mib']['erasepro']:.2f} |"
            )
        lines += [
            "| concepts | UCE s | ErasePro s | ErasePro / UCE | peak MiB UCE / ErasePro "
            "| artifact MiB UCE / ErasePro |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "Seconds: the best of the timed rounds after one untimed warm-up per method; the ratio is the median of "
            "the per-round ratios (the two run seconds apart), "
            + "; ".join(
                f"{n} concept(s): " + (d.get("note") or f"{len(d['seconds']['uce'])} timed round(s)")
                for n, d in r["edit"].items()
                if isinstance(d, dict)
            )
            + ". The paper reports ErasePro / UCE 4.5x on SD 1.4; our goal is at most 1.5x. Peak MiB is the growth of "
            "resident memory during a timed round: after the warm-up the allocator reuses memory it freed, so it "
            "understates what a first run needs (near 0 where a round needed no more than the warm-up had).",
            "",
            *[
                f"The {n}-concept row was measured by `{d['command']}`."
                for n, d in r["edit"].items()
                if isinstance(d, dict) and d.get("command") not in (None, r["edit"].get("command"))
            ],
            "",
            "Where ErasePro's extra time goes: UCE solves once for the projectors; ErasePro first edits every text "
            "layer's MLP output map (12 on CLIP-L, 3,072 inputs each; 44 on SDXL's two encoders), each a float64 "
            "closed-form solve over every aligned token column (about 1,460 per concept here). With more columns "
            "than inputs (5 concepts: 7,326) a stage forms two 3,072 x 3,072 products over all columns. On this "
            "2-core CPU that float64 arithmetic is the difference; its share on a GPU is not measured here.",
            "",
        ]
    else:
        lines += ["Not run (the run ended before this part).", ""]
    lines += ["## ETC per stage", ""]
    etc = [r[k] for k in ETC_PARTS if k in r]
    if etc:
        names = list(dict.fromkeys(s["stage"] for d in etc for s in d["stages"]))
        header = "| stage | " + " | ".join(f"{etc_column(d)}: s" for d in etc) + " |"
        lines += [header, "|---|" + "---|" * len(etc)]
        for name in names:
            cells = []
            for d in etc:
                hit = [s["seconds"] for s in d["stages"] if s["stage"] == name]
                cells.append(f"{sum(hit):.1f}" if hit else "–")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("| **total** | " + " | ".join(f"**{d['seconds']:.1f}**" for d in etc) + " |")
        lines.append("| peak MiB | " + " | ".join(f"{d['peak_mib']:.0f}" for d in etc) + " |")
        lines.append("| artifact MiB | " + " | ".join(f"{d['artifact_mib']:.2f}" for d in etc) + " |")
        lines += [
            "",
            "Options: "
            + "; ".join(f"{etc_column(d)}: {d['options'] or 'ETC defaults'}" for d in etc)
            + " (the rest ETC's defaults). Contexts below ETC's default 120 were chosen to fit the time a run had "
            "on this CPU; with them keys_per_distribution (32) and pca_dim (32), which must not exceed the fitted "
            "contexts, were lowered.",
            "",
        ]
    for d in etc:
        prompts = (d["concepts"] + d["pool"]) * d["options"].get("contexts", 120)
        seconds = sum(s["seconds"] for s in d["stages"] if s["stage"] == "encoding")
        how = (
            "`backbone.encode_prefix` (each batch only up to its last phrase token: CLIP is causal)"
            if d.get("prefix_encoding")
            else "`backbone.encode` (every prompt padded to 77 tokens)"
        )
        lines += [
            f"{etc_column(d)}: ETC encoded {prompts:,} prompts (every target and pool concept in each context) "
            f"through {how} at {prompts / seconds:.1f} prompts/s. At that rate, encoding alone at 120 contexts "
            "would take (extrapolated, not measured) "
            + ", ".join(f"{n * 120 / (prompts / seconds) / 3600:.1f} h for {n:,} concepts" for n in (2000, 10000))
            + " on this CPU.",
            "",
        ]
    missing = [k for k in ETC_PARTS if k not in r]
    if missing:
        lines += [f"Not measured at this size: {', '.join(missing)}.", ""]
    lines += [
        "## The other families",
        "",
        (
            "SD 1.5: docs/sd_scale.md (the default `--size sd15`). "
            if record["size"] == "sdxl"
            else "SDXL: `--size sdxl` measures the same parts on SDXL base's architecture (docs/sd_scale_sdxl.md; "
            "about 14 GiB at float32, which this machine's 24 GiB holds). "
        )
        + "SD 3.5 Large: not built or timed here. Its 8.1B "
        "transformer (32 GiB at float32, 16 GiB at bfloat16) and its T5-XXL encoder (4.7B; 19 GiB at float32) do "
        "not fit this machine's 24 GiB together, and the fallback of its text encoders with the transformer's "
        "context_embedder and text-stream projectors alone is not built either (T5-XXL is most of that size); "
        "SD 3.5 belongs on a GPU (benchmarks/gpu_check.py).",
        "",
    ]
    return "\n".join(lines)


def etc_column(d: dict) -> str:
    return f"{d['concepts']} concepts, {d['options'].get('contexts', 120)} contexts, pool {d['pool']}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=tuple(ARCHITECTURES), default="sd15")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--etc-contexts", type=int, default=120, help="ETC contexts per concept (its default: 120)")
    parser.add_argument(
        "--etc-pca", type=int, default=None, help="ETC pca_dim (default: ETC's; needs that many fitted contexts)"
    )
    parser.add_argument("--etc-pool", type=int, default=30, help="mapping-pool concepts")
    parser.add_argument("--etc-keys", type=int, default=None, help="ETC keys_per_distribution (default: ETC's)")
    parser.add_argument("--note", default="", help="a line for the report (e.g. what else ran on the machine)")
    parser.add_argument("--edit-concepts", type=int, nargs="+", default=[1, 5], help="UCE / ErasePro sizes")
    parser.add_argument("--edit-rounds", type=int, default=2, help="timed rounds after the warm-up")
    parser.add_argument("--redo", nargs="+", choices=PARTS, default=[], help="parts to measure again")
    parser.add_argument("--fresh", action="store_true", help="redo parts already in the work folder's results")
    args = parser.parse_args(argv)

    from erasekit.backbones.loader import load_backbone
    from erasekit.eval.comparison import save_benchmark

    args.work.mkdir(parents=True, exist_ok=True)
    saved = args.work / f"results-{args.size}.json"
    results = {} if args.fresh or not saved.exists() else json.loads(saved.read_text())
    previous = results.get("edit")
    for part in args.redo:
        results.pop(part, None)
    record = {
        "command": "nice .venv/bin/python benchmarks/sd_scale.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{torch.get_num_threads()}-thread CPU ({platform.processor() or platform.machine()}), no GPU, "
        f"torch {torch.__version__}",
        "size": args.size,
        "weights": "random",
        "finished": None,
        "kept": [],
        "note": args.note,
        "results": results,
    }

    def write() -> None:
        saved.write_text(json.dumps(results, indent=1))
        stem = "sd_scale" if args.size == "sd15" else f"sd_scale_{args.size}"
        save_benchmark(args.docs, stem, record, markdown(record))

    folder = args.work / f"pipeline-{args.size}-{args.dtype}"
    reused = (folder / "model_index.json").exists()
    start = time.perf_counter()
    build_pipeline(folder, args.size, args.dtype)
    built = time.perf_counter() - start
    start = time.perf_counter()
    backbone = load_backbone(folder)
    loaded = time.perf_counter() - start
    if reused and "model" in results:
        built = results["model"]["build_seconds"]  # reused folder: keep the seconds the build took
    results["model"] = {
        "parameters": parameters(backbone),
        "dtype": args.dtype,
        "folder_mib": folder_mib(folder),
        "build_seconds": built,
        "load_seconds": loaded,
    }
    print(f"model ready: built {built:.0f} s, loaded {loaded:.1f} s", flush=True)
    write()
    for part in args.parts:
        if part in results:
            print(f"{part}: kept from {saved}", flush=True)
            record["kept"].append(part)
            continue
        start = time.perf_counter()
        if part == "encode":
            results[part] = part_encode(backbone, args.size)
        elif part == "edit":
            fresh = part_edit(backbone, args.work, args.size, args.edit_rounds, tuple(args.edit_concepts))
            for n in fresh:  # concept counts measured before and not now are kept, each with its own command
                fresh[n]["command"] = record["command"]
            kept = {k: v for k, v in (previous or {}).items() if k not in fresh and isinstance(v, dict)}
            for v in kept.values():
                v.setdefault("note", previous.get("note"))
                v.setdefault("command", previous.get("command"))
            results[part] = dict(sorted((kept | fresh).items(), key=lambda item: int(item[0])))
        else:
            etc = dict(pool=args.etc_pool, contexts=args.etc_contexts, keys_per_distribution=args.etc_keys)
            etc |= dict(pca_dim=args.etc_pca)
            own = dict(pool=30) if part.endswith("-default") else etc  # ETC's own settings throughout
            results[part] = part_etc(backbone, args.work, int(part.split("-")[0][3:]), args.size, own)
        results[part]["command"] = record["command"]
        print(f"{part}: {time.perf_counter() - start:.0f} s {json.dumps(results[part])[:300]}", flush=True)
        write()
    record["kept"] = [p for p in PARTS if p in results and results[p].get("command") != record["command"]]
    record["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    write()


if __name__ == "__main__":
    main()
