"""stcorr: dense space-time correspondence from unlabeled images and videos (STT and CRW)."""

__version__ = "0.1.0"
