"""One prepared GPU benchmark of the FGVis engine; writes JSON lines to a folder.

    python benchmarks/gpu_bench.py OUT                 # one CUDA GPU, about 7 minutes (budget 450 s)
    python benchmarks/gpu_bench.py OUT --quick         # smoke run, tiny sizes, also on the CPU

For GoogLeNet at 224 px and FundusCNN (width 32) at 512 px, 500 steps of the deletion game, each with
and without the defense: the naive per-image loop (``bench_fgvis.naive_fgvis``: fp32, eager, one image
at a time), the eager batched engine (bf16 autocast and channels-last on CUDA), the compiled engine,
and the compiled engine captured in CUDA graphs; then the lambda search, batched against sequential.
Engine variants use the CUDA defaults (bf16 autocast, channels-last, batch norm folded, rows from
free memory).  Every variant first runs two warm-up steps (compilation, CUDA-graph recording,
autotuning) with the same shapes; the sequential search's shrinking row counts may still compile a
new shape inside its timed run.  One line per variant in ``OUT/results.jsonl``::

    {"model", "size", "variant", "defense", "images", "steps", "seconds", "images_per_s",
     "ratio_to_naive", "peak_memory_mib", "max_mask_diff_to_eager", "device", "torch", "status"}

``ratio_to_naive`` divides by the naive loop's images/s of the same model and defense in the same
run; ``max_mask_diff_to_eager`` compares with the eager batched masks of the same images (bf16
against fp32 for the naive loop; for the search lines, with the eager sequential search).  A variant
that would start after the time budget, or that needs CUDA on a CPU run, is written with ``status``
saying so and no figures.  Random weights; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fgvis import THRESHOLD, build_model, naive_fgvis  # noqa: E402

from retina_fgvis.fgvis import FGVis, RelativeScoreBelow, ScoreBelow, lambda_grid  # noqa: E402

LR, LAM = 0.1, 1e-10
# (model, size, images for the engine, images for the naive loop, FundusCNN width)
FULL = [("googlenet", 224, 128, 2, None), ("fundus_cnn", 512, 48, 2, 32)]
QUICK = [("googlenet", 32, 2, 1, None), ("fundus_cnn", 32, 2, 1, 4)]
VARIANTS = ("naive", "eager", "compiled", "compiled+cuda_graphs")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(fn, device):
    """(output, seconds, peak MiB or None) of ``fn()`` on ``device``."""
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return out, seconds, peak


class Bench:
    """Runs variants within a time budget and writes one JSON line per variant."""

    def __init__(self, out: Path, device: torch.device, budget: float):
        self.file = (out / "results.jsonl").open("w")
        self.device, self.budget, self.start = device, budget, time.perf_counter()

    def write(self, **line) -> None:
        line.update(device=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
                    torch=torch.__version__)
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()
        print(json.dumps(line), flush=True)

    def over_budget(self) -> bool:
        return time.perf_counter() - self.start > self.budget


def _engine(model, variant: str, defense: bool, steps: int) -> FGVis:
    return FGVis(model, game="deletion", defense=defense, lr=LR, max_iter=steps,
                 compile=variant.startswith("compiled"), cuda_graphs=variant == "compiled+cuda_graphs")


def run_model(bench: Bench, name: str, size: int, images: int, naive_images: int, width, steps: int,
              compile: bool) -> None:
    device = bench.device
    torch.manual_seed(0)
    model = build_model(name, width or 32).to(device).eval()
    x = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    stop = ScoreBelow(THRESHOLD)  # never met: every variant runs all steps
    for defense in (True, False):
        common = dict(model=name, size=size, defense=defense, steps=steps)
        if bench.over_budget():
            for variant in VARIANTS:
                bench.write(**common, variant=variant, images=naive_images if variant == "naive" else images,
                            status="skipped: time budget")
            continue
        for p in model.parameters():
            p.requires_grad_(False)
        naive_fgvis(model, x[:1], 2, LR, LAM, defense)
        naive, seconds, peak = _measure(
            lambda: [naive_fgvis(model, x[i:i + 1], steps, LR, LAM, defense)[0] for i in range(naive_images)], device)
        naive_rate = naive_images / seconds
        eager_mask = None
        results = {"naive": (torch.cat(naive), seconds, peak)}
        for variant in VARIANTS[1:]:
            status = "ok"
            if variant != "eager" and not compile:
                status = "skipped: --no-compile"
            elif variant == "compiled+cuda_graphs" and device.type != "cuda":
                status = "skipped: needs CUDA"
            elif bench.over_budget():
                status = "skipped: time budget"
            if status != "ok":
                bench.write(**common, variant=variant, images=images, status=status)
                continue
            engine = _engine(model, variant, defense, 2)
            engine.attribute(x, lam=LAM, stop=stop)  # warm-up: the same shapes, two steps
            engine.max_iter = steps
            res, seconds, peak = _measure(lambda: engine.attribute(x, lam=LAM, stop=stop), device)
            results[variant] = (res.mask, seconds, peak)
            if variant == "eager":
                eager_mask = res.mask
        for variant, (mask, seconds, peak) in results.items():
            count = len(mask)
            bench.write(**common, variant=variant, images=count, seconds=seconds, images_per_s=count / seconds,
                        ratio_to_naive=count / seconds / naive_rate, peak_memory_mib=peak,
                        max_mask_diff_to_eager=None if eager_mask is None else
                        (mask - eager_mask[:count]).abs().max().item(), status="ok")


def run_search(bench: Bench, quick: bool, compile: bool) -> None:
    """The lambda search (4 log-spaced lambdas, relative-score stop), batched against sequential."""
    name, size, images, _, width = QUICK[1] if quick else FULL[0]
    images, steps = (2, 3) if quick else (16, 500)
    device = bench.device
    torch.manual_seed(0)
    model = build_model(name, width or 32).to(device).eval()
    x = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(2)).to(device)
    grid = lambda_grid(1e-7, 1e-10, 4)
    variants = ["eager"] + (["compiled+cuda_graphs" if device.type == "cuda" else "compiled"] if compile else [])
    masks = {}
    for variant in variants:
        for search in ("sequential", "batched"):
            common = dict(model=name, size=size, defense=True, steps=steps, variant=f"search-{search}/{variant}",
                          images=images)
            if bench.over_budget():
                bench.write(**common, status="skipped: time budget")
                continue
            engine = _engine(model, variant, True, 2)
            engine.attribute(x, lam="search", lam_grid=grid, search=search, stop=RelativeScoreBelow(0.02))
            engine.max_iter = steps
            res, seconds, peak = _measure(lambda: engine.attribute(
                x, lam="search", lam_grid=grid, search=search, stop=RelativeScoreBelow(0.02)), device)
            reference = masks.setdefault("eager", res.mask)  # the eager sequential search
            bench.write(**common, seconds=seconds, images_per_s=images / seconds, ratio_to_naive=None,
                        peak_memory_mib=peak, lambdas=len(grid),
                        max_mask_diff_to_eager=(res.mask - reference).abs().max().item(), status="ok")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for results.jsonl (created)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 3 steps (a smoke run, CPU or GPU)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled variants")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds after which no variant starts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.out, torch.device(args.device), args.budget)
    steps = 3 if args.quick else 500
    for name, size, images, naive_images, width in QUICK if args.quick else FULL:
        run_model(bench, name, size, images, naive_images, width, steps, not args.no_compile)
    run_search(bench, args.quick, not args.no_compile)
    bench.file.close()


if __name__ == "__main__":
    main()
