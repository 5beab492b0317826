"""monai_cnf.calibration (being written)."""
