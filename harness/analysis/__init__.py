"""Representation analyses of trained models (separability of languages in hidden states)."""
