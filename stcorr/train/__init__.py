"""stcorr.train."""
