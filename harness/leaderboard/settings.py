"""Settings: which runs share a configuration, so that a leaderboard never merges, supersedes or compares runs of
different settings silently.

Every run logs its resolved suite as MLflow params (`harness.tracking.config_params`: the suite without its identity
lists models / methods / seeds) and its method's own options as `run.method_options`. From those params:

- the *settings hash* of a run hashes the suite params and its method options: runs of one (model, method, seed)
  with two settings hashes are two rows, and a later run supersedes an earlier one only at the same hash;
- the *shared hash* hashes the suite params alone: Δ against the reference method is taken only between rows that
  share it (joint SFT's options always differ from PCGrad's; its learning rate must not).

Params that cannot change a result are left out (`IGNORED`): where the run was tracked and written, the description,
model saving and lm-eval's standard-error setting. The suite-wide `polymoo.config_hash` tag is not used as the key:
it hashes the identity lists too, so `polymoo run --seed 1` and a run of all seeds would look like two settings.
Runs that logged no params at all (synthetic tables) fall back to that tag, then to one shared setting.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from harness.tracking import NOT_RESULT_SETTINGS

SETTINGS_COL = "polymoo_settings"  # added columns: hash of suite params + method options, and suite params only
SHARED_COL = "polymoo_shared"
OPTIONS_PARAM = "run.method_options"
IGNORED = (*NOT_RESULT_SETTINGS, "eval.bootstrap_iters")
NOT_LOGGED = "(not logged)"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def setting_params(columns: Any) -> list[str]:
    """The `params.*` columns that are settings: suite params and the method options (not versions, fingerprints
    or other per-run facts under `run.*`, not the keys in `IGNORED`)."""
    out = []
    for col in columns:
        if not str(col).startswith("params."):
            continue
        key = str(col).removeprefix("params.")
        if key.startswith(("version.", "run.")) and key != OPTIONS_PARAM:
            continue
        if not key.startswith(IGNORED):
            out.append(col)
    return sorted(out)


def run_settings(run: Any, params: list[str]) -> dict[str, str]:
    """{key: value} of one run (a row of the runs table); a key the run did not log reads '(not logged)'."""
    return {c.removeprefix("params."): NOT_LOGGED if _missing(run.get(c)) else str(run.get(c)) for c in params}


def digest(settings: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def with_settings(runs: Any) -> Any:
    """`runs` plus the columns SETTINGS_COL and SHARED_COL (idempotent; an empty table is returned as is)."""
    if len(runs) == 0 or (SETTINGS_COL in runs.columns and SHARED_COL in runs.columns):
        return runs
    params = setting_params(runs.columns)
    full, shared = [], []
    for _, run in runs.iterrows():
        if params:
            s = run_settings(run, params)
            full.append(digest(s))
            shared.append(digest({k: v for k, v in s.items() if k != OPTIONS_PARAM}))
        else:
            tag = run.get("tags.polymoo.config_hash")
            full.append("" if _missing(tag) else str(tag))
            shared.append(full[-1])
    return runs.assign(**{SETTINGS_COL: full, SHARED_COL: shared})


def differing(settings: list[dict[str, str]]) -> dict[str, list[str]]:
    """{key: [value in each of `settings`]} for the keys whose values are not all equal."""
    keys = sorted({k for s in settings for k in s})
    out = {}
    for key in keys:
        values = [s.get(key, NOT_LOGGED) for s in settings]
        if len(set(values)) > 1:
            out[key] = values
    return out
