"""Data: sources, synthetic generators, WebDataset shards, the streaming reader."""
