"""A ViT-B/16-sized model with random weights, saved as transformers saves a hub model, for load tests.

    .venv/bin/python benchmarks/make_vit_b16.py [--out models/vit-b16-random] [--seed 0]

`ViTForImageClassification(ViTConfig(...))` with B/16's sizes (224², patch 16, D 768, 12 layers,
12 heads, MLP 3072, 1000 classes; 86.6 M parameters), attn_implementation="eager", written with
save_pretrained: the app lists it beside the other local checkpoints and loads it like a downloaded
hub folder. Speed does not depend on the weights, so the classroom benchmark measures a B/16 class
with it (`benchmarks/classroom.py --model models/vit-b16-random`) without a download.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=224, patch_size=16, num_channels=3, hidden_size=768, num_hidden_layers=12,
                    num_attention_heads=12, intermediate_size=3072, num_labels=1000, layer_norm_eps=1e-12,
                    attn_implementation="eager")
    model = ViTForImageClassification(cfg).eval()
    model.save_pretrained(out)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "vit-b16-random")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(make(a.out, a.seed))
