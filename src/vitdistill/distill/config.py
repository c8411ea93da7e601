"""The training config: one schema with defaults, YAML loading and ``key=value`` overrides.

Every key a recipe may set is declared once in :data:`SCHEMA` (:mod:`vitdistill.distill.schema`)
with its default, type and allowed values, so a typo or a wrong type is a one-line error naming the key instead of a silently
ignored setting. ``python -m vitdistill.distill.config`` prints the schema as a markdown table
(that table is the one in ``docs/training.md``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from pathlib import Path
from typing import Any

import yaml

from vitdistill.distill.schema import SCHEMA, Key
from vitdistill.errors import UserError, closest_names
from vitdistill.utils import yamlsafe
from vitdistill.utils.options import SEED_LIMIT
from vitdistill.utils.overrides import parse_set

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
    if not 0 <= cfg["seed"] < SEED_LIMIT:
        raise UserError(f"config key 'seed' must be in [0, {SEED_LIMIT - 1}], got {cfg['seed']}")
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
