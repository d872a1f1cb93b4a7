"""Recipes and overrides: load a recipe file, apply `--set a.b=value` strings, and configs to and from JSON dicts.

A recipe is a Python file whose `get_config()` returns a `TrainConfig` (bitjax.config); vary it with
`dataclasses.replace` in the recipe or with `--set` on the command line.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import typing
from pathlib import Path

from bitjax.config.train import TrainConfig
from bitjax.errors import ConfigError


def load_recipe(path: str | Path, preset: str | None = None) -> TrainConfig:
    """Import a recipe file, call its `get_config()` and apply one of its named launch presets.

    A recipe may define `PRESETS = {"v5p-64": ["mesh.fsdp=32", "data.batch_size=512"], ...}`: named
    lists of `--set` overrides giving the mesh and batch for a machine (TPU slice names, "h100x8", ...).
    """
    path = Path(path)
    module = _import_recipe(path)
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"recipe {path} has no get_config(); define `def get_config() -> TrainConfig`")
    try:
        config = module.get_config()
    except ConfigError as e:
        raise ConfigError(f"recipe {path}: {e}") from None
    except Exception as e:   # the recipe's own bug: name the file and the exception, not a traceback
        raise ConfigError(f"recipe {path}: get_config() raised {type(e).__name__}: {e}; fix the recipe") from None
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"recipe {path}: get_config() returned {type(config).__name__}, not a TrainConfig")
    if preset is not None:
        presets = recipe_presets(path)
        if preset not in presets:
            known = ", ".join(presets) or "none"
            raise ConfigError(f"recipe {path} has no launch preset {preset!r}; known presets: {known}")
        config = apply_overrides(config, presets[preset])
    return config


def recipe_presets(path: str | Path) -> dict[str, list[str]]:
    """The named launch presets of a recipe file (empty when it defines none)."""
    return dict(getattr(_import_recipe(Path(path)), "PRESETS", {}))


def _import_recipe(path: Path):
    """Import a recipe file; its syntax or import errors become one line naming the file and the line."""
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist or is not a file; pass a file such as recipes/tiny.py")
    spec = importlib.util.spec_from_file_location(f"bitjax_recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"recipe {path}:{e.lineno}: syntax error ({e.msg}); fix the recipe") from None
    except ConfigError as e:
        raise ConfigError(f"recipe {path}: {e}") from None
    except Exception as e:   # ImportError and whatever else the recipe's top level raises
        raise ConfigError(f"recipe {path} cannot be imported ({type(e).__name__}: {e}); fix the recipe") from None
    return module


def apply_overrides(config, overrides: list[str]):
    """Apply `key.sub=value` strings to a frozen dataclass tree, converting each value to the field's type."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not key=value; write e.g. --set optim.peak_lr=3e-4")
        key, raw = item.split("=", 1)
        config = _replace_path(config, key.strip().split("."), raw.strip(), key.strip())
    return config


def _replace_path(node, parts: list[str], raw: str, full_key: str):
    fields = {f.name: f for f in dataclasses.fields(node)}
    head = parts[0]
    if head not in fields:
        raise ConfigError(
            f"--set {full_key}: unknown key {head!r} in {type(node).__name__}; "
            f"known keys: {', '.join(sorted(fields))}")
    value = getattr(node, head)
    if len(parts) > 1:
        if not dataclasses.is_dataclass(value):
            raise ConfigError(f"--set {full_key}: {head!r} is a value, not a section; use --set {head}=...")
        new_value = _replace_path(value, parts[1:], raw, full_key)
    else:
        if dataclasses.is_dataclass(value):
            keys = ", ".join(f"{head}.{f.name}" for f in dataclasses.fields(value))
            raise ConfigError(f"--set {full_key}: {head!r} is a section; set one of its keys: {keys}")
        hint = typing.get_type_hints(type(node))[head]
        new_value = _convert(raw, hint, full_key)
    try:
        return dataclasses.replace(node, **{head: new_value})
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--set {full_key}={raw}: {e}") from None


def _convert(raw: str, hint, key: str):
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if raw not in choices:
            raise ConfigError(f"--set {key}={raw}: expected one of {', '.join(map(str, choices))}")
        return raw
    if origin is typing.Union:  # Optional[X], or Literal[...] | bool (a choice that also reads old booleans)
        literals = [a for a in typing.get_args(hint) if typing.get_origin(a) is typing.Literal]
        if any(raw in typing.get_args(a) for a in literals):
            return raw
        if literals and raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            choices = [c for a in literals for c in typing.get_args(a)]
            raise ConfigError(f"--set {key}={raw}: expected one of {', '.join(map(str, choices))}")
        if raw.lower() in ("none", "null"):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None) and a not in literals)
    if origin is tuple and typing.get_args(hint)[0] is int:   # tuple[int, ...]: "0,29", or "" for none
        try:
            return tuple(int(x) for x in raw.split(",") if x.strip())
        except ValueError:
            raise ConfigError(f"--set {key}={raw}: expected integers separated by commas, e.g. 0,29") from None
    if origin is tuple and typing.get_args(hint)[0] is str:   # tuple[str, ...]: "kd,tiny", or "" for none
        return tuple(x.strip() for x in raw.split(",") if x.strip())
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is str:
            return raw
    except ValueError:
        raise ConfigError(f"--set {key}={raw}: expected {hint.__name__}, got {raw!r}") from None
    if key.endswith("data.sources"):
        raise ConfigError(f"--set {key}: sources are set in the recipe; change their mix with "
                          "--set data.weights=NAME=W,NAME=W")
    raise ConfigError(f"--set {key}: fields of type {hint} cannot be set from the command line")


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls, values: dict):
    """Rebuild a (nested) config dataclass from `dataclasses.asdict` output, e.g. a run's config.json."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
            item = typing.get_args(hint)[0]   # tuple[X, ...]
            value = tuple(from_dict(item, v) if dataclasses.is_dataclass(item) else v for v in value)
        kwargs[f.name] = value
    return cls(**kwargs)
