"""Training objectives, one paper idea per module.

`moco` (STT step 1, Eq. 1 of Li & Liu, CVPR 2023) and `crw` (contrastive random walk, Jabri et al.,
NeurIPS 2020); the STT temporal losses (Eq. 2-10) live in their own modules.
"""
