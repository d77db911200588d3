"""The claims studies' machinery: resumable training, the stopping rule, fixed position embeddings, the plan."""

import math
import os
import subprocess
import sys

import numpy as np
import torch

from vit_core import studies, train
from vit_core.model import ViT, ViTConfig

TINY = ViTConfig(image_size=(28, 28), patch_size=7, in_chans=1, embed_dim=16, depth=1, num_heads=2, mlp_dim=32,
                 num_classes=10)


def tiny_data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), torch.arange(n) % 10


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return ViT(TINY)


def test_a_resumed_run_ends_with_exactly_the_weights_of_an_uninterrupted_one():
    x, y = tiny_data()
    kw = dict(steps=12, seed=3, mean=0.3, std=0.3, batch_size=16, progress=False)
    straight = tiny_model()
    train.fit(straight, x, y, **kw)

    snapshots = []
    interrupted = tiny_model()
    train.fit(interrupted, x, y, every=5, on_epoch=lambda s, loss, w, snap: (snapshots.append(snap()), s == 5)[1], **kw)
    assert snapshots[-1]["step"] == 5  # stopped after 5 of 12 steps, as a crash would
    resumed = tiny_model(seed=99)  # different starting weights: everything must come from the snapshot
    result = train.fit(resumed, x, y, resume=snapshots[-1], **kw)
    assert result["steps"] == 12 and len(result["losses"]) == 7
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_stopping_rule_looks_at_the_last_quarter_of_the_budget():
    flat = [{"step": s, "val_accuracy": 0.80 + (0.05 if s >= 20 else 0)} for s in range(10, 101, 10)]
    assert studies.window_gain(flat, 100, 100) == 0.0  # best before step 75 = best after: no gain
    assert not studies.should_stop(flat, 40, 100)  # before half-way: never
    assert studies.should_stop(flat, 60, 100)
    assert not studies.should_stop(flat, 100, 100)  # the budget's end is not an early stop
    rising = [{"step": s, "val_accuracy": 0.5 + s / 1000} for s in range(10, 101, 10)]
    assert math.isclose(studies.window_gain(rising, 60, 100), 0.03)  # best at 60 (0.56) - best up to 35 (0.53)
    assert not studies.should_stop(rising, 60, 100)


def test_sincos_embeddings_match_the_formula_and_stay_fixed():
    grid, dim = (3, 4), 16
    pe = studies.sincos_2d(grid, dim).numpy()
    freq = 1 / 10000 ** (np.arange(4) / 4)
    for r in range(3):
        for c in range(4):
            expect = np.concatenate([np.sin(r * freq), np.cos(r * freq), np.sin(c * freq), np.cos(c * freq)])
            np.testing.assert_allclose(pe[r * 4 + c], expect, atol=1e-6)
    assert len({tuple(row.round(5)) for row in pe}) == 12  # every position its own code

    cfg = TINY.with_(embed_dim=16, patch_size=7)
    for kind in ("none", "sincos2d"):
        model = tiny_model()
        studies.set_position_embeddings(model, kind)
        before = model.pos_embed.detach().clone()
        assert not model.pos_embed.requires_grad and torch.equal(before[0, 0], torch.zeros(16))  # CLS slot: zeros
        if kind == "sincos2d":
            np.testing.assert_allclose(before[0, 1:].numpy(), studies.sincos_2d(cfg.grid, 16).numpy())
        train.fit(model, *tiny_data(), steps=3, seed=0, mean=0.3, std=0.3, batch_size=16, progress=False)
        assert torch.equal(model.pos_embed, before)  # trained around, never changed


def test_the_plan_covers_every_cell_the_issue_asks_for():
    jobs = studies.plan()
    names = [j.name for j in jobs]
    assert len(names) == len(set(names))
    de = {(j.model, j.train_size, j.seed) for j in jobs if j.study == "data_efficiency"}
    for model in ("vit", "cnn"):
        for size in (1000, 5000, 20000):
            assert {s for m, n, s in de if (m, n) == (model, size)} == {0, 1, 2}
        assert {s for m, n, s in de if (m, n) == (model, 55000)} == {1}  # seed 0 is the embedded model
    pos = [(j.pos, j.seed) for j in jobs if j.study == "position_embeddings"]
    assert sorted(pos) == sorted((k, s) for k in ("learned", "none", "sincos2d") for s in (0, 1))
    assert {j.patch for j in jobs if j.study == "patch_size"} == {7, 14}
    assert all(j.steps() == round(studies.SHORT_EPOCHS * 55000 / 128) for j in jobs if j.study != "data_efficiency")
    embedded_vit = next(j for j in jobs if j.name == "de-vit-55000-s1")
    assert embedded_vit.steps() == 12891  # the embedded ViT card's 30 epochs
    assert next(j for j in jobs if j.name == "de-vit-1000-s0").steps() == studies.MIN_STEPS


def test_a_job_is_claimed_once_and_a_dead_workers_lock_is_taken_over(tmp_path):
    job = studies.plan()[0]
    lock = studies.claim(job, tmp_path)
    assert lock is not None and studies.claim(job, tmp_path) is None  # this process holds it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(dead.stdout.strip())  # a worker that has exited
    assert studies.claim(job, tmp_path) is not None
    assert lock.read_text() == str(os.getpid())
