"""monai_cnf.networks (being written)."""
