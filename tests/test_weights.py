"""Checkpoint readers: layouts, round trips, config from shapes, cards, clear errors, safe loading.

Layout oracles that do not go through our converters: a torchvision-named module tree built from
torch's own nn.MultiheadAttention, and a forward pass written with flax's conventions (kernels are
(in, out), q/k/v kernels (D, heads, hd), the out kernel (heads, hd, D)) over the JAX names.
"""

import json
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vit_core import ViT, ViTConfig
from vit_core.card import IMAGENET_MEAN, INCEPTION_MEAN, ModelCard, Preprocess
from vit_core.weights import (CheckpointError, export_checkpoint, fuse_qkv, imagenet_classes, infer_config,
                              load_checkpoint, read_weights, save_checkpoint, split_qkv, to_layout, CONVERTERS)

CFG = ViTConfig(image_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_dim=128, num_classes=5)


def model(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    m = ViT(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so every tensor matters
        for name, p in m.named_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def card_for(m, layout="timm"):
    return ModelCard(name="tiny", arch="vit", config=m.cfg, preprocess=Preprocess(size=m.cfg.image_size),
                     class_names=[f"c{i}" for i in range(m.cfg.num_classes)], layout=layout)


def same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


# --- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["timm", "transformers", "torchvision", "jax"])
@pytest.mark.parametrize("distilled", [False, True])
def test_to_layout_then_back_is_exact(layout, distilled):
    if distilled and layout in ("torchvision", "jax"):
        pytest.skip("torchvision and JAX ViTs have no distillation token")
    m = model(CFG.with_(distilled=distilled))
    sd = m.state_dict()
    foreign = to_layout(sd, m.cfg, layout)
    if layout == "jax":
        foreign = {k: torch.from_numpy(v) for k, v in foreign.items()}
    back, left = CONVERTERS[layout](foreign)
    assert left == []
    same_state(back, sd)


def test_file_chain_timm_transformers_torchvision_jax_timm(tmp_path):
    m = model()
    path = export_checkpoint(m, card_for(m), tmp_path / "a.safetensors", "timm")
    for layout, name in [("transformers", "b"), ("torchvision", "c.safetensors"), ("jax", "d.npz"), ("timm", "e.pth")]:
        loaded, card = load_checkpoint(path, num_heads=4)
        assert loaded.cfg == m.cfg
        path = export_checkpoint(loaded, card, tmp_path / name, layout)
    final, card = load_checkpoint(path, num_heads=4)
    assert card.layout == "timm"
    same_state(final.state_dict(), m.state_dict())


def test_split_and_fuse_qkv_are_inverse():
    sd = model().state_dict()
    split = split_qkv(sd)
    assert "blocks.0.attn.q.weight" in split and "blocks.0.attn.qkv.weight" not in split
    assert split["blocks.1.attn.v.bias"].shape == (64,)
    same_state(fuse_qkv(split), sd)


# --- layout oracles -------------------------------------------------------------------------

class TorchvisionBlock(nn.Module):  # torchvision.models.vision_transformer.EncoderBlock's names and maths
    def __init__(self, D, heads, mlp):
        super().__init__()
        self.ln_1 = nn.LayerNorm(D, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(D, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(D, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(D, mlp), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp, D), nn.Dropout(0.0))

    def forward(self, x):
        y = self.ln_1(x)
        y, attn = self.self_attention(y, y, y, need_weights=True, average_attn_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x)), attn


class TorchvisionViT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D = cfg.embed_dim
        self.conv_proj = nn.Conv2d(3, D, cfg.patch_size, cfg.patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, D))
        self.encoder = nn.Module()
        self.encoder.pos_embedding = nn.Parameter(torch.zeros(1, 1 + cfg.grid[0] * cfg.grid[1], D))
        self.encoder.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", TorchvisionBlock(D, cfg.num_heads, cfg.mlp_dim)) for i in range(cfg.depth)))
        self.encoder.ln = nn.LayerNorm(D, eps=1e-6)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(D, cfg.num_classes)))

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(len(x), -1, -1), x], 1) + self.encoder.pos_embedding
        attns = []
        for block in self.encoder.layers:
            x, a = block(x)
            attns.append(a)
        return self.heads(self.encoder.ln(x)[:, 0]), attns


def test_torchvision_export_fits_torchvisions_module_tree():
    m = model()
    tv = TorchvisionViT(m.cfg).eval()
    tv.load_state_dict(to_layout(m.state_dict(), m.cfg, "torchvision"), strict=True)  # names and shapes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, attns = tv(x)
    t = m.trace(x)
    torch.testing.assert_close(t.logits, logits, atol=1e-4, rtol=0)
    for a, b in zip(t.attentions, attns):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def jax_forward(p, x):
    """ViT forward over JAX names with flax semantics (NHWC, y = x @ kernel), float64."""
    p = {k: torch.from_numpy(v).double() for k, v in p.items()}

    def ln(z, name):
        return torch.nn.functional.layer_norm(z, z.shape[-1:], p[name + "/scale"], p[name + "/bias"], 1e-6)

    x = x.double().permute(0, 2, 3, 1)  # NHWC
    k = p["embedding/kernel"]  # (P, P, C, D)
    P, B, H, W, C = k.shape[0], *x.shape
    patches = x.reshape(B, H // P, P, W // P, P, C).permute(0, 1, 3, 2, 4, 5).reshape(B, -1, P, P, C)
    z = torch.einsum("bnijc,ijcd->bnd", patches, k) + p["embedding/bias"]
    z = torch.cat([p["cls"].expand(B, -1, -1), z], 1) + p["Transformer/posembed_input/pos_embedding"]
    attns, i = [], 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in p:
        blk = f"Transformer/encoderblock_{i}/"
        att = blk + "MultiHeadDotProductAttention_1/"
        y = ln(z, blk + "LayerNorm_0")
        q, kk, v = (torch.einsum("btd,dhk->bthk", y, p[att + n + "/kernel"]) + p[att + n + "/bias"]
                    for n in ("query", "key", "value"))
        a = (torch.einsum("bqhk,bshk->bhqs", q, kk) / q.shape[-1] ** 0.5).softmax(-1)
        z = z + torch.einsum("bhqs,bshk,hkd->bqd", a, v, p[att + "out/kernel"]) + p[att + "out/bias"]
        y = ln(z, blk + "LayerNorm_2")
        y = torch.nn.functional.gelu(y @ p[blk + "MlpBlock_3/Dense_0/kernel"] + p[blk + "MlpBlock_3/Dense_0/bias"])
        z = z + y @ p[blk + "MlpBlock_3/Dense_1/kernel"] + p[blk + "MlpBlock_3/Dense_1/bias"]
        attns.append(a)
        i += 1
    z = ln(z, "Transformer/encoder_norm")
    return z[:, 0] @ p["head/kernel"] + p["head/bias"], attns


def test_jax_export_runs_under_flax_conventions():
    m = model(CFG.with_(image_size=(32, 48)))
    x = torch.randn(2, 3, 32, 48)
    logits, attns = jax_forward(to_layout(m.state_dict(), m.cfg, "jax"), x)
    t = m.trace(x)
    torch.testing.assert_close(t.logits.double(), logits, atol=1e-4, rtol=0)
    for a, b in zip(t.attentions, attns):
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=0)


def test_jax_npz_card_and_heads_from_the_kernel(tmp_path):
    m = model()
    np.savez(tmp_path / "ViT-Ti_16.npz", **to_layout(m.state_dict(), m.cfg, "jax"))
    loaded, card = load_checkpoint(tmp_path / "ViT-Ti_16.npz")  # no num_heads given: (D, heads, hd) says 4
    assert loaded.cfg == m.cfg and card.layout == "jax"
    assert card.preprocess.mean == INCEPTION_MEAN and card.preprocess.interpolation == "bilinear"
    np.savez(tmp_path / "Ti_16-i21k-300ep--imagenet2012-res_224.npz", **to_layout(m.state_dict(), m.cfg, "jax"))
    assert load_checkpoint(tmp_path / "Ti_16-i21k-300ep--imagenet2012-res_224.npz")[1].preprocess.crop_pct == 0.9


def test_jax_pre_logits_is_refused_clearly(tmp_path):
    m = model()
    arrays = to_layout(m.state_dict(), m.cfg, "jax")
    arrays |= {"pre_logits/kernel": np.zeros((64, 64), np.float32), "pre_logits/bias": np.zeros(64, np.float32)}
    np.savez(tmp_path / "in21k.npz", **arrays)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "in21k.npz")
    assert e.value.key == "checkpoint.pre_logits" and "fine-tuned" in str(e.value)


# --- timm, transformers bare files, prefixes ------------------------------------------------

def test_timm_state_dict_loads_strict_with_prefixes_and_wrappers(tmp_path):
    m = model()
    sd = m.state_dict()
    save_file(sd, tmp_path / "plain.safetensors")
    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, tmp_path / "ddp.pth")
    save_file({"model." + k: v.contiguous() for k, v in sd.items()}, tmp_path / "wrapped.safetensors")
    for name in ("plain.safetensors", "ddp.pth", "wrapped.safetensors"):
        loaded, card = load_checkpoint(tmp_path / name, num_heads=4)
        assert card.layout == "timm" and card.source.endswith(name)
        same_state(loaded.state_dict(), sd)


def test_timm_hub_directory_reads_pretrained_cfg(tmp_path):
    m = model(CFG.with_(embed_dim=192, num_heads=3, mlp_dim=384))
    (tmp_path / "hub").mkdir()
    save_file(m.state_dict(), tmp_path / "hub" / "model.safetensors")
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 5, "global_pool": "token",
              "label_names": ["a", "b", "c", "d", "e"],
              "pretrained_cfg": {"input_size": [3, 32, 32], "interpolation": "bicubic", "crop_pct": 0.9,
                                 "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 5}}
    (tmp_path / "hub" / "config.json").write_text(json.dumps(config))
    loaded, card = load_checkpoint(tmp_path / "hub")
    assert card.config.num_heads == 3  # from the width table: 192 -> 3
    assert card.preprocess.crop_pct == 0.9 and card.preprocess.mean == (0.5, 0.5, 0.5)
    assert card.class_names == ["a", "b", "c", "d", "e"] and card.layout == "timm"


def test_bare_transformers_state_dicts_old_and_new_names(tmp_path):
    from transformers import ViTConfig as HFViTConfig, ViTForImageClassification, ViTModel
    hf_cfg = HFViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                         image_size=32, patch_size=8, num_labels=5, attn_implementation="eager")
    hf = ViTForImageClassification(hf_cfg).eval()
    torch.save(hf.state_dict(), tmp_path / "v5_names.bin")  # transformers 5 in-memory names
    hf.save_pretrained(tmp_path / "dir")  # files keep the classic names
    a, card = load_checkpoint(tmp_path / "v5_names.bin", num_heads=4)
    b, _ = load_checkpoint(tmp_path / "dir" / "model.safetensors", num_heads=4)
    assert card.layout == "transformers" and card.config.layer_norm_eps == 1e-12  # transformers' default
    same_state(a.state_dict(), b.state_dict())
    # ViTModel: no prefix, no head, a pooler that no classifier uses -> a features-only ViT
    base = ViTModel(hf_cfg).eval()
    save_file(base.state_dict(), tmp_path / "base.safetensors")
    feat, card = load_checkpoint(tmp_path / "base.safetensors", num_heads=4)
    assert card.config.num_classes == 0 and card.class_names == []
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(feat.trace(x).logits, base(x).last_hidden_state[:, 0], atol=1e-4, rtol=0)


def test_sharded_transformers_directory(tmp_path):
    from transformers import ViTConfig as HFViTConfig, ViTForImageClassification
    hf = ViTForImageClassification(HFViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                               intermediate_size=128, image_size=32, patch_size=8, num_labels=5))
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    _, card = load_checkpoint(tmp_path / "sharded")
    assert card.config.depth == 2


# --- config from shapes ---------------------------------------------------------------------

@pytest.mark.parametrize("width, heads", [(192, 3), (384, 6), (768, 12), (1024, 16), (1280, 16), (320, 5)])
def test_heads_from_the_width_table_else_head_dim_64(width, heads):
    with torch.device("meta"):
        m = ViT(ViTConfig(image_size=32, patch_size=8, embed_dim=width, depth=1, num_heads=1, mlp_dim=8))
    assert infer_config(m.state_dict()).num_heads == heads


def test_config_from_shapes():
    cfg = ViTConfig(image_size=48, patch_size=16, in_chans=1, embed_dim=64, depth=3, num_heads=1, mlp_dim=96,
                    num_classes=0, distilled=True)
    with torch.device("meta"):
        sd = ViT(cfg).state_dict()
    assert infer_config(sd) == cfg
    no_bias = {k: v for k, v in sd.items() if not k.endswith("attn.qkv.bias")}
    assert infer_config(no_bias) == cfg.with_(qkv_bias=False)
    with pytest.raises(CheckpointError) as e:  # 3×5 patches cannot be told from 15 positions
        infer_config(ViT(cfg.with_(image_size=(48, 80))).state_dict())
    assert e.value.key == "checkpoint.grid"
    assert infer_config(ViT(cfg.with_(image_size=(48, 80))).state_dict(), image_size=(48, 80)).grid == (3, 5)


def test_a_checkpoint_without_qkv_bias_loads(tmp_path):
    sd = {k: v for k, v in model().state_dict().items() if not k.endswith("attn.qkv.bias")}
    save_file(sd, tmp_path / "nobias.safetensors")
    loaded, card = load_checkpoint(tmp_path / "nobias.safetensors", num_heads=4)
    assert card.config.qkv_bias is False
    same_state(loaded.state_dict(), sd)


# --- errors ---------------------------------------------------------------------------------

def test_partial_and_wrong_files_give_one_error_naming_keys(tmp_path):
    sd = model().state_dict()
    broken = {k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.weight"}
    broken["blocks.1.extra.weight"] = torch.zeros(3)
    save_file(broken, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "broken.safetensors", num_heads=4)
    err = e.value
    assert err.key == "checkpoint.missing_keys"
    assert err.missing == ["blocks.1.mlp.fc2.weight"] and err.unexpected == ["blocks.1.extra.weight"]
    assert "blocks.1.mlp.fc2.weight" in str(err) and "blocks.1.extra.weight" in str(err)

    wrong = dict(sd, **{"blocks.0.norm2.weight": torch.ones(65)})
    save_file(wrong, tmp_path / "wrong.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "wrong.safetensors", num_heads=4)
    assert e.value.key == "checkpoint.shape_mismatch" and "blocks.0.norm2.weight (65,)" in str(e.value)

    # foreign names no table knows are reported as the file spells them
    tv = to_layout(sd, CFG, "torchvision") | {"encoder.layers.encoder_layer_0.ls1.gamma": torch.ones(64)}
    save_file(tv, tmp_path / "tv.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "tv.safetensors", num_heads=4)
    assert e.value.unexpected == ["encoder.layers.encoder_layer_0.ls1.gamma"]

    save_file({"conv1.weight": torch.zeros(1)}, tmp_path / "resnet.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "resnet.safetensors")
    assert e.value.key == "checkpoint.unknown_layout"


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "raw pickle", "npz object array"])
def test_a_malicious_pickle_does_not_run(tmp_path, how):
    marker = tmp_path / "pwned"
    if how == "torch.save":
        path = tmp_path / "evil.pth"
        torch.save({"patch_embed.proj.weight": torch.zeros(1), "payload": Evil(marker)}, path)
    elif how == "raw pickle":
        path = tmp_path / "evil.bin"
        path.write_bytes(pickle.dumps({"payload": Evil(marker)}, protocol=2))
    else:
        path = tmp_path / "evil.npz"
        np.savez(path, payload=np.array([Evil(marker)], dtype=object))
    with pytest.raises(CheckpointError) as e:
        read_weights(path)
    assert e.value.key == "checkpoint.unsafe_pickle"
    assert not marker.exists()
    pickle.loads(pickle.dumps(Evil(marker)))  # the oracle: the payload really does run when trusted
    assert marker.exists()


# --- cards ----------------------------------------------------------------------------------

def test_our_pair_reads_back_exactly(tmp_path):
    m = model()
    card = card_for(m)
    card.class_names_zh = [f"类{i}" for i in range(5)]
    card.extra = {"test_accuracy": 0.91, "seed": 0}
    weights, card_path = save_checkpoint(m, card, tmp_path / "sub" / "tiny")
    assert weights.name == "tiny.safetensors" and card_path.name == "tiny.json"
    for path in (weights, card_path, tmp_path / "sub"):
        loaded, card2 = load_checkpoint(path)
        assert card2 == card
        same_state(loaded.state_dict(), m.state_dict())


def test_cnn_pair(tmp_path):
    cnn = pytest.importorskip("vit_core.cnn")
    config = dict(cnn.DEFAULT_CONFIG)
    net = cnn.build_cnn(config).eval()
    card = ModelCard(name="c", arch="cnn", config=config, preprocess=Preprocess(size=28, channels="L"),
                     class_names=[str(i) for i in range(10)])
    save_checkpoint(net, card, tmp_path / "c")
    loaded, card2 = load_checkpoint(tmp_path / "c.safetensors")
    assert card2 == card and type(loaded) is type(net)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), net(x))


def test_imagenet_class_names():
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[1] == "goldfish" and names[999] == "toilet tissue"
    assert names[207] == "golden retriever" and names[281] == "tabby"


def test_class_names_and_preprocess_defaults(tmp_path):
    m = model(CFG.with_(num_classes=1000))
    save_file(m.state_dict(), tmp_path / "in1k.safetensors")
    _, card = load_checkpoint(tmp_path / "in1k.safetensors", num_heads=4)
    assert card.class_names[:2] == ["tench", "goldfish"]  # 1000 classes, no names in the file
    assert card.preprocess.interpolation == "bicubic" and card.preprocess.mean == IMAGENET_MEAN  # timm / DeiT
    assert card.preprocess.crop_pct == 0.875
    save_file(to_layout(m.state_dict(), m.cfg, "torchvision"), tmp_path / "tv.safetensors")
    _, card = load_checkpoint(tmp_path / "tv.safetensors", num_heads=4)
    assert card.preprocess.interpolation == "bilinear" and card.preprocess.crop_pct == 224 / 256
    m5 = model()
    names = ["tench, Tinca tinca"] + [f"x{i}" for i in range(4)]
    card5 = card_for(m5)
    card5.class_names = names
    export_checkpoint(m5, card5, tmp_path / "tf", "transformers")
    _, card = load_checkpoint(tmp_path / "tf")
    assert card.class_names == names  # id2label with real names is kept as it is


def test_a_transformers_config_that_disagrees_with_its_weights(tmp_path):
    m = model()
    export_checkpoint(m, card_for(m), tmp_path / "tf", "transformers")
    config_path = tmp_path / "tf" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(config | {"num_hidden_layers": 3}))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "tf")
    assert e.value.key == "checkpoint.missing_keys" and "blocks.2.attn.qkv.weight" in e.value.missing
    config_path.write_text(json.dumps(config | {"hidden_act": "gelu_new"}))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "tf")
    assert e.value.key == "checkpoint.unsupported" and "gelu_new" in str(e.value)


def test_imagenet_checkpoints_get_chinese_class_names():
    from vit_core.weights import class_names, class_names_zh

    names = class_names(1000, {str(i): f"LABEL_{i}" for i in range(1000)})
    zh = class_names_zh(names)
    assert len(zh) == 1000 and zh[1] == "金鱼" and zh[504] == "咖啡杯"
    assert class_names_zh(["a", "b"]) is None
