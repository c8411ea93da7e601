"""The training config: one schema with defaults, YAML loading and ``key=value`` overrides.

Every key a recipe may set is declared in :data:`SCHEMA` with its default, type and allowed
values, so a typo or a wrong type is a one-line error naming the key instead of a silently
ignored setting. ``python -m vitdistill.distill.config`` prints the schema as a markdown table
(that table is the one in ``docs/training.md``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vitdistill.errors import UserError, closest_names
from vitdistill.utils import yamlsafe
from vitdistill.utils.overrides import parse_set


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

SECTIONS = sorted({k.split(".")[0] for k in SCHEMA if "." in k})
# A bare string for these sections is shorthand for their main key.
SHORTHAND = {"model": "model.name", "teacher": "teacher.name", "data": "data.train"}


def defaults() -> dict:
    """The full default config as a nested dict."""
    out: dict = {}
    for key, decl in SCHEMA.items():
        _set(out, key, copy.deepcopy(decl.default))
    return out


def _set(cfg: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = cfg
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def get(cfg: dict, dotted: str):
    node = cfg
    for p in dotted.split("."):
        node = node[p]
    return node


def default(key: str):
    """The declared default of a config key (for a config written before the key existed)."""
    return copy.deepcopy(SCHEMA[key].default)


def needs_teacher(loss: dict) -> bool:
    """Whether a ``loss`` section uses a teacher: logit KD (alpha > 0) or feature KD (feat_weight > 0)."""
    return float(loss.get("alpha", 0)) > 0 or float(loss.get("feat_weight", 0)) > 0


def _unknown(key: str) -> UserError:
    near = closest_names(key, SCHEMA.keys(), n=3)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    section = key.split(".")[0]
    if section in SECTIONS and not near:
        allowed = [k for k in SCHEMA if k.startswith(section + ".")]
        hint = f" (allowed in {section}: {', '.join(a.split('.', 1)[1] for a in allowed)})"
    return UserError(f"unknown config key {key!r}{hint}")


def check_value(key: str, value):
    """Validate (and lightly coerce) one value; UserError naming the key otherwise."""
    if key not in SCHEMA:
        raise _unknown(key)
    decl = SCHEMA[key]
    if value is None:
        if decl.nullable or key == "aug.auto_augment":
            return None
        raise UserError(f"config key {key!r} cannot be null ({_type_names(decl)})")
    if float in decl.types and isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML 1.1 reads "5e-4" as a string
            value = float(value)
    if float in decl.types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in decl.types:
        if decl.choices is not None:  # YAML reads off/no/on/yes as booleans
            raise UserError(
                f"config key {key!r} must be one of {', '.join(map(str, decl.choices))}; got {value!r} "
                "(YAML reads off, no, on and yes as true/false)"
            )
        raise UserError(f"config key {key!r} must be {_type_names(decl)}, got {value!r}")
    if not isinstance(value, decl.types):
        raise UserError(f"config key {key!r} must be {_type_names(decl)}, got {value!r}")
    if decl.choices is not None and value not in decl.choices:
        raise UserError(
            f"config key {key!r} must be one of {', '.join(map(str, decl.choices))}; got {value!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"config key {key!r} must be a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise UserError(f"config key {key!r} must fit in a signed 64-bit integer, got {value}")
    if key == "device" and not (value in ("auto", "cpu", "cuda") or value.startswith("cuda:")):
        raise UserError(f"config key 'device' must be auto, cpu, cuda or cuda:N; got {value!r}")
    return value


def _type_names(decl: Key) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true/false",
        dict: "a mapping",
        list: "a list",
    }
    s = " or ".join(names.get(t, t.__name__) for t in decl.types)
    return s + (" or null" if decl.nullable else "")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if not isinstance(k, str):
            raise UserError(f"config key {prefix}{k!r} is not a string")
        dotted = prefix + k
        if not prefix and k in SHORTHAND and isinstance(v, str):
            flat[SHORTHAND[k]] = v
        elif dotted in SCHEMA:
            flat[dotted] = v
        elif isinstance(v, dict) and not prefix and k in SECTIONS:
            flat.update(_flatten(v, dotted + "."))
        elif not prefix and k in SECTIONS:
            raise UserError(f"config section {k!r} must be a mapping, got {v!r}")
        else:
            raise _unknown(dotted)
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` by the one KEY=VALUE rule (:mod:`vitdistill.utils.overrides`), with shorthand keys."""
    key, value = parse_set(text)
    if key in SHORTHAND and isinstance(value, str):
        key = SHORTHAND[key]
    return key, value


def load_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} not found")
    try:
        data = yamlsafe.load(p.read_text(encoding="utf-8"), f"config file {str(p)!r}")
    except yaml.YAMLError as e:
        raise UserError(f"config file {str(p)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"config file {str(p)!r} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise UserError(f"cannot read config file {str(p)!r}: {e.strerror or e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config file {str(p)!r} must hold a mapping of keys, not {type(data).__name__}")
    return data


def resolve(config: dict | str | os.PathLike | None = None, overrides=()) -> dict:
    """Defaults <- config (dict or YAML path) <- overrides; validated, as a nested dict."""
    if config is None:
        tree: dict = {}
    elif isinstance(config, dict):
        tree = copy.deepcopy(config)
    else:
        tree = load_yaml(config)
    flat = _flatten(tree)
    for text in overrides:
        k, v = parse_override(text) if isinstance(text, str) else text
        flat[k] = v
    cfg = defaults()
    for k, v in flat.items():
        _set(cfg, k, check_value(k, v))
    _check_semantics(cfg)
    return cfg


# A negative value of these would train without complaint and mean nothing (a negative
# clip_grad flips the gradient's sign; a negative lr climbs the loss), or fail deep inside.
_NON_NEGATIVE = (
    "loss.feat_weight",
    "loss.smoothing",
    "aug.mixup",
    "aug.cutmix",
    "aug.reprob",
    "optim.lr_base",
    "optim.weight_decay",
    "optim.clip_grad",
    "sched.warmup_lr",
    "sched.min_lr",
    "sched.warmup_epochs",
    "sched.cooldown_epochs",
    "log.eval_every",
    "log.save_every",
)


def _check_semantics(cfg: dict) -> None:
    for key in ("epochs", "data.batch_size", "optim.grad_accum", "aug.repeated_aug", "log.interval"):
        if get(cfg, key) < 1:
            raise UserError(f"config key {key!r} must be >= 1, got {get(cfg, key)}")
    for key in (
        "data.val_batch_size",
        "data.max_train_images",
        "data.max_val_images",
        "data.steps_per_epoch",
    ):
        if get(cfg, key) is not None and get(cfg, key) < 1:  # null: the default
            raise UserError(f"config key {key!r} must be >= 1 (or null), got {get(cfg, key)}")
    for key in ("log.checkpoint_steps", "data.num_workers"):
        if get(cfg, key) < 0:
            raise UserError(f"config key {key!r} must be >= 0, got {get(cfg, key)}")
    if not 0 <= cfg["seed"] < 2**32:  # numpy's seed range; each epoch's seed is derived from it
        raise UserError(f"config key 'seed' must be in [0, 4294967295], got {cfg['seed']}")
    lr = get(cfg, "optim.lr")
    if lr is not None and lr <= 0:
        raise UserError(f"config key 'optim.lr' must be > 0 (or null: scaled from optim.lr_base), got {lr}")
    for key in ("loss.alpha",):
        if not 0.0 <= get(cfg, key) <= 1.0:
            raise UserError(f"config key {key!r} must be in [0, 1], got {get(cfg, key)}")
    for key in _NON_NEGATIVE:
        if get(cfg, key) is not None and get(cfg, key) < 0:
            raise UserError(f"config key {key!r} must be >= 0, got {get(cfg, key)}")
    if not 0.0 <= get(cfg, "ema.decay") <= 1.0:
        raise UserError(f"config key 'ema.decay' must be in [0, 1], got {get(cfg, 'ema.decay')}")
    crop = get(cfg, "data.eval_crop_pct")
    if crop is not None and not 0.0 < crop <= 1.0:
        raise UserError(f"config key 'data.eval_crop_pct' must be in (0, 1], got {crop}")
    if get(cfg, "loss.temperature") <= 0:
        raise UserError("config key 'loss.temperature' must be > 0")
    if cfg["model"]["remedy"] != "none" and cfg["model"]["width"] is None:
        raise UserError(
            f"model.remedy={cfg['model']['remedy']} needs model.width (e.g. the teacher's width, 384)"
        )
    if cfg["model"]["widelast_schedule"] != "heads_step" and cfg["model"]["remedy"] != "widelast":
        raise UserError(
            "model.widelast_schedule applies to model.remedy=widelast only (registered WideLast "
            "students such as deit_tiny_widelast_fixed_step_patch16_224 carry their own schedule)"
        )
    pairs = cfg["loss"]["pairs"]
    if pairs is not None:
        ok = all(
            isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(i, int) for i in p) for p in pairs
        )
        if not ok or not pairs:
            raise UserError(
                f"config key 'loss.pairs' must be a list of [student_layer, teacher_layer] ints, got {pairs!r}"
            )
    if needs_teacher(cfg["loss"]) and not (cfg["teacher"]["name"] or cfg["teacher"]["checkpoint"]):
        raise UserError(
            "loss.alpha or loss.feat_weight > 0 needs a teacher: set teacher.name (and pretrained or "
            "checkpoint), or teacher.checkpoint to a vitdistill run / export"
        )
    if cfg["teacher"]["pretrained"] and cfg["teacher"]["checkpoint"]:
        raise UserError("set only one of teacher.pretrained and teacher.checkpoint")
    if cfg["model"]["pretrained"] and cfg["model"]["checkpoint"]:
        raise UserError("set only one of model.pretrained and model.checkpoint")
    scale = cfg["aug"]["scale"]
    if len(scale) != 2 or not all(isinstance(s, int | float) for s in scale):
        raise UserError(f"config key 'aug.scale' must be [min, max], got {scale!r}")


def dump_yaml(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


def schema_markdown() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, d in SCHEMA.items():
        default = "null" if d.default is None else yaml.safe_dump(d.default, default_flow_style=True).strip()
        if default.endswith("..."):
            default = default[:-3].strip()
        doc = d.doc + (f" [{' / '.join(map(str, d.choices))}]" if d.choices else "")
        lines.append(f"| `{key}` | `{default}` | {doc} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(schema_markdown())
