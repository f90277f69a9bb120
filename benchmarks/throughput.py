"""Throughput of the renderer and of ShapeWorld generation (25 DDIM steps, CFG, batch 64) on this CPU.

Run: make bench   (or .venv/bin/python benchmarks/throughput.py [--repeats N])
Prints a JSON line per measurement: renders, generation eager and with `--compile` (torch.compile; its
one-time compile seconds reported); the acceptance bars are >= 5,000 renders/s and >= 5 images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from erasekit.backbones.shapeworld import ShapeWorldBackbone, has_cpp_compiler
from erasekit.world.captions import short_caption
from erasekit.world.factors import VOCAB
from erasekit.world.render import render


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    env = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}

    render(np.random.default_rng(0), 512)
    n = 10_000
    seconds = best_of(lambda: render(np.random.default_rng(1), n), args.repeats)
    print(
        json.dumps(
            {
                "what": "render",
                "images": n,
                "seconds": round(seconds, 3),
                "images_per_second": round(n / seconds, 1),
                **env,
            }
        )
    )

    backbone = ShapeWorldBackbone.load()
    rng = np.random.default_rng(0)
    prompts = [
        short_caption(str(rng.choice(VOCAB.shape)), str(rng.choice(VOCAB.colour)), str(rng.choice(VOCAB.pattern)))
        for _ in range(args.batch)
    ]
    seeds = list(range(args.batch))
    backbone.generate(prompts[:4], seeds[:4], steps=2)
    for what in ("generate", "generate_compiled"):
        extra = {}
        if what == "generate_compiled":  # erasekit generate/evaluate --compile
            if not has_cpp_compiler():
                print("no C++ compiler: generate_compiled skipped", file=sys.stderr)
                continue
            backbone.compile_denoiser()
            t0 = time.perf_counter()
            backbone.generate(prompts, seeds, steps=1)  # compiles for this batch shape
            extra["compile_seconds"] = round(time.perf_counter() - t0, 1)
        seconds = best_of(lambda: backbone.generate(prompts, seeds, steps=25, guidance=5.0), args.repeats)
        print(
            json.dumps(
                {
                    "what": what,
                    "images": args.batch,
                    "steps": 25,
                    "guidance": 5.0,
                    "seconds": round(seconds, 3),
                    "images_per_second": round(args.batch / seconds, 2),
                    **extra,
                    **env,
                }
            )
        )


if __name__ == "__main__":
    main()
