"""The demo study: a recipe over the library's own models, losses and analyses.

Stages, each in its own folder under ``out`` and skipped on a rerun once finished (its
``stage.json`` exists and the files it left are all there), unless ``fresh``; a stage that runs
again makes the later stages run again too (:meth:`Study.invalidate_after`):

1. ``1-data``: decode the data set once into tensors (``tensors.pt``), save sample images.
2. ``2-teacher``: train the wide teacher (:mod:`vitdistill.demo.fit`).
3. ``3-teacher-analysis``: :func:`vitdistill.analysis.analyze` on the teacher.
4. ``4-students``: cache the teacher's outputs, then every arm x seed (:mod:`vitdistill.demo.runs`).
5. ``5-student-analysis``: analyse each arm's first-seed student, :func:`vitdistill.analysis.compare`
   with the teacher, and :func:`vitdistill.models.inspect_models` (parameters, MACs, images/s).
6. ``report.md`` / ``report.html`` (:mod:`vitdistill.demo.report`), built only from files the
   stages wrote.

Progress: a line on the stream for every finished stage, teacher epoch and student run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from vitdistill.demo import fit, runs
from vitdistill.demo.methods import BY_KEY, TEACHER
from vitdistill.demo.settings import SIZE_FIELDS, STAGE_DIRS, DemoSettings
from vitdistill.errors import UserError, exhausted
from vitdistill.utils.io import atomic_write_json
from vitdistill.utils.lock import LOCK_NAME, folder_lock
from vitdistill.utils.markers import MARKER, refuse_inside
from vitdistill.utils.progress import fmt_duration

__all__ = ["SIZE_FIELDS", "STAGE_DIRS", "DemoSettings", "Study", "run_demo"]

# Stage -> the later stages whose whole folder derives from it and is redone when it runs again.
STALE_WITH = {1: (2, 3, 4, 5), 2: (3, 4, 5), 4: (5,)}


def _usable(path: Path) -> bool:
    """A stage's output is there, and a JSON one can be read."""
    return path.exists() and (path.suffix != ".json" or fit.read_json(path) is not None)


def _remove(path: Path) -> None:
    """Remove a file, a link or a folder of the demo's own, whichever it is."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def one_thread():
    """Tiny models train fastest on one thread per process (more threads mostly wait on each other)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
        self.stream = stream or sys.stderr
        self.t0 = time.time()
        self.cpu0 = time.process_time()

    # ---------------------------------------------------------------- bookkeeping
    def say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def tick(self, line: str) -> None:
        """A progress line, stamped with the time since the demo started."""
        if self.progress:
            self.say(f"  [{fmt_duration(time.time() - self.t0)}] {line}")

    def folder(self, number: int) -> Path:
        return self.out / STAGE_DIRS[number - 1]

    def _prepare_out(self) -> None:
        meta = self.out / "demo.json"
        if self.fresh:
            for name in (*STAGE_DIRS, "report.md", "report.html", "demo.json"):
                _remove(self.out / name)
        if meta.is_file():
            self._check_same_settings(meta)
        elif (
            self.out.exists()
            and any(p.name not in (LOCK_NAME, MARKER) for p in self.out.iterdir())
            and not any((self.out / d).exists() for d in STAGE_DIRS)
        ):
            raise UserError(
                f"{self.out} exists and is not a demo folder; choose another 'out'", settings=("out",)
            )
        self.out.mkdir(parents=True, exist_ok=True)
        import torch

        import vitdistill

        atomic_write_json(
            meta,
            {
                "settings": self.s.key(),
                "workers": self.s.workers,
                "vitdistill": vitdistill.__version__,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
            },
        )

    def _check_same_settings(self, meta: Path) -> None:
        recorded = fit.read_json(meta)
        if recorded is None:
            raise UserError(
                f"{meta} cannot be read, so the settings of the demo in {self.out} are unknown; "
                "set fresh=True to replace it",
                settings=("fresh",),
            )
        old = recorded.get("settings", {})
        new = self.s.key()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise UserError(
                f"{self.out} holds a demo made with other settings ({', '.join(diff)}); "
                "set fresh=True to replace it, or choose another 'out'",
                settings=("fresh", "out"),
            )

    def stage(self, number: int, title: str, fn) -> dict:
        """Run one stage, or skip it when it finished earlier and every file it left is still there."""
        folder = self.folder(number)
        marker = folder / "stage.json"
        info = fit.read_json(marker)
        if info is not None:
            gone = next((p for p in self.outputs(number) if not _usable(p)), None)
            if gone is None:
                self.say(
                    f"[{number}/6] {title}: finished earlier, skipped ({fmt_duration(info['elapsed_s'])} then)"
                )
                return info["result"]
            self.say(
                f"[{number}/6] {title}: finished earlier, but {gone} is missing or cannot be read; running it again"
            )
        _remove(marker)
        self.invalidate_after(number)
        folder.mkdir(parents=True, exist_ok=True)
        self.say(f"[{number}/6] {title} ...")
        t, c = time.time(), time.process_time()
        result, line = fn(folder)
        elapsed = time.time() - t
        info = {"stage": number, "title": title, "elapsed_s": elapsed, "cpu_s": time.process_time() - c}
        atomic_write_json(marker, {**info, "result": result})
        self.say(f"[{number}/6] {title}: {line} ({fmt_duration(elapsed)})")
        return result

    def outputs(self, number: int) -> list[Path]:
        """The files a finished stage leaves for the later stages and the reader."""
        f = self.folder(number)
        if number == 1:
            return [f / "data.json", f / "tensors.pt"]
        if number == 2:
            return [f / "summary.json", fit.checkpoint_file(f)]
        if number == 3:
            return [f / "summary.json"]
        if number == 4:
            dirs = [Path(j["run_dir"]) for j in self.jobs()]
            return [d / "summary.json" for d in dirs] + [fit.checkpoint_file(d) for d in dirs]
        if number == 5:
            return [f / "profile.json", f / "compare"] + [f / key / "summary.json" for key in self.s.methods]
        return [f / "report.json", self.out / "report.md", self.out / "report.html"]

    def invalidate_after(self, number: int) -> None:
        """A stage about to run makes every later stage's result stale: their markers go, and so
        does the work derived from it (the data and the teacher feed everything after them; the
        student runs feed the student analysis). A student run kept across a rerun of stage 4
        itself is not redone."""
        for later in range(number + 1, len(STAGE_DIRS) + 1):
            folder = self.folder(later)
            _remove(folder if later in STALE_WITH.get(number, ()) else folder / "stage.json")

    # ---------------------------------------------------------------- helpers
    def load_model(self, run_dir: Path):
        """A run's final weights in a freshly built model."""
        from vitdistill.models import create_model

        summary = json.loads((run_dir / "summary.json").read_text())
        return create_model(summary["model"], fit.checkpoint_file(run_dir), role="student", opt_in=None)[0]

    def analysis_options(self) -> dict[str, Any]:
        s = self.s
        opts: dict[str, Any] = {
            "images": s.analysis_images,
            "split": "val",
            "layers": "all",
            "device": s.device,
            "crop_pct": 1.0 if s.synthetic else None,
            "batch_size": 64,
            "progress": False,
        }
        if s.quick:
            opts.update(permutations=3, bootstrap=50, rotation_images=8, rotation_pairs=28)
        else:
            opts.update(permutations=20, bootstrap=500, rotation_images=48, rotation_pairs=1128)
        return opts

    def run_dir(self, key: str, seed: int) -> Path:
        return self.folder(4) / f"{key}-seed{seed}"

    def config(self, key: str, seed: int, epochs: int) -> dict:
        return runs.config(self.s, key, seed, epochs, self.folder(2), self.uniform())

    def uniform(self) -> int:
        return json.loads((self.folder(1) / "data.json").read_text()).get("uniform_width") or 0

    # ---------------------------------------------------------------- stages
    def stage_data(self, folder: Path):
        from vitdistill.demo.plots import save_sample_grid
        from vitdistill.models import create_model
        from vitdistill.utils.io import atomic_write_json

        s, spec = self.s, self.s.data_spec()
        probe_cfg = runs.config(s, "teacher", 0, 1, self.folder(2), 0)
        probe = create_model(probe_cfg["model"], num_classes=2)[0]
        crop = 1.0 if s.synthetic else None
        cap = (None, None) if s.synthetic else (s.train_images, s.val_images)
        train = fit.load_split(spec, "train", probe, cap[0], crop)
        val = fit.load_split(spec, "val", probe, cap[1], crop)
        classes = int(train.labels.max()) + 1
        if classes < 2:
            raise UserError(f"{spec}: the demo needs at least two classes (found {classes})")
        if s.batch_size > len(train):  # an epoch of full batches needs at least one
            raise UserError(
                f"batch_size={s.batch_size} is larger than the training set ({len(train)} readable images "
                f"in {spec})",
                settings=("batch_size",),
            )
        fit.save_splits(folder / "tensors.pt", {"train": train, "val": val})
        from vitdistill.data import build_dataset

        ds = build_dataset(spec, "train", max_images=cap[0])
        save_sample_grid(ds, folder / "samples.png")
        width, params = runs.uniform_width(s, ds.num_classes)
        info = {
            "spec": spec,
            "train": ds.describe(),
            "val": build_dataset(spec, "val", max_images=cap[1]).describe(),
            "num_classes": ds.num_classes,
            "uniform_width": width,
            "uniform_params": params,
        }
        atomic_write_json(folder / "data.json", info)
        line = f"{len(train)} train / {len(val)} val images, {ds.num_classes} classes ({spec}), decoded once"
        return {"classes": ds.num_classes, "train": len(train), "val": len(val)}, line

    def stage_teacher(self, folder: Path):
        from vitdistill.models import as_spec, create_model

        cfg = self.config("teacher", 0, self.s.teacher_epochs)
        data = fit.load_splits(self.folder(1) / "tensors.pt")
        classes = json.loads((self.folder(1) / "data.json").read_text())["num_classes"]
        import torch

        torch.manual_seed(0)
        spec = as_spec(cfg["model"], classes)
        model = create_model(spec)[0].train()
        task = fit.make_task(model, None, cfg, tuple(data["train"].images.shape[1:]), classes)
        t, c = time.time(), time.process_time()
        result = fit.fit(
            task,
            data["train"],
            data["val"],
            None,
            cfg,
            0,
            on_epoch=lambda e, loss: self.tick(
                f"teacher epoch {e + 1}/{cfg['epochs']}: train loss {loss:.3f}"
            ),
        )
        from vitdistill.models.profile import count_params

        summary = {
            "method": "teacher",
            "seed": 0,
            "epochs": cfg["epochs"],
            "params": count_params(model),
            "val_images": len(data["val"]),
            **result,
            "wall_s": time.time() - t,
            "cpu_s": time.process_time() - c,
        }
        fit.save_run(folder, model, spec, summary)
        line = f"width {self.s.teacher_width}, depth {self.s.teacher_depth}: val top-1 {result['top1']:.1f}%"
        return {"top1": result["top1"]}, line

    def stage_teacher_analysis(self, folder: Path):
        from vitdistill.analysis import analyze

        model = self.load_model(self.folder(2))
        summary = analyze(model, self.s.data_spec(), out=folder, **self.analysis_options())
        svd, pca = summary["svd"]["p99"], summary["pca"]["p99"]
        line = (
            f"{summary['images']} images, C={summary['channels']}, N={summary['tokens']}: 90% energy needs "
            f"{svd['90']:.0f} dims per image vs {pca['90']:.0f} in one shared basis (99th pct)"
        )
        return {"images": summary["images"]}, line

    def jobs(self) -> list[dict]:
        classes = json.loads((self.folder(1) / "data.json").read_text())["num_classes"]
        common = {
            "data_file": str(self.folder(1) / "tensors.pt"),
            "teacher_dir": str(self.folder(2)),
            "targets_dir": str(self.folder(4)),
            "num_classes": classes,
        }
        out = []
        for seed in self.s.seed_list:  # seed-major: every arm of a seed before the next seed
            narrow = self.config("alone", seed, self.s.epochs)
            for key in self.s.methods:
                out.append(
                    {
                        **common,
                        "method": key,
                        "seed": seed,
                        "run_dir": str(self.run_dir(key, seed)),
                        "config": self.config(key, seed, self.s.epochs),
                        "narrow_config": narrow,
                    }
                )
        return out

    def stage_students(self, folder: Path):
        jobs = self.jobs()
        kinds = {}
        for job in jobs[: len(self.s.methods)]:  # one seed covers every kind of teacher target
            task, _, _, _ = runs.prepare(job, build_targets=True)
        kinds = sorted(p.name for p in folder.glob("teacher-*.pt"))
        self.tick(f"teacher outputs cached once for the training set: {', '.join(kinds) or 'none needed'}")
        done = [0]

        def on_done(summary: dict) -> None:
            done[0] += 1
            self.tick(
                f"run {done[0]}/{len(jobs)} {summary['method']} seed {summary['seed']}: "
                f"top-1 {summary['top1']:.1f}% ({summary['cpu_s']:.1f} s CPU)"
            )

        results = runs.run_all(jobs, self.s.workers, on_done)
        cpu = sum(r["cpu_s"] for r in results)
        line = (
            f"{len(jobs)} runs ({len(self.s.methods)} arms x {self.s.seeds} seeds, {self.s.epochs} epochs each, "
            f"{self.s.workers} worker(s)); {cpu:.0f} s CPU in the runs"
        )
        return {"runs": len(jobs), "runs_cpu_s": cpu}, line

    def stage_student_analysis(self, folder: Path):
        from vitdistill.analysis import analyze, compare
        from vitdistill.models import inspect_models

        opts = {**self.analysis_options(), "plots": False}
        dirs, labels, models = [self.folder(3)], [TEACHER.label], []
        first = self.s.seed_list[0]
        for key in self.s.methods:
            model = self.load_model(self.run_dir(key, first))
            if not (folder / key / "summary.json").is_file():  # done before an interruption
                # A Lift student's output tokens are the lifted ones (teacher width): those are distilled
                # and pooled by its head, so they are what is compared with the teacher.
                analyze(
                    model,
                    self.s.data_spec(),
                    out=folder / key,
                    **{**opts, "final_norm": hasattr(model, "lift_dim")},
                )
                self.tick(f"analysed {key} (seed {first})")
            dirs.append(folder / key)
            labels.append(BY_KEY[key].label)
            models.append((key, model))
        compare(dirs, out=folder / "compare", labels=labels)
        rows = inspect_models(
            [self.load_model(self.folder(2))] + [m for _, m in models],
            batch_size=64 if not self.s.quick else 16,
            device=self.s.device,
            labels=["teacher"] + [k for k, _ in models],
            iters=5 if not self.s.quick else 2,
            warmup=2 if not self.s.quick else 1,
        )
        atomic_write_json(folder / "profile.json", {"batch_size": rows[0]["batch_size"], "rows": rows})
        line = f"{len(models)} students analysed beside the teacher; parameters, MACs and images/s measured"
        return {"students": len(models)}, line

    def stage_report(self, folder: Path):
        from vitdistill.demo.report import write_report

        report = write_report(self.out, self.s, folder, timing=self.timing())
        return {"holds": report["verdict"]["holds"]}, f"{self.out / 'report.md'} and report.html written"

    def timing(self) -> dict:
        stages = {}
        for i in range(1, 6):
            f = self.folder(i) / "stage.json"
            if f.is_file():
                info = json.loads(f.read_text())
                stages[STAGE_DIRS[i - 1]] = {
                    "wall_s": info["elapsed_s"],
                    "cpu_s": info.get("cpu_s"),
                    "runs_cpu_s": info["result"].get("runs_cpu_s"),
                }
        return {"stages": stages, "workers": self.s.workers, "cpu_count": os.cpu_count()}

    def run(self) -> dict:
        self._prepare_out()
        try:
            self._stages()
        except OSError as e:
            # the demo's own files unusable: something of the wrong kind (a file for a run's folder), or
            # no permission; a full disk keeps its own message (the CLI's), other paths are not ours to name
            mine = e.filename is not None and Path(os.path.abspath(e.filename)).is_relative_to(
                self.out.absolute()
            )
            if not mine or exhausted(e) is not None:
                raise
            if isinstance(e, PermissionError):
                fix, names = (
                    "give this user write access to the demo folder, or choose another 'out'",
                    ("out",),
                )
            else:
                fix, names = "remove it, or set fresh=True to start over", ("fresh",)
            raise UserError(
                f"{e.filename}: {e.strerror}, where the demo keeps its own files; {fix}", settings=names
            ) from e
        report = json.loads((self.folder(6) / "report.json").read_text())
        from vitdistill.demo.report import summary_text

        self.say("")
        self.say(summary_text(report))
        self.say(f"total {fmt_duration(time.time() - self.t0)}; report: {self.out / 'report.html'}")
        return report

    def _stages(self) -> None:
        self.stage(1, "data", self.stage_data)
        with one_thread():
            self.stage(2, "teacher", self.stage_teacher)
        self.stage(3, "teacher analysis", self.stage_teacher_analysis)
        with one_thread():
            self.stage(4, "students", self.stage_students)
        self.stage(5, "student analysis", self.stage_student_analysis)
        self.stage(6, "report", self.stage_report)


def run_demo(
    out: str | os.PathLike = "vitdistill-demo", fresh: bool = False, progress: bool = True, **settings: Any
) -> dict:
    """Run (or resume) the whole demo into ``out``; returns the report's numbers (report.json)."""
    refuse_inside(out, [settings.get("data")])
    with folder_lock(out, "demo"):  # a second demo into this folder fails at once
        return Study(DemoSettings(**settings), out, fresh=fresh, progress=progress).run()
