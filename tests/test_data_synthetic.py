"""synthetic:shapes: determinism, options, labels that match the drawn content."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitdistill.data import build_dataset, parse_spec
from vitdistill.data.synthetic import SHAPE_KINDS, _shape_mask
from vitdistill.errors import UserError


def test_deterministic_and_split_dependent():
    a = build_dataset("synthetic:shapes?n=40&seed=3", "train")
    b = build_dataset("synthetic:shapes?n=40&seed=3", "train")
    for i in (0, 7, 39):
        xa, ya, ia = a[i]
        xb, yb, ib = b[i]
        assert torch.equal(xa, xb) and ya == yb and ia == ib == i
    val = build_dataset("synthetic:shapes?n=40&seed=3", "val")
    other_seed = build_dataset("synthetic:shapes?n=40&seed=4", "train")
    assert not torch.equal(a[0][0], val[0][0])
    assert not torch.equal(a[0][0], other_seed[0][0])
    assert len(val) == 40 // 6
    assert a.describe()["fingerprint"] == b.describe()["fingerprint"] != other_seed.describe()["fingerprint"]


def test_options_classes_and_shapes():
    ds = build_dataset("synthetic:shapes?n=30&n_val=12&size=48&types=3", "val")
    assert len(ds) == 12
    assert ds.num_classes == 6
    assert ds.classes[0] == "square-above-disk"
    x, y, _ = ds[0]
    assert x.shape == (3, 48, 48) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert 0 <= y < 6
    d = ds.describe()
    assert d["kind"] == "synthetic" and d["spec"] == "synthetic:shapes?n=30&n_val=12&size=48&types=3"
    assert build_dataset(d["spec"], "val")[5][1] == ds[5][1]
    sub = build_dataset("synthetic:shapes?n=30", "train", max_images=10)
    full = build_dataset("synthetic:shapes?n=30", "train")
    assert len(sub) == 10 and sub.sample_ids[1] == full.sample_ids[3]
    assert torch.equal(sub[1][0], full[3][0])


def test_labels_cover_all_classes_roughly_evenly():
    ds = build_dataset("synthetic:shapes?n=1200&types=4", "train")
    counts = np.bincount([ds.render(i)[1] for i in range(len(ds))], minlength=ds.num_classes)
    # 12 classes, uniform: expected 100 each; binomial std ~9.6.
    assert counts.min() > 60 and counts.max() < 140


def test_class_names_the_upper_and_lower_shapes():
    ds = build_dataset("synthetic:shapes?n=200&distractors=0&noise=0.0", "train")
    for i in range(len(ds)):
        arr, label = ds.render(i)
        upper, lower = ds.layout(i)
        assert ds.classes[label] == f"{upper['kind']}-above-{lower['kind']}"
        # Centres apart vertically by most of the two radii; shapes inside the image.
        assert lower["cy"] - upper["cy"] >= 0.9 * (upper["r"] + lower["r"])
        for s in (upper, lower):
            assert s["r"] <= s["cx"] <= 32 - s["r"] and s["r"] <= s["cy"] <= 32 - s["r"]
        # Without noise and distractors, the filled centre of a solid shape stands out from the
        # background: brighter than the image's darkest tenth of pixels.
        for s in (upper, lower):
            if s["kind"] in ("square", "disk", "diamond", "plus"):
                centre = arr[int(s["cy"]), int(s["cx"])].astype(int).max()
                assert centre > np.percentile(arr.max(axis=2), 10)


def test_shape_masks_have_expected_areas():
    r = 200.0
    yy, xx = np.mgrid[-250:250, -250:250].astype(np.float64) + 0.5
    area = {k: _shape_mask(k, xx, yy, r).sum() / r**2 for k in SHAPE_KINDS}
    assert area["disk"] == pytest.approx(np.pi, rel=0.01)
    assert area["square"] == pytest.approx(1.7**2, rel=0.01)
    assert area["diamond"] == pytest.approx(2.0, rel=0.01)
    assert area["ring"] == pytest.approx(np.pi * (1 - 0.25), rel=0.01)


def test_bad_specs_are_user_errors():
    with pytest.raises(UserError, match="did you mean shapes"):
        build_dataset("synthetic:shape")
    with pytest.raises(UserError, match="no option 'sise'"):
        build_dataset("synthetic:shapes?sise=32")
    with pytest.raises(UserError, match="needs a int"):
        parse_spec("synthetic:shapes?n=lots")
    with pytest.raises(UserError, match="types must be"):
        build_dataset("synthetic:shapes?types=9")
    with pytest.raises(UserError, match="splits"):
        build_dataset("synthetic:shapes", "holdout")
