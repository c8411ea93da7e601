"""`vitdistill export` prints Python that loads the export, and that Python runs as printed.

Run folders are written here as the trainer writes them (a run checkpoint with the student and
its model spec) for a plain timm model, a remedy on a custom base and a registered student; the
printed recipe is then run, unchanged, in a fresh interpreter started in another folder, and the
model it loads must give the student's logits.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from vitdistill.cli import main
from vitdistill.models import create_model

KW = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2)
SPECS = {
    "timm model": {"name": "vit_tiny_patch16_224", "kwargs": KW},
    "remedy on a base": {"name": "vit_tiny_patch16_224", "remedy": "widelast", "width": 32, "kwargs": KW},
    "registered student": {"name": "deit_tiny_lift_patch16_224", "kwargs": dict(img_size=16, patch_size=4)},
}
CHECK = """
import torch
x = torch.load({x!r})
with torch.no_grad():
    torch.testing.assert_close(model.eval()(x), torch.load({want!r}), rtol=0, atol=0)
print("loaded", type(model).__name__, model.num_classes)
"""


@pytest.mark.parametrize("what", list(SPECS))
def test_the_printed_recipe_loads_the_export(what, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    student, prov = create_model(SPECS[what], num_classes=5)
    spec = {**SPECS[what], "num_classes": 5}
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    state = {"epoch": 0, "student": student.state_dict(), "model_spec": spec}
    torch.save(state, tmp_path / "run" / "checkpoints" / "last.pt")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.save(student(x), tmp_path / "want.pt")
    torch.save(x, tmp_path / "x.pt")

    monkeypatch.chdir(tmp_path)  # a relative --out: the recipe must not depend on this folder
    assert main(["export", "run", "--out", "exp"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("wrote exp/model.safetensors") and out[0].endswith("load it in Python with:")
    recipe = "\n".join(out[1:])
    assert recipe.startswith("import timm, vitdistill\n") and "local-dir:" in recipe

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    harness = f"exec({recipe!r})" + CHECK.format(x=str(tmp_path / "x.pt"), want=str(tmp_path / "want.pt"))
    r = subprocess.run(
        [sys.executable, "-c", harness], cwd=elsewhere, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-1] == "5"
