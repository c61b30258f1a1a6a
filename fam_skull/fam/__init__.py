"""FAM on its own: relative flatness (kappa and its variants), the regularizer, SAM, and normalization layers whose
third-order derivatives are exact. Needs only torch (MONAI only to find a MONAI network's bottleneck by name), so
it lifts into any training loop."""

from fam_skull.fam.flatness import relative_flatness, resolve_layer
from fam_skull.fam.regularizer import DEFAULT_LAMBDA, DEFAULT_OBJECTIVE, FAMOutput, FAMRegularizer
from fam_skull.fam.sam import DEFAULT_RHO, SAM

__all__ = ["DEFAULT_LAMBDA", "DEFAULT_OBJECTIVE", "DEFAULT_RHO", "FAMOutput", "FAMRegularizer", "SAM", "relative_flatness", "resolve_layer"]
