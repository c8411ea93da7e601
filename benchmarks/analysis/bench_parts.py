"""Per-part profile of `analyze` on one batch: forward vs each statistic, in one process.

    python benchmarks/analysis/bench_parts.py --threads 2 [--repeats 3] [--images 64]

Builds CaiT-S24 (random init, seed 0), runs one batch of smooth random JPEGs through it (all 24
self-attention blocks tapped), then times each streaming statistic on those same features as
``analyze`` runs it (the layers side by side on the solver pool, each single-threaded), all of
them together, and the once-per-run parts (summary eigen-solves, rotation statistics, plots) on a state filled with
``--images`` images (the batch repeated under new indices). Every figure is the median of
``--repeats`` timings taken in this process, in wall seconds (``parts_s``) and in CPU seconds of
all this process's threads (``parts_cpu_s``). On a shared machine the CPU seconds, and the ratios
of parts to the forward pass, hold better than wall seconds do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_analysis import make_images  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (all threads of this process) of ``fn``. CPU
    time holds on a shared machine: time that another process takes from this one is not in it."""
    ts, cs = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    return statistics.median(ts), statistics.median(cs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--images", type=int, default=64, help="images in the state the fixed costs see")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="cait_s24_224")
    p.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "vitdistill_bench"))
    args = p.parse_args()

    import timm

    from vitdistill.analysis import report
    from vitdistill.analysis.pca import solve_all
    from vitdistill.analysis.rotation import sample_indices
    from vitdistill.analysis.runner import AnalysisOptions, LayerStats
    from vitdistill.analysis.spectra import on_solver_pool
    from vitdistill.data import build_dataset, collate_skip, eval_transform
    from vitdistill.models.taps import resolve_layers, token_features
    from vitdistill.utils.malloc import keep_large_buffers

    torch.set_num_threads(args.threads)
    keep_large_buffers()
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False).eval()
    layers = resolve_layers(model, "all")
    ds = build_dataset(
        str(make_images(Path(args.scratch), args.batch_size)), split="val", transform=eval_transform(model)
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, collate_fn=collate_skip)
    x, _, idx, _ = next(iter(loader))
    with torch.inference_mode():
        model(x)  # warm-up
        fwd = timed(lambda: model(x), args.repeats)  # (wall, cpu)
        feats = token_features(model, x, layers)
    opts = AnalysisOptions(progress=False, plots=True)
    last = layers[-1]
    n_img = args.images
    rot = sample_indices(n_img, opts.rotation_images, opts.seed)

    def fresh(permutations: bool = True) -> dict:
        perms = opts.permutations if permutations else 0
        return {L: LayerStats(L, opts, perms if last == L else 0, rot if last == L else None) for L in layers}

    parts: dict[str, tuple[float, float]] = {"forward (bare, one batch)": fwd}
    pairs = sorted(zip(layers, feats, strict=True), key=lambda j: j[0] != last)  # as the runner orders them

    def per_layer(fn):  # as the runner does: layers side by side on the solver pool, each single-threaded
        return lambda: on_solver_pool(fn, pairs)

    st = fresh()
    with torch.inference_mode():
        parts["per-image SVD, 24 layers"] = timed(
            per_layer(lambda j: st[j[0]].svd.update(j[1], idx)), args.repeats
        )
        parts["PCA second moment, 24 layers"] = timed(
            per_layer(lambda j: st[j[0]].pca.update(j[1])), args.repeats
        )
        sep0 = fresh(permutations=False)
        parts["SEP, 24 layers (no permutations)"] = timed(
            per_layer(lambda j: sep0[j[0]].sep.update(j[1], idx)), args.repeats
        )

        # one layer on one thread, as in its pool job, with and without the permutation test
        def last_sep(stats):
            return lambda: on_solver_pool(lambda f: stats[last].sep.update(f, idx), [feats[-1]])

        with_perm, without = timed(last_sep(st), args.repeats), timed(last_sep(sep0), args.repeats)
        parts["SEP permutation test, last layer"] = tuple(
            a - b for a, b in zip(with_perm, without, strict=True)
        )
        all_ids = torch.tensor(rot[: args.batch_size])
        parts["rotation sample (32 images)"] = timed(
            lambda: on_solver_pool(
                lambda f: st[last].rotation.update(f, all_ids), [feats[-1][: len(all_ids)]]
            ),
            args.repeats,
        )
        every = fresh()
        parts["all statistics of the batch, as analyze runs them"] = timed(
            per_layer(lambda j: every[j[0]].update(j[1], idx)), args.repeats
        )
        # fill a state with n_img images (the batch repeated under new indices), for the fixed costs
        full = fresh()
        for s in range(0, n_img, args.batch_size):
            ids = torch.arange(s, min(n_img, s + args.batch_size))
            for L, f in zip(layers, feats, strict=True):
                full[L].update(f[: len(ids)], ids)

    def pca_eigh():  # as the runner does: every layer's solve on the solver pool
        for L in layers:
            full[L].pca._eig = None
        solve_all([full[L].pca for L in layers])

    parts["summary: PCA eigh, 24 layers"] = timed(pca_eigh, args.repeats)
    basis = full[last].pca.eig()[1]
    parts["summary: rotation statistics"] = timed(lambda: full[last].rotation._compute(basis), args.repeats)
    out = Path(args.scratch) / "parts_out"
    timing = {"pass1_s": 0.0, "pass2_s": 0.0, "images_per_s": 0.0}
    prov = {"model": args.model, "weights": {"kind": "random init"}}

    def summary_and_outputs(plots: bool):
        opts.plots = plots
        pca_eigh()
        if full[last].rotation is not None:
            full[last].rotation._computed = None
        s = report.build_summary(full, layers, opts, prov, [str(i) for i in range(n_img)], n_img, 0, timing)
        report.write_outputs(out, s, full, layers, opts, [str(i) for i in range(n_img)], None)

    summary_and_outputs(True)  # warm-up (matplotlib import)
    parts["build_summary + tables (no plots)"] = timed(lambda: summary_and_outputs(False), args.repeats)
    parts["build_summary + tables + plots"] = timed(lambda: summary_and_outputs(True), args.repeats)
    per_batch = parts["all statistics of the batch, as analyze runs them"]
    res = {
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "parts_s": {k: v[0] for k, v in parts.items()},
        "parts_cpu_s": {k: v[1] for k, v in parts.items()},
        "statistics_per_batch_s": per_batch[0],
        "statistics_over_forward": per_batch[0] / fwd[0],
        "statistics_over_forward_cpu": per_batch[1] / fwd[1],
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
