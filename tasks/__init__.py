"""The Prefect tasks of the pipeline flow: each wraps one stage of :mod:`stcorr.stages`."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from stcorr.stages import (
    resolve_sources,
    run_evaluate,
    run_finetune,
    run_pretrain,
    run_shard_stage,
    run_teacher,
)

sources_task = task(name="sources", cache_policy=NO_CACHE)(resolve_sources)
shard_task = task(name="shard", cache_policy=NO_CACHE, task_run_name="shard-{kind}")(run_shard_stage)
pretrain_task = task(name="pretrain", cache_policy=NO_CACHE)(run_pretrain)
teacher_task = task(name="teacher", cache_policy=NO_CACHE)(run_teacher)
finetune_task = task(name="finetune", cache_policy=NO_CACHE)(run_finetune)
evaluate_task = task(name="evaluate", cache_policy=NO_CACHE)(run_evaluate)
