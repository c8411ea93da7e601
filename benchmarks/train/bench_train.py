"""Training throughput of `vitdistill train` against a bare PyTorch loop doing the same work.

Both sides distil a random-init DeiT-Tiny Lift student (width 192 lifted to 384) from a
random-init CaiT-S24 teacher with soft KD + the spectral token loss (the paper's Lift recipe),
AdamW, same batch, same number of steps, in the same process. The trainer reads images through
its DataLoader (PNG files, eval transform, no augmentation); the bare loop gets pre-made tensors,
so the ratio charges the trainer with data loading, logging and bookkeeping. Both sides warm up
first (one epoch / one step). Rates are reported by wall clock and by process CPU time: on a
shared machine the CPU-time ratio (with --threads 1) is the one that other processes disturb least.

    python benchmarks/train/bench_train.py --batch-size 8 --steps 4 --reps 3 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import vitdistill  # noqa: F401  (registers the students)


def make_images(root: Path, n: int, size: int) -> Path:
    from PIL import Image

    from vitdistill.data import build_dataset

    ds = build_dataset(f"synthetic:shapes?n={n}&size={size}&types=3", "train")
    for i in range(len(ds)):
        arr, label = ds.render(i)
        d = root / f"c{label}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(d / f"{i}.png")
    return root


def trainer_rate(data: Path, out: Path, args) -> tuple[float, float]:
    """(images/s by wall clock, images/s by process CPU time) of the trainer's epoch loop.

    Builds the same ``Trainer`` that ``vitdistill train`` runs, warms up with one epoch of
    ``steps`` steps, then times the second epoch: data loading, the task, backward, optimizer,
    scheduler, logging (one step record per step) -- everything but per-epoch eval/checkpoints.
    """
    from vitdistill.distill import config as C
    from vitdistill.distill.trainer import Trainer

    cfg = C.resolve(
        {
            "model": {"name": "deit_tiny_lift_patch16_224"},
            "teacher": {"name": "cait_s24_224", "kwargs": {"num_classes": args.num_classes}},
            "data": {
                "train": str(data),
                "val": str(data),
                "batch_size": args.batch_size,
                "steps_per_epoch": args.steps,
                "max_val_images": 1,
                "num_workers": args.workers,
            },
            "aug": {"enabled": False},
            "loss": {"alpha": 0.9, "feat_weight": 0.2, "feat_loss": "spectral", "projector": "none"},
            "optim": {"lr": 1e-4},
            "sched": {"warmup_epochs": 0},
            "epochs": 2,
            "device": args.device,
            "amp": args.amp,
            "log": {"interval": 1, "eval_every": 0, "progress": False},
        }
    )
    tr = Trainer(cfg, out)
    try:
        tr.loaders.sampler.set_epoch(0)
        tr._train_epoch(0)  # warm-up
        tr.loaders.sampler.set_epoch(1)
        _sync(args.device)
        w0, p0 = time.perf_counter(), time.process_time()
        stats = tr._train_epoch(1)
        _sync(args.device)
        w, p = time.perf_counter() - w0, time.process_time() - p0
    finally:
        tr.close()
    n = stats["train_images"]
    return n / w, n / p


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bare_rate(data: Path, args) -> float:
    import timm
    import torch.nn.functional as F

    from vitdistill.data import build_dataset, eval_transform

    dev = torch.device(args.device)
    student = timm.create_model("deit_tiny_lift_patch16_224", num_classes=args.num_classes).to(dev).train()
    teacher = (
        timm.create_model("cait_s24_224", num_classes=args.num_classes).to(dev).eval().requires_grad_(False)
    )
    ds = build_dataset(str(data), "train", transform=eval_transform(student))
    B = args.batch_size
    batches = []
    for s in range(args.steps):
        items = [ds[(s * B + i) % len(ds)] for i in range(B)]
        batches.append(
            (torch.stack([it[0] for it in items]).to(dev), torch.tensor([it[1] for it in items]).to(dev))
        )
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.05)
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]

    def step(x, y):
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            with torch.inference_mode():
                tf, ti = teacher.forward_intermediates(
                    x, indices=[23], output_fmt="NLC", intermediates_only=False
                )
                t_logits = teacher.forward_head(tf)
            t_logits, t_tok = t_logits.clone(), ti[0].clone()
            sf, si = student.forward_intermediates(
                x, indices=[11], norm=True, output_fmt="NLC", intermediates_only=False
            )
            s_logits = student.forward_head(sf)
            ce = F.cross_entropy(s_logits.float(), y, label_smoothing=0.1)
            kd = F.kl_div(
                F.log_softmax(s_logits.float(), -1),
                F.log_softmax(t_logits.float(), -1),
                reduction="batchmean",
                log_target=True,
            )

            def spec(tok):
                g = tok.float().transpose(1, 2).reshape(tok.shape[0], tok.shape[2], 14, 14)
                f = torch.fft.rfft2(g, norm="ortho")
                return torch.stack((f.real, f.imag), -1)

            feat = F.mse_loss(spec(si[0]), spec(t_tok))
            loss = 0.1 * ce + 0.9 * kd + 0.2 * feat
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(*batches[0])  # warm-up, as the trainer's first epoch
    _sync(args.device)
    w0, p0 = time.perf_counter(), time.process_time()
    for x, y in batches:
        step(x, y)
    _sync(args.device)
    n = len(batches) * B
    return n / (time.perf_counter() - w0), n / (time.process_time() - p0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_images(tmp / "data", max(args.batch_size * args.steps, 12), 224)
        args.num_classes = len([d for d in data.iterdir() if d.is_dir()])
        tr, bare = [], []
        for r in range(args.reps):  # interleaved, order alternating, so load changes hit both sides alike
            if r % 2:
                bare.append(bare_rate(data, args))
                tr.append(trainer_rate(data, tmp / f"run{r}", args))
            else:
                tr.append(trainer_rate(data, tmp / f"run{r}", args))
                bare.append(bare_rate(data, args))
            print(
                f"rep {r}: trainer {tr[-1][0]:.3f} img/s wall, {tr[-1][1]:.3f} img/s cpu; "
                f"bare {bare[-1][0]:.3f} wall, {bare[-1][1]:.3f} cpu; ratio wall {tr[-1][0] / bare[-1][0]:.3f}, "
                f"cpu {tr[-1][1] / bare[-1][1]:.3f}",
                flush=True,
            )
    res = {
        "device": args.device,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "reps": args.reps,
        "threads": torch.get_num_threads(),
        "amp": args.amp,
    }
    for j, clock in enumerate(("wall", "cpu")):
        t, b = [x[j] for x in tr], [x[j] for x in bare]
        res[f"trainer_img_s_{clock}_median"] = statistics.median(t)
        res[f"bare_img_s_{clock}_median"] = statistics.median(b)
        res[f"ratio_{clock}_median_per_rep"] = statistics.median(x / y for x, y in zip(t, b, strict=True))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
