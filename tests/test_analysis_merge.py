"""Merging metric states follows each metric's declared reductions: two halves merge to the whole."""

from __future__ import annotations

import pytest
import torch

from vitdistill.analysis import (
    SEP,
    AnalysisOptions,
    CapturedEnergy,
    PerImageSVD,
    SecondMoment,
    SubspaceRotation,
)
from vitdistill.analysis.runner import LayerStats
from vitdistill.analysis.stats import Mergeable, merge_states

TS = (0.8, 0.9, 0.95, 0.99)
N_IMAGES = 10


def features(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_IMAGES, 9, 16, generator=g) * torch.logspace(0, -2, 16)
    return x + 0.3 * torch.randn(N_IMAGES, 1, 16, generator=g)


def basis() -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    )
    return q


# every metric kind, built fresh for each part; LayerStats nests the per-layer metrics
METRICS = {
    "svd": (PerImageSVD, lambda: PerImageSVD(TS), lambda m, x, i: m.update(x, i)),
    "pca": (SecondMoment, lambda: SecondMoment(TS), lambda m, x, i: m.update(x)),
    "curves": (CapturedEnergy, lambda: CapturedEnergy(basis(), TS), lambda m, x, i: m.update(x, i)),
    "sep": (SEP, lambda: SEP(permutations=3, seed=2), lambda m, x, i: m.update(x, i)),
    "rotation": (SubspaceRotation, lambda: SubspaceRotation([1, 4, 6, 7]), lambda m, x, i: m.update(x, i)),
    "layer": (
        LayerStats,
        lambda: LayerStats(3, AnalysisOptions(thresholds=TS), 2, [0, 3, 8]),
        lambda m, x, i: m.update(x, i),
    ),
}


def state_of(kind: str, ids: torch.Tensor) -> dict:
    _, make, update = METRICS[kind]
    m = make()
    update(m, features()[ids], ids)
    return m.state_dict()


def assert_same_state(a, b, where: str = "state") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where  # merging puts the rows last
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, tuple | list) and a and isinstance(a[0], torch.Tensor):
        for u, v in zip(a, b, strict=True):
            assert_same_state(u, v, where)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        if a.dtype.is_floating_point:  # sums in another order: equal up to round-off
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=where)
        else:
            assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("kind", list(METRICS))
def test_two_halves_merge_to_the_whole(kind):
    cls = METRICS[kind][0]
    whole = state_of(kind, torch.arange(N_IMAGES))
    # shard like torchrun (rank r takes images r, r+2, ...), and as two contiguous halves
    for halves in (
        [torch.arange(0, N_IMAGES, 2), torch.arange(1, N_IMAGES, 2)],
        [torch.arange(6), torch.arange(6, 10)],
    ):
        parts = [state_of(kind, ids) for ids in halves]
        assert_same_state(merge_states(parts, cls), whole)
        assert_same_state(merge_states(parts[::-1], cls.reductions), whole)  # order of ranks is irrelevant


def test_a_rank_without_images_leaves_the_merge_unchanged():
    whole = state_of("svd", torch.arange(N_IMAGES))
    assert_same_state(merge_states([whole, None], PerImageSVD), whole)
    empty = PerImageSVD(TS).state_dict()  # no image seen: sum_spectrum and shape are None
    assert_same_state(merge_states([empty, whole], PerImageSVD), whole)


@pytest.mark.parametrize("kind", list(METRICS))
def test_declarations_name_every_state_key(kind):
    cls = METRICS[kind][0]
    assert set(state_of(kind, torch.arange(N_IMAGES))) == set(cls.reductions)


def test_an_undeclared_key_is_refused_not_guessed():
    parts = [state_of("svd", torch.arange(5)), state_of("svd", torch.arange(5, 10))]
    parts[1]["sum_extra"] = torch.ones(3)  # named like a sum: still not merged without a declaration
    with pytest.raises(ValueError, match="sum_extra"):
        merge_states(parts, PerImageSVD)
    layer = [state_of("layer", torch.arange(5)), state_of("layer", torch.arange(5, 10))]
    layer[0]["sep"]["total"] = torch.ones(())  # inside a nested declaration too
    with pytest.raises(ValueError, match="total"):
        merge_states(layer, LayerStats)


def test_a_declaration_with_an_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="mean"):

        class Averaged(Mergeable):
            reductions = {"value": "mean"}

    with pytest.raises(ValueError, match="ids"):

        class RowsWithoutIds(Mergeable):
            reductions = {"rows": "rows"}


def test_the_merge_rule_is_always_given():
    parts = [state_of("svd", torch.arange(5)), state_of("svd", torch.arange(5, 10))]
    with pytest.raises(TypeError):
        merge_states(parts)  # no guessing the metric from its key names
    with pytest.raises(TypeError, match="reductions"):
        merge_states(parts, None)
