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

from vitdistill.distill import checkpoint as ckpt_mod
from vitdistill.distill import config as config_mod
from vitdistill.distill import finite, history, inputs, networks
from vitdistill.distill.epoch_stats import EpochStats
from vitdistill.distill.evaluate import evaluate_loader
from vitdistill.distill.optim import build_optimizer, build_scheduler
from vitdistill.distill.run_log import RunLog, epoch_line
from vitdistill.distill.seeding import process_seed, seed_all
from vitdistill.distill.step import MicroBatch, StepOptions, Update, in_steps, train_step
from vitdistill.distill.task import DistillTask
from vitdistill.errors import UserError
from vitdistill.utils import dist as dist_mod
from vitdistill.utils.device import amp_dtype, resolve_device
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
    refuse_inside(output, [cfg["data"]["train"], cfg["data"]["val"]], "output")
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
    """One training run: built from a resolved config, then :meth:`run` once, then :meth:`close`.

    Every attribute is declared below, grouped by what it holds, and set in ``__init__``.
    """

    # where and how the run runs
    config: dict  # the resolved config (vitdistill.distill.config)
    started_config: dict  # the config the run started with (differs after a resume with changes)
    dinfo: dist_mod.DistInfo  # this process's rank and the world size
    device: torch.device
    run_dir: Path
    ckpt_dir: Path  # RUN/checkpoints
    run_log: RunLog  # metrics.jsonl (and TensorBoard)
    started_at: float  # time.time() at construction, for the summary's wall time
    # data
    num_classes: int
    train_ds: Any
    val_ds: Any
    eval_transform_info: dict  # the crop every val_top1 is measured with
    loaders: inputs.Loaders  # training (sampler, generator) and validation loaders
    # models
    spec: dict  # the student's model spec (checked again on resume)
    student_params: int
    teacher_renorm: tuple | None  # ((student mean, std), (teacher mean, std)) or None
    task: DistillTask  # student + projectors + frozen teacher -> loss terms
    # optimisation
    optimizer: torch.optim.Optimizer
    first_lr: float  # the learning rate the run started with (a resume may change it)
    update: Update  # optimizer, scheduler, grad scaler, EMA, clipping and the update count
    step_options: StepOptions  # device, autocast, channels_last, mixup, the DDP-wrapped module
    # progress
    resume_path: Path | None  # the checkpoint this run continues, if any
    start_epoch: int
    resume_in_epoch: dict | None  # this rank's part of a mid-epoch checkpoint, until used
    best: dict  # best-so-far validation results, raw and EMA
    last_eval: dict
    changes: list  # settings changed on resume: [{step, epoch, changed}], oldest first
    eta_origin: tuple[float, int]  # (time, update count) when run() started, for the ETA
    rate_window: tuple[float, int]  # (time, images) at the start of the step records' images/s
    # process-wide settings to put back on close
    _was_deterministic: bool
    _own_group: bool

    def __init__(self, config: dict, run_dir: Path, resume=None):
        self.config = self.started_config = config
        self.started_at = time.time()
        self.dinfo = dist_mod.init_distributed(config["device"])
        self.device = resolve_device(config["device"], self.dinfo.local_rank)
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.run_log = RunLog(self.run_dir, self.dinfo.is_main, config)
        self._was_deterministic = torch.are_deterministic_algorithms_enabled()
        self._own_group = dist_mod.launched_by_torchrun() and not torch.distributed.is_initialized()
        if config["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        seed_all(process_seed(config, self.dinfo.rank))
        self.resume_path = ckpt_mod.resume_path(self.ckpt_dir / "last.pt", resume)
        self.train_ds, self.val_ds, self.num_classes = inputs.build_datasets(config["data"], config["seed"])
        student, self.spec, self.student_params = networks.build_student(config["model"], self.num_classes)
        teacher, input_size = networks.build_teacher(config, student)
        self.eval_transform_info = inputs.set_transforms(config, student, self.train_ds, self.val_ds)
        self.task, self.teacher_renorm = networks.build_task(
            config, student, teacher, input_size, self.num_classes, self.device
        )
        world, rank = self.dinfo.world_size, self.dinfo.rank
        self.loaders = inputs.build_loaders(config, self.train_ds, self.val_ds, world, rank, self.device)
        mixup = inputs.build_mixup(config, self.num_classes)
        self.optimizer, self.first_lr = build_optimizer(config, self.task.trainable)
        self.update = Update(
            self.optimizer,
            build_scheduler(config, self.optimizer, self.loaders.steps_per_epoch),
            scaler=torch.amp.GradScaler(self.device.type) if config["amp"] == "fp16" else None,
            ema=networks.build_ema(config, self.task.student),
            clip_grad=config["optim"]["clip_grad"],
        )
        self.step_options = StepOptions(
            device=self.device,
            amp_dtype=amp_dtype(config["amp"]),
            channels_last=config["channels_last"],
            mixup=mixup,
            model=networks.wrap_trainable(config, self.task.trainable, self.dinfo.distributed, self.device),
            no_sync=self.dinfo.distributed,
        )
        self.start_epoch, self.resume_in_epoch = 0, None
        self.best, self.last_eval = {"raw": None, "ema": None}, {}
        self.changes, self.eta_origin, self.rate_window = [], (time.time(), 0), (time.time(), 0)
        changed = self._load(self.resume_path) if self.resume_path is not None else {}
        self._open_run_folder(changed)

    @property
    def num_updates(self) -> int:
        """Optimizer updates done so far, over the whole run."""
        return self.update.num_updates

    @property
    def loader_gen(self) -> torch.Generator:
        """The training DataLoader's generator, reseeded each epoch."""
        return self.loaders.generator

    # ----------------------------------------------------------------- setup
    def _open_run_folder(self, changed: dict) -> None:
        """config.yaml (the one the run started with), its history, the checkpoint folder, the log.

        ``changed``: the settings a resume changed from its checkpoint's.
        """
        if self.dinfo.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            config_file = self.run_dir / "config.yaml"
            if self.resume_path is None or not config_file.exists():  # a resume never rewrites it
                atomic_write_text(config_file, config_mod.dump_yaml(self.started_config))
            entry = {"event": "start", "step": 0, "epoch": 0}
            if self.resume_path is not None:
                entry = {"event": "resume", "step": self.num_updates, "epoch": self.start_epoch}
                entry.update(checkpoint=str(self.resume_path), changed=changed)
            history.append(self.run_dir, entry)
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
        ema, scaler = self.update.ema, self.update.scaler
        return {
            "epoch": epoch,  # completed epochs
            "num_updates": self.num_updates,
            "student": self.task.student.state_dict(),
            "projectors": self.task.trainable.projectors.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.update.scheduler.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "best": self.best,
            "rng": ckpt_mod.rng_state(),
            "config": self.config,
            "history": {"first_lr": self.first_lr, "changes": self.changes},
            "model_spec": self.spec,
            "world_size": self.dinfo.world_size,
            "in_epoch": None,  # set by a mid-epoch checkpoint: where in the epoch, per-rank RNG and sums
        }

    def _load(self, path: Path) -> dict:
        """Continue from a checkpoint; returns the settings that differ from the checkpoint's."""
        state = ckpt_mod.load(path)
        if state.get("model_spec") != self.spec:
            raise UserError(
                f"checkpoint {path} was made for another model ({state.get('model_spec')}); "
                f"this config builds {self.spec}"
            )
        changed = history.config_changes(state["config"], self.config) if "config" in state else {}
        if changed.get("optim.opt"):
            raise UserError(
                f"optim.opt cannot change on resume: {path} was made with {changed['optim.opt']['from']}"
            )
        self._restore(state, path, changed)
        if self.start_epoch > self.config["epochs"]:
            raise UserError(
                f"checkpoint {path} holds {self.start_epoch} finished epochs, more than "
                f"epochs={self.config['epochs']}: resume with epochs >= {self.start_epoch}"
            )
        self.best = state.get("best") or self.best
        ckpt_mod.set_rng_state(state["rng"])
        self.resume_in_epoch = ckpt_mod.in_epoch_part(
            path, state.get("in_epoch"), self.loaders.steps_per_epoch, self.dinfo.world_size, self.dinfo.rank
        )
        if self.dinfo.is_main:
            line = ckpt_mod.resume_line(path, self.start_epoch, self.config["epochs"], self.resume_in_epoch)
            print(f"{line}, {self.num_updates} optimizer steps", file=sys.stderr, flush=True)
        past = state.get("history") or {}
        self.first_lr = past.get("first_lr", self.first_lr)
        self.changes = list(past.get("changes", []))
        if "config" in state:
            self.started_config = history.started_config(state["config"], self.changes)
        if changed:
            self.changes.append({"step": self.num_updates, "epoch": self.start_epoch, "changed": changed})
        return changed

    def _restore(self, state: dict, path: Path, changed: dict) -> None:
        """Weights, optimizer, schedule, EMA, grad scaler and counters from a checkpoint's ``state``.

        With ``changed`` settings the schedule and the optimizer's hyperparameters are the new
        config's, from the checkpoint's step on; the optimizer's moments always continue.
        """
        update, steps = self.update, int(state["num_updates"])
        try:
            self.task.student.load_state_dict(state["student"])
            self.task.trainable.projectors.load_state_dict(state["projectors"])
        except RuntimeError as e:
            detail = " ".join(str(e).split())[:300]  # load_state_dict lists the keys over several lines
            raise UserError(
                f"checkpoint {path} does not fit this config's student and projectors: {detail}"
            ) from None
        ckpt_mod.load_optimizer(self.optimizer, state["optimizer"], path, settings_changed=bool(changed))
        if not changed:
            update.scheduler.load_state_dict(state["scheduler"])
        elif not self.config["sched"]["published_lag"]:  # (run() sets the lagged value per epoch)
            update.scheduler.step_update(num_updates=steps)
        if update.ema is not None and state.get("ema") is not None:
            update.ema.module.load_state_dict(state["ema"])
        if update.scaler is not None and state.get("scaler") is not None:
            update.scaler.load_state_dict(state["scaler"])
        self.start_epoch, update.num_updates = int(state["epoch"]), steps

    def _save(self, epoch: int, improved: bool) -> None:
        """last.pt at an epoch end; best.pt when validation improved; epoch_N.pt every N epochs."""
        self._check_weights()
        if not self.dinfo.is_main:
            return
        state = self._state(epoch)
        ckpt_mod.save(self.ckpt_dir / "last.pt", state)
        if improved:
            ckpt_mod.save(self.ckpt_dir / "best.pt", state)
        every = self.config["log"]["save_every"]
        if every and epoch % every == 0:
            ckpt_mod.save(self.ckpt_dir / f"epoch_{epoch}.pt", state)

    def _save_in_epoch(self, epoch: int, steps_done: int, stats: EpochStats) -> None:
        """Mid-epoch last.pt: the epoch-end state plus the position and each rank's RNG and sums."""
        ranks = dist_mod.all_gather_object({"rng": ckpt_mod.rng_state(), "stats": stats.state_dict()})
        for r in ranks:  # never checkpoint past a non-finite loss; every rank stops alike
            finite.check_loss(r["stats"]["first_bad"], r["stats"]["names"], self.ckpt_dir, agree=False)
        self._check_weights()
        if not self.dinfo.is_main:
            return
        state = self._state(epoch)
        state["in_epoch"] = {
            "steps_done": steps_done,
            "steps_per_epoch": self.loaders.steps_per_epoch,
            "ranks": ranks,
        }
        ckpt_mod.save(self.ckpt_dir / "last.pt", state)

    def _check_weights(self) -> None:
        """Refuse to checkpoint non-finite weights (student, projectors, EMA)."""
        ema = self.update.ema
        modules = {"": self.task.trainable, **({"ema.": ema.module} if ema is not None else {})}
        finite.check_weights(modules, self.num_updates, self.ckpt_dir)

    # ------------------------------------------------------------------ loop
    def run(self) -> dict:
        epochs = self.config["epochs"]
        self.eta_origin = (time.time(), self.num_updates)
        for epoch in range(self.start_epoch, epochs):
            seed_all(process_seed(self.config, self.dinfo.rank, epoch))
            self.loader_gen.manual_seed(process_seed(self.config, self.dinfo.rank, epoch))
            if self.config["sched"]["published_lag"] and epoch > 0:
                self.update.scheduler.step(
                    epoch - 1
                )  # the published lag: epoch e runs at the value for e - 1
            train_stats = self._train_epoch(epoch)
            every = self.config["log"]["eval_every"]
            do_eval = epoch == epochs - 1 or (every > 0 and (epoch + 1) % every == 0)
            record = {"kind": "epoch", "epoch": epoch, "step": self.num_updates, **train_stats}
            improved = self._evaluate(epoch, record) if do_eval else False
            self.run_log.write(record)
            finite.check_record(record, self.num_updates, self.ckpt_dir)
            self._print_epoch(record)
            self._save(epoch + 1, improved)
            dist_mod.barrier()
        return self._finish()

    def _evaluate(self, epoch: int, record: dict) -> bool:
        """Validate the student (and its EMA) into ``record``; True when raw top-1 improved."""
        channels_last = self.config["channels_last"]
        ev = evaluate_loader(
            self.task.student, self.loaders.val, self.device, self.step_options.amp_dtype, channels_last
        )
        record.update({f"val_{k}": ev[k] for k in ("top1", "top5", "loss", "n", "skipped")})
        self.last_eval = {"epoch": epoch, "top1": ev["top1"], "top5": ev["top5"]}
        improved = self.best["raw"] is None or ev["top1"] > self.best["raw"]["top1"]
        if improved:
            self.best["raw"] = dict(self.last_eval)
        ema = self.update.ema
        if ema is not None:
            ee = evaluate_loader(
                ema.module, self.loaders.val, self.device, self.step_options.amp_dtype, channels_last
            )
            record.update({"ema_top1": ee["top1"], "ema_top5": ee["top5"]})
            self.last_eval.update({"ema_top1": ee["top1"], "ema_top5": ee["top5"]})
            if self.best["ema"] is None or ee["top1"] > self.best["ema"]["top1"]:
                self.best["ema"] = {"epoch": epoch, "top1": ee["top1"], "top5": ee["top5"]}
        return improved

    def _print_epoch(self, record: dict) -> None:
        if not self.dinfo.is_main:
            return
        epochs = self.config["epochs"]
        t0, updates0 = self.eta_origin
        done, left = self.num_updates - updates0, epochs * self.loaders.steps_per_epoch - self.num_updates
        eta = (time.time() - t0) / max(done, 1) * left
        line = epoch_line(record, epochs, eta)
        print(line, file=sys.stderr, flush=True)
        self.run_log.line(line, self.num_updates)

    def _train_epoch(self, epoch: int) -> dict:
        """One epoch of optimizer steps (from a mid-epoch checkpoint's position when resuming)."""
        accum = self.config["optim"]["grad_accum"]
        resume, self.resume_in_epoch = self.resume_in_epoch, None
        stats = EpochStats(self.device)
        steps_done = 0  # sampler steps of this epoch consumed so far
        if resume is not None:  # continue where the mid-epoch checkpoint left off
            stats.load_state_dict(resume["stats"])
            steps_done = resume["steps_done"]
            ckpt_mod.set_rng_state(resume["rng"])
        self.loaders.sampler.set_epoch(epoch, start_step=steps_done)
        self.task.trainable.train()
        if self.task.teacher is not None:
            self.task.teacher.eval()
        bar = Progress(
            self.loaders.steps_per_epoch,
            f"epoch {epoch + 1}/{self.config['epochs']}",
            unit="step",
            initial=steps_done,
            enabled=self.dinfo.is_main and self.config["log"]["progress"],
            final_line=False,  # the epoch line follows
        )
        t_start = time.time() - stats.elapsed
        self.rate_window = (time.time(), stats.n_images)
        with bar:
            for micro_batches in in_steps(self.loaders.train, accum):
                steps_done += 1
                if self._step(epoch, micro_batches, stats, bar):
                    self._maybe_save_in_epoch(epoch, steps_done, stats, t_start)
        if stats.names is None:
            raise UserError(
                f"epoch {epoch}: no usable training images (all {stats.skipped} skipped as unreadable)"
            )
        finite.check_loss(stats.first_bad, stats.names, self.ckpt_dir)
        stats.elapsed = time.time() - t_start
        return stats.reduce(self.optimizer.param_groups[0]["lr"])

    def _step(self, epoch: int, micro_batches: list, stats: EpochStats, bar: Progress) -> bool:
        """One optimizer step over the loader's micro-batches; False when they held no image."""
        step = self.num_updates
        stats.skipped += sum(n_skip for *_, n_skip in micro_batches)
        batches = [MicroBatch(images, labels) for images, labels, *_ in micro_batches]
        result = train_step(self.task, batches, self.update, self.step_options)
        for terms, n_images in zip(result.terms, result.images, strict=True):
            last_terms = stats.add(terms, n_images, len(batches), step)
        if not result.updated:
            return False
        stats.n_steps += 1
        bar.update(1)
        if self.num_updates % self.config["log"]["interval"] == 0:
            finite.check_loss(stats.first_bad, stats.names, self.ckpt_dir)
            bar.set_postfix(f"loss {self._log_step(epoch, last_terms, stats):.4f}")
        return True

    def _maybe_save_in_epoch(self, epoch: int, steps_done: int, stats: EpochStats, t_start: float) -> None:
        every = self.config["log"]["checkpoint_steps"]
        if every and steps_done % every == 0 and steps_done < self.loaders.steps_per_epoch:
            stats.elapsed = time.time() - t_start
            self._save_in_epoch(epoch, steps_done, stats)

    def _log_step(self, epoch: int, values: torch.Tensor, stats: EpochStats) -> float:
        """A ``kind: step`` record (this rank's last micro-batch); returns its loss."""
        now, (t0, n0) = time.time(), self.rate_window
        record = {
            "kind": "step",
            "epoch": epoch,
            "step": self.num_updates,
            **{k: v for k, v in zip(stats.names, values.tolist(), strict=True)},
            "lr": self.update.lr_used,
            "images_per_s": (stats.n_images - n0) * self.dinfo.world_size / max(now - t0, 1e-9),
        }
        self.run_log.write(record)
        self.rate_window = (now, stats.n_images)
        return record["loss"]

    def _finish(self) -> dict:
        config = self.config
        teacher = config["teacher"]["name"] or config["teacher"]["checkpoint"]
        summary = {
            "run_dir": str(self.run_dir),
            "epochs": config["epochs"],
            "steps": self.num_updates,
            "world_size": self.dinfo.world_size,
            "global_batch": config["data"]["batch_size"],
            "lr": self.first_lr,  # the run's first; later ones are in config_changes
            "model": self.spec,
            "params": self.student_params,
            "teacher": teacher if self.task.teacher is not None else None,
            "num_classes": self.num_classes,
            "last": self.last_eval or None,
            "best": self.best["raw"],
            "best_ema": self.best["ema"],
            "wall_time_s": time.time() - self.started_at,
            "train_data": self.train_ds.describe() if hasattr(self.train_ds, "describe") else None,
            "val_data": {**self.val_ds.describe(), "transform": self.eval_transform_info["transform"]},
            "eval_transform": self.eval_transform_info,  # the crop every val_top1 above was measured with
            "config_changes": self.changes,  # settings changed on resume, and from which step
        }
        if not summary["last"] and self.resume_path is not None:  # resumed a finished run
            with contextlib.suppress(Exception):
                summary["last"] = json.loads((self.run_dir / "summary.json").read_text()).get("last")
        if self.dinfo.is_main:
            atomic_write_json(self.run_dir / "summary.json", summary)
        return summary
