"""monai_cnf.data (being written)."""
