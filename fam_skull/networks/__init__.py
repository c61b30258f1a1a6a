"""The networks (built by name or from a run's config), a trained run loaded back, and the implant from a network's
output for both stages."""
