"""Experiments over the stages: ``sweep`` (arms x seeds, each trained, predicted, evaluated), ``study`` (a sweep read
as paired comparisons), ``demo`` (synthetic skulls through the whole pipeline) and ``flatness`` (kappa of a
trained model's FAM layer over a dataset)."""
