"""The training loop: one process or many under torchrun, CPU or GPU.

Read top to bottom: :func:`train` resolves the config and builds a :class:`Trainer`;
``Trainer.__init__`` builds data, models, optimizer, scheduler, EMA; ``Trainer.run`` loops over
epochs (``_train_epoch``), evaluates, writes ``metrics.jsonl`` and checkpoints.

Reproducibility: every epoch reseeds torch / numpy / random and the sampler from
(seed, rank, epoch), and each image's augmentation is seeded from (seed, epoch, position in the
epoch's order) (:class:`~vitdistill.distill.sampler.SeededSamples`), whatever the number of DataLoader workers. A run resumed
from ``last.pt`` replays the rest exactly (bitwise on CPU with ``deterministic: true``).
``last.pt`` is written at each epoch end and, with ``log.checkpoint_steps: N``, every N optimizer
steps inside an epoch too (with each rank's RNG states and loss sums): the resumed epoch's
sampler starts at that step, so the images before it are not read again.

``data.batch_size`` is the GLOBAL batch per optimizer step (see :mod:`vitdistill.distill.sampler`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitdistill.distill import build as build_mod
from vitdistill.distill import checkpoint as ckpt_mod
from vitdistill.distill import config as config_mod
from vitdistill.distill import inputs
from vitdistill.distill.epoch_stats import EpochStats, first_nonfinite
from vitdistill.distill.evaluate import evaluate_loader
from vitdistill.distill.optim import build_optimizer, build_scheduler
from vitdistill.distill.run_log import RunLog, epoch_line
from vitdistill.distill.seeding import process_seed, seed_all
from vitdistill.distill.task import DistillTask
from vitdistill.errors import UserError
from vitdistill.models.profile import count_params
from vitdistill.utils import dist as dist_mod
from vitdistill.utils.device import amp_dtype, autocast, resolve_device
from vitdistill.utils.io import atomic_write_json, atomic_write_text
from vitdistill.utils.lock import folder_lock
from vitdistill.utils.markers import refuse_inside
from vitdistill.utils.progress import Progress


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


class Trainer:
    def __init__(self, cfg: dict, run_dir: Path, resume=None):
        self.cfg = cfg
        self.t0 = time.time()
        self.dinfo = dist_mod.init_distributed(cfg["device"])
        self.device = resolve_device(cfg["device"], self.dinfo.local_rank)
        self.main = self.dinfo.is_main
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.run_log = RunLog(self.run_dir, self.main, cfg["log"]["tensorboard"])
        self._was_deterministic = torch.are_deterministic_algorithms_enabled()
        self._own_group = dist_mod.launched_by_torchrun() and not torch.distributed.is_initialized()
        if cfg["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        seed_all(process_seed(cfg, self.dinfo.rank))
        self.resume_path = ckpt_mod.resume_path(self.ckpt_dir / "last.pt", resume)
        train_ds, val_ds, self.num_classes = inputs.build_datasets(cfg["data"])
        student = self._build_student()
        teacher = self._build_teacher(student)
        self.eval_transform_info = inputs.set_transforms(cfg, student, train_ds, val_ds)
        self._build_task(student, teacher)
        dinfo = self.dinfo
        loaders = inputs.build_loaders(cfg, train_ds, val_ds, dinfo.world_size, dinfo.rank, self.device)
        self.train_ds, self.val_ds = train_ds, val_ds
        self.sampler, self.loader_gen = loaders.sampler, loaders.generator
        self.train_loader, self.val_loader = loaders.train, loaders.val
        self.steps_per_epoch = loaders.steps_per_epoch
        self.mixup = inputs.build_mixup(cfg, self.num_classes)
        self.optimizer, self.lr = build_optimizer(cfg, self.task.trainable)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.steps_per_epoch)
        self._build_ema_and_wrappers()
        self.start_epoch, self.num_updates = 0, 0
        self.best = {"raw": None, "ema": None}
        self.resume_in_epoch: dict | None = None  # this rank's part of a mid-epoch checkpoint
        self.last_eval: dict[str, Any] = {}
        if self.resume_path is not None:
            self._load(self.resume_path)
        self._open_run_folder()

    # ----------------------------------------------------------------- setup
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

    def _build_task(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """The loss computation (student + projectors + teacher) on the device."""
        renorm = inputs.teacher_renorm(student, teacher) if self.cfg["teacher"]["renormalize"] else None
        self.teacher_renorm = renorm
        teacher = teacher.to(self.device) if teacher is not None else None
        student = student.to(self.device)
        self.task = DistillTask(
            student, teacher, self.cfg["loss"], self.input_size, self.num_classes, renorm
        ).to(self.device)
        if self.cfg["channels_last"]:
            self.task.trainable.to(memory_format=torch.channels_last)

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

    def _open_run_folder(self) -> None:
        """config.yaml, the checkpoint folder (no partial checkpoint left in it) and the metrics log."""
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", config_mod.dump_yaml(self.cfg))
            for tmp in self.ckpt_dir.glob(".*.tmp"):  # left by a process killed while writing a checkpoint
                tmp.unlink(missing_ok=True)
        self.run_log.open(self.num_updates, self.start_epoch)

    def close(self) -> None:
        """Release files and restore process-wide settings, so Python callers can train again."""
        torch.use_deterministic_algorithms(self._was_deterministic)
        self.run_log.close()
        if self._own_group:
            dist_mod.cleanup()

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
        self.resume_in_epoch = ckpt_mod.in_epoch_part(
            path, st.get("in_epoch"), self.steps_per_epoch, self.dinfo.world_size, self.dinfo.rank
        )

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
            self.run_log.write(record)
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
        if not self.main:
            return
        epochs = self.cfg["epochs"]
        done = self.num_updates - self.updates_at_start
        left = epochs * self.steps_per_epoch - self.num_updates
        eta = (time.time() - self.t_loop) / max(done, 1) * left
        print(epoch_line(record, epochs, eta), file=sys.stderr, flush=True)

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
        self.run_log.write(rec)
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
        hit = first_nonfinite(first_bad, names)
        if hit is not None:
            step, which = hit
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
