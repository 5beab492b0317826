"""monai_cnf.networks.conditioners (being written)."""
