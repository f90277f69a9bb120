"""One script for anyone with a GPU: erasekit's speed and memory on an SD 1.5-size pipeline (random weights).

Measured: generation throughput (fp16, batch 8, 512x512, 25 steps, CFG) of the original pipeline and with each
edit applied (the ``apply`` overhead on generation); UCE and ErasePro edit seconds (1 and 5 concepts); ETC edit
seconds and per-stage seconds at 2,000 concepts x 100 contexts; the time ``apply`` itself takes; peak GPU memory of
every step (torch.cuda.max_memory_allocated; on CPU the growth of resident memory). The pipeline is built by
benchmarks/sd_scale.py from benchmarks/sd_configs/ with random weights, so no quality figure is measured.

    .venv/bin/python benchmarks/gpu_check.py                  # on a GPU: writes docs/gpu_check.{md,json}
    .venv/bin/python benchmarks/gpu_check.py --size tiny      # CPU smoke test in seconds (tests/test_gpu_check.py)

Device and dtype: --device / --dtype as erasekit's commands take them (utils/devices.resolve; "auto": the CUDA
device in half precision when there is one, else the CPU in float32); the folder is loaded with
``load_backbone(folder, device=, dtype=)``.
Results go to --out (default runs/gpu_check/); docs/gpu_check.* are written only by a full-size run on CUDA.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd_scale import build_pipeline, concept_names, folder_mib, pool_names  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
WORK = ROOT / "runs" / "gpu_check"

# size -> settings. "sd15": the figures the issue asks for; "tiny": the same code path in seconds on a CPU.
SIZES = {
    "sd15": dict(batch=8, steps=25, batches=3, edit_concepts=(1, 5), etc_concepts=2000, contexts=100, etc={}),
    "tiny": dict(
        batch=2,
        steps=2,
        batches=1,
        edit_concepts=(1,),
        etc_concepts=6,
        contexts=8,
        etc=dict(
            pca_dim=4, components=2, target_samples=16, anchor_samples=8, mapping_samples=8, keys_per_distribution=4
        ),
    ),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generation(backbone, device: torch.device, settings: dict) -> dict:
    """Images per second over ``batches`` timed batches after one untimed batch."""
    from erasekit.utils.profiling import measure

    batch, steps = settings["batch"], settings["steps"]
    prompts = [f"a photo of {name} in a garden" for name in concept_names(batch, offset=250)]
    backbone.generate(prompts, list(range(batch)), steps=steps, batch_size=batch)
    synchronize(device)
    with measure() as usage:
        for b in range(settings["batches"]):
            backbone.generate(prompts, [b * batch + i for i in range(batch)], steps=steps, batch_size=batch)
        synchronize(device)
    images = batch * settings["batches"]
    side = backbone.image_size()
    return {
        "images": images,
        "seconds": usage.seconds,
        "images_per_second": images / usage.seconds,
        "peak_mib": usage.peak_mib,
        "batch": batch,
        "steps": steps,
        "size": f"{side[0]}x{side[1]}",
    }


def edit(backbone, method: str, targets: list[str], pool: list[str], options: dict, work: Path):
    from erasekit.concepts.pairs import ConceptSet
    from erasekit.methods.base import erase_to_artifact

    if method == "etc":
        concepts = ConceptSet.build(targets, "", pool)
    else:
        concepts = ConceptSet.build(targets, "a person", pool[:5])
    artifact = erase_to_artifact(backbone, concepts, method, options)
    path = artifact.save(work / "artifacts" / f"{method}-{len(targets)}", overwrite=True)
    stages = [{k: s[k] for k in ("stage", "seconds") if k in s} for s in artifact.metrics["stages"] if "seconds" in s]
    row = {
        "method": method,
        "concepts": len(targets),
        "seconds": artifact.metrics["seconds"],
        "peak_mib": artifact.metrics["peak_mib"],
        "artifact_mib": folder_mib(path),
    }
    return artifact, row | ({"stages": stages} if method == "etc" else {})


def applied_generation(backbone, artifact, device: torch.device, settings: dict) -> dict:
    """The edit applied to the pipeline (timed), generation with it, then removed."""
    start = time.perf_counter()
    handle = artifact.apply(backbone)
    synchronize(device)
    apply_seconds = time.perf_counter() - start
    try:
        row = generation(backbone, device, settings)
    finally:
        artifact.remove(handle)
    return row | {"apply_seconds": apply_seconds}


def markdown(record: dict) -> str:
    r = record["results"]
    lines = [
        "# GPU check: erasekit at SD 1.5 size (random weights)",
        "",
        f"Command: `{record['command']}`  ",
        f"Device: {record['device']}, dtype {record['dtype']}. {record['note']}",
        "",
        "## Generation",
        "",
        "| edit applied | images/s | overhead vs none | apply s | peak MiB |",
        "|---|---|---|---|---|",
    ]
    base = r["generation"]
    lines.append(f"| none | {base['images_per_second']:.2f} | – | – | {base['peak_mib']:.0f} |")
    for method, g in r.get("applied", {}).items():
        overhead = base["images_per_second"] / g["images_per_second"] - 1
        lines.append(
            f"| {method} | {g['images_per_second']:.2f} | {overhead:+.1%} | {g['apply_seconds']:.3f} | "
            f"{g['peak_mib']:.0f} |"
        )
    lines += [
        "",
        f"Batch {base['batch']}, {base['size']}, {base['steps']} steps, classifier-free guidance.",
        "",
        "## Edits",
        "",
        "| method | concepts | seconds | peak MiB | artifact MiB |",
        "|---|---|---|---|---|",
    ]
    for row in r.get("edits", []):
        lines.append(
            f"| {row['method']} | {row['concepts']} | {row['seconds']:.2f} | {row['peak_mib']:.0f} | "
            f"{row['artifact_mib']:.2f} |"
        )
    ratios = r.get("erasepro_over_uce", {})
    if ratios:
        lines += [
            "",
            "ErasePro / UCE: "
            + ", ".join(f"{n} concept(s) {v:.2f}x" for n, v in ratios.items())
            + " (paper: 4.5x on SD 1.4; goal at most 1.5x).",
        ]
    etc = [row for row in r.get("edits", []) if row["method"] == "etc"]
    if etc:
        lines += [
            "",
            f"ETC stages ({etc[0]['concepts']} concepts): "
            + ", ".join(f"{s['stage']} {s['seconds']:.1f} s" for s in etc[0]["stages"])
            + ".",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=tuple(SIZES), default="sd15")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N, cpu (auto: CUDA when available)")
    parser.add_argument("--dtype", default="auto", help="auto, float16, bfloat16, float32 (auto: half on CUDA)")
    parser.add_argument("--work", type=Path, default=WORK, help="the pipeline folder and the artifacts")
    parser.add_argument("--out", type=Path, default=None, help="where gpu_check.{md,json} go (default: see above)")
    args = parser.parse_args(argv)

    from erasekit.backbones.loader import load_backbone
    from erasekit.eval.comparison import save_benchmark
    from erasekit.utils.devices import resolve

    settings = SIZES[args.size]
    device, dtype = resolve(args.device, args.dtype)
    official = args.size == "sd15" and device.type == "cuda"
    out = args.out or (DOCS if official else args.work)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    record = {
        "command": ".venv/bin/python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": gpu,
        "dtype": str(dtype).removeprefix("torch."),
        "size": args.size,
        "note": "Random weights: time, memory and size only."
        + ("" if official else " Not a GPU measurement at SD 1.5 size: a smoke test or a CPU run."),
        "results": {},
    }
    results = record["results"]

    def write() -> None:
        save_benchmark(out, "gpu_check", record, markdown(record) if "generation" in results else "# GPU check\n")

    # float16 on disk halves the folder for the GPU; the tiny smoke test keeps float32
    disk = "float16" if args.size == "sd15" else "float32"
    folder = build_pipeline(args.work / f"pipeline-{args.size}-{disk}", args.size, disk)
    backbone = load_backbone(folder, device=device, dtype=dtype)
    results["generation"] = generation(backbone, device, settings)
    write()

    edits, artifacts = [], {}
    pool = pool_names(30)
    for method in ("uce", "erasepro"):  # untimed warm-up: the first edit pays kernel selection and lazy imports
        edit(backbone, method, concept_names(1), pool, {}, args.work / "warm-up")
    for n in settings["edit_concepts"]:
        targets = concept_names(n)
        for method in ("uce", "erasepro"):
            artifact, row = edit(backbone, method, targets, pool, {}, args.work)
            edits.append(row)
            artifacts[method] = artifact
    results["edits"] = edits
    results["erasepro_over_uce"] = {
        str(n): next(e["seconds"] for e in edits if e["method"] == "erasepro" and e["concepts"] == n)
        / next(e["seconds"] for e in edits if e["method"] == "uce" and e["concepts"] == n)
        for n in settings["edit_concepts"]
    }
    write()

    targets = [name for name in concept_names(settings["etc_concepts"] + len(pool)) if name not in pool]
    options = {"contexts": settings["contexts"], **settings["etc"]}
    artifacts["etc"], row = edit(backbone, "etc", targets[: settings["etc_concepts"]], pool, options, args.work)
    edits.append(row)
    write()

    results["applied"] = {m: applied_generation(backbone, artifacts[m], device, settings) for m in ("uce", "etc")}
    write()
    print(markdown(record))
    return record


if __name__ == "__main__":
    main()
