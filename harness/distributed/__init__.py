"""Distributed execution: torchrun launch, process groups, language-per-rank assignment, DDP comm hooks."""
