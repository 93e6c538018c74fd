"""Data: offline multilingual SFT pairs, CLDR multiple-choice items, hub datasets, language-balanced batching."""
