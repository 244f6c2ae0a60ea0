"""stcorr.eval."""
