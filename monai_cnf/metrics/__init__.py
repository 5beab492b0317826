"""monai_cnf.metrics (being written)."""
