"""monai_cnf.transforms (being written)."""
