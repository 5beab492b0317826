"""monai_cnf.losses (being written)."""
