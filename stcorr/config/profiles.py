"""Built-in profiles: named config overlays that ``--profile NAME`` applies on top of the YAML.

``local`` (the embedded demo) is the defaults themselves and ``cluster`` lives in
``pipeline_config.yaml`` (its addresses are the user's). ``cpu-hour`` is built in, so
``stcorr run --profile cpu-hour`` means the same thing with or without a config file: the
embedded services of the demo, with the training budget of one hour on a 2-core machine with no
GPU (evaluation included). A ``profiles.<name>`` block in the YAML replaces the built-in one.

Where the hour goes on 2 cores, measured end to end (39m23, seed 0): data and shards ~2 min,
pretrain 4m35 (300 steps; top-1 13.5% against a chance of 0.39%), finetune 25m29 (400 steps at
128-px crops with global distillation and the log steps' gradient diagnostics, ~3.8 s per step
on 2 ranks), evaluation at DAVIS 480p in float32 7m25. On the real footage the candidate scores
70.0 J&F, 15.3 points over raw Lab pixels. Fine-tuning gets most of the hour because
that is where the candidate pulls away from raw pixels on real footage: 120 -> 400 steps at
96-px crops moved the candidate from 70.7 to 74.3 J&F, while 60 -> 600 MoCo steps moved the
teacher from 70.0 to 74.6 (and MoCo's top-1 sank with them).
"""

from __future__ import annotations

from typing import Any

CPU_HOUR: dict[str, Any] = {
    "data": {"synth": {"images": 2048, "videos": 64}, "footage": {"frames": 12}},
    "pretrain": {
        "steps": 300,  # top-1 ends 25-50x chance; it sinks under 10x by 600 steps on these textures
        "checkpoint_every": 100,
        "log_every": 20,
    },
    "finetune": {
        "steps": 400,  # 600 measured 50 min alone: over the hour
        "crop_size": 128,  # res5 4x4: global distillation has a grid to work on
        "checkpoint_every": 100,
        "log_every": 20,
        "stt": {"global_distill": True},
    },
    "evaluate": {"precision": "float32"},  # the papers' arithmetic: the hour has room for it
}

BUILTIN: dict[str, dict[str, Any]] = {
    "cpu-hour": CPU_HOUR,
}
