"""monai_cnf.networks.flows (being written)."""
