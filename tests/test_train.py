"""The training script, the IDX reader and the small CNN, on tiny data written by the tests themselves."""

import gzip
import json
import shlex
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from vit_core import train
from vit_core.analysis import receptive_field
from vit_core.card import ModelCard
from vit_core.cnn import build_cnn, layer_specs
from vit_core.data import (CLASSES, CLASSES_ZH, DatasetMissingError, IDXFormatError, INSTALL_HINT, dataset_dir,
                           load_fashion_mnist, read_idx, split_train_val, stratified_subset)
from vit_core.model import ViT, ViTConfig, count_parameters

TINY_VIT = {"embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32}
TINY_CNN = {"widths": [8, 16], "convs_per_stage": 1}


def write_idx(path, array: np.ndarray, type_code: int = 0x08):
    """An IDX file written from the format's definition (not with the reader's code)."""
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    data = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(dtype).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def synthetic_fashion(folder, n_train=400, n_test=100, seed=0):
    """Fashion-MNIST-shaped files whose class is the brightness of a central square: easy to learn, and
    unchanged by a small random crop or a flip."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in [("train", n_train), ("t10k", n_test)]:
        labels = np.arange(n) % 10
        images = rng.integers(0, 30, size=(n, 28, 28))
        images[:, 7:21, 7:21] += 40 + 20 * labels[:, None, None]
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images.clip(0, 255))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


# ----------------------------------------------------------------------------- IDX reader

@pytest.mark.parametrize("name", ["images.gz", "images"])
def test_idx_reader_reads_what_the_format_says(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 5, 4)).astype(np.uint8)
    write_idx(tmp_path / name, images)
    out = read_idx(tmp_path / name)
    assert out.dtype == np.uint8 and out.shape == (3, 5, 4)
    np.testing.assert_array_equal(out, images)


def test_idx_reader_reads_big_endian_int32_and_float32(tmp_path):
    ints, floats = np.array([1, -2, 70000]), np.array([[0.5, -1.25]], dtype=np.float32)
    write_idx(tmp_path / "i", ints, 0x0C)
    write_idx(tmp_path / "f", floats, 0x0D)
    np.testing.assert_array_equal(read_idx(tmp_path / "i"), ints)  # 70000 needs all four bytes in order
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), floats)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-1], "needs 60 bytes of data, found 59"),  # truncated
    (lambda b: b + b"\0", "found 61"),  # trailing garbage
    (lambda b: b"\1" + b[1:], "not an IDX file"),  # bad magic
    (lambda b: b[:2] + b"\x42" + b[3:], "unknown IDX element type 0x42"),
    (lambda b: b[:6], "file ends early"),  # header cut inside the sizes
])
def test_idx_reader_rejects_malformed_files_by_name(tmp_path, damage, message):
    write_idx(tmp_path / "ok", np.zeros((3, 5, 4), dtype=np.uint8))
    bad = tmp_path / "bad-images-idx3-ubyte"
    bad.write_bytes(damage((tmp_path / "ok").read_bytes()))
    with pytest.raises(IDXFormatError, match=message) as err:
        read_idx(bad)
    assert str(bad) in str(err.value)


def test_missing_dataset_error_names_the_package_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    empty = tmp_path / "nowhere"
    with pytest.raises(DatasetMissingError) as err:
        load_fashion_mnist("train", empty)
    msg = str(err.value)
    assert "sudo apt-get install -y dataset-fashion-mnist" in msg and INSTALL_HINT in msg
    assert str(empty) in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert isinstance(err.value, FileNotFoundError)  # callers that catch the builtin still work


def test_loader_follows_the_environment_variable(tmp_path, monkeypatch):
    synthetic_fashion(tmp_path, n_train=20, n_test=10)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    assert dataset_dir() == tmp_path
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.tolist() == [i % 10 for i in range(10)]


def test_class_names_cover_ten_classes_in_both_languages():
    assert len(CLASSES) == len(CLASSES_ZH) == len(set(CLASSES_ZH)) == 10
    assert CLASSES[9] == "Ankle boot" and CLASSES_ZH[9] == "短靴"


# ----------------------------------------------------------------------------- subsets and batches

def test_stratified_subset_is_balanced_fixed_and_sorted():
    labels = torch.arange(1000) % 10
    idx = stratified_subset(labels, 95, seed=3)
    assert len(idx) == len(set(idx.tolist())) == 95 and bool((idx[1:] > idx[:-1]).all())
    assert labels[idx].bincount().tolist() == [10] * 5 + [9] * 5
    assert torch.equal(idx, stratified_subset(labels, 95, seed=3))
    assert not torch.equal(idx, stratified_subset(labels, 95, seed=4))


def test_validation_split_is_disjoint_and_complete():
    labels = torch.arange(200) % 10
    tr, va = split_train_val(labels, 50, seed=0)
    assert len(va) == 50 and len(tr) == 150
    assert sorted(tr.tolist() + va.tolist()) == list(range(200))


def test_batches_visit_every_example_equally_across_pass_boundaries():
    gen = torch.Generator().manual_seed(0)
    batches = list(train.batch_indices(10, 4, 5, gen))  # 20 indices = exactly two passes over 10
    assert all(len(b) == 4 for b in batches)
    assert torch.cat(batches).bincount().tolist() == [2] * 10


def test_augment_crops_a_window_of_the_padded_image_and_flips():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (64, 28, 28), dtype=torch.uint8)  # no zeros: padding is visible
    out = train.augment(images, gen, pad=2, hflip=True)
    padded = F.pad(images, (2, 2, 2, 2))
    for img, src in zip(out, padded):
        windows = [src[dy:dy + 28, dx:dx + 28] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(img, w) or torch.equal(img, w.flip(-1)) for w in windows)
    flipped = [any(torch.equal(o, padded[i][dy:dy + 28, dx:dx + 28].flip(-1)) for dy in range(5) for dx in range(5))
               for i, o in enumerate(out)]
    assert 10 < sum(flipped) < 54  # about half are flipped
    assert torch.equal(train.augment(images, gen, pad=0, hflip=False), images)


def test_learning_rate_warms_up_then_decays_to_zero():
    lrs = [train.lr_at(s, 100, 10, 1e-3) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3) == max(lrs)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 1e-6


# ----------------------------------------------------------------------------- the small CNN

def test_cnn_layers_features_and_receptive_field_agree():
    config = {"image_size": [28, 28], "in_chans": 1, "num_classes": 10, "widths": [32, 64, 96], "convs_per_stage": 2}
    model = build_cnn(config).eval()
    feats = model.features(torch.zeros(2, 1, 28, 28))
    specs = layer_specs(config)
    assert [n for n, *_ in specs if "conv" in n] == [n for n, _ in feats]
    assert [f.shape[-1] for _, f in feats] == [28, 28, 14, 14, 7, 7]
    assert [f.shape[1] for _, f in feats] == [32, 32, 64, 64, 96, 96]
    # By hand: 3×3 convs add 2·jump, a 2×2/2 pool adds 1·jump and doubles the jump.
    rf = {r.name: r.rf for r in receptive_field(specs)}
    assert rf == {"stage1.conv1": 3, "stage1.conv2": 5, "pool1": 6, "stage2.conv1": 10, "stage2.conv2": 14,
                  "pool2": 16, "stage3.conv1": 24, "stage3.conv2": 32}
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert count_parameters(model) == 204_778


def test_cnn_features_are_differentiable_for_the_effective_receptive_field():
    model = build_cnn({"image_size": [28, 28], "in_chans": 1, "num_classes": 10, **TINY_CNN}).eval()
    x = torch.randn(1, 1, 28, 28, requires_grad=True)
    name, fmap = model.features(x)[0]
    fmap[0, :, 14, 14].sum().backward()
    reach = (x.grad[0, 0].abs() > 0).nonzero()
    assert name == "stage1.conv1" and reach.min(0).values.tolist() == [13, 13] and reach.max(0).values.tolist() == [15, 15]


# ----------------------------------------------------------------------------- the CLI end to end

def run_cli(tmp_path, model, config, seed=0, name=None, lr="3e-3"):
    data = synthetic_fashion(tmp_path / "data")
    argv = ["--model", model, "--config", json.dumps(config), "--epochs", "3", "--batch-size", "32", "--lr", lr,
            "--val", "50", "--seed", str(seed), "--data-dir", str(data), "--out", str(tmp_path / "out"),
            "--photo-check", "20", "--threads", "1", "--no-progress"] + (["--name", name] if name else [])
    card = train.main(argv)
    return card, argv, data


def training_loss(model, images, labels, mean, std):
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(train.to_input(images, mean, std)), labels).item()


@pytest.mark.parametrize("arch, config, lr", [("vit", TINY_VIT, "3e-3"), ("cnn", TINY_CNN, "1e-2")])
def test_cli_trains_saves_a_loadable_card_and_lowers_the_loss(tmp_path, arch, config, lr):
    card, argv, data = run_cli(tmp_path, arch, config, lr=lr)
    out = tmp_path / "out"
    saved = ModelCard.load(out / f"fmnist-{arch}.json")
    assert saved.to_dict() == card.to_dict()
    model = ViT(saved.config) if arch == "vit" else build_cnn(saved.config)
    model.load_state_dict(load_file(out / f"fmnist-{arch}.safetensors"), strict=True)

    # Oracle: the loss on the training images, trained weights against the same seed's initial weights.
    images, labels = load_fashion_mnist("train", data)
    torch.manual_seed(0)
    initial = train.build_model(arch, saved.config)
    mean, std = saved.preprocess.mean[0], saved.preprocess.std[0]
    assert training_loss(model, images, labels, mean, std) < 0.9 * training_loss(initial, images, labels, mean, std)

    extra = saved.extra
    assert shlex.split(extra["command"]) == ["python", "-m", "vit_core.train", *argv]  # pastes back into a shell
    assert saved.source.endswith(extra["command"]) and extra["seed"] == 0
    assert extra["train_size"] == 350 and extra["val_size"] == 50 and extra["steps"] == 33
    assert extra["parameters"] == count_parameters(model)
    assert len(extra["history"]) == 3 and 0 <= extra["test_accuracy"] <= 1
    assert extra["machine"]["torch"] == torch.__version__ and extra["wall_time_s"] > 0
    assert saved.class_names == CLASSES and saved.class_names_zh == CLASSES_ZH
    assert saved.preprocess.channels == "L" and saved.preprocess.size == (28, 28)
    log = (out / "logs" / f"fmnist-{arch}.log").read_text(encoding="utf-8")
    assert extra["command"] in log and "test accuracy" in log


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(tmp_path):
    runs = [load_file(tmp_path / "out" / f"run{i}.safetensors") for i, s in enumerate([0, 0, 1])
            if run_cli(tmp_path, "cnn", TINY_CNN, seed=s, name=f"run{i}")]
    same = [all(torch.equal(a[k], b[k]) for k in a) for a, b in [(runs[0], runs[1]), (runs[0], runs[2])]]
    assert same == [True, False]


def test_vit_default_has_a_seven_by_seven_grid_of_sixteen_numbers():
    cfg = train.model_config("vit")
    assert isinstance(cfg, ViTConfig) and cfg.grid == (7, 7) and cfg.patch_size ** 2 * cfg.in_chans == 16


