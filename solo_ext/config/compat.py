"""The compatibility pass: solo-learn's and MAGMA's YAMLs read as they were meant, before
validation.

- ``None`` written as a string (solo-learn's YAMLs) is null;
- precision aliases (``16``, ``32``, ``bf16``, ...) are Lightning's names;
- MAGMA's flat ``method_kwargs`` keys (``layers``, ``reg_scheduler``, ``uniformity_weight``,
  ``rbf_scale``, ``fixed_gamma``, ``scale_euclidean_distance``) become ``regularizers`` blocks,
  read as its code meant them: ``layers`` + ``reg_scheduler`` switch MAGMA on, with two layers
  the second is the target, otherwise the last block; ``uniformity_weight`` adds a constant
  uniformity term per process; with method ``u-mae`` ``reg_scheduler`` weights the uniformity
  term instead (and the other flat keys are ignored, as by MAGMA's u-mae). Each rewritten key is
  remembered, so an error names the key the user wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from solo_ext.config.errors import fail
from solo_ext.utils.errors import NO_VALUE

PRECISION_ALIASES = {32: "32-true", "32": "32-true", 64: "64-true", "64": "64-true", 16: "16-mixed"}
PRECISION_ALIASES |= {"16": "16-mixed", "bf16": "bf16-mixed"}
MAGMA_FLAT_KEYS = (
    "layers",
    "uniformity_weight",
    "reg_scheduler",
    "rbf_scale",
    "fixed_gamma",
    "scale_euclidean_distance",
)


def _none_strings(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _none_strings(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_none_strings(v) for v in node]
    return None if node == "None" else node


def plain_config(cfg: DictConfig | Mapping) -> dict:
    """The composed config as plain, resolved Python values, with solo-learn's spellings read."""
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig | ListConfig) else dict(cfg)
    raw = _none_strings(raw)
    precision = raw.get("precision")
    if (
        isinstance(precision, int | str)
        and not isinstance(precision, bool)
        and precision in PRECISION_ALIASES
    ):
        raw["precision"] = PRECISION_ALIASES[precision]
    return raw


def magma_flat_keys(method_kwargs: Any, method: Any) -> tuple[Any, dict[str, str]]:
    """``method_kwargs`` with MAGMA's flat keys rewritten into ``regularizers`` blocks, and the
    map from each rewritten key to the one the user wrote (for error messages)."""
    if not isinstance(method_kwargs, dict) or method not in ("mae-reg", "u-mae"):
        return method_kwargs, {}
    mk = dict(method_kwargs)
    flat = {key: mk.pop(key) for key in MAGMA_FLAT_KEYS if key in mk}
    if not flat:
        return mk, {}
    general = mk.get("regularizers")
    regs: dict[str, dict] = {}
    renames: dict[str, str] = {}
    user = "method_kwargs."
    schedule = flat.get("reg_scheduler")
    layers = flat.get("layers") or []
    if method == "u-mae" and schedule is not None:
        regs["uniformity"] = {"scheduler": schedule, "features": "cls", "gather": False}
        renames[f"{user}regularizers.uniformity.scheduler"] = f"{user}reg_scheduler"
    elif method == "mae-reg" and layers and schedule is not None:
        magma = f"{user}regularizers.magma"
        regs["magma"] = {"scheduler": schedule, "layers": layers, "gather": False}
        renames |= {f"{magma}.scheduler": f"{user}reg_scheduler", f"{magma}.layers": f"{user}layers"}
        renames[f"{magma}.target_layer"] = f"{user}layers"
        if isinstance(layers, list) and len(layers) == 2:
            regs["magma"]["target_layer"] = layers[-1]
        for key in ("rbf_scale", "scale_euclidean_distance"):
            if key in flat:
                regs["magma"][key] = flat[key]
                renames[f"{magma}.{key}"] = f"{user}{key}"
        if flat.get("fixed_gamma"):  # MAGMA's 0 means "not fixed"
            regs["magma"]["fixed_gamma"] = flat["fixed_gamma"]
            renames[f"{magma}.fixed_gamma"] = f"{user}fixed_gamma"
    if method == "mae-reg" and flat.get("uniformity_weight", 0):
        regs["uniformity"] = {"weight": flat["uniformity_weight"], "features": "cls", "gather": False}
        renames[f"{user}regularizers.uniformity.weight"] = f"{user}uniformity_weight"
    # MAGMA's flat keys come as a pair (layers and reg_scheduler), and either form of a regularizer
    # may be given, not both
    twice = sorted(set(general) & set(regs)) if isinstance(general, dict) else []
    conflicts = [
        (
            method == "mae-reg" and bool(layers) and schedule is None,
            "reg_scheduler",
            NO_VALUE,
            "missing; MAGMA (method_kwargs.layers) needs a schedule",
        ),
        (
            method == "mae-reg" and not layers and schedule is not None,
            "reg_scheduler",
            schedule,
            "set, but method_kwargs.layers is empty (MAGMA needs blocks)",
        ),
        (
            bool(twice),
            f"regularizers.{twice[0] if twice else ''}",
            NO_VALUE,
            "also set by MAGMA's flat keys; use one of the two forms",
        ),
    ]
    for broken, key, value, allowed in conflicts:
        if broken:
            raise fail(f"{user}{key}", value, allowed)
    if isinstance(general, dict):
        regs = {**regs, **general}
    mk["regularizers"] = regs if general is None or isinstance(general, dict) else general
    return mk, renames
