"""The demo study: a recipe over the library's own train / analyze / compare / inspect code.

Stages, each in its own folder under ``out`` and skipped on a rerun once finished (its
``stage.json`` exists), unless ``fresh``:

1. ``1-data``: describe the data set, save a grid of sample images.
2. ``2-teacher``: train the wide teacher (:func:`vitdistill.distill.train`).
3. ``3-teacher-analysis``: :func:`vitdistill.analysis.analyze` on the teacher's final weights.
4. ``4-students``: every method x seed, same budget each (:func:`vitdistill.distill.train`).
5. ``5-student-analysis``: analyse each method's first-seed student, :func:`vitdistill.analysis.compare`
   with the teacher, and :func:`vitdistill.models.inspect_models` (parameters, MACs, images/s).
6. ``report.md`` / ``report.html`` (:mod:`vitdistill.demo.report`), built only from files the
   stages wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vitdistill.demo.methods import METHODS, TEACHER, Method, config_path
from vitdistill.errors import UserError
from vitdistill.utils.io import atomic_write_json
from vitdistill.utils.lock import LOCK_NAME, folder_lock

STAGE_DIRS = ("1-data", "2-teacher", "3-teacher-analysis", "4-students", "5-student-analysis", "6-report")
# The demo's size settings: positive integers, each also a `vitdistill demo --flag`.
SIZE_FIELDS = (
    "seeds",
    "epochs",
    "teacher_epochs",
    "img_size",
    "patch_size",
    "teacher_width",
    "teacher_depth",
    "student_width",
    "student_depth",
    "train_images",
    "val_images",
    "batch_size",
    "analysis_images",
)


@dataclass
class DemoSettings:
    """Everything that changes the demo's numbers (recorded in ``OUT/demo.json``).

    ``None`` fields take the full or ``quick`` preset in :meth:`resolved`.
    """

    quick: bool = False
    data: str | None = None
    device: str = "cpu"
    seeds: int | None = None
    epochs: int | None = None
    teacher_epochs: int | None = None
    img_size: int | None = None
    patch_size: int | None = None
    teacher_width: int | None = None
    teacher_depth: int | None = None
    student_width: int | None = None
    student_depth: int | None = None
    train_images: int | None = None
    val_images: int | None = None
    batch_size: int | None = None
    analysis_images: int | None = None
    methods: tuple[str, ...] = field(default_factory=lambda: tuple(m.key for m in METHODS))

    FULL = {
        "seeds": 2,
        "epochs": 7,
        "teacher_epochs": 12,
        "img_size": 32,
        "patch_size": 4,
        "teacher_width": 128,
        "teacher_depth": 4,
        "student_width": 32,
        "student_depth": 4,
        "train_images": 2000,
        "val_images": 500,
        "batch_size": 64,
        "analysis_images": 300,
    }
    QUICK = {
        "seeds": 2,
        "epochs": 1,
        "teacher_epochs": 2,
        "img_size": 32,
        "patch_size": 4,
        "teacher_width": 48,
        "teacher_depth": 2,
        "student_width": 16,
        "student_depth": 2,
        "train_images": 256,
        "val_images": 96,
        "batch_size": 64,
        "analysis_images": 24,
    }

    def resolved(self) -> DemoSettings:
        preset = self.QUICK if self.quick else self.FULL
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in preset.items():
            if values[k] is None:
                values[k] = v
        s = DemoSettings(**values)
        s.validate()
        return s

    def validate(self) -> None:
        for name in SIZE_FIELDS:
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1 (got {v})")
        if self.img_size % self.patch_size:
            raise UserError(
                f"--img-size {self.img_size} must be a multiple of --patch-size {self.patch_size}"
            )
        for name in ("teacher_width", "student_width"):
            if getattr(self, name) % heads(getattr(self, name)):
                raise UserError(
                    f"--{name.replace('_', '-')} must be a multiple of 16 (got {getattr(self, name)})"
                )
        if self.student_width >= self.teacher_width:
            raise UserError(
                f"the student must be narrower than the teacher (student width {self.student_width}, "
                f"teacher width {self.teacher_width})"
            )
        if self.batch_size > self.train_images:
            raise UserError(
                f"--batch-size {self.batch_size} is larger than the training set ({self.train_images} images)"
            )
        if self.data is None and self.img_size < 16:
            raise UserError("--img-size must be at least 16 for the synthetic data set")
        unknown = [m for m in self.methods if m not in {x.key for x in METHODS}]
        if unknown:
            raise UserError(
                f"unknown demo method {unknown[0]!r}; methods: {', '.join(m.key for m in METHODS)}"
            )
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise UserError(
                    f"--device {self.device}: CUDA is not available on this machine; use --device cpu"
                )
        elif self.device != "cpu":
            raise UserError(f"--device must be cpu or cuda (got {self.device!r})")

    @property
    def synthetic(self) -> bool:
        return self.data is None

    def data_spec(self) -> str:
        if self.data is not None:
            return str(self.data)
        spec = f"synthetic:shapes?n={self.train_images}&n_val={self.val_images}"
        if self.img_size != 32:
            spec += f"&size={self.img_size}"
        return spec

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        d["methods"] = list(self.methods)
        d["data_spec"] = self.data_spec()
        return d


def heads(width: int) -> int:
    """Attention heads for a width: heads of 32 channels (16 for widths under 64)."""
    return max(1, width // 32) if width >= 64 else max(1, width // 16)


def _kwargs(s: DemoSettings, width: int, depth: int) -> str:
    return (
        f"{{img_size: {s.img_size}, patch_size: {s.patch_size}, embed_dim: {width}, depth: {depth}, "
        f"num_heads: {heads(width)}}}"
    )


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m {s:02d}s" if m else f"{s}s"


class Study:
    """Runs the stages; each stage method returns a small JSON-able result kept in its stage.json."""

    def __init__(
        self,
        settings: DemoSettings,
        out: str | os.PathLike,
        fresh: bool = False,
        progress: bool = True,
        stream=None,
    ):
        self.s = settings.resolved()
        self.out = Path(out)
        self.fresh = fresh
        self.progress = progress
        self.stream = stream or sys.stdout
        self.t0 = time.time()

    # ---------------------------------------------------------------- bookkeeping
    def say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def _prepare_out(self) -> None:
        meta = self.out / "demo.json"
        if self.fresh:
            for d in STAGE_DIRS:
                shutil.rmtree(self.out / d, ignore_errors=True)
            for f in ("report.md", "report.html", "demo.json"):
                with contextlib.suppress(FileNotFoundError):
                    (self.out / f).unlink()
        if meta.is_file():
            old = json.loads(meta.read_text()).get("settings", {})
            new = self.s.key()
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff:
                raise UserError(
                    f"{self.out} holds a demo made with other settings ({', '.join(diff)}); "
                    "add --fresh to replace it, or choose another --out"
                )
        elif (
            self.out.exists()
            and any(p.name != LOCK_NAME for p in self.out.iterdir())
            and not any((self.out / d).exists() for d in STAGE_DIRS)
        ):
            raise UserError(f"{self.out} exists and is not a demo folder; choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        import torch

        import vitdistill

        atomic_write_json(
            meta,
            {
                "settings": self.s.key(),
                "vitdistill": vitdistill.__version__,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
            },
        )

    def stage(self, number: int, title: str, fn) -> dict:
        folder = self.out / STAGE_DIRS[number - 1]
        marker = folder / "stage.json"
        if marker.is_file():
            info = json.loads(marker.read_text())
            self.say(f"[{number}/6] {title}: finished earlier, skipped ({_fmt_time(info['elapsed_s'])} then)")
            return info["result"]
        folder.mkdir(parents=True, exist_ok=True)
        t = time.time()
        result, line = fn(folder)
        elapsed = time.time() - t
        atomic_write_json(marker, {"stage": number, "title": title, "elapsed_s": elapsed, "result": result})
        self.say(f"[{number}/6] {title}: {line} ({_fmt_time(elapsed)})")
        return result

    # ---------------------------------------------------------------- helpers
    def overrides(self, method: Method, seed: int, epochs: int) -> list[str]:
        s = self.s
        ov = [
            f"data.train={s.data_spec()}",
            "data.val=null",
            f"data.batch_size={s.batch_size}",
            f"epochs={epochs}",
            f"seed={seed}",
            f"device={s.device}",
            f"log.progress={'true' if self.progress and method is TEACHER else 'false'}",
        ]
        if s.data is not None:
            ov += [f"data.max_train_images={s.train_images}", f"data.max_val_images={s.val_images}"]
        if method is TEACHER:
            ov.append(f"model.kwargs={_kwargs(s, s.teacher_width, s.teacher_depth)}")
            return ov
        ov.append(f"model.kwargs={_kwargs(s, s.student_width, s.student_depth)}")
        if method.remedy != "none":
            ov.append(f"model.width={s.teacher_width}")
        if method.uses_teacher:
            ov += [
                f"teacher.kwargs={_kwargs(s, s.teacher_width, s.teacher_depth)}",
                f"teacher.checkpoint={(self.out / STAGE_DIRS[1]).resolve()}",
            ]
        return ov

    def train_run(self, method: Method, seed: int, epochs: int, run_dir: Path) -> dict:
        """Train one run, resuming a killed one; a finished run (summary.json with `last`) is reused."""
        import yaml

        from vitdistill.distill import train

        summary_file = run_dir / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            if summary.get("last") and summary.get("epochs") == epochs:
                return summary
        config = yaml.safe_load(config_path(method).read_text())
        return train(config, overrides=self.overrides(method, seed, epochs), output=run_dir, resume="auto")

    def load_student(self, run_dir: Path):
        """The run's final (last-epoch) weights in a freshly built model."""
        from vitdistill.distill.build import create_from_spec, load_weights

        summary = json.loads((run_dir / "summary.json").read_text())
        model = create_from_spec(summary["model"])
        load_weights(model, run_dir / "checkpoints" / "last.pt", role="student")
        return model.eval()

    def analysis_options(self) -> dict[str, Any]:
        s = self.s
        opts: dict[str, Any] = {
            "images": s.analysis_images,
            "split": "val",
            "layers": "all",
            "device": s.device,
            "crop_pct": 1.0 if s.synthetic else None,
            "batch_size": 64,
            "progress": self.progress,
        }
        if s.quick:
            opts.update(permutations=3, bootstrap=50, rotation_images=8, rotation_pairs=28)
        else:
            opts.update(permutations=20, bootstrap=500, rotation_images=48, rotation_pairs=1128)
        return opts

    def run_dirs(self) -> dict[str, list[Path]]:
        root = self.out / STAGE_DIRS[3]
        return {m: [root / f"{m}-seed{seed}" for seed in range(self.s.seeds)] for m in self.s.methods}

    # ---------------------------------------------------------------- stages
    def stage_data(self, folder: Path):
        from vitdistill.data import build_dataset
        from vitdistill.demo.report import save_sample_grid

        spec = self.s.data_spec()
        train = build_dataset(spec, "train", max_images=None if self.s.synthetic else self.s.train_images)
        val = build_dataset(spec, "val", max_images=None if self.s.synthetic else self.s.val_images)
        if train.num_classes < 2:
            raise UserError(f"{spec}: the demo needs at least two classes (found {train.num_classes})")
        save_sample_grid(train, folder / "samples.png")
        info = {"spec": spec, "train": train.describe(), "val": val.describe()}
        atomic_write_json(folder / "data.json", info)
        line = f"{len(train)} train / {len(val)} val images, {train.num_classes} classes ({spec})"
        return {"spec": spec, "classes": train.num_classes, "train": len(train), "val": len(val)}, line

    def stage_teacher(self, folder: Path):
        summary = self.train_run(TEACHER, 0, self.s.teacher_epochs, folder)
        line = f"width {self.s.teacher_width}, val top-1 {summary['last']['top1']:.1f}% after {summary['epochs']} epoch(s)"
        return {"top1": summary["last"]["top1"], "run": str(folder)}, line

    def stage_teacher_analysis(self, folder: Path):
        from vitdistill.analysis import analyze

        model = self.load_student(self.out / STAGE_DIRS[1])
        summary = analyze(model, self.s.data_spec(), out=folder, **self.analysis_options())
        svd, pca = summary["svd"]["p99"], summary["pca"]["p99"]
        line = (
            f"{summary['images']} images, C={summary['channels']}, N={summary['tokens']}: 90% energy needs "
            f"{svd['90']:.0f} dims per image vs {pca['90']:.0f} in one shared basis (99th pct)"
        )
        return {"images": summary["images"]}, line

    def stage_students(self, folder: Path):
        from vitdistill.utils.progress import Progress

        jobs = [(m, seed, d) for m, dirs in self.run_dirs().items() for seed, d in enumerate(dirs)]
        results: dict[str, list[float]] = {}
        bar = Progress(
            len(jobs), "students", unit="run", enabled=self.progress, file=self.stream, final_line=False
        )
        for key, seed, run_dir in jobs:
            method = next(m for m in METHODS if m.key == key)
            bar.set_postfix(f"{key} seed {seed}")
            summary = self.train_run(method, seed, self.s.epochs, run_dir)
            results.setdefault(key, []).append(summary["last"]["top1"])
            bar.update(1)
        bar.close()
        best = max(results, key=lambda k: sum(results[k]) / len(results[k]))
        line = (
            f"{len(jobs)} runs ({len(results)} methods x {self.s.seeds} seed(s), {self.s.epochs} epoch(s) each); "
            f"best mean top-1: {best}"
        )
        return {"runs": len(jobs)}, line

    def stage_student_analysis(self, folder: Path):
        from vitdistill.analysis import analyze, compare
        from vitdistill.models import inspect_models

        opts = dict(self.analysis_options())
        opts["plots"] = False
        dirs, labels, models = [self.out / STAGE_DIRS[2]], [TEACHER.label], []
        teacher = self.load_student(self.out / STAGE_DIRS[1])
        for key, runs in self.run_dirs().items():
            label = next(m.label for m in METHODS if m.key == key)
            model = self.load_student(runs[0])
            if not (folder / key / "summary.json").is_file():  # done before an interruption
                # A Lift student's output tokens are the lifted ones (teacher width): those are distilled
                # and pooled by its head, so they are what is compared with the teacher.
                lifted = hasattr(model, "lift_dim")
                analyze(model, self.s.data_spec(), out=folder / key, **{**opts, "final_norm": lifted})
            dirs.append(folder / key)
            labels.append(label)
            models.append((key, label, model))
        compare(dirs, out=folder / "compare", labels=labels)
        rows = inspect_models(
            [teacher] + [m for _, _, m in models],
            batch_size=64 if not self.s.quick else 16,
            device=self.s.device,
            labels=["teacher"] + [k for k, _, _ in models],
            iters=10 if not self.s.quick else 2,
            warmup=3 if not self.s.quick else 1,
        )
        atomic_write_json(folder / "profile.json", {"batch_size": rows[0]["batch_size"], "rows": rows})
        line = f"{len(models)} students analysed beside the teacher; parameters, MACs and images/s measured"
        return {"students": len(models)}, line

    def stage_report(self, folder: Path):
        from vitdistill.demo.report import write_report

        report = write_report(self.out, self.s, folder)
        return {"verdict": report["verdict"]["code"]}, f"{self.out / 'report.md'} and report.html written"

    def run(self) -> dict:
        self._prepare_out()
        self.stage(1, "data", self.stage_data)
        self.stage(2, "teacher", self.stage_teacher)
        self.stage(3, "teacher analysis", self.stage_teacher_analysis)
        self.stage(4, "students", self.stage_students)
        self.stage(5, "student analysis", self.stage_student_analysis)
        self.stage(6, "report", self.stage_report)
        report = json.loads((self.out / STAGE_DIRS[5] / "report.json").read_text())
        from vitdistill.demo.report import summary_text

        self.say("")
        self.say(summary_text(report))
        self.say(f"total {_fmt_time(time.time() - self.t0)}; report: {self.out / 'report.html'}")
        return report


def run_demo(
    out: str | os.PathLike = "vitdistill-demo", fresh: bool = False, progress: bool = True, **settings: Any
) -> dict:
    """Run (or resume) the whole demo into ``out``; returns the report's numbers (report.json)."""
    with folder_lock(out, "demo"):  # a second demo into this folder fails at once
        return Study(DemoSettings(**settings), out, fresh=fresh, progress=progress).run()
