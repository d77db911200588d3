"""Model cards: what a set of weights needs beside itself to be used correctly.

Preprocessing travels with the weights (vit-explain normalised DeiT with the wrong mean/std because
it did not), and so do the class names, in English and, where we have them, Chinese.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from vit_core.model import ViTConfig

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # original JAX ViT, AugReg
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


@dataclass(frozen=True)
class Preprocess:
    """How any RGB picture becomes the model's input tensor (1, C, H, W)."""

    size: tuple[int, int] = (224, 224)  # (H, W) of the model input
    resize: str = "shorter_crop"  # shorter_crop: scale to cover size/crop_pct, centre-crop (timm eval)
    #                               fit_pad: fit the whole picture inside, pad with the background
    crop_pct: float = 0.875  # shorter_crop only; 1.0 resizes straight to the crop
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: str = "RGB"  # "RGB" or "L" (grayscale)
    invert: str = "never"  # "auto": invert a picture whose border is bright (dark-background datasets)

    def __post_init__(self):
        size = self.size
        object.__setattr__(self, "size", (size, size) if isinstance(size, int) else tuple(size))
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))

    def image(self, img: Image.Image) -> Image.Image:
        """The picture as the model sees it, before normalisation (a PIL image of `size`)."""
        img = img.convert(self.channels)
        if self.invert == "auto" and _border_mean(img) > 127:
            img = ImageOps.invert(img)
        H, W = self.size
        resample = RESAMPLE[self.interpolation]
        if self.resize == "fit_pad":
            img = ImageOps.pad(img, (W, H), method=resample, color=0)
        elif self.resize == "shorter_crop":
            scale = max(H / img.height, W / img.width) / self.crop_pct
            new = (max(W, round(img.width * scale)), max(H, round(img.height * scale)))
            img = img.resize(new, resample)
            left, top = (new[0] - W) // 2, (new[1] - H) // 2
            img = img.crop((left, top, left + W, top + H))
        else:
            raise ValueError(f"unknown resize policy {self.resize!r}")
        return img

    def __call__(self, img: Image.Image) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(self.image(img), dtype=np.float32) / 255.0)
        x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)  # (C, H, W)
        mean, std = torch.tensor(self.mean)[:, None, None], torch.tensor(self.std)[:, None, None]
        return ((x - mean) / std)[None]  # (1, C, H, W)

    def to_display(self, pixels: torch.Tensor) -> np.ndarray:
        """Undo the normalisation of (1, C, H, W) or (C, H, W): an (H, W, 3) float array in [0, 1]."""
        x = pixels[0] if pixels.ndim == 4 else pixels
        x = x.detach().float().cpu() * torch.tensor(self.std)[:, None, None] + torch.tensor(self.mean)[:, None, None]
        x = x.clamp(0, 1).permute(1, 2, 0).numpy()
        return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x


def _border_mean(img: Image.Image) -> float:
    a = np.asarray(img.convert("L"), dtype=np.float32)
    return float(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean())


@dataclass
class ModelCard:
    name: str  # id used by load_model / the app ("fmnist-vit", "deit-tiny", a path, ...)
    arch: str  # "vit" or "cnn"
    config: ViTConfig | dict  # ViTConfig for a ViT; the CNN's own dict for a CNN
    preprocess: Preprocess
    class_names: list[str]
    class_names_zh: list[str] | None = None
    title: str = ""  # a human name, e.g. "DeiT-Ti/16 (ImageNet-1k)"
    source: str = ""  # where the weights came from (path, hub repo, training command)
    layout: str = ""  # the checkpoint layout it was read from (timm, transformers, torchvision, jax)
    extra: dict = field(default_factory=dict)  # training facts: accuracy, seed, wall time, command, ...

    def names(self, lang: str = "en") -> list[str]:
        return self.class_names_zh if lang == "zh" and self.class_names_zh else self.class_names

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["config"] = self.config.to_dict() if isinstance(self.config, ViTConfig) else dict(self.config)
        d["preprocess"] = asdict(self.preprocess)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelCard":
        d = dict(d)
        d["config"] = ViTConfig.from_dict(d["config"]) if d.get("arch", "vit") == "vit" else d["config"]
        d["preprocess"] = Preprocess(**d["preprocess"])
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
