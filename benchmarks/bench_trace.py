"""How much does showing every tensor cost? `ViT.trace` against transformers' eager ViT with
output_attentions=True, on the same weights, side by side in one run.

    .venv/bin/python benchmarks/bench_trace.py [--repeats 15] [--variants Ti/16 S/16 B/16] [--threads N]
                                               [--explain] [--cpu-time] [--mallopt]

Both run under torch.inference_mode, batch 1, 224×224, random weights (speed does not depend on
them). The two are timed alternately, the order flipping every repeat, so that drift in the machine
(other jobs, thermal state) hits both alike. "ratio" is median(ours) / median(theirs); "paired" is
the median of each run's ratio to the run next to it, which slow drift disturbs least.
Target: ours / theirs ≤ 1.05.

What the two do differently: trace() fuses q, k, v into one matmul (theirs runs three), also unfolds
the flat patches, and keeps every per-layer tensor (q, k, v, attention, attn_out, residuals) where
transformers keeps only the attention maps. What trace() keeps is handed back to the kernel when
the trace is dropped and faulted in fresh (zeroed) on the next call: that, not the maths, is where
the small models lose time. --explain times patched copies (no flat patches; q/k/v not kept) and
counts page faults; --mallopt keeps freed memory in the heap, which removes the faults (the app
does this once per process: vit_core.zoo.keep_freed_memory).
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vit_core import ViT, ViTConfig  # noqa: E402
from vit_core.model import Attention  # noqa: E402
from vit_core.card import ModelCard, Preprocess  # noqa: E402
from vit_core.weights import export_checkpoint  # noqa: E402
from vit_core.zoo import keep_freed_memory  # noqa: E402


def pair(variant: str, device: torch.device):
    """Our ViT and transformers' eager ViT holding the same random weights."""
    from transformers import ViTForImageClassification
    torch.manual_seed(0)
    ours = ViT(ViTConfig.variant(variant)).eval()
    card = ModelCard(name=variant, arch="vit", config=ours.cfg, preprocess=Preprocess(),
                     class_names=[str(i) for i in range(1000)])
    with tempfile.TemporaryDirectory() as tmp:
        export_checkpoint(ours, card, Path(tmp) / "hf", "transformers")
        theirs = ViTForImageClassification.from_pretrained(Path(tmp) / "hf", attn_implementation="eager").eval()
    return ours.to(device), theirs.to(device)


class AttentionKeepingNoQKV(Attention):
    """A patched copy for --explain: the same maths, but q, k, v are not handed back to the trace."""

    def forward(self, x):
        out, _, _, _, attn = super().forward(x)
        return out, None, None, None, attn


def clock(fn, device, now=time.perf_counter) -> tuple[float, int]:
    """(milliseconds, minor page faults of this thread) for one call."""
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = now()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (now() - start) * 1e3, resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults


def contenders(variant: str, device: torch.device, explain: bool) -> tuple[dict, float]:
    ours, theirs = pair(variant, device)
    x = torch.randn(1, 3, 224, 224, device=device)

    def inference(fn):
        def run():
            with torch.inference_mode():
                fn()
        return run

    with torch.inference_mode():  # same answer first: a benchmark of two different models means nothing
        diff = (ours.trace(x).logits - theirs(x, output_attentions=True).logits).abs().max().item()
    runs = {"trace": lambda: ours.trace(x), "HF eager": inference(lambda: theirs(x, output_attentions=True))}
    if explain:
        lean = copy.deepcopy(ours)
        for block in lean.blocks:
            block.attn.__class__ = AttentionKeepingNoQKV
        runs |= {"trace, no patches": inference(lambda: ours._run(x, flat_patches=False)),
                 "trace, q/k/v not kept": lambda: lean.trace(x),
                 "HF eager, no attentions": inference(lambda: theirs(x))}
    return runs, diff


def bench(runs: dict, repeats: int, device: torch.device, now=time.perf_counter) -> dict[str, list[tuple[float, int]]]:
    """Time every contender once per repeat, rotating who goes first."""
    for _ in range(3):  # warm-up: allocator, kernels, caches
        for fn in runs.values():
            fn()
    names, out = list(runs), {name: [] for name in runs}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out[name].append(clock(runs[name], device, now))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--variants", nargs="+", default=["Ti/16", "S/16", "B/16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--explain", action="store_true", help="also time patched copies, to see where time goes")
    parser.add_argument("--cpu-time", action="store_true",
                        help="CPU time of the one compute thread instead of wall time (implies --threads 1): "
                             "on a shared machine, time spent waiting for a core is not counted")
    parser.add_argument("--mallopt", action="store_true", help="run keep_freed_memory() first (glibc)")
    args = parser.parse_args(argv)
    if args.mallopt and not keep_freed_memory():
        print("mallopt is not available here (not glibc); timing with the default allocator")
    if args.threads or args.cpu_time:
        torch.set_num_threads(1 if args.cpu_time else args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    what = "thread CPU time" if args.cpu_time and device.type == "cpu" else "wall time"
    print(f"torch {torch.__version__}, {where}, batch 1, 224×224, {what}, median of {args.repeats} interleaved runs"
          + (", freed memory kept by malloc" if args.mallopt else ""))
    for variant in args.variants:
        runs, diff = contenders(variant, device, args.explain)
        times = bench(runs, args.repeats, device, time.thread_time if what == "thread CPU time" else time.perf_counter)
        hf = [t for t, _ in times["HF eager"]]
        print(f"\n{variant} (max |Δlogit| trace vs HF {diff:.1e})")
        print(f"  {'':<26}{'ms':>9}{'ratio':>8}{'paired':>8}{'page faults':>13}")
        for name, rows in times.items():
            ms = [t for t, _ in rows]
            ratio = statistics.median(ms) / statistics.median(hf)
            paired = statistics.median(a / b for a, b in zip(ms, hf))  # each run against its neighbour
            flag = "  > 1.05" if name == "trace" and ratio > 1.05 else ""
            print(f"  {name:<26}{statistics.median(ms):>9.2f}{ratio:>8.3f}{paired:>8.3f}"
                  f"{statistics.median(f for _, f in rows):>13.0f}{flag}")


if __name__ == "__main__":
    main()
