"""What a model is (identity, hash) and where it lives (chain, hub, disk)."""
