"""Models: the catalog of base LLMs, their offline tiny twins, the offline tokenizer, loading (dtype, LoRA)."""
