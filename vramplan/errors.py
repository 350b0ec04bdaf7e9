"""Errors shown to users as-is: each says what was wrong and what to type instead."""


class VramplanError(Exception):
    """Base class; the CLI prints ``str(error)`` on one line and exits with status 2."""


class UnknownModelError(VramplanError):
    """A model name, shorthand, path or Hub id that cannot be resolved."""


class ConfigError(VramplanError):
    """A config.json that is missing, malformed, hostile or describes an unsupported architecture."""


class UnknownGpuError(VramplanError):
    """A GPU name or size that is not in the catalogue and is not a size."""


class ScenarioError(VramplanError):
    """A knob value that is out of range or inconsistent with the recipe."""


class MissingDependencyError(VramplanError):
    """An optional heavy library (torch, transformers, peft, bitsandbytes, pynvml) is not installed."""
