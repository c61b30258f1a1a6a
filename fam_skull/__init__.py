"""fam-skull: skull reconstruction and cranial implant design with FAM (relative flatness aware minimization)."""

__all__ = ["FAMOutput", "FAMRegularizer", "relative_flatness", "resolve_layer"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # FAM's names on demand: ``import fam_skull.cli`` (and ``fam-skull --help``) must not wait for torch
    if name in __all__:
        import fam_skull.fam as fam

        return getattr(fam, name)
    raise AttributeError(f"module 'fam_skull' has no attribute {name!r}")
