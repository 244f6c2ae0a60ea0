"""stcorr.models."""
