"""The pipeline's stages, each runnable alone (``stcorr pretrain`` ...) or as a Prefect task
(``tasks``): resolve inputs, fingerprint, reuse or run, register, hand over.
"""

from stcorr.stages.data import resolve_sources
from stcorr.stages.evaluate import run_evaluate
from stcorr.stages.finetune import run_finetune
from stcorr.stages.pretrain import init_file, run_pretrain
from stcorr.stages.shard import run_shard_stage
from stcorr.stages.teacher import run_teacher

__all__ = [
    "init_file",
    "resolve_sources",
    "run_evaluate",
    "run_finetune",
    "run_pretrain",
    "run_shard_stage",
    "run_teacher",
]
