"""fam-skull: skull reconstruction and cranial implant design with FAM (relative flatness aware minimization)."""

from fam_skull.fam.flatness import relative_flatness, resolve_layer
from fam_skull.fam.regularizer import FAMOutput, FAMRegularizer

__all__ = ["FAMOutput", "FAMRegularizer", "relative_flatness", "resolve_layer"]
__version__ = "0.1.0"
