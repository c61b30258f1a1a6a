"""What every stage shares: the folders a run and a prediction write (one owner of their names), checkpoints,
figures and interval statistics."""
