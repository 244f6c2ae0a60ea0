"""Built-in profiles: named config overlays that ``--profile NAME`` applies on top of the YAML.

``local`` (the embedded demo) is the defaults themselves and ``cluster`` lives in
``pipeline_config.yaml`` (its addresses are the user's). ``cpu-hour`` is built in, so
``stcorr run --profile cpu-hour`` means the same thing with or without a config file: the
embedded services of the demo, with the training budget of one hour on a 2-core machine with no
GPU (evaluation included). A ``profiles.<name>`` block in the YAML replaces the built-in one.
"""

from __future__ import annotations

from typing import Any

BUILTIN: dict[str, dict[str, Any]] = {
    "cpu-hour": {},
}
