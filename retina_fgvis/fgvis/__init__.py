"""FGVis engine (placeholder until written)."""
