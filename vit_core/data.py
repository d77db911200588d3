"""Fashion-MNIST from the Debian package, read with a small IDX reader.

`sudo apt-get install -y dataset-fashion-mnist` puts the four IDX files (gzipped, the format of
LeCun's MNIST) under /usr/share/datasets/fashion-mnist. Nothing is downloaded: the app and its
training script must work on a machine without network.

IDX layout (big-endian): two zero bytes, one byte for the element type, one byte for the number of
dimensions n, n uint32 sizes, then the elements in row-major order.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "FASHION_MNIST_DIR"  # points the loader at another folder holding the same four files
INSTALL_HINT = "sudo apt-get install -y dataset-fashion-mnist"
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

# Label i of the dataset is CLASSES[i] (Zalando's README order).
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CLASSES_ZH = ["T恤/上衣", "裤子", "套头衫", "连衣裙", "外套",
              "凉鞋", "衬衫", "运动鞋", "包", "短靴"]

# IDX type byte -> numpy dtype (big-endian where it matters).
IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class IDXFormatError(ValueError):
    """The bytes are not a well-formed IDX file."""


class DatasetMissingError(FileNotFoundError):
    """The Fashion-MNIST files are not installed where we look for them."""


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one IDX file into an array of its declared type and shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IDXFormatError(f"{name}: not an IDX file (it must start with two zero bytes)")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise IDXFormatError(f"{name}: unknown IDX element type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(f"{name}: header promises {ndim} dimensions but the file ends early")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise IDXFormatError(f"{name}: shape {shape} of {dtype} needs {expected} bytes of data, "
                             f"found {len(data) - header}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # native byte order, and a writable copy


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped (name ends in .gz) or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return parse_idx(f.read(), name=str(path))


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def dataset_dir(root: str | Path | None = None) -> Path:
    """The folder with the four Fashion-MNIST files: `root`, else $FASHION_MNIST_DIR, else Debian's."""
    folder = Path(root or os.environ.get(ENV_VAR) or DEFAULT_DIR)
    missing = [stem for split in FILES.values() for stem in split if _find(folder, stem) is None]
    if missing:
        raise DatasetMissingError(
            f"Fashion-MNIST is not installed: {folder} lacks {', '.join(m + '.gz' for m in missing)}. "
            f"Install it with `{INSTALL_HINT}` (Debian/Ubuntu), or set {ENV_VAR} to a folder "
            f"holding the four IDX files.")
    return folder


def is_available(root: str | Path | None = None) -> bool:
    try:
        dataset_dir(root)
        return True
    except DatasetMissingError:
        return False


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) uint8, light objects on black, and labels (N,) int64 of one split."""
    folder = dataset_dir(root)
    image_stem, label_stem = FILES[split]
    images, labels = read_idx(_find(folder, image_stem)), read_idx(_find(folder, label_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IDXFormatError(f"{folder}: {split} images {images.shape} do not match labels {labels.shape}")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def stratified_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of `size` examples, an equal share from each class (the first classes take the remainder).

    The same (labels, size, seed) always gives the same indices: a fixed training set per run.
    """
    if size >= len(labels):
        return torch.arange(len(labels))
    gen = torch.Generator().manual_seed(seed)
    classes = labels.unique()
    per_class = [torch.nonzero(labels == c).flatten() for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=gen)] for idx in per_class]
    quota = [size // len(classes) + (i < size % len(classes)) for i in range(len(classes))]
    return torch.cat([idx[:q] for idx, q in zip(per_class, quota)]).sort().values


def split_train_val(labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices): a stratified validation set carved out of the training split."""
    val = stratified_subset(labels, val_size, seed) if val_size else torch.empty(0, dtype=torch.long)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return torch.nonzero(keep).flatten(), val
