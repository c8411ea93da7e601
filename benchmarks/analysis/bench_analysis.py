"""Analysis benchmark: `analyze` time / bare forward time, and peak memory vs image count.

    python benchmarks/analysis/bench_analysis.py ratio --images 64 --batch-size 32 --threads 2 --runs 3
    python benchmarks/analysis/bench_analysis.py ratio ... --load 2     # beside a competing 2-thread job
    python benchmarks/analysis/bench_analysis.py memory --images 200,1000 [--device cuda]

The model is CaiT-S24 (``cait_s24_224``) with random weights; the images are smooth random
224x224 JPEGs written once to a scratch folder, read through the model's timm eval transform.
``ratio`` runs whole processes, alternating: a forward-only process (build the model, a bare
forward pass over the same DataLoader and batch size, full model, inference mode) and an
``analyze`` process (all 24 blocks, every statistic, tables and plots), ``--runs`` of each. Both
run under the allocator settings ``analyze`` uses (the forward-only process sets them at start),
so the ratio measures the statistics and nothing else. The ratio is the median wall time of the
``analyze`` processes over the median of the forward-only ones (process start to exit). With
``--load K`` a competing K-thread job (float32 matrix products in a loop) runs for the whole
measurement; the benchmark starts and stops it itself.
``memory`` runs ``analyze`` once per image count, each in a fresh process, and reports peak RSS
(and peak CUDA memory on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(root: Path, n: int, size: int = 224, seed: int = 0) -> Path:
    """n smooth random RGB JPEGs (upsampled low-res noise), reused between calls."""
    from PIL import Image

    folder = root / f"images_{n}"
    marker = folder / ".done"
    if marker.exists():
        return folder
    (folder / "x").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        low = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((size, size), Image.BICUBIC)
        noise = rng.integers(-20, 20, size=(size, size, 3))
        arr = np.clip(np.asarray(img, dtype=np.int32) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / "x" / f"{i:05d}.jpg", quality=90)
    marker.touch()
    return folder


def build_model(args):
    import timm
    import torch

    torch.manual_seed(0)
    return (
        timm.create_model(args.model, pretrained=False, **json.loads(args.model_kwargs))
        .eval()
        .to(args.device)
    )


def data_spec(args, n: int) -> str:
    return args.data or str(make_images(Path(args.scratch), n))


def bare_forward(
    model,
    data: str,
    batch_size: int,
    device: str,
    workers: int,
    split: str = "val",
    images: int | None = None,
) -> float:
    import torch

    from vitdistill.data import build_dataset, collate_skip, eval_transform

    ds = build_dataset(data, split=split, transform=eval_transform(model), max_images=images)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_skip
    )
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t = time.perf_counter()
    with torch.inference_mode():
        for x, _, _, _ in loader:
            model(x.to(device, non_blocking=True))
    sync()
    return time.perf_counter() - t


def run_analyze(model, data, out, args, images=None) -> tuple[float, dict]:
    import torch

    from vitdistill.analysis import analyze

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    t = time.perf_counter()
    summary = analyze(
        model,
        data,
        out,
        layers=args.layers,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.workers,
        progress=False,
        images=images,
        checkpoint_every=0,
        split=args.split,
        overlap=args.overlap,
    )
    sync()
    return time.perf_counter() - t, summary


def cmd_forward_one(args) -> dict:
    """One forward-only process: the same allocator settings as analyze, the same DataLoader."""
    import torch

    from vitdistill.utils.malloc import keep_large_buffers

    keep_large_buffers()
    torch.set_num_threads(args.threads) if args.threads else None
    model = build_model(args)
    t = bare_forward(
        model,
        data_spec(args, args.images),
        args.batch_size,
        args.device,
        args.workers,
        args.split,
        args.images,
    )
    return {"forward_s": t, "threads": torch.get_num_threads()}


def cmd_analyze_one(args) -> dict:
    import torch

    torch.set_num_threads(args.threads) if args.threads else None
    model = build_model(args)
    ta, summary = run_analyze(
        model, data_spec(args, args.images), Path(args.scratch) / "out_ratio", args, images=args.images
    )
    return {
        "analyze_s": ta,
        "timing": summary["timing"],
        "svd_p99": summary["svd"]["p99"],
        "pca_global": summary["pca"]["global"],
        "sep_d": summary["sep"]["d"],
        "rechecked": summary["svd"].get("float64_rechecked_images"),
    }


COMPETITOR = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a)
"""


def _child(args, mode: str) -> tuple[float, dict]:
    skip = ("mode", "runs", "load", "repeats")
    cmd = [sys.executable, __file__, mode]
    for k, v in vars(args).items():
        if k in skip or v is None or v is False:
            continue
        cmd.append(f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}"))
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"{mode} failed:\n{r.stderr[-3000:]}")
    return wall, json.loads(r.stdout.strip().splitlines()[-1])


def cmd_ratio(args) -> dict:
    import statistics

    data_spec(args, args.images)  # write the images before anything is timed
    competitor = None
    if args.load:
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR, str(args.load)])
    try:
        fwd, ana = [], []
        for _ in range(args.runs):
            fwd.append(_child(args, "forward-one"))
            ana.append(_child(args, "analyze-one"))
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    f_med = statistics.median(w for w, _ in fwd)
    a_med = statistics.median(w for w, _ in ana)
    return {
        "model": args.model,
        "images": args.images,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "competing_threads": args.load,
        "load_average_at_end": os.getloadavg(),
        "forward_process_s": [w for w, _ in fwd],
        "analyze_process_s": [w for w, _ in ana],
        "forward_loop_s": [r["forward_s"] for _, r in fwd],
        "analyze_call_s": [r["analyze_s"] for _, r in ana],
        "ratio": a_med / f_med,
        "ratio_loop_only": statistics.median(r["analyze_s"] for _, r in ana)
        / statistics.median(r["forward_s"] for _, r in fwd),
        "analyze": ana[-1][1],
    }


def cmd_memory_one(args) -> dict:
    import torch

    torch.set_num_threads(args.threads) if args.threads else None
    root = Path(args.scratch)
    n = int(args.images)
    data = data_spec(args, 1000 if n <= 1000 else n)
    model = build_model(args)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    ta, summary = run_analyze(model, data, root / f"out_mem_{n}", args, images=n)
    res = {
        "model": args.model,
        "images": summary["images"],
        "layers": len(summary["layers"]),
        "analyze_s": ta,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.device.startswith("cuda"):
        res["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def cmd_memory(args) -> dict:
    counts = [int(v) for v in args.images.split(",")]
    if not args.data:
        make_images(Path(args.scratch), max(1000, *counts))
    out = {}
    runs: dict[int, list[dict]] = {}
    for n in [c for _ in range(args.repeats) for c in counts]:  # interleaved: 200, 1000, 200, 1000
        cmd = [
            sys.executable,
            __file__,
            "memory-one",
            "--images",
            str(n),
            "--batch-size",
            str(args.batch_size),
            "--device",
            args.device,
            "--scratch",
            args.scratch,
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
            "--model",
            args.model,
            "--model-kwargs",
            args.model_kwargs,
            "--layers",
            args.layers,
            "--split",
            args.split,
        ] + (["--data", args.data] if args.data else [])
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.setdefault(n, []).append(json.loads(r.stdout.strip().splitlines()[-1]))
    for n, rs in runs.items():
        out[n] = {**rs[0], "peak_rss_mib": [x["peak_rss_mib"] for x in rs]}
        if "peak_cuda_mib" in rs[0]:
            out[n]["peak_cuda_mib"] = [x["peak_cuda_mib"] for x in rs]
    a, b = out[counts[0]], out[counts[-1]]
    # the peak of one process varies from run to run (heap layout); compare the largest peaks
    out["rss_growth"] = max(b["peak_rss_mib"]) / max(a["peak_rss_mib"]) - 1
    if "peak_cuda_mib" in a:
        out["cuda_growth"] = max(b["peak_cuda_mib"]) / max(a["peak_cuda_mib"]) - 1
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["ratio", "forward-one", "analyze-one", "memory", "memory-one"])
    p.add_argument("--images", default="64")
    p.add_argument("--overlap", action="store_true", help="analyze --overlap (statistics beside the forward)")
    p.add_argument("--runs", type=int, default=3, help="ratio: processes of each kind (median)")
    p.add_argument("--load", type=int, default=0, help="ratio: threads of a competing job (0 = none)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--model", default="cait_s24_224")
    p.add_argument("--model-kwargs", default="{}", help='JSON timm kwargs, e.g. {"img_size": 32}')
    p.add_argument("--repeats", type=int, default=1, help="memory: fresh processes per image count")
    p.add_argument("--layers", default="all")
    p.add_argument("--data", help="data spec instead of the generated JPEGs (e.g. synthetic:shapes?n=1200)")
    p.add_argument("--split", default="val")
    p.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "vitdistill_bench"))
    args = p.parse_args()
    if args.mode in ("ratio", "forward-one", "analyze-one"):
        args.images = int(args.images)
        res = {"ratio": cmd_ratio, "forward-one": cmd_forward_one, "analyze-one": cmd_analyze_one}[args.mode](
            args
        )
    elif args.mode == "memory":
        res = cmd_memory(args)
    else:
        res = cmd_memory_one(args)
    print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
