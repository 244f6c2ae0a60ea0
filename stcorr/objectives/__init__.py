"""Training objectives, one paper idea per module.

`moco` (STT step 1, STT Eq. 1; Li & Liu, CVPR 2023) and `crw` (contrastive random walk, Jabri et al.,
NeurIPS 2020); the STT temporal losses (STT Eq. 2-10) live in their own modules.
"""
