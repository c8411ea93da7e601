"""The analysis pass: data -> batched forward -> token taps -> every statistic of every layer.

Pass 1 streams the images once: per-image SVD ranks, the PCA second moment, SEP (and its
permutation test) and the bounded rotation sample are all updated from the same batch of
token features. The per-image captured-energy curves under the shared PCA basis need that basis,
which is known only when every image has been seen. Rather than running the model a second time,
pass 1 writes the features of the layers that need curves (default: the last analysed layer) to a
scratch file on disk, and pass 2 streams them back through the basis in chunks: the model runs
once, memory stays flat, and the disk cost is images x N x C x 4 bytes per curve layer (deleted
at the end). ``pca_curves='off'`` skips it.

Under torchrun each rank takes every K-th image; states are merged with
:func:`vitdistill.analysis.stats.merge_states` and rank 0 writes the outputs.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vitdistill.analysis.featurefile import FeatureFile
from vitdistill.analysis.layerstats import LayerStats, preprocess
from vitdistill.analysis.options import AnalysisOptions
from vitdistill.analysis.pca import CapturedEnergy, solve_all
from vitdistill.analysis.pipeline import StatsWorker
from vitdistill.analysis.rotation import sample_indices
from vitdistill.analysis.spectra import on_solver_pool, solver_threads
from vitdistill.analysis.stats import merge_states
from vitdistill.errors import UserError
from vitdistill.utils import dist
from vitdistill.utils.io import atomic_torch_save
from vitdistill.utils.lock import hold_folder, releases_folders
from vitdistill.utils.malloc import large_buffers_on_heap
from vitdistill.utils.markers import refuse_inside
from vitdistill.utils.options import from_keywords
from vitdistill.utils.progress import Progress


def _versions() -> dict:
    import timm

    import vitdistill

    return {
        "vitdistill": vitdistill.__version__,
        "timm": timm.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, float | int | str | bool) or o is None:
        return o
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


@releases_folders
def analyze(
    model: nn.Module | str,
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    model_kwargs: dict | None = None,
    **options: Any,
) -> dict | None:
    """Analyse a model's token features on a data set; write the result folder ``out``.

    ``model`` is a timm model name (built with the ``checkpoint``/``pretrained``/``num_classes``
    options and ``model_kwargs``) or a model object. ``options`` are the fields of
    :class:`~vitdistill.analysis.options.AnalysisOptions`, where each is declared and documented.
    Returns the summary dict (on rank 0; ``None`` on other ranks of a torchrun job).

    Process-wide settings it changes while it runs are restored when it returns (or raises):
    glibc's allocator thresholds (:func:`vitdistill.utils.malloc.large_buffers_on_heap`, which
    says what glibc lets us restore) and torch's CPU thread count.
    """
    opts = from_keywords(AnalysisOptions, options)
    threads = torch.get_num_threads()
    try:
        with large_buffers_on_heap() as heap_buffers:
            return _analyze(model, data, out, model_kwargs, opts, heap_buffers)
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Run:
    """One analysis run's state, handed from each part of :func:`_analyze` to the next."""

    opts: AnalysisOptions
    info: dist.DistInfo
    device: torch.device
    model: nn.Module
    prov: dict
    layer_ids: list[int]
    data: Any
    transform: Any
    ds: Any
    n_total: int
    out: Path
    stats: dict[int, LayerStats] = field(default_factory=dict)
    curve_layers: list[int] = field(default_factory=list)
    spills: dict[int, FeatureFile] = field(default_factory=dict)  # pass-1 features for pass 2
    saved: dict[int, FeatureFile] = field(default_factory=dict)  # save_features
    fingerprint: str = ""
    done: list[int] = field(default_factory=list)
    skipped: int = 0

    @property
    def last(self) -> int:
        return self.layer_ids[-1]

    @property
    def state_dir(self) -> Path:
        return self.out / ".analysis_state"

    @property
    def ckpt_path(self) -> Path:
        return self.state_dir / f"rank{self.info.rank}.pt"

    def save_checkpoint(self) -> None:
        atomic_torch_save(
            self.ckpt_path,
            {
                "fingerprint": self.fingerprint,
                "layers": {L: self.stats[L].state_dict() for L in self.layer_ids},
                "spills": {L: s.state_dict() for L, s in self.spills.items()},
                "saved": {L: s.state_dict() for L, s in self.saved.items()},
                "done": list(self.done),
                "skipped": self.skipped,
            },
        )

    def consume(self, feats: list[torch.Tensor], idx: torch.Tensor) -> None:
        """Feed one batch of every layer's token features to the statistics (and the files).

        On the CPU, with at least as many layers as solver threads, the layers are updated in
        parallel on the solver pool, each single-threaded (``spectra.on_solver_pool``): one
        layer's products, FFTs and solves are too small to keep two threads busy, while whole
        layers side by side do. The last layer, which carries the permutation test and the
        rotation sample, goes first. Fewer layers than threads run one after the other, each
        with every thread.
        """
        opts = self.opts
        feats = [preprocess(f, opts.center, opts.standardize) for f in feats]
        for L, f in zip(self.layer_ids, feats, strict=True):
            if not bool(torch.isfinite(f).all()):
                raise UserError(
                    f"layer {L} gives features that are not finite (NaN or Inf) on images {idx.tolist()[:8]}: "
                    "the model's activations overflow with these weights"
                )
        jobs = sorted(zip(self.layer_ids, feats, strict=True), key=lambda j: j[0] != self.last)

        def update(job: tuple[int, torch.Tensor]) -> None:
            self.stats[job[0]].update(job[1], idx)

        if self.device.type == "cpu" and len(jobs) >= solver_threads() > 1:
            on_solver_pool(update, jobs)
        else:
            for job in jobs:
                update(job)
        for L, f in zip(self.layer_ids, feats, strict=True):
            if L in self.spills:
                self.spills[L].write(f, idx)
            if L in self.saved:
                self.saved[L].write(f, idx)
        self.done.extend(int(i) for i in idx)


def _analyze(model, data, out, model_kwargs, opts: AnalysisOptions, heap_buffers):
    run = _setup(model, data, out, model_kwargs, opts)
    try:
        _build_stats(run)
        _resume_or_reset(run)
        t_pass1 = _pass1(run)
    except Exception:  # failed (full disk, bad input) before any statistics checkpoint: nothing to resume
        if run.info.is_main and not run.ckpt_path.exists():
            shutil.rmtree(run.state_dir, ignore_errors=True)
        raise
    skipped_all, n_done = _merge_pass1(run)
    t_pass2 = _pass2(run)
    saved_manifest = _close_saved(run)
    if not run.info.is_main:
        dist.barrier()
        return None
    timing = {"pass1_s": t_pass1, "pass2_s": t_pass2, "images_per_s": n_done / max(t_pass1, 1e-9)}
    summary = _write(run, heap_buffers, skipped_all, timing, saved_manifest)
    dist.barrier()
    return summary


def _setup(model, data, out, model_kwargs, opts: AnalysisOptions) -> _Run:
    """Device, model (with its provenance), data set and the locked output folder."""
    from vitdistill.data import build_dataset, eval_transform
    from vitdistill.data.timm_sources import refuse_stream

    info = dist.init_distributed(opts.device) if dist.launched_by_torchrun() else dist.current()
    device = torch.device(opts.device)
    if device.type == "cuda" and info.distributed:
        device = torch.device("cuda", info.local_rank)
    model, prov, layer_ids = _setup_model(model, model_kwargs, opts)
    model = model.to(device).eval()

    transform = eval_transform(model, crop_pct=opts.crop_pct)
    ds = build_dataset(
        data, split=opts.split, transform=transform, strict=opts.strict, max_images=opts.images
    )
    refuse_stream(ds, "analyze numbers every image (per_image.csv, the rotation sample, resumable passes)")
    n_total = len(ds)
    if n_total == 0:
        raise UserError(f"no images found in {data}")
    out = Path(out) if out is not None else Path("analysis") / str(prov["model"])
    refuse_inside(out, [data])
    hold_folder(out, "analyze")  # before any write; released when analyze returns or fails
    return _Run(opts, info, device, model, prov, layer_ids, data, transform, ds, n_total, out)


def _setup_model(model, model_kwargs, opts: AnalysisOptions) -> tuple[nn.Module, dict, list[int]]:
    """The model (built from its name, or as given), its provenance and the analysed layers."""
    from vitdistill.models import create_model
    from vitdistill.models.taps import check_tappable, resolve_layers

    torch.manual_seed(opts.seed)  # identical random-init weights on every rank
    if isinstance(model, str):
        model, prov = create_model(
            model,
            opts.checkpoint,
            opts.pretrained,
            opts.num_classes,
            opts.trust_checkpoint,
            **(model_kwargs or {}),
        )
    else:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        prov = {
            "model": cfg.get("architecture", type(model).__name__),
            "weights": {"kind": "in-memory model"},
            "model_kwargs": model_kwargs or {},
        }
    check_tappable(model)
    layer_ids = sorted(resolve_layers(model, opts.layers))  # "last" = the deepest analysed layer
    return model, prov, layer_ids


def _build_stats(run: _Run) -> None:
    """Every layer's metrics, the pass-2 scratch files and the save_features files."""
    opts, rank, last = run.opts, run.info.rank, run.last
    run.curve_layers = {"last": [last], "all": list(run.layer_ids), "off": []}[opts.pca_curves]
    perm_layers = [last] if opts.permutation_layers == "last" else list(run.layer_ids)
    rot_layers = [last] if opts.rotation_layers == "last" else list(run.layer_ids)
    rot_sample = sample_indices(run.n_total, opts.rotation_images, opts.seed)
    run.stats = {
        L: LayerStats(
            L, opts, opts.permutations if L in perm_layers else 0, rot_sample if L in rot_layers else None
        )
        for L in run.layer_ids
    }
    run.spills = {L: FeatureFile(run.state_dir / f"features_L{L}_rank{rank}.f32") for L in run.curve_layers}
    run.saved = (
        {
            L: FeatureFile(run.state_dir / "features" / f"layer{L:02d}.rank{rank}.bin", opts.features_dtype)
            for L in run.layer_ids
        }
        if opts.save_features
        else {}
    )


def _resume_or_reset(run: _Run) -> None:
    """resume: load this rank's checkpoint (same fingerprint only); otherwise clear old state."""
    run.fingerprint = (
        run.opts.fingerprint()
        + f"/w{run.info.world_size}/n{run.n_total}/"
        + json.dumps(run.prov["weights"], sort_keys=True, default=str)
    )
    if run.opts.resume and run.ckpt_path.exists():
        ck = _read_state(run.ckpt_path)
        if ck["fingerprint"] != run.fingerprint:
            raise UserError(
                f"'resume': {run.ckpt_path} was written with other options, weights, data or process count; "
                "rerun with the same ones or without 'resume'",
                settings=("resume",),
            )
        for L in run.layer_ids:
            run.stats[L].load_state_dict(ck["layers"][L])
        for L, s in run.spills.items():
            s.load_state_dict(ck["spills"][L])
        for L, s in run.saved.items():
            s.load_state_dict(ck["saved"][L])
        run.done, run.skipped = list(ck["done"]), int(ck["skipped"])
    else:
        if run.state_dir.exists() and run.info.is_main:
            shutil.rmtree(run.state_dir, ignore_errors=True)
        dist.barrier()
        if run.opts.save_features:
            for s in run.saved.values():
                s.path.unlink(missing_ok=True)


def _pass1(run: _Run) -> float:
    """Stream this rank's images not yet done through the model and the statistics; the seconds."""
    from vitdistill.data import collate_skip
    from vitdistill.models.taps import token_features

    opts, info = run.opts, run.info
    shard = list(range(info.rank, run.n_total, info.world_size))
    done_set = set(run.done)
    todo = [i for i in shard if i not in done_set]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(run.ds, todo),
        batch_size=opts.batch_size,
        shuffle=False,
        num_workers=opts.num_workers,
        collate_fn=collate_skip,
        pin_memory=run.device.type == "cuda",
    )
    if opts.plots and info.is_main:
        from vitdistill.analysis import plots

        plots.start_warming()
    t0 = time.perf_counter()
    bar = Progress(
        len(todo), f"analyze {run.prov['model']}", unit="img", enabled=info.is_main and opts.progress
    )
    n_batches = 0
    # overlap: the statistics of batch k run on a worker thread while batch k+1 is in the model
    worker = StatsWorker(run.consume, depth=1) if opts.overlap else None
    for images, _labels, idx, n_skip in loader:
        run.skipped += int(n_skip)
        if images.numel():
            x = images.to(run.device, non_blocking=True)
            with torch.inference_mode():
                feats = token_features(run.model, x, run.layer_ids, norm=opts.final_norm)
                worker.submit(feats, idx) if worker else run.consume(feats, idx)
        n_batches += 1
        bar.update(int(images.shape[0]) + int(n_skip))
        if opts.checkpoint_every and n_batches % opts.checkpoint_every == 0:
            worker.drain() if worker else None
            run.save_checkpoint()
    if worker:
        worker.drain()
        worker.close()
    bar.close()
    if opts.checkpoint_every and n_batches:
        run.save_checkpoint()
    return time.perf_counter() - t0


def _merge_pass1(run: _Run) -> tuple[int, int]:
    """Merge pass-1 states across ranks (every rank needs the PCA basis for pass 2).

    Returns the skipped images of all ranks and the images analysed."""
    skipped_all = sum(dist.all_gather_object(run.skipped))
    for L in run.layer_ids:
        states = dist.all_gather_object(run.stats[L].state_dict())
        if run.info.distributed:
            run.stats[L].load_state_dict(merge_states(states, LayerStats))
    n_done = len(run.stats[run.last].svd.rows)
    if n_done == 0:
        raise UserError(f"none of the {run.n_total} images in {run.data} could be read")
    return skipped_all, n_done


def _pass2(run: _Run) -> float:
    """Solve every layer's PCA, then the per-image captured-energy curves from the scratch files."""
    t1 = time.perf_counter()
    solve_all([run.stats[L].pca for L in run.layer_ids])
    for L in run.curve_layers:
        _, vec = run.stats[L].pca.eig()
        ce = CapturedEnergy(vec.to(run.device), run.opts.thresholds)
        for f, ids in run.spills[L].chunks(run.opts.batch_size):
            ce.update(f.to(run.device), ids)
        run.spills[L].close()
        parts = dist.all_gather_object(ce.state_dict())
        ce.load_state_dict(merge_states(parts, CapturedEnergy))
        run.stats[L].curves = ce
    return time.perf_counter() - t1


def _close_saved(run: _Run) -> dict | None:
    """Close the save_features files; every rank's file, ids and shape per layer (or None)."""
    for s in run.saved.values():
        s.close()
    if not run.saved:
        return None
    return {
        L: dist.all_gather_object({"file": s.path.name, "ids": s.ids, "shape": s.shape})
        for L, s in run.saved.items()
    }


def _write(run: _Run, heap_buffers, skipped_all: int, timing: dict, saved_manifest) -> dict:
    """Rank 0: provenance, summary.json and every output file; the scratch state is removed."""
    from vitdistill.analysis import report
    from vitdistill.data import resolve_data_config
    from vitdistill.models.taps import describe_taps

    ds, opts = run.ds, run.opts
    provenance = {
        **run.prov,
        "versions": _versions(),
        "data": _jsonable(ds.describe() if hasattr(ds, "describe") else {"spec": str(run.data)}),
        "transform": _jsonable(resolve_data_config(run.model, crop_pct=opts.crop_pct)),
        "transform_repr": str(run.transform),
        "device": str(run.device),
        "world_size": run.info.world_size,
        "num_prefix_tokens": int(getattr(run.model, "num_prefix_tokens", 0) or 0),
        "taps": describe_taps(run.model, run.layer_ids),
        "allocator": {"glibc_large_buffers_on_heap": heap_buffers, "torch_threads": torch.get_num_threads()},
    }
    sample_ids = list(getattr(ds, "sample_ids", [str(i) for i in range(run.n_total)]))
    summary = report.build_summary(
        run.stats, run.layer_ids, opts, provenance, sample_ids, run.n_total, skipped_all, timing
    )
    report.write_outputs(
        run.out,
        summary,
        run.stats,
        run.layer_ids,
        opts,
        sample_ids,
        saved_manifest,
        run.state_dir / "features",
    )
    shutil.rmtree(run.state_dir, ignore_errors=True)
    return summary


def _read_state(path: Path) -> dict:
    """The statistics checkpoint of an interrupted run: tensors and plain containers only, never unpickled."""
    from vitdistill.checkpoints import torch_load

    try:
        ck = torch_load(path, opt_in=None)
    except UserError as e:
        raise UserError(f"'resume': {e}; rerun without 'resume'", settings=("resume",)) from None
    if not isinstance(ck, dict) or "fingerprint" not in ck:
        raise UserError(
            f"'resume': {path} is not an analysis state; rerun without 'resume'", settings=("resume",)
        )
    return ck
