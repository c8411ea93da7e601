"""Training throughput of `vitdistill train` against a bare PyTorch loop doing the same work.

Both sides distil a random-init DeiT-Tiny Lift student (width 192 lifted to 384) from a
random-init CaiT-S24 teacher with soft KD + the spectral token loss (the paper's Lift recipe),
AdamW, same batch, same number of steps, in the same process. The trainer reads images through
its DataLoader (PNG files, eval transform, no augmentation); the bare loop gets pre-made tensors,
so the ratio charges the trainer with data loading, logging and bookkeeping.

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


def trainer_rate(data: Path, out: Path, args) -> float:
    from vitdistill.distill import train

    cfg = {
        "model": {"name": "deit_tiny_lift_patch16_224"},
        "teacher": {"name": "cait_s24_224", "kwargs": {"num_classes": args.num_classes}},
        "data": {"train": str(data), "val": str(data), "batch_size": args.batch_size,
                 "steps_per_epoch": args.steps, "max_val_images": 1, "num_workers": args.workers},
        "aug": {"enabled": False},
        "loss": {"alpha": 0.9, "feat_weight": 0.2, "feat_loss": "spectral", "projector": "none"},
        "optim": {"lr": 1e-4}, "sched": {"warmup_epochs": 0},
        "epochs": 1, "device": args.device, "amp": args.amp, "channels_last": False,
        "log": {"interval": 1000, "eval_every": 0, "progress": False},
    }
    train(cfg, output=out)
    rec = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rec if r["kind"] == "epoch"][-1]["images_per_s"]


def bare_rate(data: Path, args) -> float:
    import timm
    import torch.nn.functional as F

    from vitdistill.data import build_dataset, eval_transform

    dev = torch.device(args.device)
    student = timm.create_model("deit_tiny_lift_patch16_224", num_classes=args.num_classes).to(dev).train()
    teacher = timm.create_model("cait_s24_224", num_classes=args.num_classes).to(dev).eval().requires_grad_(False)
    ds = build_dataset(str(data), "train", transform=eval_transform(student))
    B = args.batch_size
    batches = []
    for s in range(args.steps):
        items = [ds[(s * B + i) % len(ds)] for i in range(B)]
        batches.append((torch.stack([it[0] for it in items]).to(dev), torch.tensor([it[1] for it in items]).to(dev)))
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.05)
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    def step(x, y):
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            with torch.inference_mode():
                tf, ti = teacher.forward_intermediates(x, indices=[23], output_fmt="NLC", intermediates_only=False)
                t_logits = teacher.forward_head(tf)
            t_logits, t_tok = t_logits.clone(), ti[0].clone()
            sf, si = student.forward_intermediates(x, indices=[11], norm=True, output_fmt="NLC", intermediates_only=False)
            s_logits = student.forward_head(sf)
            ce = F.cross_entropy(s_logits.float(), y, label_smoothing=0.1)
            kd = F.kl_div(F.log_softmax(s_logits.float(), -1), F.log_softmax(t_logits.float(), -1),
                          reduction="batchmean", log_target=True)

            def spec(tok):
                g = tok.float().transpose(1, 2).reshape(tok.shape[0], tok.shape[2], 14, 14)
                f = torch.fft.rfft2(g, norm="ortho")
                return torch.stack((f.real, f.imag), -1)

            feat = F.mse_loss(spec(si[0]), spec(t_tok))
            loss = 0.1 * ce + 0.9 * kd + 0.2 * feat
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(*batches[0])  # untimed warm-up (the trainer warms up while probing token shapes)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for x, y in batches:
        step(x, y)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * B / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
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
        for r in range(args.reps):  # interleaved, so load changes hit both sides alike
            tr.append(trainer_rate(data, tmp / f"run{r}", args))
            bare.append(bare_rate(data, args))
            print(f"rep {r}: vitdistill train {tr[-1]:.2f} img/s, bare loop {bare[-1]:.2f} img/s", flush=True)
    res = {"device": args.device, "batch_size": args.batch_size, "steps": args.steps, "reps": args.reps,
           "threads": torch.get_num_threads(), "amp": args.amp,
           "trainer_img_s_median": statistics.median(tr), "bare_img_s_median": statistics.median(bare),
           "ratio_of_medians": statistics.median(tr) / statistics.median(bare)}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
