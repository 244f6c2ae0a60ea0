"""``python -m stcorr.cli``."""

from stcorr.cli import main

main()
