"""Checkpoint readers: every layout becomes timm's names, then one strict load.

    load_checkpoint(path) -> (model, ModelCard)      a file or a directory of any layout below
    save_checkpoint(model, card, "assets/models/x")  our own pair: x.safetensors (timm names) + x.json (card)
    export_checkpoint(model, card, path, layout)     write the same weights as another layout would

Layouts (the card's `layout` says which reader was used):
    timm          state dict / safetensors with timm's names (also behind `model.` / `module.`); timm hub
                  directories: model.safetensors + config.json with `pretrained_cfg`
    transformers  ViTForImageClassification (`vit.*`, `classifier`), ViTModel (no prefix, no head),
                  DeiTForImageClassification(WithTeacher) (`deit.*`, `cls_classifier`, `distillation_classifier`);
                  a directory with config.json (+ preprocessor_config.json) or a bare state dict
    torchvision   `vit_*` state dicts (`class_token`, `conv_proj`, `encoder.layers.encoder_layer_{i}`, `heads.head`)
    jax           the original google-research/vision_transformer and AugReg `.npz` files

Each foreign layout is a rename table kept as data, plus small named helpers for the tensors that
change shape (`fuse_qkv`, `split_qkv`, `jax_kernel_to_linear`, ...). Tables run both ways, so every
layout can also be written (`to_layout`), which is how the tests prove the round trips.

Numeric traps, written down where they bite:
- LayerNorm eps is 1e-6 in timm, torchvision and JAX, but transformers' default is 1e-12 (its ViT
  checkpoints on the hub say 1e-12 in config.json even when converted from timm/JAX). A bare
  transformers state dict carries no config, so it gets 1e-12; a directory gets what its config says.
- GELU: the JAX code uses flax's `nn.gelu`, whose default is the tanh approximation; every PyTorch
  port (timm, transformers, torchvision, this model) runs the exact erf GELU on those weights. The
  logits move by about 1e-3 relative, far below anything a learner can see, so we do the same.

Only safe readers are used: safetensors, `np.load(allow_pickle=False)`, `torch.load(weights_only=True)`.
A pickle that asks to run code is refused with a CheckpointError before anything in it runs.
"""

from vit_core.weights.export import (export_checkpoint, save_checkpoint, save_weights, transformers_config,
                                     transformers_preprocessor)
from vit_core.weights.layouts import *  # noqa: F401,F403 - the tables, helpers and converters
from vit_core.weights.layouts import CheckpointError
from vit_core.weights.loading import *  # noqa: F401,F403 - readers, inference, class names, preprocessing
from vit_core.weights.loading import ROOT, WEIGHT_SUFFIXES, load_checkpoint

__all__ = ["CheckpointError", "ROOT", "WEIGHT_SUFFIXES", "export_checkpoint", "load_checkpoint", "save_checkpoint",
           "save_weights", "transformers_config", "transformers_preprocessor"]
