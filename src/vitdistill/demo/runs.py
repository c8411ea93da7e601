"""One training run of the demo (a job), and running many of them in parallel processes.

A job is a plain dict (picklable for worker processes): the arm, the seed and the paths. A
worker process loads the decoded data, the teacher and the cached teacher outputs once and
keeps them for its later jobs. Each run writes ``summary.json`` and ``checkpoints/last.pt``;
a run whose ``summary.json`` exists is not trained again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from vitdistill.checkpoints import torch_load
from vitdistill.demo import fit
from vitdistill.demo.methods import BY_KEY, config_path
from vitdistill.demo.settings import DemoSettings, heads

_MEMO: dict[str, Any] = {}  # per process: data, teacher, cached teacher outputs


def _kwargs(s: DemoSettings, width: int, depth: int, num_heads: int | None = None) -> str:
    return (
        f"{{img_size: {s.img_size}, patch_size: {s.patch_size}, embed_dim: {width}, depth: {depth}, "
        f"num_heads: {num_heads or heads(width)}}}"
    )


def overrides(
    s: DemoSettings, key: str, seed: int, epochs: int, teacher_dir: Path, uniform: int
) -> list[str]:
    """Config overrides that fit a recipe to the demo's sizes."""
    m = BY_KEY[key]
    ov = [f"data.train={s.data_spec()}", f"data.batch_size={s.batch_size}", f"epochs={epochs}"]
    ov += [f"seed={seed}", "device=cpu", "aug.enabled=false"]
    if m.arch == "teacher":
        return ov + [f"model.kwargs={_kwargs(s, s.teacher_width, s.teacher_depth)}"]
    if m.arch == "uniform":
        ov.append(f"model.kwargs={_kwargs(s, uniform, s.student_depth, heads(s.student_width))}")
    else:
        ov.append(f"model.kwargs={_kwargs(s, s.student_width, s.student_depth)}")
    if m.arch in ("lift", "widelast"):
        ov.append(f"model.width={s.teacher_width}")
    if m.uses_teacher:
        ov.append(f"teacher.checkpoint={teacher_dir.resolve()}")
        ov.append(f"teacher.kwargs={_kwargs(s, s.teacher_width, s.teacher_depth)}")
    return ov


def config(s: DemoSettings, key: str, seed: int, epochs: int, teacher_dir: Path, uniform: int) -> dict:
    from vitdistill.utils import yamlsafe

    recipe = yamlsafe.load(config_path(BY_KEY[key]).read_text(), BY_KEY[key].config)
    return fit.resolve_config(recipe, overrides(s, key, seed, epochs, teacher_dir, uniform))


def uniform_width(s: DemoSettings, num_classes: int) -> tuple[int, dict[str, int]]:
    """The uniform width whose parameter count is closest to WideLast's (same depth and head count)."""
    from vitdistill.models import count_params, create_model

    def params(key: str, width: int) -> int:
        cfg = config(s, key, 0, 1, Path("."), width)
        return count_params(create_model(cfg["model"], num_classes=num_classes)[0])

    h = heads(s.student_width)
    target = params("widelast_featkd", 0)
    best = min(
        range(s.student_width, s.teacher_width + 1, h),
        key=lambda w: abs(params("uniform_featkd", w) - target),
    )
    return best, {"widelast": target, "uniform": params("uniform_featkd", best)}


def load_teacher(teacher_dir: Path):
    from vitdistill.models import create_model

    spec = json.loads((teacher_dir / "summary.json").read_text())["model"]
    teacher, _ = create_model(spec, fit.checkpoint_file(teacher_dir), role="teacher", opt_in=None)
    return teacher.requires_grad_(False)


def _memo(name: str, make):
    if name not in _MEMO:
        _MEMO[name] = make()
    return _MEMO[name]


def targets_file(job: dict, kind: str) -> Path:
    return Path(job["targets_dir"]) / f"teacher-{kind}.pt"


def prepare(job: dict, build_targets: bool = False):
    """(task, spec, data, targets) of a job; teacher outputs read from the cache (or built when asked)."""
    data = _memo("data:" + job["data_file"], lambda: fit.load_splits(job["data_file"]))
    teacher = _memo("teacher:" + job["teacher_dir"], lambda: load_teacher(Path(job["teacher_dir"])))
    cfg, narrow = job["config"], job["narrow_config"]
    model, spec = fit.build_student(cfg, narrow, job["seed"], job["num_classes"])
    task = fit.make_task(model, teacher, cfg, tuple(data["train"].images.shape[1:]), job["num_classes"])
    kind = fit.target_kind(task)
    targets = None
    if kind is not None:
        f = targets_file(job, kind)
        if build_targets and not f.is_file():
            from vitdistill.utils.io import atomic_torch_save

            atomic_torch_save(f, fit.teacher_targets(task, data["train"].images))
        targets = _memo(f"targets:{f}", lambda: torch_load(f, opt_in=None))
    return task, spec, data, targets


def run_job(job: dict) -> dict:
    """Train one (arm, seed) run and write its folder; returns its summary."""
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    run_dir = Path(job["run_dir"])
    done = fit.read_summary(run_dir)
    if done is not None:
        return done
    wall, cpu = time.time(), time.process_time()
    task, spec, data, targets = prepare(job)
    result = fit.fit(task, data["train"], data["val"], targets, job["config"], job["seed"])
    from vitdistill.demo.noise import pack
    from vitdistill.models.profile import count_params

    summary = {
        "method": job["method"],
        "seed": job["seed"],
        "epochs": job["config"]["epochs"],
        "params": count_params(task.student),
        "val_images": len(data["val"]),
        **result,
        "val_correct": pack(correct_images(task.student, data["val"]).numpy()),
        "wall_s": time.time() - wall,
        "cpu_s": time.process_time() - cpu,
    }
    fit.save_run(run_dir, task.student, spec, summary)
    return summary


@torch.no_grad()
def correct_images(model, split: fit.Split, batch: int = 500) -> torch.Tensor:
    """Which validation images the model classifies correctly (for the evaluation-noise split)."""
    model.eval()
    hits = [
        model(split.images[s : s + batch]).argmax(-1) == split.labels[s : s + batch]
        for s in range(0, len(split), batch)
    ]
    return torch.cat(hits)


def run_all(jobs: list[dict], workers: int, on_done) -> list[dict]:
    """Run jobs (in ``workers`` spawned processes when > 1); ``on_done(summary)`` after each."""
    if workers <= 1:
        out = []
        for job in jobs:
            out.append(run_job(job))
            on_done(out[-1])
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    jobs = [{**j, "threads": 1} for j in jobs]
    out = []
    processes = max(1, min(workers, len(jobs)))  # never more processes than runs
    with ProcessPoolExecutor(max_workers=processes, mp_context=mp.get_context("spawn")) as pool:
        for fut in as_completed([pool.submit(run_job, j) for j in jobs]):
            out.append(fut.result())
            on_done(out[-1])
    return out
