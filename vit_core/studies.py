"""The seeds' claims, measured on Fashion-MNIST: data efficiency to convergence, position embeddings, patch size.

    python -m vit_core.studies run --threads 1      # work through the plan; start it twice to use two cores
    python -m vit_core.studies status               # what is done, what is left (running jobs: ETA), CPU time so far

Every run is one job of the plan below, trained with the embedded models' recipe (vit_core.train:
RECIPE, AdamW + warmup/cosine, label smoothing, crop + flip). A job saves a checkpoint after every
validation in assets/experiments/in_progress/ (commit it at the end of a working session: at most
1/EVALS of a job's budget is lost to a crash or a session's end) and resumes from it; two `run` processes share the plan through lock files, so each job runs once. A finished run is
written to assets/experiments/<study>.json with its command, seed, wall and CPU time, machine and
validation curve.

The data (the same for every run): the embedded models' split of the 60,000 training images, a
stratified 5,000 for validation (seed 0) and 55,000 to train on; smaller training sets are stratified
subsets of those 55,000 drawn with the run's seed. Test accuracy is on all 10,000 test images, of the
model at the end of its run. The embedded models are the 55,000-image seed-0 runs of the data-efficiency
study (their cards hold their numbers).

Budget and stopping rule: a run gets max(the embedded model's epochs, MIN_STEPS) optimizer steps of a
cosine schedule, validated EVALS times; it stops early once validation accuracy has gained less than
STOP_GAIN over the last STOP_WINDOW of its budget (checked from half-way). A run "converged" when
its last STOP_WINDOW of steps gained less than STOP_GAIN: recorded per run, reported as measured.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vit_core import train
from vit_core.claims import (EPOCHS, EVALS, FULL_SCALES, MIN_STEPS, MODELS, SCALES, SHORT_EPOCHS, SIZES, STOP_GAIN, STOP_WINDOW, VAL_SEED,
                             VAL_SIZE, card_run, chosen_scale, needed_scale, read_study, scales, window_gain)
from vit_core.data import load_fashion_mnist, split_train_val, stratified_subset
from vit_core.model import ViT, count_parameters

ROOT = train.ROOT
OUT = ROOT / "assets" / "experiments"
WORK = ROOT / ".cache" / "studies"  # the workers' locks (not in git)
CHECKPOINTS = OUT / "in_progress"  # unfinished jobs' checkpoints: committed, so the next working session resumes them
KEEP = {"de-vit-1000-s0", "de-cnn-1000-s0", "pos-none-s0"}  # runs whose final weights are kept for re-evaluation

STUDIES = {
    "data_efficiency": "Test accuracy against the number of training images for the embedded ViT and CNN "
                       "architectures, each trained until its validation accuracy stops improving.",
    "position_embeddings": "The embedded ViT trained with learned 1-D position embeddings, with none, and with "
                           "fixed 2-D sine-cosine ones, under one shortened schedule.",
    "patch_size": "The embedded ViT cut into patches of 4, 7 and 14 pixels under the shortened schedule: "
                  "accuracy, tokens, training and inference cost.",
}


@dataclass(frozen=True)
class Job:
    study: str
    name: str
    model: str  # "vit" | "cnn"
    train_size: int
    seed: int
    epochs: float | None = None  # None: the data-efficiency budget, times `scale`, with the stopping rule
    pos: str = "learned"  # "learned" | "none" | "sincos2d"
    patch: int = 4
    config: dict = field(default_factory=dict)
    scale: int = 1  # budget multiplier of the doubling check

    def steps(self) -> int:
        batches = self.train_size / train.RECIPE["batch_size"]
        if self.epochs is not None:
            return round(self.epochs * batches)
        return self.scale * max(MIN_STEPS, round(EPOCHS[self.model] * batches))


def plan(runs: list[dict] | None = None) -> list[Job]:
    """Every job, most useful first: a whole first seed of each study, then the two short studies' remaining
    runs (minutes each), then the data-efficiency seeds (hours at the largest budgets).

    The data-efficiency budget is found per (model, size) on seed 0 by doubling (claims.chosen_scale): the
    runs at scale 1 and 2 always, 4 and 8 only if the last doubling still gained; seeds 1 and 2 join at
    the chosen scale once it is known, so the plan grows as results come in (`runs`: those on file). At the
    full training set seed 0 at scale 1 is the embedded model (its card), the check stops at 2×, and
    seeds 1 and 2 also run at scale 1 to reproduce the card (how far seeds scatter at the card's budget).
    """
    runs = [card_run(m) for m in MODELS] + (read_study("data_efficiency")["runs"] if runs is None else runs)
    full, small = SIZES[-1], SIZES[:-1]
    cells = [(m, n) for m in MODELS for n in small]

    def de(model, size, seed, scale=1):
        return Job("data_efficiency", f"de-{model}-{size}-s{seed}" + (f"-x{scale}" if scale > 1 else ""), model, size,
                   seed, scale=scale)

    def pos(kind, seed):
        return Job("position_embeddings", f"pos-{kind}-s{seed}", "vit", full, seed, SHORT_EPOCHS, pos=kind)

    def patch(p, seed):
        return Job("patch_size", f"patch-{p}-s{seed}", "vit", full, seed, SHORT_EPOCHS, patch=p,
                   config={"patch_size": p})

    chosen = {c: chosen_scale(*c, runs) for c in cells + [(m, full) for m in MODELS]}
    checks = {c: [s for s in scales(c[1]) if s <= 2 or s <= 2 * needed_scale(*c, runs)] for c in cells}
    jobs = [de(m, n, 0) for m, n in cells] + [pos(k, 0) for k in ("learned", "none", "sincos2d")]
    jobs += [de(m, n, 0, 2) for m, n in cells]
    jobs += [de(m, n, 0, s) for m, n in cells for s in checks[(m, n)] if s > 2]
    jobs += [de(m, full, 0, 2) for m in MODELS]  # seed 0 at 1×: the embedded model
    jobs += [pos(k, 1) for k in ("learned", "none", "sincos2d")]  # minutes each: two whole studies done early
    jobs += [patch(p, 0) for p in (7, 14)]  # P = 4 at seed 0: pos-learned-s0
    jobs += [de(m, n, 1, chosen[(m, n)]) for m, n in cells if chosen[(m, n)]]
    jobs += [de(m, full, 1) for m in MODELS]  # the card's budget again, with seed 1: is the card reproduced?
    jobs += [de(m, full, 1, 2) for m in MODELS if chosen[(m, full)] == 2]
    jobs += [de(m, full, 2) for m in MODELS]  # a third run of the card's budget: its own seed spread
    jobs += [de(m, n, 2, chosen[(m, n)]) for m, n in cells if chosen[(m, n)]]
    return jobs


# ----------------------------------------------------------------------------- position embeddings

def sincos_2d(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings (grid_h·grid_w, dim): half the channels encode the row,
    half the column, each as sin/cos at geometrically spaced frequencies (as in MAE and "Attention is
    all you need")."""
    if dim % 4:
        raise ValueError(f"2-D sine-cosine embeddings need a width divisible by 4, not {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64),
                                torch.arange(grid[1], dtype=torch.float64), indexing="ij")
    freq = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (dim/4,)

    def encode(pos):
        angles = pos.reshape(-1, 1) * freq  # (N, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (N, dim/2)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()  # (N, dim)


def set_position_embeddings(model: ViT, kind: str) -> None:
    """Replace learned position embeddings by fixed ones ("none": zeros, "sincos2d"), frozen."""
    if kind == "learned":
        return
    pe = model.pos_embed.data
    pe.zero_()
    if kind == "sincos2d":
        pe[0, model.cfg.num_prefix_tokens:] = sincos_2d(model.cfg.grid, model.cfg.embed_dim)
    elif kind != "none":
        raise ValueError(f"unknown position embeddings {kind!r}")
    model.pos_embed.requires_grad_(False)


def build(job: Job):
    config = train.model_config(job.model, job.config or None)
    torch.manual_seed(job.seed)
    model = train.build_model(job.model, config)
    if job.model == "vit":
        set_position_embeddings(model, job.pos)
    return model, config


# ----------------------------------------------------------------------------- data

@dataclass
class Data:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: float
    std: float

    @classmethod
    def load(cls, data_dir: str | None = None) -> "Data":
        images, labels = load_fashion_mnist("train", data_dir)
        tr, va = split_train_val(labels, VAL_SIZE, seed=VAL_SEED)
        test_images, test_labels = load_fashion_mnist("test", data_dir)
        mean, std = train.pixel_stats(images[tr])  # the embedded cards' normalisation (55,000 images)
        return cls(images[tr], labels[tr], images[va], labels[va], test_images, test_labels, mean, std)

    def subset(self, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = stratified_subset(self.train_labels, size, seed)
        return self.train_images[idx], self.train_labels[idx]


# ----------------------------------------------------------------------------- one job

def should_stop(history: list[dict], step: int, total: int) -> bool:
    """The stopping rule: from half-way, stop when the last STOP_WINDOW of the budget gained < STOP_GAIN."""
    return step < total and step >= total / 2 and window_gain(history, step, total) < STOP_GAIN


def run_job(job: Job, data: Data, *, progress: bool = True, work: Path = CHECKPOINTS, log=print) -> dict:
    """Train one job (resuming from its checkpoint if there is one) and return its record."""
    x, y = data.subset(job.train_size, job.seed)
    model, config = build(job)
    steps = job.steps()
    every = max(1, steps // EVALS)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / f"{job.name}.pt"
    resume = torch.load(ckpt, weights_only=True) if ckpt.exists() else None
    history = resume["history"] if resume else []
    if resume:
        log(f"# {job.name}: resuming at step {resume['step']} of {steps}")
    rule = job.epochs is None

    def on_eval(step, train_loss, wall, snapshot):
        acc, loss = train.evaluate(model, data.val_images, data.val_labels, data.mean, data.std)
        history.append({"step": step, "epoch": round(step * train.RECIPE["batch_size"] / len(x), 2),
                        "train_loss": round(train_loss, 4), "val_accuracy": round(acc, 4),
                        "val_loss": round(loss, 4), "wall_s": round(wall, 1)})
        state = {**snapshot(), "history": history}
        torch.save(state, ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)  # a crash mid-write keeps the previous checkpoint
        log(f"# {job.name}: validation {acc:.2%}, {eta_line(state, steps)}", flush=True)
        return rule and should_stop(history, step, steps)

    hyper = train.RECIPE
    result = train.fit(model, x, y, steps=steps, seed=job.seed, mean=data.mean, std=data.std, on_epoch=on_eval,
                       every=every, resume=resume, progress=progress, desc=job.name, **hyper)
    start = time.perf_counter()  # the test pass is also the inference-speed measurement (batches of 250)
    acc, loss = train.evaluate(model, data.test_images, data.test_labels, data.mean, data.std)
    test_ips = len(data.test_images) / (time.perf_counter() - start)
    gain = window_gain(history, result["steps"], steps)
    record = {
        "job": job.name, "model": job.model, "train_size": len(x), "seed": job.seed, "scale": job.scale,
        "position_embeddings": job.pos if job.model == "vit" else None,
        "patch_size": config.patch_size if job.model == "vit" else None,
        "tokens": (config.grid[0] * config.grid[1] + 1) if job.model == "vit" else None,
        "parameters": count_parameters(model),
        "budget_steps": steps, "steps": result["steps"], "epochs": round(result["steps"] * hyper["batch_size"] / len(x), 2),
        "stopped_early": result["steps"] < steps,
        "last_window_gain": round(gain, 4), "converged": gain < STOP_GAIN,
        "test_accuracy": round(acc, 4), "test_loss": round(loss, 4),
        "final_val_accuracy": history[-1]["val_accuracy"],
        "wall_time_s": round(result["wall_s"], 1), "cpu_time_s": round(result["cpu_s"], 1),
        "train_images_per_s": round(result["steps"] * hyper["batch_size"] / result["wall_s"], 1),
        "test_images_per_s": round(test_ips, 1),
        "command": f"python -m vit_core.studies run  (job {job.name})", "machine": train.machine(),
        "date": train.now(), "history": history,
    }
    if job.name in KEEP:
        record["weights"] = train.save_weights(model, OUT / "weights" / job.name).name
    return record


# ----------------------------------------------------------------------------- results and locks

def results_path(study: str, out: Path = OUT) -> Path:
    return out / f"{study}.json"


def save_record(study: str, record: dict | None, out: Path = OUT, work: Path = WORK) -> None:
    """Add one finished run to its study's file, or with None only write the plan and rules (read-modify-write
    under a lock: two workers share the file)."""
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = read_study(study, out)
        runs = [r for r in results["runs"] if record is None or r["job"] != record["job"]] + ([record] if record else [])
        order = {j.name: i for i, j in enumerate(plan())}
        runs.sort(key=lambda r: order.get(r["job"], len(order)))
        results.update(description=STUDIES[study], rules=rules(), runs=runs,
                       planned=[j.name for j in plan() if j.study == study])
        tmp = results_path(study, out).with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(results_path(study, out))


def rules() -> dict:
    return {"recipe": train.RECIPE, "optimizer": "AdamW, linear warmup then cosine to 0",
            "data": f"the embedded models' split: {VAL_SIZE} stratified validation images (seed {VAL_SEED}) out of "
                    "the 60,000 training images, smaller sets stratified from the other 55,000 with the run's seed; "
                    "test accuracy on all 10,000 test images, of the model at the end of its run",
            "budget": f"max(the embedded model's epochs (ViT {EPOCHS['vit']}, CNN {EPOCHS['cnn']}), {MIN_STEPS} steps) for "
                      f"the data-efficiency study; {SHORT_EPOCHS} epochs "
                      "on 55,000 images for the position-embedding and patch-size studies",
            "doubling": f"the data-efficiency budget of each (model, size) is checked on seed 0 by doubling it while the "
                        f"final validation accuracy gains at least {STOP_GAIN * 100:.1f} points, up to {SCALES[-1]}× below "
                        f"{SIZES[-1]:,} images and {FULL_SCALES[-1]}× at {SIZES[-1]:,} (where seed 0 at 1× is the embedded "
                        "model); the other seeds train with the budget found, and seed 1 also with the embedded "
                        "model's budget at the full size, to check that its card is reproduced",
            "stopping": f"validated {EVALS} times per run; a data-efficiency run stops early once the last "
                        f"{STOP_WINDOW:.0%} of its budget gained less than {STOP_GAIN * 100:.1f} points of validation "
                        "accuracy (checked from half-way); 'converged' records whether its last "
                        f"{STOP_WINDOW:.0%} gained less than that",
            "threads": "one torch thread per run; two runs at once on a 2-core machine"}


def claim(job: Job, work: Path = WORK):
    """A lock file for `job`, or None if another live process holds it."""
    work.mkdir(parents=True, exist_ok=True)
    lock = work / f"{job.name}.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(lock.read_text() or 0)
            os.kill(pid, 0)
            return None  # a live worker has it
        except (ValueError, ProcessLookupError, PermissionError):
            lock.unlink(missing_ok=True)  # its worker died: take it over
            return claim(job, work)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return lock


def done_jobs(out: Path = OUT) -> set[str]:
    return {r["job"] for s in STUDIES for r in read_study(s, out)["runs"]}


def _minutes(jobs: list[Job], out: Path) -> float:
    """CPU minutes `jobs` take at the images per second measured so far (the cards' speeds before any run)."""
    runs = [r for s in STUDIES for r in read_study(s, out)["runs"]]
    speed = {m: sum(r["train_images_per_s"] for r in runs if r["model"] == m and r["patch_size"] in (4, None))
             / max(1, sum(1 for r in runs if r["model"] == m and r["patch_size"] in (4, None)))
             for m in ("vit", "cnn")}
    speed = {m: v or {"vit": 346.0, "cnn": 175.7}[m] for m, v in speed.items()}  # the embedded cards' speeds
    return sum(j.steps() * train.RECIPE["batch_size"] / speed[j.model] for j in jobs) / 60


def cpu_minutes_left(out: Path = OUT) -> float:
    """An estimate of the plan's remaining CPU time (a job under way counted whole)."""
    done = done_jobs(out)
    return _minutes([j for j in plan(read_study("data_efficiency", out)["runs"]) if j.name not in done], out)


def unplanned_seeds(out: Path = OUT) -> list[Job]:
    """Seeds 1 and 2 of each (model, size) below the full set whose budget is still being checked: not in the
    plan yet, since their budget is not known. Listed at the largest budget the check has reached, so at least
    this much."""
    runs = read_study("data_efficiency", out)["runs"]
    return [Job("data_efficiency", f"de-{m}-{n}-s{seed}-x{s}", m, n, seed, scale=s) for m in MODELS
            for n in SIZES[:-1] if chosen_scale(m, n, runs) is None
            for s in [2 * needed_scale(m, n, runs)] for seed in (1, 2)]


def maybe_full_seeds(out: Path = OUT) -> list[Job]:
    """Seed 1 at 2× on the full set, for each model whose 2× check there has not finished: planned only if 2× pays."""
    runs = [card_run(m) for m in MODELS] + read_study("data_efficiency", out)["runs"]
    return [Job("data_efficiency", f"de-{m}-{SIZES[-1]}-s1-x2", m, SIZES[-1], 1, scale=2) for m in MODELS
            if chosen_scale(m, SIZES[-1], runs) is None]


def run(args) -> None:
    torch.set_num_threads(args.threads)
    data = Data.load(args.data_dir)
    for study in STUDIES:  # the plan is on file before the first run ends: the pages can say what is still to come
        save_record(study, None)
    while True:
        done = done_jobs()
        todo = [j for j in plan() if j.name not in done and (not args.only or j.name.startswith(tuple(args.only)))]
        lock = job = None
        for job in todo:
            if (lock := claim(job)) is not None:
                break
        if lock is None:
            print("# nothing left to claim", flush=True)
            return
        try:
            print(f"# [{len(done)}/{len(plan())} done] {job.name}: {job.steps()} steps; whole plan "
                  f"≈ {cpu_minutes_left():.0f} CPU-minutes left", flush=True)
            record = run_job(job, data, progress=not args.no_progress)
            save_record(job.study, record)
            (CHECKPOINTS / f"{job.name}.pt").unlink(missing_ok=True)
            print(json.dumps({k: v for k, v in record.items() if k not in ("history", "machine")}), flush=True)
        finally:
            lock.unlink(missing_ok=True)


def eta_line(checkpoint: dict, steps: int) -> str:
    """"at step 15000/37504 (40%), ≈ 72 min left": the ETA at the speed this run has had so far (at most; the
    stopping rule may end it sooner)."""
    step, wall = checkpoint["step"], checkpoint["wall_s"]
    left = (steps - step) * wall / step / 60 if step else float("nan")
    return f"at step {step}/{steps} ({step / steps:.0%}), ≈ {left:.0f} min left at its speed so far"


def status() -> None:
    done = done_jobs()
    for job in plan():
        ckpt = CHECKPOINTS / f"{job.name}.pt"
        state = "done" if job.name in done else eta_line(torch.load(ckpt, weights_only=True), job.steps()) if (
            ckpt.exists()) else "to do"
        print(f"{job.name:24s} {state}")
    runs = [r for s in STUDIES for r in read_study(s)["runs"]]
    later, maybe = unplanned_seeds(), maybe_full_seeds()
    left = cpu_minutes_left() / 60
    said = [f"# {len(done)}/{len(plan())} done, {sum(r['cpu_time_s'] for r in runs) / 3600:.2f} CPU-hours so far, "
            f"≈ {left:.1f} CPU-hours left in the plan (≈ {left / 2:.1f} h with two workers)"]
    if later:
        said.append(f"then {len(later)} seed runs whose budget is still being checked: at least "
                    f"{_minutes(later, OUT) / 60:.1f} CPU-hours more")
    if maybe:
        said.append(f"if 2× pays at {SIZES[-1]:,} images, {len(maybe)} runs of seed 1 at 2×: "
                    f"{_minutes(maybe, OUT) / 60:.1f} CPU-hours more")
    print("; ".join(said))


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m vit_core.studies", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="work through the plan (resumable; start twice for two cores)")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--only", nargs="*", default=None, help="job name prefixes, e.g. pos- de-vit")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--no-progress", action="store_true")
    sub.add_parser("status", help="what is done and what is left")
    args = p.parse_args(argv)
    if args.command == "run":
        run(args)
    else:
        status()


if __name__ == "__main__":
    main(sys.argv[1:])
