"""The chain port: metagraph, block, commitments and weights, on Bittensor or a local SQLite file."""

from model.storage.chain.protocol import Chain, Commitment, Metagraph

__all__ = ["Chain", "Commitment", "Metagraph"]
