"""monai_cnf.engines (being written)."""
