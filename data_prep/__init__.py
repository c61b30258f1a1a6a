"""Data preparation for fam-skull: reading skull datasets, preprocessing, defects, synthetic skulls, manifests."""
