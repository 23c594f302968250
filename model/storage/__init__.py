"""Where models live: the chain (commitments), the hub (files), the validator's disk."""
