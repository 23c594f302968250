"""The two neurons: ``finetune-miner`` (neurons.miner) and ``finetune-validator`` (neurons.validator)."""
