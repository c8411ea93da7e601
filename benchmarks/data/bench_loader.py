"""Images/s per loader process for the paper recipe's training transform, vitdistill vs timm.

Writes ImageNet-like JPEGs (about 500x375, quality 90, a class-folder tree), then times
vitdistill's training loader (the trainer's own pieces: folder data set, seeded per-image
augmentation, repeated-augmentation epoch sampler, collate) and timm's ``create_loader`` on the
same files with the same transform: RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25
(pixel mode), horizontal flip 0.5, repeated augmentation x3, 224x224 output. The two loaders run
interleaved, in alternating order, so load from other jobs falls on both.

Then it derives how many loader processes one GPU needs at the paper recipe's step rate: the
GPU's images/s is an assumed sustained bf16 throughput divided by the training FLOPs per image
(3x the student's forward MACs for forward + backward, plus the teacher's forward MACs, 2 FLOPs
per MAC), both counted by vitdistill on random-init timm models.

    python benchmarks/data/bench_loader.py --images 96 --batches 6 --reps 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RECIPE = {"auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "re_mode": "pixel", "hflip": 0.5}
REPEATS = 3
PER_GPU_BATCH = 2048 // 8  # the paper recipe: global batch 2048 on 8 GPUs


def write_jpegs(root: Path, n: int, classes: int = 8, seed: int = 0) -> list[int]:
    """``n`` photo-like 500x375 JPEGs at quality 90 (smooth shapes + texture), class folders."""
    rng = np.random.default_rng(seed)
    sizes = []
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    for i in range(n):
        folder = root / "train" / f"class{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        img = np.zeros((375, 500, 3), np.float32)
        for _ in range(6):  # soft blobs of colour: the low frequencies of a photograph
            cy, cx, r = rng.uniform(0, 375), rng.uniform(0, 500), rng.uniform(40, 200)
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None] * rng.uniform(
                0, 160, 3
            )
        img += rng.normal(0, 24, img.shape)  # texture, so the JPEGs are about as large as ImageNet's
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        sizes.append(path.stat().st_size)
    return sizes


def vitdistill_loader(root: Path, student, batch: int, workers: int, seed: int):
    from vitdistill.data import build_dataset, collate_skip, train_transform
    from vitdistill.distill.sampler import EpochSampler, SeededSamples

    ds = build_dataset(root, "train", transform=train_transform(student, **RECIPE))
    n = len(ds) - len(ds) % batch
    sampler = EpochSampler(n, batch, 1, 0, 1, REPEATS, True, seed, seeded=True)
    return torch.utils.data.DataLoader(
        SeededSamples(ds), batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate_skip
    )


def timm_loader(root: Path, batch: int, workers: int):
    from timm.data import create_dataset, create_loader

    from vitdistill.data.transforms import guard_posterize

    ds = create_dataset("", root=str(root), split="train")
    # timm's repeated-augmentation sampler needs torch.distributed; repeats change the order of the
    # images, not the work per image, so this side reads each image once per epoch
    loader = create_loader(
        ds,
        input_size=(3, 224, 224),
        batch_size=batch,
        is_training=True,
        use_prefetcher=False,
        num_workers=workers,
        interpolation="bicubic",
        crop_pct=0.875,
        **{k: v for k, v in RECIPE.items() if k != "hflip"},
        hflip=RECIPE["hflip"],
    )
    # timm's posterize fails on 0 bits with Pillow >= 11 (RandAugment magnitudes reach 10 here),
    # which stops its loader at random: swap in the same 0-bit-safe op vitdistill uses
    guard_posterize(loader.dataset.transform)
    return loader


def images_per_s(loader, batches: int) -> tuple[float, float]:
    """Images per wall second and per CPU second of this process, over ``batches`` batches after one
    warm-up batch (worker start-up not counted). With workers the CPU figure leaves their work out."""
    it = iter(loader)
    next(it)
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    for _ in range(batches):
        n += len(next(it)[0])
    return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


def cores_needed(loader_rate: float, tflops: float) -> dict:
    """GPU images/s at ``tflops`` sustained for the paper's WideLast from CaiT-S24, and the loader cores that takes."""
    import timm

    import vitdistill.models  # noqa: F401  (registers the WideLast student with timm)
    from vitdistill.models.profile import count_macs

    wl = timm.create_model("deit_tiny_widelast_patch16_224", num_classes=1000)
    teacher = timm.create_model("cait_s24_224", num_classes=1000)
    s_macs, t_macs = count_macs(wl, (3, 224, 224)), count_macs(teacher, (3, 224, 224))
    out = {"student_gmacs": s_macs / 1e9, "teacher_gmacs": t_macs / 1e9, "tflops": tflops}
    for name, macs in (("student alone", 3 * s_macs), ("with teacher", 3 * s_macs + t_macs)):
        gpu_rate = tflops * 1e12 / (2 * macs)
        out[name] = {"gpu_images_per_s": gpu_rate, "loader_processes": math.ceil(gpu_rate / loader_rate)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batches", type=int, default=6, help="timed batches per repetition and loader")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="0: the main process loads (one loader process)")
    ap.add_argument(
        "--tflops",
        type=float,
        default=125.0,
        help="sustained bf16 training TFLOP/s of one GPU (default 125: 40%% of an A100's 312 peak)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    import timm

    student = timm.create_model("deit_tiny_patch16_224", num_classes=8)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sizes = write_jpegs(root, args.images)
        print(f"{len(sizes)} JPEGs 500x375 q90, mean {statistics.mean(sizes) / 1024:.0f} KiB")
        ours, theirs = [], []
        for rep in range(args.reps):
            pair = [
                (
                    "vitdistill",
                    lambda r=rep: vitdistill_loader(root, student, args.batch_size, args.workers, r),
                    ours,
                ),
                ("timm", lambda: timm_loader(root, args.batch_size, args.workers), theirs),
            ]
            for name, make, into in pair if rep % 2 == 0 else pair[::-1]:
                into.append(images_per_s(make(), args.batches))
                print(f"rep {rep} {name:10s} {into[-1][0]:7.1f} img/s wall  {into[-1][1]:7.1f} img/CPU-s")
    med = {
        k: [statistics.median(x[i] for x in v) for i in (0, 1)] for k, v in (("ours", ours), ("timm", theirs))
    }
    print(
        f"median per loader process: vitdistill {med['ours'][0]:.1f} img/s wall, {med['ours'][1]:.1f} img/CPU-s; "
        f"timm create_loader {med['timm'][0]:.1f} img/s wall, {med['timm'][1]:.1f} img/CPU-s"
    )
    # a loader core delivers images at the CPU-time rate (the main process does all the work with
    # --workers 0); with workers the wall rate of one process is the figure
    rate = med["ours"][1] if args.workers == 0 else med["ours"][0]
    need = cores_needed(rate, args.tflops)
    print(f"loader rate used: {rate:.1f} img/s per core")
    print(
        f"WideLast {need['student_gmacs']:.3f} GMACs, CaiT-S24 teacher {need['teacher_gmacs']:.3f} GMACs, "
        f"GPU at {args.tflops:g} TFLOP/s sustained:"
    )
    for case in ("student alone", "with teacher"):
        c = need[case]
        steps = c["gpu_images_per_s"] / PER_GPU_BATCH
        print(
            f"  {case:13s}: {c['gpu_images_per_s']:6.0f} img/s per GPU ({steps:.1f} steps/s of {PER_GPU_BATCH} images) "
            f"-> {c['loader_processes']} loader cores"
        )


if __name__ == "__main__":
    main()
