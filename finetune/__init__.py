"""Fine-tuning subnet: evaluation of miners' fine-tuned causal language models."""
