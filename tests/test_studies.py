"""The claims studies' machinery: resumable training, the stopping rule, fixed position embeddings, the plan."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vit_core import claims, studies, train
from vit_core.i18n import translate
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
    assert claims.window_gain(flat, 100, 100) == 0.0  # best before step 75 = best after: no gain
    assert not studies.should_stop(flat, 40, 100)  # before half-way: never
    assert studies.should_stop(flat, 60, 100)
    assert not studies.should_stop(flat, 100, 100)  # the budget's end is not an early stop
    rising = [{"step": s, "val_accuracy": 0.5 + s / 1000} for s in range(10, 101, 10)]
    assert math.isclose(claims.window_gain(rising, 60, 100), 0.03)  # best at 60 (0.56) - best up to 35 (0.53)
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


def _done(model, size, scale, val):
    return {"job": f"de-{model}-{size}-s0" + (f"-x{scale}" if scale > 1 else ""), "model": model, "train_size": size,
            "seed": 0, "scale": scale, "final_val_accuracy": val}


def test_the_plan_checks_each_budget_by_doubling_then_adds_the_seeds():
    first = studies.plan(runs=[])
    names = [j.name for j in first]
    assert len(names) == len(set(names))
    de = [j for j in first if j.study == "data_efficiency"]
    cells = {(m, n) for m in ("vit", "cnn") for n in (1000, 5000, 20000)}
    assert {(j.model, j.train_size, j.scale) for j in de if j.seed == 0} == {c + (s,) for c in cells for s in (1, 2)} | {
        ("vit", 55000, 2), ("cnn", 55000, 2)}  # seed 0 at 55,000 and 1×: the cards
    assert {(j.model, j.seed, j.scale) for j in de if j.train_size == 55000} == {
        ("vit", 0, 2), ("cnn", 0, 2), ("vit", 1, 1), ("cnn", 1, 1), ("vit", 2, 1), ("cnn", 2, 1)}  # the card's budget again
    assert not [j for j in de if j.train_size < 55000 and j.seed > 0]  # no budget known yet

    # ViT 1,000: doubling gained 0.1 points -> the base budget; CNN 1,000: +1 point, then +0.1 -> 2×
    runs = [_done("vit", 1000, 1, 0.80), _done("vit", 1000, 2, 0.801), _done("cnn", 1000, 1, 0.80),
            _done("cnn", 1000, 2, 0.81)]
    assert claims.chosen_scale("vit", 1000, runs) == 1 and claims.chosen_scale("cnn", 1000, runs) is None
    later = {(j.model, j.train_size, j.seed, j.scale) for j in studies.plan(runs=runs)}
    assert {("vit", 1000, 1, 1), ("vit", 1000, 2, 1), ("cnn", 1000, 0, 4)} <= later
    assert not {s for m, n, s, _ in later if (m, n) == ("cnn", 1000) and s > 0}  # still checking
    runs.append(_done("cnn", 1000, 4, 0.811))
    assert claims.chosen_scale("cnn", 1000, runs) == 2
    assert {("cnn", 1000, 1, 2), ("cnn", 1000, 2, 2)} <= {(j.model, j.train_size, j.seed, j.scale)
                                                          for j in studies.plan(runs=runs)}
    grows = [_done("vit", 5000, s, 0.5 + 0.1 * i) for i, s in enumerate(claims.SCALES)]  # never settles
    assert claims.chosen_scale("vit", 5000, grows) == claims.SCALES[-1]  # the cap

    # 55,000 images: 1× is the card; 2× is the cap there. The ViT gains 0.5 points at 2× -> seed 1 also at 2×;
    # the CNN gains 0.1 -> the card's budget stands
    card = {m: claims.card_run(m)["final_val_accuracy"] for m in claims.MODELS}
    full = [_done("vit", 55000, 2, card["vit"] + 0.005), _done("cnn", 55000, 2, card["cnn"] + 0.001)]
    later = {(j.model, j.seed, j.scale) for j in studies.plan(runs=full) if j.name.startswith("de-") and j.train_size == 55000}
    assert later == {("vit", 0, 2), ("cnn", 0, 2), ("vit", 1, 1), ("cnn", 1, 1), ("vit", 2, 1), ("cnn", 2, 1), ("vit", 1, 2)}
    assert claims.chosen_scale("vit", 55000, [claims.card_run("vit")] + full) == 2
    assert claims.chosen_scale("cnn", 55000, [claims.card_run("cnn")] + full) == 1
    assert claims.chosen_scale("vit", 55000, full) is None  # without the card there is no 1× to compare with

    pos = [(j.pos, j.seed) for j in first if j.study == "position_embeddings"]
    assert sorted(pos) == sorted((k, s) for k in ("learned", "none", "sincos2d") for s in (0, 1))
    assert {j.patch for j in first if j.study == "patch_size"} == {7, 14}
    assert all(j.steps() == round(studies.SHORT_EPOCHS * 55000 / 128) for j in first if j.study != "data_efficiency")
    assert next(j for j in first if j.name == "de-vit-55000-s1").steps() == 12891  # the embedded ViT card's 30 epochs
    assert next(j for j in first if j.name == "de-vit-1000-s0").steps() == studies.MIN_STEPS
    assert next(j for j in first if j.name == "de-vit-1000-s0-x2").steps() == 2 * studies.MIN_STEPS


def test_the_status_counts_the_seeds_whose_budget_is_still_being_checked(tmp_path):
    """The plan holds seeds 1-2 of a (model, size) only once its budget is chosen; the estimate names the rest."""
    runs = [_done("vit", 1000, 1, 0.80), _done("vit", 1000, 2, 0.801),  # settled: seeds in the plan, not here
            _done("vit", 5000, 1, 0.80), _done("vit", 5000, 2, 0.83), _done("vit", 5000, 4, 0.85)]  # checking 8×
    for r in runs:
        r.update(patch_size=4, train_images_per_s=100.0, cpu_time_s=60.0)
    (tmp_path / "data_efficiency.json").write_text(json.dumps({"runs": runs}))
    later = studies.unplanned_seeds(tmp_path)
    by_cell = {(m, n): sorted((j.seed, j.scale) for j in later if (j.model, j.train_size) == (m, n))
               for m in ("vit", "cnn") for n in (1000, 5000, 20000)}
    assert by_cell[("vit", 1000)] == [] and by_cell[("vit", 5000)] == [(1, 8), (2, 8)]
    assert by_cell[("cnn", 20000)] == [(1, 2), (2, 2)]  # nothing run yet: at least the 2× check's budget
    assert not {j.name for j in later} & {j.name for j in studies.plan(runs=runs)}
    vit = next(j for j in later if j.model == "vit" and j.train_size == 5000)
    assert studies._minutes([vit], tmp_path) == pytest.approx(vit.steps() * 128 / 100.0 / 60)


def test_the_status_gives_each_running_job_its_eta_at_its_own_speed():
    assert studies.eta_line({"step": 1500, "wall_s": 600.0}, 6000) == (
        "at step 1500/6000 (25%), ≈ 30 min left at its speed so far")  # 4,500 steps at 2.5 steps a second


def test_a_job_is_claimed_once_and_a_dead_workers_lock_is_taken_over(tmp_path):
    job = studies.plan()[0]
    lock = studies.claim(job, tmp_path)
    assert lock is not None and studies.claim(job, tmp_path) is None  # this process holds it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(dead.stdout.strip())  # a worker that has exited
    assert studies.claim(job, tmp_path) is not None
    assert lock.read_text() == str(os.getpid())


# ----------------------------------------------------------------------------- the results on file

def _results():
    return {s: json.loads(claims.EXPERIMENTS.joinpath(f"{s}.json").read_text(encoding="utf-8")) for s in studies.STUDIES}


def test_the_experiment_files_follow_the_plan_and_their_own_rules():
    jobs = {j.name: j for j in studies.plan()}
    for study, result in _results().items():
        assert set(result["planned"]) <= set(jobs)  # the plan grows as budget checks finish
        assert result["rules"] == studies.rules()
        for r in result["runs"]:
            job = jobs[r["job"]]  # every run is a job of the plan, with that job's settings
            assert (r["model"], r["train_size"], r["seed"], r.get("scale", 1)) == (job.model, job.train_size, job.seed,
                                                                                   job.scale)
            assert r["budget_steps"] == job.steps() and 0 < r["steps"] <= r["budget_steps"]
            assert r["stopped_early"] == (r["steps"] < r["budget_steps"])
            assert job.epochs is None or not r["stopped_early"]  # only the data-efficiency runs stop early
            steps = [h["step"] for h in r["history"]]
            assert steps == sorted(steps) and steps[-1] == r["steps"] and len(steps) <= studies.EVALS + 1
            assert r["final_val_accuracy"] == r["history"][-1]["val_accuracy"]
            gain = claims.window_gain(r["history"], r["steps"], r["budget_steps"])
            assert r["last_window_gain"] == pytest.approx(gain, abs=1e-4) and r["converged"] == (gain < studies.STOP_GAIN)
            assert 0.1 < r["test_accuracy"] <= 1 and r["cpu_time_s"] > 0 and r["machine"]["logical_cpus"] >= 1
            assert r["position_embeddings"] == (job.pos if job.model == "vit" else None)
            assert r["tokens"] == ((28 // job.patch) ** 2 + 1 if job.model == "vit" else None)


def test_a_stored_checkpoint_re_evaluates_to_its_recorded_accuracy():
    runs = {r["job"]: r for result in _results().values() for r in result["runs"]}
    kept = [runs[name] for name in sorted(studies.KEEP) if name in runs]
    assert kept, f"none of {sorted(studies.KEEP)} has finished: run python -m vit_core.studies run"
    data = studies.Data.load()
    jobs = {j.name: j for j in studies.plan()}
    for r in kept:
        model, _ = studies.build(jobs[r["job"]])
        model.load_state_dict(load_file(claims.EXPERIMENTS / "weights" / r["weights"]))
        acc, loss = train.evaluate(model, data.test_images, data.test_labels, data.mean, data.std)
        assert acc == pytest.approx(r["test_accuracy"], abs=1e-4) and loss == pytest.approx(r["test_loss"], abs=1e-3)


@pytest.mark.parametrize("P, D, M", [(4, 64, 128), (7, 64, 128), (14, 64, 128), (16, 768, 3072)])
def test_the_attention_share_is_what_torch_counts_in_a_real_encoder_layer(P, D, M):
    """Step 1's "the speed-up follows T, not T²": torch's own FLOP counter on one real layer of the model."""
    from torch.utils.flop_counter import FlopCounterMode

    size = 224 if P == 16 else 28  # P = 16: ViT-B/16's layer at 224 × 224 (T = 197), the share step 1 quotes
    cfg = ViTConfig(image_size=(size, size), patch_size=P, in_chans=1, embed_dim=D, depth=1, num_heads=4, mlp_dim=M,
                    num_classes=10)
    tokens = cfg.grid[0] * cfg.grid[1] + 1
    with FlopCounterMode(display=False) as counter:
        ViT(cfg).blocks[0](torch.randn(1, tokens, D))
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    assert set(counts) == {"aten.addmm", "aten.bmm"}  # the projections and MLP; q kᵀ and A·v
    assert claims.attention_share(tokens, D, M) == pytest.approx(counts["aten.bmm"] / counter.get_total_flops())
    if P == 16:
        assert claims.VIT_B16_SHAPE == (tokens, D, M)


def test_the_patch_cost_file_is_a_side_by_side_timing_of_the_embedded_vit():
    cost = claims.patch_cost()
    assert cost is not None, "run: python benchmarks/patch_cost.py --out assets/experiments/patch_cost.json"
    assert cost["command"].startswith("python benchmarks/patch_cost.py") and cost["machine"]["torch_threads"] == 1
    vit = train.VIT_DEFAULT
    assert cost["model"] == {"embed_dim": vit.embed_dim, "mlp_dim": vit.mlp_dim, "depth": vit.depth,
                             "num_heads": vit.num_heads}
    rows = cost["rows"]
    assert [r["patch_size"] for r in rows] == [4, 7, 14]  # P = 4 and the study's two other sizes
    assert {r["patch_size"] for r in rows} == {j.patch for j in studies.plan() if j.study == "patch_size"} | {4}
    for r in rows:
        assert r["tokens"] == (28 // r["patch_size"]) ** 2 + 1
        for k in ("train", "test"):
            lo, hi = r[f"{k}_range"]
            assert 0 < lo <= r[f"{k}_images_per_s"] <= hi
            assert r[f"{k}_vs_p4"] == pytest.approx(r[f"{k}_images_per_s"] / rows[0][f"{k}_images_per_s"], abs=0.01)
    for k in ("train", "test"):  # fewer tokens, faster: by far more than the rounds' spread
        assert rows[0][f"{k}_range"][1] < rows[1][f"{k}_range"][0] and rows[1][f"{k}_range"][1] < rows[2][f"{k}_range"][0]


def test_a_job_logs_each_validation_with_its_eta_and_resumes_from_its_checkpoint(tmp_path):
    x, y = tiny_data(256)
    data = studies.Data(x, y, x[:64], y[:64], x[:64], y[:64], mean=0.3, std=0.3)
    job = studies.Job("position_embeddings", "test-pos-sincos2d", "vit", 256, 0, epochs=4, pos="sincos2d")  # 8 steps
    said = []
    record = studies.run_job(job, data, progress=False, work=tmp_path, log=lambda line, **_: said.append(line))
    assert record["steps"] == record["budget_steps"] == 8 and len(record["history"]) == 8  # validated every step
    assert record["position_embeddings"] == "sincos2d" and record["tokens"] == 50 and "weights" not in record
    lines = [s for s in said if "validation" in s]
    assert len(lines) == 8 and lines[-1].startswith("# test-pos-sincos2d: validation ")
    assert "at step 8/8 (100%), ≈ 0 min left" in lines[-1]
    assert (tmp_path / "test-pos-sincos2d.pt").exists()  # run() deletes it once the record is saved
    again = studies.run_job(job, data, progress=False, work=tmp_path, log=lambda line, **_: said.append(line))
    assert "# test-pos-sincos2d: resuming at step 8 of 8" in said
    assert again["test_accuracy"] == record["test_accuracy"]  # nothing left to train: the same model


def test_the_study_code_repeats_the_first_epoch_on_the_embedded_vit_card():
    """Seed 0 at 55,000 images with the card's budget is the embedded ViT: the study's data, split, model and
    schedule repeat the card's first epoch (430 steps, one thread, as the card was trained) to its printed
    digits. So a re-run of a card's budget differs from the card by its seed alone (cnn.de.rule.same_code)."""
    whole = json.loads(claims.CARDS["vit"].read_text(encoding="utf-8"))
    card, first = whole["extra"], whole["extra"]["history"][0]
    data = studies.Data.load()
    job = studies.Job("data_efficiency", "de-vit-55000-s0", "vit", claims.SIZES[-1], 0)
    x, y = data.subset(job.train_size, job.seed)
    model, _ = studies.build(job)
    seen = []

    def on_epoch(step, loss, wall, snapshot):
        acc, val_loss = train.evaluate(model, data.val_images, data.val_labels, data.mean, data.std)
        seen.append((step, round(loss, 4), round(acc, 4), round(val_loss, 4)))
        return True  # one epoch is enough

    threads = torch.get_num_threads()
    torch.set_num_threads(card["machine"]["torch_threads"])
    try:
        train.fit(model, x, y, steps=job.steps(), seed=job.seed, mean=data.mean, std=data.std, on_epoch=on_epoch,
                  every=first["step"], progress=False, **train.RECIPE)
    finally:
        torch.set_num_threads(threads)
    norm = whole["preprocess"]["mean"][0], whole["preprocess"]["std"][0]
    assert (job.steps(), len(x), data.mean, data.std) == (card["steps"], card["train_size"], *norm)
    assert seen == [(first["step"], first["train_loss"], first["val_accuracy"], first["val_loss"])]


@pytest.mark.parametrize("model", [
    "cnn",
    pytest.param("vit", marks=pytest.mark.xfail(strict=True, reason=(
        "found 2026-12-02, issue 13: re-runs of the ViT card's budget scored 91.38% (seed 1) and 90.71% (seed 2) "
        "against the card's 90.66%; seeds 1 and 2 are 0.67 points apart, the widest seed range measured, and seed 1 "
        "is 0.72 from the card, 0.05 more. The code is not the cause (the test above repeats the card's first "
        "epoch). The page says so (cnn.de.rule.card_out). With every seed on file the widest range below 55,000 is "
        "0.42 (ViT, 1,000 images), so this stands. Strict: a re-run or a new seed that changes it makes the test "
        "say so"))),
])
def test_the_rerun_of_each_card_lands_within_the_measured_seed_spread(model):
    """The full-size points must agree with the embedded models' cards: a re-run of a card's budget with another
    seed may differ from the card by no more than two seeds were seen to differ at a smaller size or between
    the re-runs themselves."""
    de = claims.data_efficiency()
    assert de.card_agrees(model) is not False, (de.cards[model], de.reruns[model], de.seed_spread(model))


def test_the_position_and_patch_studies_are_complete_on_file():
    """Every position-embedding variant with two seeds under the one short schedule, and P = 7 and 14 beside
    P = 4 (the learned-embedding runs): the runs the step 1 and step 3 tables are made of."""
    pos = claims.ablation("position_embeddings", "position_embeddings")
    assert not pos.missing and {k: sorted(c.seeds) for k, c in pos.cells.items()} == {
        "learned": [0, 1], "none": [0, 1], "sincos2d": [0, 1]}
    patch = claims.ablation("patch_size", "patch_size")
    assert not patch.missing and sorted(patch.cells) == [4, 7, 14] and all(patch.cells[P].seeds for P in (7, 14))
    assert {r["budget_steps"] for r in pos.runs + patch.runs} == {round(claims.SHORT_EPOCHS * claims.SIZES[-1] / 128)}


def test_every_size_model_and_seed_of_the_data_efficiency_study_is_on_file():
    """Three seeds of each model at every size below the full set and two at it (seed 0 there is the card), each
    at the budget its doubling check chose, and nothing planned left to run: the points, ranges and gaps the CNN
    page draws."""
    de = claims.data_efficiency()
    assert not de.missing, de.missing
    cells = [(m, n) for m in claims.MODELS for n in claims.SIZES]
    assert all(de.chosen[c] in claims.scales(c[1]) for c in cells), de.chosen
    for m, n in cells:
        want = {0, 1} if n == claims.SIZES[-1] else {0, 1, 2}
        assert want <= set(de.cells[m][n].seeds), (m, n, de.cells[m][n].seeds)
    for lang in ("en", "zh"):  # and the page says the plan is done, with no "so far" and no list of jobs left
        rules = claims.de_rules(de, lang)
        done = translate("cnn.de.rule.checked_all", lang, n=len(cells), total=len(cells),
                         early=sum(1 for r in de.runs if r.get("stopped_early")))
        assert done in rules and not any(translate("cnn.de.rule.missing", lang, done=0, planned=0, left="")[:12] in r
                                         for r in rules), rules


def test_the_status_names_every_job_and_only_the_extra_runs_that_exist(capsys):
    studies.status()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [j.name for j in studies.plan()]
    last = lines[-1]
    assert last.startswith(f"# {len(studies.done_jobs())}/{len(studies.plan())} done") and "with two workers" in last
    assert ("still being checked" in last) == bool(studies.unplanned_seeds())
    assert ("if 2× pays" in last) == bool(studies.maybe_full_seeds())
