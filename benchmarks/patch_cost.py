"""What a patch size costs: training and inference speed of the embedded ViT at P = 4, 7 and 14, side by
side in one run (step 1's patch-size table reads the result).

    .venv/bin/python benchmarks/patch_cost.py [--rounds 7] [--steps 30] [--threads 1]
                                              [--out assets/experiments/patch_cost.json]

The patch-size study's runs record their own speeds too, but each ran at a different time, beside a
second run on the other core, so those speeds differ by more than the patch size explains. Here the
three models are timed in turns, the order rotating every round, on the same real Fashion-MNIST
images and with the studies' recipe (vit_core.train.fit: augmentation, AdamW, batch 128; inference:
train.evaluate, batch 250). Random weights: the speed does not depend on them. Stop anything else
running on the machine first (the study workers: pkill -STOP -f "vit_core.studies run").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vit_core import train  # noqa: E402
from vit_core.claims import EXPERIMENTS  # noqa: E402
from vit_core.data import load_fashion_mnist  # noqa: E402

PATCHES = (4, 7, 14)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=30, help="training steps per model per round")
    p.add_argument("--test-images", type=int, default=2500, help="inference images per model per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help=f"write the result as JSON (the app reads {EXPERIMENTS.name}/patch_cost.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    images, labels = load_fashion_mnist("train")
    test = load_fashion_mnist("test")[0][:args.test_images]
    mean, std = train.pixel_stats(images)
    models = {}
    for P in PATCHES:
        torch.manual_seed(0)
        models[P] = train.build_model("vit", train.model_config("vit", {"patch_size": P}))
    batch = train.RECIPE["batch_size"]
    hyper = {k: v for k, v in train.RECIPE.items() if k != "batch_size"}
    timings = {P: {"train": [], "test": []} for P in PATCHES}

    def measure(P, warm=False):
        steps = 3 if warm else args.steps
        result = train.fit(models[P], images, labels, steps=steps, seed=len(timings[P]["train"]), mean=mean, std=std,
                           batch_size=batch, progress=False, **hyper)
        start = time.perf_counter()
        train.evaluate(models[P], test, labels[:len(test)], mean, std)
        if not warm:
            timings[P]["train"].append(steps * batch / result["wall_s"])
            timings[P]["test"].append(len(test) / (time.perf_counter() - start))

    for P in PATCHES:
        measure(P, warm=True)
    for r in range(args.rounds):
        order = PATCHES[r % 3:] + PATCHES[:r % 3]
        for P in order:
            measure(P)

    rows = []
    base = {k: statistics.median(timings[PATCHES[0]][k]) for k in ("train", "test")}
    print(f"{'P':>3} {'tokens':>6}  {'train img/s':>12} {'(min-max)':>15} {'x P=4':>6}  {'infer img/s':>12} "
          f"{'(min-max)':>15} {'x P=4':>6}")
    for P in PATCHES:
        (h, w), prefix = models[P].cfg.grid, models[P].cfg.num_prefix_tokens
        row = {"patch_size": P, "tokens": h * w + prefix}
        for k in ("train", "test"):
            values = timings[P][k]
            row[f"{k}_images_per_s"] = round(statistics.median(values), 1)
            row[f"{k}_range"] = [round(min(values), 1), round(max(values), 1)]
            row[f"{k}_vs_p4"] = round(statistics.median(values) / base[k], 2)
        rows.append(row)
        print(f"{P:3d} {row['tokens']:6d}  {row['train_images_per_s']:12,.0f} {str(row['train_range']):>15} "
              f"{row['train_vs_p4']:6.2f}  {row['test_images_per_s']:12,.0f} {str(row['test_range']):>15} "
              f"{row['test_vs_p4']:6.2f}")
    result = {"description": "Training and inference images per second of the embedded ViT at each patch size, "
                             "timed in turns in one run (median of the rounds)",
              "rows": rows, "model": {k: getattr(models[4].cfg, k) for k in ("embed_dim", "mlp_dim", "depth", "num_heads")},
              "rounds": args.rounds, "steps_per_round": args.steps, "batch_size": batch,
              "test_images_per_round": len(test), "test_batch_size": 250,
              "command": "python benchmarks/patch_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": train.machine(), "date": train.now()}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"# wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
