"""fam_skull.fam lifts into any loop: it imports and regularizes with the pipeline's I/O, plotting and MONAI blocked."""

import subprocess
import sys
from pathlib import Path

BLOCKED = ("SimpleITK", "nibabel", "medpy", "matplotlib", "tensorboard", "monai", "data_prep", "scipy", "skimage", "yaml")

SCRIPT = f"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"blocked: {{name}}")

sys.meta_path.insert(0, Block())
import torch
from fam_skull.fam import FAMRegularizer, SAM, relative_flatness

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.InstanceNorm3d(4, affine=True), torch.nn.PReLU(),
                            torch.nn.Conv3d(4, 2, 1))
x, y = torch.randn(2, 1, 6, 6, 6), torch.randint(0, 2, (2, 6, 6, 6))
loss_fn = torch.nn.functional.cross_entropy
reg = FAMRegularizer(model, layer="0", lam=0.1)
out = reg(loss_fn, x, y)
out.loss.backward()
assert out.kappa is not None and all(p.grad is not None for p in model.parameters())
assert torch.isfinite(relative_flatness(model, "3", loss_fn, x, y))
loaded = sorted(m.split(".")[0] for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
print("loaded:", loaded)
"""


def test_fam_package_needs_only_torch():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded: []" in done.stdout
