"""Analysis benchmark: `analyze` time / bare forward time, and peak memory vs image count.

    python benchmarks/analysis/bench_analysis.py ratio --images 200 --batch-size 32 [--device cuda]
    python benchmarks/analysis/bench_analysis.py memory --images 200,1000 [--device cuda]

The model is CaiT-S24 (``cait_s24_224``) with random weights; the images are smooth random
224x224 JPEGs written once to a scratch folder, read through the model's timm eval transform.
``ratio`` times, in one process, the bare forward pass (full model, inference mode) over the same
DataLoader and batch size, then the whole ``analyze`` call (all 24 blocks, every statistic, tables
and plots), then the bare forward again; the ratio uses the mean of the two forward timings.
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
    )
    sync()
    return time.perf_counter() - t, summary


def cmd_ratio(args) -> dict:
    import torch

    from vitdistill.utils.malloc import keep_large_buffers

    torch.set_num_threads(args.threads) if args.threads else None
    root = Path(args.scratch)
    data = data_spec(args, args.images)
    model = build_model(args)
    fwd_args = (model, data, args.batch_size, args.device, args.workers, args.split, args.images)
    bare_forward(*fwd_args) if args.warmup else None
    # analyze fixes glibc's allocator thresholds for the rest of the process; the bare forward
    # passes of the ratio run under the same settings, so the ratio measures the statistics
    # only. One forward under the default allocator, first, shows what the settings are worth.
    f0 = bare_forward(*fwd_args) if args.default_malloc_forward else None
    keep_large_buffers()
    f1 = bare_forward(*fwd_args)
    ta, summary = run_analyze(model, data, root / "out_ratio", args, images=args.images)
    f2 = bare_forward(*fwd_args)
    fwd = (f1 + f2) / 2
    res = {
        "model": args.model,
        "images": summary["images"],
        "layers": len(summary["layers"]),
        "batch_size": args.batch_size,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "forward_s": [f1, f2],
        "forward_default_malloc_s": f0,
        "analyze_s": ta,
        "ratio": ta / fwd,
        "analyze_breakdown": summary["timing"],
        "svd_p99": summary["svd"]["p99"],
        "pca_p99": summary["pca"]["p99"],
        "sep_d": summary["sep"]["d"],
    }
    return res


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
    p.add_argument("mode", choices=["ratio", "memory", "memory-one"])
    p.add_argument("--images", default="200")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--warmup", action="store_true", help="one extra untimed forward pass first")
    p.add_argument(
        "--default-malloc-forward",
        action="store_true",
        help="ratio: also time one forward pass under glibc's default allocator settings, first",
    )
    p.add_argument("--model", default="cait_s24_224")
    p.add_argument("--model-kwargs", default="{}", help='JSON timm kwargs, e.g. {"img_size": 32}')
    p.add_argument("--repeats", type=int, default=1, help="memory: fresh processes per image count")
    p.add_argument("--layers", default="all")
    p.add_argument("--data", help="data spec instead of the generated JPEGs (e.g. synthetic:shapes?n=1200)")
    p.add_argument("--split", default="val")
    p.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "vitdistill_bench"))
    args = p.parse_args()
    if args.mode == "ratio":
        args.images = int(args.images)
        res = cmd_ratio(args)
    elif args.mode == "memory":
        res = cmd_memory(args)
    else:
        res = cmd_memory_one(args)
    print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
