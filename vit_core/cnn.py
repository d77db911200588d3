"""A small CNN, the ViT's counterpart on the "CNN vs ViT reach" page.

VGG-style stages of 3×3 convolutions (each conv → BatchNorm → ReLU), a 2×2 max-pool between stages,
then global average pooling and one linear head. Its inductive biases are the ones the ViT paper
contrasts with attention (§3.1 "Inductive bias"): every conv sees only a 3×3 neighbourhood, so the
receptive field grows layer by layer, while ViT attention is global from the first block.

The config is plain JSON data (it lives in the model card):

    {"image_size": [28, 28], "in_chans": 1, "num_classes": 10, "widths": [32, 64, 96], "convs_per_stage": 2}

`layer_specs(config)` describes the same layers as (name, kernel, stride, dilation, padding) tuples,
so the theoretical receptive field comes from the same analysis code as for ResNet-50 and VGG-16.
"""

from __future__ import annotations

import torch
from torch import nn

# The embedded model: 204,778 parameters, about as many as the embedded ViT (205,962).
DEFAULT_CONFIG = {"image_size": [28, 28], "in_chans": 1, "num_classes": 10, "widths": [32, 64, 96],
                  "convs_per_stage": 2}


def layer_specs(config: dict) -> list[tuple[str, int, int, int, int]]:
    """Every spatial layer in order as (name, kernel, stride, dilation, padding).

    Names match `SmallCNN.features()`, so a theoretical receptive field and an effective (gradient)
    one can be put side by side per layer. Global average pooling is left out: it sees everything.
    """
    specs = []
    for s in range(1, len(config["widths"]) + 1):
        if s > 1:
            specs.append((f"pool{s - 1}", 2, 2, 1, 0))
        specs += [(f"stage{s}.conv{c}", 3, 1, 1, 1) for c in range(1, config["convs_per_stage"] + 1)]
    return specs


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        # No conv bias: BatchNorm's shift does that job.
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()


class SmallCNN(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        widths, n = config["widths"], config["convs_per_stage"]
        stages, cin = [], config["in_chans"]
        for w in widths:
            stages.append(nn.Sequential(*[ConvBNReLU(cin if i == 0 else w, w) for i in range(n)]))
            cin = w
        self.stages = nn.ModuleList(stages)  # stages.{s}.{c}.conv / .bn: stage s+1, conv c+1
        self.pool = nn.MaxPool2d(2)  # halves the map between stages (28 -> 14 -> 7)
        self.head = nn.Linear(widths[-1], config["num_classes"])

    def features(self, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """(B, C, H, W) -> [(name, feature map (B, C_l, H_l, W_l))] after every conv, in order.

        Differentiable, so d(feature at a location)/d(input) gives the effective receptive field.
        """
        out = []
        for s, stage in enumerate(self.stages, start=1):
            if s > 1:
                x = self.pool(x)
            for c, layer in enumerate(stage, start=1):
                x = layer(x)
                out.append((f"stage{s}.conv{c}", x))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> logits (B, classes)."""
        x = self.features(x)[-1][1]  # (B, C_last, h, w)
        return self.head(x.mean(dim=(2, 3)))  # global average pool -> (B, C_last) -> (B, classes)


def build_cnn(config: dict) -> SmallCNN:
    return SmallCNN(config)
