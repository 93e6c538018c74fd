"""Proposed methods: Bucket-Level MOO and CONGRAD; one module (or package) per method."""
