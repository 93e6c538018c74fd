"""Baselines: joint SFT and the full-gradient MOO methods (PCGrad, MGDA, CAGrad); one module per method."""
