"""What the claims studies measured, read for the pages: assets/experiments/*.json (written by
`python -m vit_core.studies run`) and the embedded models' cards, which are the 55,000-image seed-0 runs
of the data-efficiency study. Reading only: no training code is imported here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from vit_core.i18n import translate

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "assets" / "experiments"
CARDS = {"vit": ROOT / "assets" / "models" / "fmnist-vit.json", "cnn": ROOT / "assets" / "models" / "fmnist-cnn.json"}
# The studies' rules (vit_core.studies trains by them; the pages state them from here)
VAL_SIZE, VAL_SEED = 5000, 0  # the embedded models' validation split
EPOCHS = {"vit": 30, "cnn": 8}  # the embedded models' budgets (their cards)
MIN_STEPS = 1500  # small training sets: at least 192,000 images seen
EVALS = 20  # validations per run
STOP_GAIN, STOP_WINDOW = 0.002, 0.25  # the stopping rule: < 0.2 points over the last quarter of the budget
SHORT_EPOCHS = 6  # the shortened schedule of the position-embedding and patch-size studies
SIZES = (1000, 5000, 20000, 55000)
SCALES = (1, 2, 4, 8)  # the doubling check's budgets, in units of the base budget above
FULL_SCALES = (1, 2)  # at the full training set the check stops at 2× (a 4× ViT run there: about 5 CPU-hours)
VIT_B16_SHAPE = (197, 768, 3072)  # ViT-B/16 at 224 × 224: tokens, width D, MLP width (the ViT paper, Table 1)


def _final_val(model: str, size: int, runs: list[dict]) -> dict[int, float]:
    """{scale: final validation accuracy} of the seed-0 runs of one (model, size)."""
    return {r.get("scale", 1): r["final_val_accuracy"] for r in runs
            if (r["model"], r["train_size"], r["seed"]) == (model, size, 0) and "final_val_accuracy" in r}


def scales(size: int) -> tuple[int, ...]:
    """The budgets the doubling check may try at one training-set size."""
    return FULL_SCALES if size >= SIZES[-1] else SCALES


def needed_scale(model: str, size: int, runs: list[dict]) -> int:
    """The largest scale the doubling check has reached for one (model, size): doubling from `s` is still
    needed while s and 2s are both done and 2s gained at least STOP_GAIN. At the full training set seed 0
    at scale 1 is the embedded model: `runs` must hold its card (card_run)."""
    val, s = _final_val(model, size, runs), 1
    while 2 * s in scales(size) and s in val and 2 * s in val and val[2 * s] - val[s] >= STOP_GAIN:
        s *= 2
    return s


def chosen_scale(model: str, size: int, runs: list[dict]) -> int | None:
    """The smallest budget whose doubling gained less than STOP_GAIN validation accuracy on seed 0 (the
    largest scale if none did); None while the check is still running."""
    val, s = _final_val(model, size, runs), needed_scale(model, size, runs)
    if s == scales(size)[-1]:
        return s
    return s if s in val and 2 * s in val else None
MODELS = ("vit", "cnn")


def window_gain(history: list[dict], step: int, total: int) -> float:
    """Best validation accuracy within the last STOP_WINDOW·total steps up to `step`, minus the best before."""
    cut = step - STOP_WINDOW * total
    before = [h["val_accuracy"] for h in history if h["step"] <= cut]
    within = [h["val_accuracy"] for h in history if cut < h["step"] <= step]
    return max(within) - max(before) if before and within else math.inf


def read_study(study: str, folder: Path | None = None) -> dict:
    """assets/experiments/<study>.json as written by vit_core.studies, or an empty study if it is not there yet.
    `folder` defaults to EXPERIMENTS as it is at the call."""
    path = (EXPERIMENTS if folder is None else folder) / f"{study}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"runs": [], "planned": []}


def card_run(model: str, path: Path | None = None) -> dict:
    """An embedded model's card as a data-efficiency run record (the full training set, seed 0)."""
    card = json.loads((path or CARDS[model]).read_text(encoding="utf-8"))["extra"]
    gain = window_gain(card["history"], card["steps"], card["steps"])
    return {"job": f"de-{model}-{card['train_size']}-s{card['seed']}", "model": model,
            "train_size": card["train_size"], "seed": card["seed"], "steps": card["steps"],
            "budget_steps": card["steps"], "epochs": card["epochs"], "stopped_early": False, "scale": 1,
            "final_val_accuracy": card["history"][-1]["val_accuracy"],
            "last_window_gain": round(gain, 4), "converged": gain < STOP_GAIN,
            "test_accuracy": card["test_accuracy"], "cpu_time_s": card["cpu_time_s"],
            "wall_time_s": card["wall_time_s"], "source": "card", "command": card["command"]}


class _Spread:
    """Mean, lowest and highest of a measurement repeated over seeds (a subclass's `values`)."""

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)


@dataclass(frozen=True)
class Cell(_Spread):
    """One model at one training-set size (or one variant): a run per seed."""
    accuracies: tuple[float, ...]
    seeds: tuple[int, ...]
    cpu_s: tuple[float, ...]

    @property
    def values(self) -> tuple[float, ...]:
        return self.accuracies


@dataclass(frozen=True)
class Gap(_Spread):
    """CNN − ViT test accuracy at one size, over the seeds both models ran."""
    size: int
    gaps: tuple[float, ...]

    @property
    def values(self) -> tuple[float, ...]:
        return self.gaps


@dataclass(frozen=True)
class DataEfficiency:
    runs: list[dict]  # the runs each cell is made of (at its chosen budget), the two embedded cards included
    cells: dict[str, dict[int, Cell]]  # model -> train_size -> Cell
    gaps: list[Gap]  # smallest size first
    planned: list[str]  # every job of the study's plan so far
    rules: dict
    checks: dict[tuple[str, int], dict[int, float]]  # (model, size) -> {budget scale: seed 0's final val accuracy}
    chosen: dict[tuple[str, int], int | None]  # (model, size) -> the budget scale found (None: still checking)
    every: list[dict]  # every run: the two cards, then every finished job, budget checks included

    @property
    def done(self) -> list[str]:
        return [r["job"] for r in self.every if r.get("source") != "card"]

    @property
    def card_runs(self) -> dict[str, dict]:
        """model -> the embedded model's card as a run record (card_run): seed 0 at 55,000 images, 1×."""
        return {r["model"]: r for r in self.every if r.get("source") == "card"}

    @property
    def missing(self) -> list[str]:
        return [j for j in self.planned if j not in self.done]

    @property
    def cards(self) -> dict[str, float]:
        """model -> the embedded model's test accuracy (seed 0 at 55,000 images, 1×)."""
        return {m: r["test_accuracy"] for m, r in self.card_runs.items()}

    @property
    def reruns(self) -> dict[str, list[float]]:
        """model -> test accuracy of the other seeds trained at 55,000 images with the card's budget."""
        return {m: [r["test_accuracy"] for r in self.every if (r["model"], r["train_size"], r.get("scale", 1)) == (m, SIZES[-1], 1)
                    and r["seed"] > 0] for m in MODELS}

    def seed_spread(self, model: str) -> float | None:
        """How far apart two runs of `model` that differ only in their seed were seen to land: the widest range
        (highest − lowest test accuracy) at any size below 55,000 with two or more seeds, and between the
        re-runs of the card's budget (the card itself left out: it is what is being judged)."""
        ranges = [c.hi - c.lo for n, c in self.cells[model].items() if n < SIZES[-1] and len(c.seeds) > 1]
        if len(self.reruns[model]) > 1:
            ranges.append(max(self.reruns[model]) - min(self.reruns[model]))
        return max(ranges) if ranges else None

    def card_agrees(self, model: str) -> bool | None:
        """Whether every re-run of the card's budget lands within seed_spread of the card (None: not known yet)."""
        spread = self.seed_spread(model)
        if spread is None or not self.reruns[model]:
            return None
        return all(abs(a - self.cards[model]) <= spread + 1e-9 for a in self.reruns[model])

    def summary(self) -> dict:
        """{model: {size: {"accuracies", "seeds", "mean", "min", "max"}}}: analysis.compare_data_efficiency's input."""
        return {m: {str(n): {"accuracies": list(c.accuracies), "seeds": list(c.seeds), "mean": c.mean, "min": c.lo,
                             "max": c.hi} for n, c in cells.items()} for m, cells in self.cells.items()}

    def cpu_minutes(self, model: str, size: int) -> float:
        c = self.cells[model][size]
        return sum(c.cpu_s) / len(c.cpu_s) / 60


def cells_of(runs: list[dict], key: str = "train_size", models=MODELS) -> dict:
    cells = {}
    for m in models:
        mine = [r for r in runs if r["model"] == m]
        cells[m] = {k: Cell(tuple(r["test_accuracy"] for r in mine if r[key] == k),
                            tuple(r["seed"] for r in mine if r[key] == k),
                            tuple(r["cpu_time_s"] for r in mine if r[key] == k))
                    for k in sorted({r[key] for r in mine})}
    return cells


def data_efficiency(folder: Path = EXPERIMENTS, cards: dict[str, Path] | None = None) -> DataEfficiency:
    """The data-efficiency study so far. Raises OSError / ValueError / KeyError on a missing or broken file.

    Each (model, size) shows its runs at the budget the doubling check chose; while the check is still
    running, seed 0 at the largest budget finished so far stands in.
    """
    saved = read_study("data_efficiency", folder)
    every = [card_run(m, (cards or {}).get(m)) for m in MODELS] + saved["runs"]  # the cards: seed 0 at 55,000, 1×
    cells_todo = sorted({(r["model"], r["train_size"]) for r in every})
    checks = {c: _final_val(*c, every) for c in cells_todo}
    chosen = {c: chosen_scale(*c, every) for c in cells_todo}

    def shown(r: dict) -> bool:  # the cell's runs at its chosen budget; seed 0 at the largest one while checking
        cell = (r["model"], r["train_size"])
        if chosen[cell]:
            return r.get("scale", 1) == chosen[cell]
        return r["seed"] == 0 and r.get("scale", 1) == max(checks[cell] or [1])

    runs = [r for r in every if shown(r)]
    cells = cells_of(runs)
    gaps = []
    for size in sorted(set(cells["vit"]) & set(cells["cnn"])):
        vit, cnn = (dict(zip(cells[m][size].seeds, cells[m][size].accuracies)) for m in ("vit", "cnn"))
        gaps.append(Gap(size, tuple(cnn[s] - vit[s] for s in sorted(set(vit) & set(cnn)))))
    return DataEfficiency(runs, cells, [g for g in gaps if g.gaps], saved.get("planned", []), saved.get("rules", {}),
                          checks, chosen, every)


@dataclass(frozen=True)
class Ablation:
    """One study over variants of the embedded ViT (position embeddings, patch size): runs grouped by variant."""
    runs: list[dict]
    cells: dict  # variant -> Cell
    planned: list[str]

    @property
    def missing(self) -> list[str]:
        done = {r["job"] for r in self.runs}
        return [j for j in self.planned if j not in done]


def ablation(study: str, key: str, folder: Path | None = None) -> Ablation:
    """"position_embeddings" by "position_embeddings" or "patch_size" by "patch_size"; an empty study if not run.
    `folder` defaults to EXPERIMENTS as it is at the call."""
    saved = read_study(study, folder)
    runs = saved["runs"]
    if study == "patch_size":  # P = 4 under the same schedule is the learned-embedding run of the other study
        base = read_study("position_embeddings", folder)["runs"]
        runs = [r for r in base if r["position_embeddings"] == "learned"] + runs
    return Ablation(runs, cells_of(runs, key, ("vit",))["vit"], saved.get("planned", []))


def compare_data_efficiency(summary: dict, a: str = "vit", b: str = "cnn") -> list[dict]:
    """Model `a` against model `b` at every training-set size both ran, from `claims.DataEfficiency.summary()`.

    One row per size, smallest first: {"size", "a", "b" (mean test accuracy), "diff" (a - b),
    "leader" (a, b, or None for equal means), "seeds" (the fewer of the two seed counts),
    "clear" (the seeds' min-max ranges do not overlap, so every seed agrees on the leader)}.
    """
    rows = []
    for size in sorted(set(summary.get(a, {})) & set(summary.get(b, {})), key=int):
        ca, cb = summary[a][size], summary[b][size]
        diff = ca["mean"] - cb["mean"]
        leader = a if diff > 0 else b if diff < 0 else None
        clear = ca["min"] > cb["max"] if diff > 0 else cb["min"] > ca["max"] if diff < 0 else False
        rows.append({"size": int(size), "a": ca["mean"], "b": cb["mean"], "diff": diff, "leader": leader,
                     "seeds": min(len(ca["accuracies"]), len(cb["accuracies"])), "clear": clear})
    return rows


# ----------------------------------------------------------------------------- sentences

def job_label(job: dict | str, lang: str) -> str:
    """"ViT · 1,000 images · seed 0" for a run record or a data-efficiency job name (de-vit-1000-s0)."""
    if isinstance(job, str):
        _, model, size, seed, *scale = job.split("-")
        job = {"model": model, "train_size": int(size), "seed": int(seed[1:]), "scale": int((scale or ["x1"])[0][1:])}
    label = translate("cnn.de.job", lang, model=translate(f"cnn.model.{job['model']}", lang), size=job["train_size"],
                      seed=job["seed"])
    scale = job.get("scale", 1)
    return label + (translate("cnn.de.job_scale", lang, scale=scale) if scale > 1 else "")


def _span(values: list[float]) -> str:
    """"0.72" for one value, "0.05–0.72" for several: smallest to largest, two decimals."""
    lo, hi = f"{min(values):.2f}", f"{max(values):.2f}"
    return hi if lo == hi else f"{lo}–{hi}"


def _join(lang: str, *sentences: str) -> str:
    return ("" if lang == "zh" else " ").join(s for s in sentences if s)  # no space between Chinese sentences


def de_verdict(rows: list[dict], lang: str) -> list[str]:
    """What the data-efficiency runs show, as sentences: the pattern, each size, the gap, the claim.
    `rows` are analysis.compare_data_efficiency's (a = ViT, b = CNN). A row whose "settled" is False (de_table:
    one model's budget check at that size is still running) is left out of the verdict, and that is said."""
    t = lambda key, **p: translate(key, lang, **p)  # noqa: E731
    name = lambda key: t(f"cnn.model.{key}")  # noqa: E731
    pending = [r["size"] for r in rows if r.get("settled") is False]
    rows = [r for r in rows if r.get("settled") is not False]
    held = [t("cnn.de.pending", sizes=t("cnn.de.num_sep").join(f"{n:,}" for n in pending))] if pending else []
    if not rows:
        return held
    leaders = [r["leader"] for r in rows]
    switch = [i for i in range(1, len(rows)) if leaders[i] != leaders[i - 1]]
    if all(x == leaders[0] for x in leaders) and leaders[0]:
        out = [t("cnn.de.pattern.all", model=name(leaders[0]), n=len(rows))]
    elif len(switch) == 1 and None not in leaders:
        i = switch[0]
        out = [t("cnn.de.pattern.cross", first=name(leaders[0]), last=name(leaders[i]), n1=rows[i - 1]["size"],
                 n2=rows[i]["size"])]
    else:
        out = [t("cnn.de.pattern.mixed")]
    notes = [t("cnn.de.seeds." + ("one" if r["seeds"] == 1 else "clear" if r["clear"] else "overlap"), n=r["seeds"])
             for r in rows]
    shared = len(set(notes)) == 1  # the same note on every row is said once, after the pattern
    if shared:
        out[0] = _join(lang, out[0], notes[0])
    for r, note in zip(rows, notes):
        if r["leader"] is None:
            out.append(t("cnn.de.row_tie", size=r["size"], acc=r["a"]))
            continue
        ahead, behind = (r["a"], r["b"]) if r["leader"] == "vit" else (r["b"], r["a"])
        out.append(_join(lang, t("cnn.de.row", size=r["size"], model=name(r["leader"]), pts=100 * abs(r["diff"]),
                                 ahead=ahead, behind=behind), "" if shared else note))
    if len(rows) > 1:
        g0, g1 = -100 * rows[0]["diff"], -100 * rows[-1]["diff"]  # CNN minus ViT, in points
        out.append(t("cnn.de.gap", g0=g0, g1=g1, n0=rows[0]["size"], n1=rows[-1]["size"]))
        small = "yes" if rows[0]["leader"] == "cnn" else "no"
        trend = "to_vit" if g1 < g0 - 0.1 else "to_cnn" if g1 > g0 + 0.1 else "flat"  # the claim expects "to_vit"
        gaps = [-100 * r["diff"] for r in rows]
        back = [(rows[i - 1]["size"], rows[i]["size"]) for i in range(1, len(rows))  # steps against the trend
                if trend != "flat" and (gaps[i] - gaps[i - 1]) * (g1 - g0) < 0 and abs(gaps[i] - gaps[i - 1]) > 0.1]
        out.append(_join(lang, t(f"cnn.de.support.{small}", n=rows[0]["size"]), t(f"cnn.de.trend.{trend}"),
                         *[t(f"cnn.de.back.{trend}", a=a, b=b) for a, b in back]))
    return out + held


def budget_checks(de: DataEfficiency) -> list[dict]:
    """One row per (model, size) of the doubling check: {"model", "size", "val": {scale: accuracy}, "chosen"}."""
    return [{"model": m, "size": n, "val": de.checks[(m, n)], "chosen": de.chosen[(m, n)]}
            for m, n in sorted(de.checks, key=lambda c: (MODELS.index(c[0]), c[1]))]


def cap_gain(check: dict) -> float | None:
    """For a budget_checks row whose check stopped at the largest budget allowed while that last doubling still
    gained at least STOP_GAIN: the validation accuracy that doubling gained. None for any other row."""
    s, val = check["chosen"], check["val"]
    if s == scales(check["size"])[-1] and s // 2 in val and val[s] - val[s // 2] >= STOP_GAIN:
        return val[s] - val[s // 2]
    return None


def capped(de: DataEfficiency) -> list[tuple[str, int, float]]:
    """(model, size, validation accuracy its last doubling gained) for each (model, size) still rising at its cap."""
    return [(c["model"], c["size"], g) for c in budget_checks(de) if (g := cap_gain(c)) is not None]


@dataclass(frozen=True)
class BudgetTable:
    """The doubling check as table columns: one entry per (model, size) checked, ViT first, smallest size first."""

    models: list[str]
    sizes: list[int]
    accuracy: dict[int, list[float | None]]  # budget scale -> seed 0's final val accuracy per entry (None: not run);
    #                                          only the scales some entry has reached
    chosen: list[int | None]  # the scale found (None: still checking)
    rising: list[bool]  # the check ended at its cap while the last doubling still gained (cap_gain)


def budget_table(de: DataEfficiency) -> BudgetTable:
    """budget_checks(de) column by column."""
    checks = budget_checks(de)
    return BudgetTable(models=[c["model"] for c in checks], sizes=[c["size"] for c in checks],
                       accuracy={k: [c["val"].get(k) for c in checks] for k in SCALES
                                 if any(k in c["val"] for c in checks)},
                       chosen=[c["chosen"] for c in checks],
                       rising=[cap_gain(c) is not None for c in checks])


@dataclass(frozen=True)
class DeTable:
    """The data-efficiency results as table columns, one entry per training-set size both models ran (smallest
    first), and the CNN − ViT gap by size, in points, as the gap figure draws it (de.gaps)."""

    rows: list[dict]  # compare_data_efficiency's (a = ViT, b = CNN) and "settled" (both budget checks done): what
    #                   de_verdict reads
    sizes: list[int]
    cells: dict[str, list[Cell]]  # "vit", "cnn" -> the model's Cell at each size
    diff: list[float]  # CNN − ViT mean test accuracy, in points
    seeds: list[int]  # the fewer of the two models' seed counts
    cpu_minutes: dict[str, list[float]]  # "vit", "cnn" -> mean CPU minutes of a run at each size
    gap_sizes: list[int]
    gap_mean: list[float]  # CNN − ViT over the seeds both ran, in points: mean, lowest, highest
    gap_lo: list[float]
    gap_hi: list[float]


def de_table(de: DataEfficiency) -> DeTable:
    """The table and the gap series of the data-efficiency study so far."""
    rows = [dict(r, settled=all(de.chosen.get((m, r["size"])) for m in MODELS))  # both budget checks done
            for r in compare_data_efficiency(de.summary())]
    sizes, gaps = [r["size"] for r in rows], de.gaps
    return DeTable(rows=rows, sizes=sizes, cells={m: [de.cells[m][n] for n in sizes] for m in MODELS},
                   diff=[-100 * r["diff"] for r in rows], seeds=[r["seeds"] for r in rows],
                   cpu_minutes={m: [de.cpu_minutes(m, n) for n in sizes] for m in MODELS},
                   gap_sizes=[g.size for g in gaps], gap_mean=[100 * g.mean for g in gaps],
                   gap_lo=[100 * g.lo for g in gaps], gap_hi=[100 * g.hi for g in gaps])


def de_rules(de: DataEfficiency, lang: str) -> list[str]:
    """How the data-efficiency runs were made and how far the study has got, as sentences."""
    t = lambda key, **p: translate(key, lang, **p)  # noqa: E731
    runs = de.runs
    vit, cnn = (json.loads(CARDS[m].read_text(encoding="utf-8"))["extra"] for m in MODELS)
    batch, full = vit["batch_size"], SIZES[-1]
    out = [t("cnn.de.rule.data", val=VAL_SIZE, full=full),
           t("cnn.de.rule.budget", vit_epochs=EPOCHS["vit"], cnn_epochs=EPOCHS["cnn"], min_steps=MIN_STEPS, batch=batch,
             passes=MIN_STEPS * batch / SIZES[0], smallest=SIZES[0], gain=100 * STOP_GAIN, most=SCALES[-1],
             most_full=FULL_SCALES[-1], full=full),
           t("cnn.de.rule.stopping", evals=EVALS, window=STOP_WINDOW, gain=100 * STOP_GAIN),
           t("cnn.de.rule.optim", lr=vit["lr"], wd=vit["weight_decay"], warmup=vit["warmup_frac"],
             ls=vit["label_smoothing"], pad=vit["crop_pad"], vit=vit["parameters"], cnn=cnn["parameters"])]
    stopped = [r for r in runs if r.get("stopped_early")]
    settled = sum(1 for c in de.chosen.values() if c)
    done = settled == len(de.chosen) and not de.missing  # nothing planned is left: no "so far"
    out.append(t("cnn.de.rule.checked" + ("_all" if done else ""), n=settled, total=len(de.chosen),
                 early=len(stopped)))
    rising = capped(de)
    if rising:
        out.append(t("cnn.de.rule.capped", gain=100 * STOP_GAIN, cells=t("cnn.de.list_sep").join(
            t("cnn.de.capped_cell", model=t(f"cnn.model.{m}"), size=n, pts=100 * g) for m, n, g in rising)))
    cards = de.card_runs
    out.append(t("cnn.de.rule.full", full=full, vit=100 * cards["vit"]["last_window_gain"],
                 cnn=100 * cards["cnn"]["last_window_gain"], most=FULL_SCALES[-1],
                 hours=2 * FULL_SCALES[-1] * cards["vit"]["cpu_time_s"] / 3600))
    for m in MODELS:
        if de.reruns[m]:
            agrees = de.card_agrees(m)
            out.append(_join(lang, t("cnn.de.rule.card", model=t(f"cnn.model.{m}"), full=full, card=de.cards[m],
                                     reruns=t("cnn.de.num_sep").join(f"{a:.2%}" for a in de.reruns[m]),
                                     pts=_span([100 * abs(a - de.cards[m]) for a in de.reruns[m]])),
                             t("cnn.de.rule.card_" + {True: "in", False: "out", None: "unknown"}[agrees],
                               spread=100 * (de.seed_spread(m) or 0))))
    if any(de.reruns.values()):  # checked by tests/test_studies.py, which repeats that epoch
        first = vit["history"][0]
        out.append(t("cnn.de.rule.same_code", loss=first["train_loss"], acc=first["val_accuracy"]))
    seeds = sorted({r["seed"] for r in runs})
    out.append(t("cnn.de.rule.seeds", seeds=t("cnn.de.num_sep").join(map(str, seeds)), n=len(runs),
                 cpu=sum(r["cpu_time_s"] for r in runs) / 3600, every=len(de.every),
                 all=sum(r["cpu_time_s"] for r in de.every) / 3600, full=full))
    if de.missing:
        out.append(t("cnn.de.rule.missing", done=len(de.planned) - len(de.missing), planned=len(de.planned),
                     left=t("cnn.de.list_sep").join(job_label(j, lang) for j in de.missing)))
    return out


def patch_cost(folder: Path | None = None) -> dict | None:
    """assets/experiments/patch_cost.json (benchmarks/patch_cost.py: the three patch sizes timed in turns in one
    run), or None if it was not measured. `folder` defaults to EXPERIMENTS as it is at the call."""
    path = (EXPERIMENTS if folder is None else folder) / "patch_cost.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def attention_share(tokens: int, embed_dim: int, mlp_dim: int) -> float:
    """The attention matrix's share of one encoder layer's multiply-adds: q kᵀ and A·v take 2·T²·D; the q, k, v
    and output projections 4·T·D² and the MLP 2·T·D·M. So T / (T + 2D + M)."""
    return tokens / (tokens + 2 * embed_dim + mlp_dim)


def patch_table(ab: Ablation, cost: dict | None) -> dict[str, list]:
    """The patch-size study as table columns, smallest patch first, keyed by column id: "P", "T" (tokens),
    "acc" (mean test accuracy and the number of seeds, "—" while training), "train" and "test" (images per
    second on one CPU thread from `cost`, the side-by-side benchmark, and the speed-up over P = 4)."""
    speeds = {row["patch_size"]: row for row in (cost or {}).get("rows", [])}
    tokens = {**{r["patch_size"]: r["tokens"] for r in ab.runs}, **{P: row["tokens"] for P, row in speeds.items()}}
    table = {"P": [], "T": [], "acc": [], "train": [], "test": []}
    for P in sorted(set(ab.cells) | set(speeds)):
        cell, row = ab.cells.get(P), speeds.get(P)
        speed = lambda k: f"{row[k + '_images_per_s']:,.0f} ({row[k + '_vs_p4']:.1f}×)" if row else "—"  # noqa: E731
        for key, value in (("P", P), ("T", tokens[P]), ("acc", f"{cell.mean:.2%} ({len(cell.seeds)})" if cell else "—"),
                           ("train", speed("train")), ("test", speed("test"))):
            table[key].append(value)
    return table


def patch_cost_sentences(cost: dict | None, lang: str) -> list[str]:
    """Where the patch-size table's numbers come from and what the side-by-side timing shows: each bigger
    patch's speed-up next to its drop in tokens, and why the speed-up follows T more than T² in this narrow
    model (the attention matrix's share of the work)."""
    t = lambda key, **p: translate(key, lang, **p)  # noqa: E731
    if cost is None:
        return [t("step1.study.caption_no_cost")]
    rows = sorted(cost["rows"], key=lambda r: r["patch_size"])
    base, m = rows[0], cost["model"]
    out = [t("step1.study.caption", date=cost["date"][:10], rounds=cost["rounds"])]
    out += [t("step1.cost.speedup", P=r["patch_size"], P0=base["patch_size"], fewer=base["tokens"] / r["tokens"],
             train=r["train_vs_p4"], test=r["test_vs_p4"]) for r in rows[1:]]
    out.append(t("step1.cost.why", D=m["embed_dim"], M=m["mlp_dim"], T=base["tokens"], P=base["patch_size"],
                 share=attention_share(base["tokens"], m["embed_dim"], m["mlp_dim"]), b16=attention_share(*VIT_B16_SHAPE)))
    return out


def patch_accuracy_sentences(ab: Ablation, lang: str) -> list[str]:
    """What the patch-size study's accuracies show: each P's test accuracy with its seeds, which way the
    accuracy goes as the patches grow, and how far the short schedule is from the embedded model's."""
    t = lambda key, **p: translate(key, lang, **p)  # noqa: E731
    if not ab.cells:
        return []
    cells = sorted(ab.cells.items())  # (P, Cell), smallest patches first
    each = [t("step1.study.acc_one" if len(c.seeds) == 1 else "step1.study.acc_many", P=P, acc=c.mean,
              n=len(c.seeds), lo=c.lo, hi=c.hi) for P, c in cells]
    out = [t("step1.study.acc", epochs=SHORT_EPOCHS, each=t("step1.study.acc_sep").join(each))]
    if len(cells) > 1:
        means = [c.mean for _, c in cells]
        up, down = all(b > a for a, b in zip(means, means[1:])), all(b < a for a, b in zip(means, means[1:]))
        out.append(t("step1.study.order." + ("bigger" if up else "smaller" if down else "mixed")))
    card = json.loads(CARDS["vit"].read_text(encoding="utf-8"))  # the embedded ViT: its patch size and its run
    out.append(_join(lang, still_rising(ab, lang), t("step1.study.short", card_epochs=EPOCHS["vit"],
                                                     card=card["extra"]["test_accuracy"], P=card["config"]["patch_size"])))
    return out


def still_rising(ab: Ablation, lang: str) -> str:
    """How many of a short-schedule study's runs were still improving at their end (by the stopping rule's
    test, as each run records it), and by how much their last quarter raised validation accuracy."""
    gains = [100 * r["last_window_gain"] for r in ab.runs]
    if not gains:
        return ""
    still = sum(1 for r in ab.runs if not r["converged"])
    return translate("step1.study.rising" if still == len(ab.runs) else "step1.study.rising_some", lang, n=still,
                     total=len(ab.runs), lo=min(gains), hi=max(gains), epochs=SHORT_EPOCHS)


def patch_sentences(ab: Ablation, cost: dict | None, lang: str) -> list[str]:
    """Step 1's patch-size study in words: where the table's numbers come from, what the accuracies show, then
    what the side-by-side timing shows."""
    cost_said = patch_cost_sentences(cost, lang)
    return cost_said[:1] + patch_accuracy_sentences(ab, lang) + cost_said[1:]


def variant_table(ab: Ablation, variants: list) -> dict[str, list]:
    """Table columns for `variants` of a study, keyed by column id: "acc" (mean test accuracy and its min–max
    over the seeds), "seeds", "cpu" (CPU minutes per run, mean)."""
    cells = [ab.cells[v] for v in variants]
    return {"acc": [f"{c.mean:.2%} ({c.lo:.2%} – {c.hi:.2%})" for c in cells],
            "seeds": [", ".join(map(str, c.seeds)) for c in cells],
            "cpu": [f"{sum(c.cpu_s) / len(c.cpu_s) / 60:.0f}" for c in cells]}


def position_sentences(ab: Ablation, paper_drop: float, lang: str) -> list[str]:
    """What the position-embedding ablation shows, as sentences: each variant against the learned one,
    next to the paper's drop (`paper_drop`, in accuracy), how the settings differ, what is still to run."""
    t = lambda key, **p: translate(key, lang, **p)  # noqa: E731
    cells, out = ab.cells, []
    if "learned" in cells:
        base = cells["learned"]
        for kind in ("none", "sincos2d"):
            if kind in cells:
                c = cells[kind]
                apart = c.hi < base.lo or c.lo > base.hi
                note = t("step3.ablation.one_seed") if min(len(c.seeds), len(base.seeds)) == 1 else t(
                    "step3.ablation.apart" if apart else "step3.ablation.overlap")
                out.append(_join(lang, t(f"step3.ablation.vs.{kind}", acc=c.mean, base=base.mean,
                                         pts=100 * (c.mean - base.mean)), note))
    out.append(t("step3.ablation.paper", pts=100 * paper_drop))
    out.append(_join(lang, t("step3.ablation.differs", epochs=SHORT_EPOCHS, n=SIZES[-1]), still_rising(ab, lang)))
    if ab.missing:
        out.append(t("step3.ablation.missing", done=len(ab.planned) - len(ab.missing), planned=len(ab.planned)))
    return out


__all__ = ["compare_data_efficiency", "position_sentences", "Ablation", "Cell", "DataEfficiency", "Gap", "ablation", "card_run", "data_efficiency", "de_rules",
           "de_verdict", "budget_checks", "patch_cost", "patch_cost_sentences", "patch_accuracy_sentences", "patch_sentences", "still_rising", "attention_share", "patch_table", "budget_table", "chosen_scale", "de_table", "job_label", "needed_scale",
           "read_study", "window_gain", "BudgetTable", "DeTable"]
