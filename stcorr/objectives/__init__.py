"""stcorr.objectives."""
