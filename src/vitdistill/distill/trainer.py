"""The training loop: one process or many under torchrun, CPU or GPU.

Read top to bottom: :func:`train` resolves the config and builds a :class:`Trainer`;
``Trainer.__init__`` builds data, models, optimizer, scheduler, EMA; ``Trainer.run`` loops over
epochs (``_train_epoch``), evaluates, writes ``metrics.jsonl`` and checkpoints.

Reproducibility: every epoch reseeds torch / numpy / random and the sampler from
(seed, rank, epoch), and each image's augmentation is seeded from (seed, epoch, position in the
epoch's order) (:class:`SeededSamples`), whatever the number of DataLoader workers. A run resumed
from ``last.pt`` replays the rest exactly (bitwise on CPU with ``deterministic: true``).
``last.pt`` is written at each epoch end and, with ``log.checkpoint_steps: N``, every N optimizer
steps inside an epoch too (with each rank's RNG states and loss sums): the resumed epoch's
sampler starts at that step, so the images before it are not read again.

Batches: ``data.batch_size`` is the GLOBAL batch per optimizer step. Each step takes the next
``batch_size`` indices of one shared permutation and splits them into ``world_size x grad_accum``
micro-batches, so 1 process and N processes see the same images per step.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from vitdistill.distill import build as build_mod
from vitdistill.distill import checkpoint as ckpt_mod
from vitdistill.distill import config as config_mod
from vitdistill.distill.evaluate import ShardSampler, evaluate_loader
from vitdistill.distill.task import DistillTask
from vitdistill.errors import UserError
from vitdistill.models.profile import count_params
from vitdistill.utils import dist as dist_mod
from vitdistill.utils.device import amp_dtype, autocast, resolve_device
from vitdistill.utils.io import atomic_write_json, atomic_write_text
from vitdistill.utils.lock import folder_lock
from vitdistill.utils.markers import refuse_inside
from vitdistill.utils.progress import Progress, fmt_duration


def train(
    config: dict | str | os.PathLike | None = None,
    overrides=(),
    output: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    *,
    data: str | None = None,
    device: str | None = None,
    strict: bool | None = None,
) -> dict[str, Any]:
    """Train (or distil) a student from a config; returns the summary (also in RUN/summary.json).

    ``overrides`` are ``"key=value"`` strings (``"loss.alpha=0.9"``); ``resume`` is ``"auto"``
    (continue RUN/checkpoints/last.pt when it exists) or a checkpoint path.
    """
    ov = list(overrides)
    if data is not None:
        ov.append(("data.train", data))
    if device is not None:
        ov.append(("device", device))
    if strict is not None:
        ov.append(("data.strict", bool(strict)))
    cfg = config_mod.resolve(config, ov)
    if output is None:
        stem = Path(config).stem if isinstance(config, str | os.PathLike) else "run"
        output = Path("runs") / stem
    refuse_inside(output, [cfg["data"]["train"], cfg["data"]["val"]], "--output")
    with folder_lock(output, "train"):  # a second run into this folder fails at once
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        try:
            trainer = Trainer(cfg, Path(output), resume)
        except BaseException:
            torch.use_deterministic_algorithms(was_deterministic)
            raise
        try:
            return trainer.run()
        finally:
            trainer.close()


class EpochSampler(Sampler[int]):
    """This rank's indices for one epoch, in global-batch order (repeated augmentation optional).

    One permutation per epoch (seeded by seed + epoch, identical on every rank). With
    ``repeats`` r > 1 each index appears r times in a row (DeiT's repeated augmentation) and the
    list is cut back to the data set length, so an epoch keeps its length. Only whole global
    batches are used. Step s, micro-step a, rank k reads the slice
    ``[s*G + (a*W + k)*m, ... + m)`` with G the global batch, W ranks and m the micro-batch.

    ``set_epoch(e, start_step=s)`` starts the epoch at optimizer step s (a mid-epoch resume):
    the skipped images are never read. With ``seeded=True`` each item is ``(index, seed)``, the
    seed a function of (seed, epoch, position in the epoch's order) for :class:`SeededSamples`.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        world: int,
        rank: int,
        accum: int,
        repeats: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        max_steps: int | None = None,
        seeded: bool = False,
    ):
        self.n, self.G, self.W, self.rank, self.accum = n, global_batch, world, rank, accum
        self.m = global_batch // (world * accum)
        self.repeats, self.shuffle, self.seed, self.seeded = repeats, shuffle, seed, seeded
        self.steps = n // global_batch if max_steps is None else min(n // global_batch, max_steps)
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.accum * self.m

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        if self.repeats > 1:
            order = order.repeat_interleave(self.repeats)[: self.n]
        order = order.tolist()
        for s in range(self.start_step, self.steps):
            for a in range(self.accum):
                start = s * self.G + (a * self.W + self.rank) * self.m
                for pos in range(start, start + self.m):
                    yield (order[pos], sample_seed(self.seed, self.epoch, pos)) if self.seeded else order[pos]


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed for the image at ``position`` of an epoch's order (splitmix64 of the three)."""
    mask = (1 << 64) - 1
    x = ((seed * 1_000_003 + epoch) * (1 << 32) + position + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return (x ^ (x >> 31)) >> 1


class SeededSamples(Dataset):
    """Reads ``(index, seed)`` keys, seeding the RNGs the transforms draw from before each image.

    An image's augmentation then depends on (seed, epoch, position) only: not on the number of
    DataLoader workers, nor on which worker reads it or what that worker read before. This is
    what lets a mid-epoch resume skip to its position without replaying the skipped images. In
    the main process (``num_workers: 0``) the RNG states are put back afterwards, so the model's
    own random draws (drop path, mixup) follow one stream whatever the data loading does.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list) -> list:
        """A batch at once (the DataLoader calls this): the main process saves its RNGs once."""
        if get_worker_info() is not None:
            return [self._read(key) for key in keys]
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            return [self._read(key) for key in keys]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])

    def _read(self, key):
        index, seed = key
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.default_generator.manual_seed(seed)  # the CPU generator only: the CUDA ones are the model's
        return self.dataset[index]


def process_seed(cfg: dict, rank: int, epoch: int | None = None) -> int:
    """The seed of process ``rank``: ``seed + rank`` at start, then one per (seed, rank, epoch).

    ``seed_per_rank: false`` gives every rank rank 0's seeds, as the published code did.
    """
    rank = rank if cfg["seed_per_rank"] else 0
    if epoch is None:
        return cfg["seed"] + rank
    return cfg["seed"] * 1_000_003 + rank * 10_007 + epoch


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class EpochStats:
    """One epoch's running sums of the loss terms, kept on the device: no host sync per step.

    ``first_bad`` holds, per term, the first optimizer step with a non-finite value (-1: none).
    A mid-epoch checkpoint stores :meth:`state_dict` so a resumed epoch reports the same means.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.names: list[str] | None = None
        self.sums: torch.Tensor | None = None
        self.first_bad: torch.Tensor | None = None
        self.n_steps, self.n_images, self.skipped, self.elapsed = 0, 0, 0, 0.0

    def add(self, terms: dict, n_images: int, acc: int, step: int) -> torch.Tensor:
        if self.names is None:
            self.names = list(terms)
            self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)
            self.first_bad = torch.full((len(self.names),), -1, dtype=torch.long, device=self.device)
        vals = torch.stack([terms[k].detach().double() for k in self.names])
        self.sums += vals / acc
        self.first_bad = torch.where((~torch.isfinite(vals)) & (self.first_bad < 0), step, self.first_bad)
        self.n_images += n_images
        return vals

    def state_dict(self) -> dict:
        tensors = {"sums": self.sums, "first_bad": self.first_bad}
        return {
            "names": self.names,
            **{k: None if t is None else t.cpu() for k, t in tensors.items()},
            "n_steps": self.n_steps,
            "n_images": self.n_images,
            "skipped": int(self.skipped),
            "elapsed": self.elapsed,
        }

    def load_state_dict(self, st: dict) -> None:
        self.names = st["names"]
        self.sums = None if st["sums"] is None else st["sums"].to(self.device)
        self.first_bad = None if st["first_bad"] is None else st["first_bad"].to(self.device)
        self.n_steps, self.n_images, self.skipped = st["n_steps"], st["n_images"], st["skipped"]
        self.elapsed = st["elapsed"]

    def reduce(self, lr: float) -> dict:
        """The epoch record's training part: per-term means over all ranks' steps, counts, speed."""
        dev, k = self.device, len(self.names)
        counts = torch.tensor([self.n_steps, self.n_images, self.skipped], dtype=torch.float64, device=dev)
        total = dist_mod.all_reduce_sum(torch.cat([self.sums, counts]))
        out = {
            f"train_{name}": total[j].item() / max(total[k].item(), 1) for j, name in enumerate(self.names)
        }
        out.update(
            {
                "lr": lr,
                "images_per_s": total[k + 1].item() / max(self.elapsed, 1e-9),
                "train_images": int(total[k + 1].item()),
                "train_skipped": int(total[k + 2].item()),
                "epoch_time_s": self.elapsed,
            }
        )
        return out


def build_optimizer(cfg: dict, trainable: nn.Module):
    """(timm optimizer, lr) for a config; ``optim.decay_embeddings`` also decays no_weight_decay()."""
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    o = cfg["optim"]
    lr = o["lr"] if o["lr"] is not None else o["lr_base"] * cfg["data"]["batch_size"] / o["lr_base_size"]
    group_fn = None
    if o["decay_embeddings"]:  # the published code: only 1-D tensors and biases are not decayed

        def group_fn(model):
            return param_groups_weight_decay(model, o["weight_decay"], no_weight_decay_list=())

    try:
        optimizer = create_optimizer_v2(
            trainable,
            opt=o["opt"],
            lr=lr,
            weight_decay=o["weight_decay"],
            momentum=o["momentum"],
            param_group_fn=group_fn,
        )
    except (ValueError, AssertionError) as e:
        raise UserError(f"optim.opt={o['opt']!r}: {e}") from None
    return optimizer, lr


def build_scheduler(cfg: dict, optimizer, steps_per_epoch: int):
    """timm's scheduler: stepped per optimizer update, or per epoch for ``sched.published_lag``."""
    from timm.scheduler import create_scheduler_v2

    s = cfg["sched"]
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=s["name"],
        num_epochs=cfg["epochs"],
        decay_epochs=s["decay_epochs"],
        decay_rate=s["decay_rate"],
        min_lr=s["min_lr"],
        warmup_lr=s["warmup_lr"],
        warmup_epochs=s["warmup_epochs"],
        cooldown_epochs=s["cooldown_epochs"],
        step_on_epochs=s["published_lag"],
        updates_per_epoch=steps_per_epoch,
    )
    return scheduler


class Trainer:
    def __init__(self, cfg: dict, run_dir: Path, resume=None):
        self.cfg = cfg
        self.t0 = time.time()
        self.dinfo = dist_mod.init_distributed(cfg["device"])
        self.device = resolve_device(cfg["device"], self.dinfo.local_rank)
        self.main = self.dinfo.is_main
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.tb = None
        self._was_deterministic = torch.are_deterministic_algorithms_enabled()
        self._own_group = dist_mod.launched_by_torchrun() and not torch.distributed.is_initialized()
        if cfg["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        seed_all(process_seed(cfg, self.dinfo.rank))
        self.resume_path = self._resume_path(resume)
        train_ds, val_ds = self._build_datasets()
        student = self._build_student()
        teacher = self._build_teacher(student)
        self._set_transforms(student, train_ds, val_ds)
        self._build_task(student, teacher)
        self._build_loaders(train_ds, val_ds)
        self._build_mixup()
        self._build_optimizer()
        self._build_scheduler()
        self._build_ema_and_wrappers()
        self.start_epoch, self.num_updates = 0, 0
        self.best = {"raw": None, "ema": None}
        self.resume_in_epoch: dict | None = None  # this rank's part of a mid-epoch checkpoint
        self.last_eval: dict[str, Any] = {}
        if self.resume_path is not None:
            self._load(self.resume_path)
        self._open_logs()

    # ----------------------------------------------------------------- setup
    def _resume_path(self, resume) -> Path | None:
        last = self.ckpt_dir / "last.pt"
        if resume is None:
            if last.exists():
                raise UserError(
                    f"{self.run_dir} already holds a run (checkpoints/last.pt): use --resume auto "
                    "to continue it, or another --output"
                )
            return None
        if str(resume) == "auto":
            return last if last.exists() else None
        p = Path(resume)
        if not p.is_file():
            raise UserError(f"--resume {resume}: no such checkpoint file (use --resume auto or a .pt path)")
        return p

    def _build_datasets(self) -> tuple:
        """The training and validation sets, transforms not yet set; sets ``num_classes``."""
        from vitdistill.data import build_dataset

        d = self.cfg["data"]
        if not d["train"]:
            raise UserError(
                "no training data: set data.train in the config or pass --data DIR|synthetic:NAME"
            )
        train_ds = build_dataset(
            d["train"], "train", transform=None, strict=d["strict"], max_images=d["max_train_images"]
        )
        val_ds = build_dataset(
            d["val"] or d["train"], "val", transform=None, strict=d["strict"], max_images=d["max_val_images"]
        )
        if len(train_ds) == 0:
            raise UserError(f"training data {d['train']} holds no images")
        self.num_classes = train_ds.num_classes
        if val_ds.num_classes != self.num_classes:
            raise UserError(
                f"training data has {self.num_classes} classes but validation data has {val_ds.num_classes}"
            )
        return train_ds, val_ds

    def _build_student(self) -> nn.Module:
        """The student from its spec (timm name or remedy), with its starting weights."""
        mc = self.cfg["model"]
        self.spec = build_mod.model_spec(mc, self.num_classes)
        student = build_mod.create_from_spec(self.spec, pretrained=mc["pretrained"])
        if mc["checkpoint"]:
            build_mod.load_weights(
                student,
                mc["checkpoint"],
                role="student",
                trust=mc["trust_checkpoint"],
                opt_in="--trust-checkpoint (or model.trust_checkpoint: true)",
            )
        self.student_params = count_params(student)
        return student

    def _build_teacher(self, student: nn.Module) -> nn.Module | None:
        """The frozen teacher when a loss term needs it; sets ``input_size`` (the student's)."""
        from vitdistill.data import resolve_data_config
        from vitdistill.data.transforms import model_input_size

        lc = self.cfg["loss"]
        teacher = None
        if lc["alpha"] > 0 or lc["feat_weight"] > 0:
            teacher = build_mod.build_teacher(self.cfg["teacher"])
        input_size = model_input_size(student) or resolve_data_config(student)["input_size"]
        self.input_size = tuple(input_size)
        if teacher is None:
            return None
        t_size = model_input_size(teacher)
        if (
            t_size is not None
            and tuple(t_size) != self.input_size
            and not getattr(getattr(teacher, "patch_embed", None), "dynamic_img_size", False)
        ):
            raise UserError(
                f"teacher expects input {tuple(t_size[1:])} but the student sees "
                f"{self.input_size[1:]}: set teacher.kwargs.img_size (and patch_size) to match"
            )
        return teacher

    def _set_transforms(self, student: nn.Module, train_ds, val_ds) -> None:
        """Training augmentation and the evaluation transform (crop: ``data.eval_crop_pct``)."""
        from vitdistill.data import eval_transform, resolve_data_config, train_transform

        cfg, a = self.cfg, self.cfg["aug"]
        crop = cfg["data"]["eval_crop_pct"]
        source = "data.eval_crop_pct"
        if crop is None and str(cfg["data"]["train"]).startswith("synthetic:"):
            crop, source = 1.0, "synthetic data: the whole image"
        elif crop is None:
            source = "the student's timm default"
        if a["enabled"]:
            train_ds.transform = train_transform(
                student,
                auto_augment=a["auto_augment"],
                re_prob=a["reprob"],
                re_mode=a["remode"],
                hflip=a["hflip"],
                color_jitter=a["color_jitter"],
                scale=tuple(a["scale"]),
            )
        else:
            train_ds.transform = eval_transform(student, crop_pct=crop)
        val_ds.transform = eval_transform(student, crop_pct=crop)
        self.eval_transform_info = {
            "crop_pct": float(resolve_data_config(student, crop_pct=crop)["crop_pct"]),
            "source": source,
            "transform": str(val_ds.transform),
        }

    def _teacher_renorm(self, student: nn.Module, teacher: nn.Module | None) -> tuple | None:
        """((student mean, std), (teacher mean, std)) when the teacher's input must be re-normalised."""
        from vitdistill.data import resolve_data_config

        if teacher is None or not self.cfg["teacher"]["renormalize"]:
            return None
        s_cfg, t_cfg = resolve_data_config(student), resolve_data_config(teacher)
        sm, ss = tuple(map(float, s_cfg["mean"])), tuple(map(float, s_cfg["std"]))
        tm, ts = tuple(map(float, t_cfg["mean"])), tuple(map(float, t_cfg["std"]))
        return ((sm, ss), (tm, ts)) if (sm, ss) != (tm, ts) else None

    def _build_task(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """The loss computation (student + projectors + teacher) on the device."""
        self.teacher_renorm = self._teacher_renorm(student, teacher)
        teacher = teacher.to(self.device) if teacher is not None else None
        student = student.to(self.device)
        self.task = DistillTask(
            student, teacher, self.cfg["loss"], self.input_size, self.num_classes, self.teacher_renorm
        ).to(self.device)
        if self.cfg["channels_last"]:
            self.task.trainable.to(memory_format=torch.channels_last)

    def _build_loaders(self, train_ds, val_ds) -> None:
        """Global batches split over ranks and accumulation steps; the sharded validation loader."""
        from vitdistill.data import collate_skip

        cfg, d, a = self.cfg, self.cfg["data"], self.cfg["aug"]
        W, G, acc = self.dinfo.world_size, d["batch_size"], cfg["optim"]["grad_accum"]
        if G % (W * acc):
            raise UserError(f"data.batch_size={G} must be divisible by world size x grad_accum = {W}x{acc}")
        self.micro = G // (W * acc)
        if len(train_ds) < G:
            raise UserError(f"data.batch_size={G} is larger than the training set ({len(train_ds)} images)")
        if (a["mixup"] > 0 or a["cutmix"] > 0) and self.micro % 2:
            raise UserError(
                f"mixup/cutmix need an even micro-batch, got {self.micro} (change data.batch_size)"
            )
        self.sampler = EpochSampler(
            len(train_ds),
            G,
            W,
            self.dinfo.rank,
            acc,
            a["repeated_aug"],
            True,
            cfg["seed"],
            d["steps_per_epoch"],
            seeded=True,
        )
        self.steps_per_epoch = self.sampler.steps
        self.loader_gen = torch.Generator()
        nw, pin = d["num_workers"], self.device.type == "cuda"
        self.train_loader = DataLoader(
            SeededSamples(train_ds),
            batch_size=self.micro,
            sampler=self.sampler,
            num_workers=nw,
            collate_fn=collate_skip,
            generator=self.loader_gen,
            drop_last=False,
            pin_memory=pin,
        )
        self.val_loader = DataLoader(
            val_ds,
            batch_size=d["val_batch_size"] or max(1, self.micro * 2),
            sampler=ShardSampler(len(val_ds), W, self.dinfo.rank),
            num_workers=nw,
            collate_fn=collate_skip,
            pin_memory=pin,
        )
        self.train_ds, self.val_ds = train_ds, val_ds

    def _build_mixup(self) -> None:
        a = self.cfg["aug"]
        self.mixup = None
        if a["mixup"] > 0 or a["cutmix"] > 0:
            from timm.data import Mixup

            self.mixup = Mixup(
                mixup_alpha=a["mixup"],
                cutmix_alpha=a["cutmix"],
                prob=a["mixup_prob"],
                switch_prob=a["mixup_switch_prob"],
                mode=a["mixup_mode"],
                label_smoothing=self.cfg["loss"]["smoothing"],
                num_classes=self.num_classes,
            )

    def _build_optimizer(self) -> None:
        self.optimizer, self.lr = build_optimizer(self.cfg, self.task.trainable)

    def _build_scheduler(self) -> None:
        self.scheduler = build_scheduler(self.cfg, self.optimizer, self.steps_per_epoch)

    def _build_ema_and_wrappers(self) -> None:
        """AMP grad scaler, the student's EMA, and the compiled / DDP module the loop calls."""
        cfg = self.cfg
        self.amp_dtype = amp_dtype(cfg["amp"])
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg["amp"] == "fp16" else None
        self.ema = None
        if cfg["ema"]["enabled"]:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(
                self.task.student, decay=cfg["ema"]["decay"], use_warmup=cfg["ema"]["warmup"]
            )
        model: nn.Module = self.task.trainable
        if cfg["compile"]:
            model = torch.compile(model)
        if self.dinfo.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DDP(model, device_ids=ids, broadcast_buffers=False)
        self.model = model  # what the loop calls (DDP/compiled around task.trainable)

    def _open_logs(self) -> None:
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if not self.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        cfg_text = config_mod.dump_yaml(self.cfg)
        atomic_write_text(self.run_dir / "config.yaml", cfg_text)
        # On resume keep only the records up to the checkpoint (the steps after it are replayed).
        kept: list[str] = []
        if self.num_updates > 0 and self.metrics_path.exists():
            for line in self.metrics_path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    r = json.loads(line)
                    if r.get("step", 0) <= self.num_updates and (
                        r.get("kind") != "epoch" or r.get("epoch", 0) < self.start_epoch
                    ):
                        kept.append(line)
        for tmp in self.ckpt_dir.glob(".*.tmp"):  # left by a process killed while writing a checkpoint
            tmp.unlink(missing_ok=True)
        atomic_write_text(self.metrics_path, "".join(x + "\n" for x in kept))
        self.metrics_file = open(self.metrics_path, "a", buffering=1)  # noqa: SIM115 (kept open for the run)
        if self.cfg["log"]["tensorboard"]:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError(
                    "log.tensorboard needs TensorBoard: pip install 'vitdistill[tensorboard]'"
                ) from None
            self.tb = SummaryWriter(str(self.run_dir / "tb"))

    def close(self) -> None:
        """Release files and restore process-wide settings, so Python callers can train again."""
        torch.use_deterministic_algorithms(self._was_deterministic)
        f = getattr(self, "metrics_file", None)
        if f is not None:
            f.close()
            self.metrics_file = None
        if self.tb is not None:
            self.tb.close()
        if self._own_group:
            dist_mod.cleanup()

    def log(self, record: dict) -> None:
        if not self.main:
            return
        self.metrics_file.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, int | float) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, step)

    # ------------------------------------------------------------ checkpoints
    def _state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,  # completed epochs
            "num_updates": self.num_updates,
            "student": self.task.student.state_dict(),
            "projectors": self.task.trainable.projectors.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "best": self.best,
            "rng": ckpt_mod.rng_state(),
            "config": self.cfg,
            "model_spec": self.spec,
            "world_size": self.dinfo.world_size,
            "in_epoch": None,  # set by a mid-epoch checkpoint: where in the epoch, per-rank RNG and sums
        }

    def _load(self, path: Path) -> None:
        st = ckpt_mod.load(path)
        if st.get("model_spec") != self.spec:
            raise UserError(
                f"checkpoint {path} was made for another model ({st.get('model_spec')}); "
                f"this config builds {self.spec}"
            )
        self.task.student.load_state_dict(st["student"])
        self.task.trainable.projectors.load_state_dict(st["projectors"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        if self.ema is not None and st.get("ema") is not None:
            self.ema.module.load_state_dict(st["ema"])
        if self.scaler is not None and st.get("scaler") is not None:
            self.scaler.load_state_dict(st["scaler"])
        self.start_epoch, self.num_updates = int(st["epoch"]), int(st["num_updates"])
        self.best = st.get("best") or self.best
        ckpt_mod.set_rng_state(st["rng"])
        self.resume_in_epoch = self._in_epoch_state(path, st.get("in_epoch"))

    def _in_epoch_state(self, path: Path, ie: dict | None) -> dict | None:
        """This rank's part of a mid-epoch checkpoint (None for an epoch-end one)."""
        if ie is None:
            return None
        if ie["steps_per_epoch"] != self.steps_per_epoch or len(ie["ranks"]) != self.dinfo.world_size:
            raise UserError(
                f"checkpoint {path} was written mid-epoch by {len(ie['ranks'])} process(es) at "
                f"{ie['steps_per_epoch']} steps per epoch; resume it with the same world size and "
                f"data settings (now {self.dinfo.world_size} and {self.steps_per_epoch})"
            )
        return {"steps_done": int(ie["steps_done"]), **ie["ranks"][self.dinfo.rank]}

    def _save(self, epoch: int, improved: bool) -> None:
        if not self.main:
            return
        state = self._state(epoch)
        ckpt_mod.save(self.ckpt_dir / "last.pt", state)
        if improved:
            ckpt_mod.save(self.ckpt_dir / "best.pt", state)
        every = self.cfg["log"]["save_every"]
        if every and epoch % every == 0:
            ckpt_mod.save(self.ckpt_dir / f"epoch_{epoch}.pt", state)

    def _save_in_epoch(self, epoch: int, steps_done: int, stats: EpochStats) -> None:
        """Mid-epoch last.pt: the epoch-end state plus the position and each rank's RNG and sums."""
        ranks = dist_mod.all_gather_object({"rng": ckpt_mod.rng_state(), "stats": stats.state_dict()})
        for r in ranks:  # never checkpoint past a non-finite loss; every rank stops alike
            self._check_finite(r["stats"]["first_bad"], r["stats"]["names"])
        if not self.main:
            return
        state = self._state(epoch)
        state["in_epoch"] = {
            "steps_done": steps_done,
            "steps_per_epoch": self.steps_per_epoch,
            "ranks": ranks,
        }
        ckpt_mod.save(self.ckpt_dir / "last.pt", state)

    # ------------------------------------------------------------------ loop
    def run(self) -> dict:
        cfg = self.cfg
        E = cfg["epochs"]
        self.t_loop, self.updates_at_start = time.time(), self.num_updates  # for the ETA
        for epoch in range(self.start_epoch, E):
            seed_all(process_seed(cfg, self.dinfo.rank, epoch))
            self.loader_gen.manual_seed(process_seed(cfg, self.dinfo.rank, epoch))
            if cfg["sched"]["published_lag"] and epoch > 0:
                self.scheduler.step(epoch - 1)  # the published lag: epoch e runs at the value for e - 1
            train_stats = self._train_epoch(epoch)
            every = cfg["log"]["eval_every"]
            do_eval = epoch == E - 1 or (every > 0 and (epoch + 1) % every == 0)
            record = {"kind": "epoch", "epoch": epoch, "step": self.num_updates, **train_stats}
            improved = self._evaluate(epoch, record) if do_eval else False
            self.log(record)
            self._print_epoch(record)
            self._save(epoch + 1, improved)
            dist_mod.barrier()
        return self._finish()

    def _evaluate(self, epoch: int, record: dict) -> bool:
        """Validate the student (and its EMA) into ``record``; True when raw top-1 improved."""
        cfg = self.cfg
        ev = evaluate_loader(
            self.task.student, self.val_loader, self.device, self.amp_dtype, cfg["channels_last"]
        )
        record.update(
            {
                "val_top1": ev["top1"],
                "val_top5": ev["top5"],
                "val_loss": ev["loss"],
                "val_n": ev["n"],
                "val_skipped": ev["skipped"],
            }
        )
        self.last_eval = {"epoch": epoch, "top1": ev["top1"], "top5": ev["top5"]}
        improved = self.best["raw"] is None or ev["top1"] > self.best["raw"]["top1"]
        if improved:
            self.best["raw"] = dict(self.last_eval)
        if self.ema is not None:
            ee = evaluate_loader(
                self.ema.module, self.val_loader, self.device, self.amp_dtype, cfg["channels_last"]
            )
            record.update({"ema_top1": ee["top1"], "ema_top5": ee["top5"]})
            self.last_eval.update({"ema_top1": ee["top1"], "ema_top5": ee["top5"]})
            if self.best["ema"] is None or ee["top1"] > self.best["ema"]["top1"]:
                self.best["ema"] = {"epoch": epoch, "top1": ee["top1"], "top5": ee["top5"]}
        return improved

    def _print_epoch(self, record: dict) -> None:
        """One line per epoch on stderr, terminal or log file::

        epoch 3/300  train loss 2.3104 (ce 1.8012 kd 0.5092)  val top-1 45.20 (EMA 46.10)  1234 img/s  ETA 5h02m
        """
        if not self.main:
            return
        E = self.cfg["epochs"]
        terms = [
            k
            for k in record
            if k.startswith("train_") and k not in ("train_loss", "train_images", "train_skipped")
        ]
        train = f"train loss {record['train_loss']:.4f}"
        if terms:
            train += " (" + " ".join(f"{k[6:]} {record[k]:.4f}" for k in terms) + ")"
        val = f"val top-1 {record['val_top1']:.2f}" if "val_top1" in record else "val -"
        if "ema_top1" in record:
            val += f" (EMA {record['ema_top1']:.2f})"
        done, left = self.num_updates - self.updates_at_start, E * self.steps_per_epoch - self.num_updates
        eta = (time.time() - self.t_loop) / max(done, 1) * left
        line = f"epoch {record['epoch'] + 1}/{E}  {train}  {val}  {record['images_per_s']:.0f} img/s"
        print(f"{line}  ETA {fmt_duration(eta)}", file=sys.stderr, flush=True)

    def _train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        acc, interval = cfg["optim"]["grad_accum"], cfg["log"]["interval"]
        ckpt_every = cfg["log"]["checkpoint_steps"]
        resume, self.resume_in_epoch = self.resume_in_epoch, None
        stats = EpochStats(self.device)
        steps_done = 0  # sampler steps of this epoch consumed so far
        if resume is not None:  # continue where the mid-epoch checkpoint left off
            stats.load_state_dict(resume["stats"])
            steps_done = resume["steps_done"]
            ckpt_mod.set_rng_state(resume["rng"])
        self.sampler.set_epoch(epoch, start_step=steps_done)
        self.task.trainable.train()
        if self.task.teacher is not None:
            self.task.teacher.eval()
        bar = Progress(
            self.steps_per_epoch,
            f"epoch {epoch + 1}/{cfg['epochs']}",
            unit="step",
            initial=steps_done,
            enabled=self.main and cfg["log"]["progress"],
            final_line=False,  # the epoch line follows
        )
        t_start = time.time() - stats.elapsed
        self.window = (time.time(), stats.n_images)  # start of the images/s window of the step records
        self.optimizer.zero_grad(set_to_none=True)
        with bar:
            for i, (images, labels, _idx, n_skip) in enumerate(self.train_loader, start=steps_done * acc):
                stats.skipped += n_skip
                last_micro = i % acc == acc - 1
                vals = self._micro_step(images, labels, last_micro, acc, stats)
                if vals is None or not last_micro:
                    continue
                self._optimizer_step()
                stats.n_steps += 1
                steps_done = i // acc + 1
                bar.update(1)
                if self.num_updates % interval == 0:
                    self._check_finite(stats.first_bad, stats.names)
                    bar.set_postfix(f"loss {self._log_step(epoch, vals, stats):.4f}")
                if ckpt_every and steps_done % ckpt_every == 0 and steps_done < self.steps_per_epoch:
                    stats.elapsed = time.time() - t_start
                    self._save_in_epoch(epoch, steps_done, stats)
        if stats.names is None:
            raise UserError(
                f"epoch {epoch}: no usable training images (all {stats.skipped} skipped as unreadable)"
            )
        self._check_finite(stats.first_bad, stats.names)
        stats.elapsed = time.time() - t_start
        return stats.reduce(self.optimizer.param_groups[0]["lr"])

    def _log_step(self, epoch: int, vals: torch.Tensor, stats: EpochStats) -> float:
        """A ``kind: step`` record (this rank's last micro-batch); returns its loss."""
        now, (t0, n0) = time.time(), self.window
        rec = {
            "kind": "step",
            "epoch": epoch,
            "step": self.num_updates,
            **{k: v for k, v in zip(stats.names, vals.tolist(), strict=True)},
            "lr": self.lr_used,
            "images_per_s": (stats.n_images - n0) * self.dinfo.world_size / max(now - t0, 1e-9),
        }
        self.log(rec)
        self.window = (now, stats.n_images)
        return rec["loss"]

    def _micro_step(self, images, labels, last_micro: bool, acc: int, stats: EpochStats):
        """Forward and backward one micro-batch; returns its loss terms (None for an empty batch)."""
        dev = self.device
        if images.shape[0] == 0:
            return None
        images = images.to(dev, non_blocking=True)
        target = labels.to(dev, non_blocking=True)
        if self.mixup is not None:
            if images.shape[0] % 2:  # a skipped unreadable image left an odd batch; mixup pairs images
                images, target = images[:-1], target[:-1]
            if images.shape[0] == 0:
                return None
            images, target = self.mixup(images, target)
        if self.cfg["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        sync = contextlib.nullcontext()
        if self.dinfo.distributed and not last_micro:
            sync = self.model.no_sync()
        with sync:
            with autocast(dev, self.amp_dtype):
                terms = self.task(images, target, trainable=self.model)
            loss = terms["loss"] / acc
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        return stats.add(terms, images.shape[0], acc, self.num_updates)

    def _optimizer_step(self) -> None:
        """Clip, step (through the grad scaler under fp16), update the EMA and the lr schedule."""
        clip = self.cfg["optim"]["clip_grad"]
        if self.scaler is not None:
            if clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.task.trainable.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if clip:
                nn.utils.clip_grad_norm_(self.task.trainable.parameters(), clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.num_updates += 1
        if self.ema is not None:
            self.ema.update(self.task.student, step=self.num_updates)
        self.lr_used = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step_update(num_updates=self.num_updates)

    def _check_finite(self, first_bad: torch.Tensor | None, names: list[str] | None) -> None:
        if first_bad is None:
            return
        bad = first_bad.tolist()
        hits = [(s, n) for s, n in zip(bad, names, strict=True) if s >= 0]
        if hits:
            step = min(s for s, _ in hits)
            which = [n for s, n in hits if s == step and n != "loss"] or ["loss"]
            raise UserError(
                f"non-finite loss at optimizer step {step} (term: {', '.join(which)}); training stopped, "
                f"the last good checkpoint is {self.ckpt_dir / 'last.pt'} (lower optim.lr, set optim.clip_grad, or amp=none)"
            )

    def _finish(self) -> dict:
        cfg = self.cfg
        summary = {
            "run_dir": str(self.run_dir),
            "epochs": cfg["epochs"],
            "steps": self.num_updates,
            "world_size": self.dinfo.world_size,
            "global_batch": cfg["data"]["batch_size"],
            "lr": self.lr,
            "model": self.spec,
            "params": self.student_params,
            "teacher": (cfg["teacher"]["name"] or cfg["teacher"]["checkpoint"])
            if self.task.teacher is not None
            else None,
            "num_classes": self.num_classes,
            "last": self.last_eval or None,
            "best": self.best["raw"],
            "best_ema": self.best["ema"],
            "wall_time_s": time.time() - self.t0,
            "train_data": self.train_ds.describe() if hasattr(self.train_ds, "describe") else None,
            "eval_transform": self.eval_transform_info,  # the crop every val_top1 above was measured with
        }
        if not summary["last"] and self.resume_path is not None:  # resumed a finished run
            with contextlib.suppress(Exception):
                summary["last"] = json.loads((self.run_dir / "summary.json").read_text()).get("last")
        if self.main:
            atomic_write_json(self.run_dir / "summary.json", summary)
        return summary
