"""monai_cnf.tracking (being written)."""
