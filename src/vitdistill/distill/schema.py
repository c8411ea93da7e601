"""The training config's keys: each declared once, with its default, type, allowed values and doc.

:mod:`vitdistill.distill.config` loads, overrides and checks configs against :data:`SCHEMA`; the
table in ``docs/training.md`` is made from it (``python -m vitdistill.distill.config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Key:
    default: Any
    types: tuple[type, ...]
    doc: str
    choices: tuple | None = None
    nullable: bool = False


def _k(default, types, doc, choices=None, nullable=None):
    if not isinstance(types, tuple):
        types = (types,)
    return Key(default, types, doc, choices, default is None if nullable is None else nullable)


# Dotted key -> declaration. Sections are the first component.
SCHEMA: dict[str, Key] = {
    # run
    "seed": _k(
        0,
        int,
        "base random seed; each rank uses seed + rank (see seed_per_rank), each epoch reseeds from "
        "(seed, rank, epoch)",
    ),
    "seed_per_rank": _k(
        True,
        bool,
        "offset the seeds by rank (seed + rank); false: every rank uses the same seeds (the published code)",
    ),
    "epochs": _k(10, int, "number of training epochs"),
    "device": _k("auto", str, "auto (cuda when available), cpu, cuda, or cuda:N", None),
    "amp": _k(
        "none", str, "autocast dtype: none, bf16, fp16 (fp16 uses a GradScaler)", ("none", "bf16", "fp16")
    ),
    "compile": _k(False, bool, "torch.compile the student"),
    "channels_last": _k(False, bool, "channels-last memory format for images and models"),
    "deterministic": _k(
        False, bool, "torch.use_deterministic_algorithms(True) (bitwise-reproducible CPU runs)"
    ),
    # student
    "model.name": _k(
        "deit_tiny_patch16_224", str, "timm model name of the student (or the base for a remedy)"
    ),
    "model.remedy": _k(
        "none",
        str,
        "none, lift (keep a lifting projector) or widelast (widen the last block(s))",
        ("none", "lift", "widelast"),
    ),
    "model.width": _k(None, int, "lift / wide width for a remedy (usually the teacher's width)"),
    "model.num_wide": _k(
        1, int, "widelast: how many final blocks are widened (the linear schedules ramp over them)"
    ),
    "model.widelast_schedule": _k(
        "heads_step",
        str,
        "widelast: heads_step (blocks at `width`, base head dim), fixed_step (at `width`, base head "
        "count), heads_linear / fixed_linear (widths ramp up to `width` over the num_wide blocks)",
        ("heads_step", "fixed_step", "heads_linear", "fixed_linear"),
    ),
    "model.init": _k(
        "auto",
        str,
        "initialisation of a Lift / WideLast student: published (the paper's published code: Lift's "
        "projector LayerNorm eps 1e-5 and PyTorch's default Linear init of its projector and head; "
        "WideLast's cls_token trunc-normal 0.02) or timm; auto: published for the registered paper "
        "students, timm for a remedy on any base",
        ("auto", "published", "timm"),
    ),
    "model.kwargs": _k(
        {},
        dict,
        "extra timm.create_model kwargs (img_size, patch_size, embed_dim, depth, drop_path_rate, ...)",
    ),
    "model.pretrained": _k(False, bool, "start from timm pretrained weights (hub or cache)"),
    "model.checkpoint": _k(
        None, str, "start from a local file: safetensors, .pt, a run checkpoint or an export folder"
    ),
    "model.trust_checkpoint": _k(
        False, bool, "model.checkpoint may be fully unpickled (can run code: only for files you trust)"
    ),
    # teacher
    "teacher.name": _k(
        None,
        str,
        "timm model name of the teacher (e.g. cait_s24_224.fb_dist_in1k); may be null when "
        "teacher.checkpoint is a vitdistill run or export (its saved model is rebuilt)",
    ),
    "teacher.kwargs": _k({}, dict, "extra timm.create_model kwargs for the teacher"),
    "teacher.pretrained": _k(False, bool, "load the teacher's timm pretrained weights (hub or cache)"),
    "teacher.checkpoint": _k(
        None, str, "load the teacher from a local file (safetensors, .pt, run checkpoint, export folder)"
    ),
    "teacher.trust_checkpoint": _k(
        False, bool, "teacher.checkpoint may be fully unpickled (can run code: only for files you trust)"
    ),
    "teacher.renormalize": _k(
        True,
        bool,
        "re-normalise the teacher's input when its mean/std differ from the student's; false: the "
        "teacher gets the student's normalised images (the published code)",
    ),
    # data
    "data.train": _k(
        None, str, "training data: an ImageFolder dir, a file list, synthetic:NAME, hfds/NAME or wds/DIR"
    ),
    "data.val": _k(
        None, str, "validation data (default: the val split of data.train; never the training images)"
    ),
    "data.val_fraction": _k(
        None,
        float,
        "hold out this fraction of data.train for validation (seeded by seed, recorded in summary.json)",
    ),
    "data.batch_size": _k(
        64, int, "GLOBAL batch per optimizer step (split over ranks and accumulation steps)"
    ),
    "data.val_batch_size": _k(
        None, int, "per-process evaluation batch (default: the training micro-batch x 2)"
    ),
    "data.num_workers": _k(0, int, "DataLoader workers per process"),
    "data.max_train_images": _k(None, int, "use only the first N training images"),
    "data.max_val_images": _k(None, int, "use only the first N validation images"),
    "data.steps_per_epoch": _k(None, int, "cap optimizer steps per epoch (quick runs, benchmarks)"),
    "data.strict": _k(False, bool, "an unreadable image is fatal instead of skipped and counted"),
    "data.eval_crop_pct": _k(
        None,
        float,
        "center-crop fraction of the evaluation transform (DeiT: 0.875); null: the student's timm "
        "default (1.0 on synthetic data); also the training transform when aug.enabled is false",
    ),
    # augmentation
    "aug.enabled": _k(
        True, bool, "false: train on the deterministic eval transform (no augmentation at all)"
    ),
    "aug.auto_augment": _k("rand-m9-mstd0.5-inc1", str, "timm auto-augment string (RandAugment); null: none"),
    "aug.reprob": _k(0.25, float, "random erasing probability"),
    "aug.remode": _k("pixel", str, "random erasing mode", ("pixel", "rand", "const")),
    "aug.hflip": _k(0.5, float, "horizontal flip probability"),
    "aug.color_jitter": _k(0.3, float, "color jitter (ignored by timm when auto_augment is set)"),
    "aug.scale": _k([0.08, 1.0], list, "RandomResizedCrop scale range"),
    "aug.mixup": _k(0.0, float, "mixup alpha (0: off)"),
    "aug.cutmix": _k(0.0, float, "cutmix alpha (0: off)"),
    "aug.mixup_prob": _k(1.0, float, "probability of applying mixup or cutmix to a batch"),
    "aug.mixup_switch_prob": _k(0.5, float, "probability of cutmix instead of mixup when both are on"),
    "aug.mixup_mode": _k("batch", str, "mixup granularity", ("batch", "pair", "elem")),
    "aug.repeated_aug": _k(
        1, int, "repeated augmentation count (DeiT: 3); the epoch length stays len(dataset)"
    ),
    # loss
    "loss.smoothing": _k(0.1, float, "label smoothing of the cross-entropy term"),
    "loss.alpha": _k(0.0, float, "weight of logit KD; CE gets 1 - alpha"),
    "loss.kd": _k(
        "soft",
        str,
        "logit KD type: soft (KL with temperature) or hard (CE on teacher argmax)",
        ("soft", "hard"),
    ),
    "loss.temperature": _k(1.0, float, "soft KD temperature T (loss is scaled by T^2)"),
    "loss.feat_weight": _k(0.0, float, "weight of the token feature KD term (mean over tap pairs)"),
    "loss.feat_loss": _k(
        "mse",
        str,
        "feature loss: mse, or spectral (2-D FFT over the token grid, then MSE)",
        ("mse", "spectral"),
    ),
    "loss.feat_norm": _k(
        "none",
        str,
        "normalise both sides' tokens before the feature loss: none or layernorm "
        "(LayerNorm over channels, no affine)",
        ("none", "layernorm"),
    ),
    "loss.pairs": _k(
        None, list, "tap pairs [[student_layer, teacher_layer], ...]; null: [[-1, -1]] (last blocks)"
    ),
    "loss.student_norm": _k(
        "auto",
        str,
        "tap the student after its final norm: auto (yes for Lift, whose norm is "
        "the lifting projector), yes, no",
        ("auto", "yes", "no"),
    ),
    "loss.projector": _k(
        "auto",
        str,
        "how student and teacher tokens of different widths meet: pool (the paper's baseline: "
        "adaptive average pooling of the teacher's channels down to the student's width, nothing "
        "learned), linear (a trainable Linear student->teacher, discarded at export; FitNets style), "
        "none (widths must match); auto: pool when the teacher is wider, none when equal, linear "
        "when the student is wider",
        ("auto", "pool", "linear", "none"),
    ),
    # optimizer
    "optim.opt": _k("adamw", str, "timm optimizer name (create_optimizer_v2)"),
    "optim.lr": _k(None, float, "absolute learning rate; null: lr_base * batch_size / lr_base_size"),
    "optim.lr_base": _k(5e-4, float, "base learning rate for lr_base_size images per step"),
    "optim.lr_base_size": _k(512, int, "reference global batch for lr_base"),
    "optim.weight_decay": _k(
        0.05, float, "weight decay (never on norms and biases; on pos/cls tokens as decay_embeddings says)"
    ),
    "optim.decay_embeddings": _k(
        False,
        (bool, str),
        "weight decay on the parameters the model lists in no_weight_decay() (pos_embed, cls_token, "
        "dist_token): false: never, for every student; true: always; published: as the published "
        "code, per student (decayed for Lift, WideLast and the width-219 control, whose wrappers "
        "hid no_weight_decay(); not for timm's DeiT-Tiny)",
        (False, True, "published"),
    ),
    "optim.momentum": _k(0.9, float, "momentum for SGD-like optimizers"),
    "optim.clip_grad": _k(None, float, "clip the gradient norm to this value; null: off"),
    "optim.grad_accum": _k(1, int, "micro-batches accumulated per optimizer step"),
    # schedule
    "sched.name": _k(
        "cosine",
        str,
        "lr schedule (stepped every optimizer step; see published_lag)",
        ("cosine", "tanh", "poly", "step"),
    ),
    "sched.warmup_epochs": _k(5.0, float, "linear warmup length in epochs"),
    "sched.warmup_lr": _k(1e-6, float, "learning rate at the start of warmup"),
    "sched.min_lr": _k(1e-5, float, "final learning rate"),
    "sched.cooldown_epochs": _k(0.0, float, "epochs at min_lr after the decay"),
    "sched.decay_epochs": _k(30.0, float, "step schedule: epochs between decays"),
    "sched.decay_rate": _k(0.1, float, "step schedule: decay factor"),
    "sched.published_lag": _k(
        False,
        bool,
        "the published code's schedule: the lr changes once per epoch, and epoch e uses the "
        "value of epoch e - 1 (epoch 0 the initial one); false: stepped every optimizer step",
    ),
    # EMA
    "ema.enabled": _k(False, bool, "keep an exponential moving average of the student (timm ModelEmaV3)"),
    "ema.decay": _k(0.99996, float, "EMA decay per optimizer step"),
    "ema.warmup": _k(False, bool, "EMA decay warmup (timm's use_warmup)"),
    # logging / checkpoints
    "log.interval": _k(50, int, "write a step record to metrics.jsonl every N optimizer steps"),
    "log.eval_every": _k(
        1, int, "evaluate every N epochs (the last epoch is always evaluated); 0: last only"
    ),
    "log.save_every": _k(0, int, "also keep checkpoints/epoch_N.pt every N epochs (0: off)"),
    "log.checkpoint_steps": _k(
        0,
        int,
        "also write checkpoints/last.pt every N optimizer steps inside an epoch, for an exact "
        "mid-epoch resume (0: at epoch ends only)",
    ),
    "log.tensorboard": _k(
        False, bool, "also write TensorBoard events to RUN/tb (needs the tensorboard extra)"
    ),
    "log.wandb": _k(
        False,
        bool,
        "also log to Weights & Biases (needs the wandb extra; project from WANDB_PROJECT, "
        "WANDB_MODE=offline writes RUN/wandb only)",
    ),
    "log.progress": _k(
        True, bool, "progress inside an epoch on rank 0: a tqdm bar on a terminal, else a line every ~30 s"
    ),
}
