"""symprune: config-driven post-training pruning of large language models."""
