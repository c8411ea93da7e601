"""How many timm architecture families `analyze` handles: one small model per timm module.

For every timm model module (``timm.list_modules()``: one architecture family each) the model
with the fewest parameters is picked (parameters counted on the meta device, so nothing is
allocated), built with random weights and analysed on a few tiny synthetic images through the
Python API, first at a small input (``img_size``) and, if that fails, at the model's own
input size. Each family's outcome (analysed, or the one-line reason it was not) goes to a JSON
file and a Markdown table.

    nice -n 19 python benchmarks/breadth/bench_breadth.py --out /tmp/breadth

``--picks FILE`` reuses the picks of an earlier run (the meta-device walk over every model name
takes a while); ``--only a,b`` limits the run to some modules. Results are kept in
``OUT/breadth.json`` after every model, and a rerun into the same folder skips the families
already there. Each model and input size gets ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
import traceback
from pathlib import Path

import torch

#: timm modules that hold no architecture of their own (registries, helpers, wrappers)
NOT_FAMILIES = {"_registry", "registry", "factory", "_factory", "_builder", "helpers", "hub"}


BIG_WORDS = (
    "large",
    "huge",
    "giant",
    "gigantic",
    "xlarge",
    "base",
    "_big",
    "_l_",
    "_xl",
    "448",
    "512",
    "384",
)


def _params_on_meta(name: str) -> int | None:
    import timm

    try:
        with torch.device("meta"):
            m = timm.create_model(name)
        return sum(p.numel() for p in m.parameters())
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta is not a candidate
        return None


def pick_models(modules: list[str] | None = None) -> dict[str, dict]:
    """The smallest model (by parameters) of every timm module, with how many names it holds."""
    import timm

    picks: dict[str, dict] = {}
    for mod in modules or timm.list_modules():
        if mod in NOT_FAMILIES or mod.startswith("vitdistill"):
            continue
        names = timm.list_models(module=mod)
        if not names:
            continue
        # names that say they are big never hold a family's smallest model: measure them only
        # when the family has nothing else
        small = [n for n in names if not any(w in n for w in BIG_WORDS)] or names
        sized = [(n, _params_on_meta(n)) for n in small]
        sized = [(n, p) for n, p in sized if p is not None]
        if not sized:
            picks[mod] = {"model": names[0], "params": None, "models_in_module": len(names)}
            continue
        name, params = min(sized, key=lambda s: (s[1], s[0]))
        picks[mod] = {"model": name, "params": params, "models_in_module": len(names)}
        print(f"{mod:28s} {name:40s} {params / 1e6:8.2f}M of {len(names)}", flush=True)
    return picks


class TimedOut(Exception):
    """One model ran past ``--timeout`` seconds."""


def _alarm(signum, frame):
    raise TimedOut


def analyse_one(name: str, img_size: int | None, images: int, work: Path, timeout: int) -> dict:
    """Run `analyze` on ``name`` (random init); the stage shapes, or the error's first line.

    A run past ``timeout`` seconds is stopped (SIGALRM, between two torch calls) and recorded
    as timed out: not counted as handled, and not a refusal either."""
    from vitdistill.analysis import analyze

    kwargs = {"img_size": img_size} if img_size else {}
    t0 = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        s = analyze(
            name,
            "synthetic:shapes?n=8&n_val=8&size=64",
            work / name,
            model_kwargs=kwargs,
            images=images,
            batch_size=images,
            permutations=2,
            bootstrap=20,
            rotation_images=images,
            plots=False,
            progress=False,
            checkpoint_every=0,
        )
    except TimedOut:
        return {"ok": False, "timed_out": True, "error": f"timed out after {timeout} s", "seconds": timeout}
    except BaseException as e:  # noqa: BLE001 - any failure is the family's outcome
        if isinstance(e, KeyboardInterrupt):
            raise
        line = (str(e).strip().splitlines() or [""])[0][:300]
        return {
            "ok": False,
            "error": f"{type(e).__name__}: {line}",
            "seconds": time.perf_counter() - t0,
            "where": traceback.format_exc(limit=-2).strip().splitlines()[-3:],
        }
    finally:
        signal.alarm(0)
    shapes = [[e["layer"], e["tokens"], e["channels"]] for e in s["layers"]]
    return {"ok": True, "stages": shapes, "seconds": time.perf_counter() - t0}


def run(picks: dict[str, dict], images: int, small: int, timeout: int, out: Path) -> dict[str, dict]:
    """Every pick not yet in ``out/breadth.json``; that file is rewritten after each model."""
    done = out / "breadth.json"
    results = json.loads(done.read_text()) if done.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for mod, pick in sorted(picks.items()):
            if mod in results:
                continue
            r = analyse_one(pick["model"], small, images, Path(tmp), timeout)
            r["img_size"] = small
            if not r["ok"] and not r.get("timed_out"):
                first = r
                r = analyse_one(pick["model"], None, images, Path(tmp), timeout)
                r["img_size"] = "default"
                r["small_error"] = first["error"]
            results[mod] = {**pick, **r}
            done.write_text(json.dumps(results, indent=1))
            state = "ok " if r["ok"] else "NO "
            detail = r["stages"] if r["ok"] else r["error"]
            print(f"{state} {mod:26s} {pick['model']:36s} {r['seconds']:6.1f}s {detail}", flush=True)
    return results


def markdown(results: dict[str, dict]) -> str:
    ok = sum(r["ok"] for r in results.values())
    slow = sum(bool(r.get("timed_out")) for r in results.values())
    lines = [
        f"{ok} of {len(results)} timm families analysed; {slow} timed out, "
        f"{len(results) - ok - slow} refused or failed.",
        "",
        "| module | model | input | outcome |",
        "|---|---|---|---|",
    ]
    for mod, r in sorted(results.items()):
        if r["ok"]:
            st = r["stages"]
            what = f"{len(st)} layers; last N={st[-1][1]}, C={st[-1][2]}"
        elif r.get("timed_out"):
            what = r["error"]
        else:
            what = "failed: " + r["error"].replace("|", "/")
        lines.append(f"| {mod} | {r['model']} | {r['img_size']} | {what} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for picks.json, breadth.json and breadth.md")
    ap.add_argument("--picks", help="reuse the picks.json of an earlier run")
    ap.add_argument("--only", help="comma-separated timm modules to run (default: every one)")
    ap.add_argument("--images", type=int, default=2, help="images per model (default 2)")
    ap.add_argument("--img-size", type=int, default=64, help="small input tried first (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--timeout", type=int, default=180, help="seconds per model and input size (default 180)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = [m.strip() for m in args.only.split(",")] if args.only else None
    if args.picks:
        picks = json.loads(Path(args.picks).read_text())
        picks = {m: p for m, p in picks.items() if only is None or m in only}
    else:
        picks = pick_models(only)
        (out / "picks.json").write_text(json.dumps(picks, indent=1))
    t0 = time.perf_counter()
    results = run(picks, args.images, args.img_size, args.timeout, out)
    (out / "breadth.md").write_text(markdown(results))
    print(markdown(results).splitlines()[0], f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
