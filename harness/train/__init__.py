"""Training paths shared by every method: SFT (joint or per-language combined) and gradient-method factory."""
