"""Build options as a user writes them: one table for `distilforge build`'s flags and a build-many plan's
`[options]` keys, and one parser for both, so the two accept and refuse the same values in the same words."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distilforge.errors import UsageError
from distilforge.options import BuildOptions, parse_shapes


@dataclass(frozen=True)
class UserOption:
    field: str  # of BuildOptions
    flag: str  # `distilforge build`'s
    key: str  # in a plan's [options] table
    parse: Callable[[Any, str], Any]  # (the value as written, its name as written) -> the field's value
    metavar: str
    help: str  # `build --help`'s line
    repeatable: bool = False  # the flag may be given more than once (the plan key takes a list)


def _tolerances(values: Any, name: str) -> Any:
    from distilforge.validate.tolerances import parse_overrides

    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise UsageError(f"{name} {values!r}: give a list of CLASS.FIELD=VALUE texts, e.g. int8.min_cosine=0.98")
    return parse_overrides(values, name=name)


def _shapes(text: Any, name: str) -> tuple[tuple[int, ...], ...]:
    return parse_shapes(_text(text, name, "1x128,1x384"), name)


def _max_shape(text: Any, name: str) -> tuple[int, ...]:
    shapes = parse_shapes(_text(text, name, "1x256"), name)
    if len(shapes) != 1:
        raise UsageError(f"{name} {text!r}: give one shape, e.g. 1x256")
    return shapes[0]


def _int8_cpu(text: Any, name: str) -> str:
    from distilforge.quantize.ladder import INT8_CPU_MODES

    if text not in INT8_CPU_MODES:
        raise UsageError(f"{name} {text!r}: expected one of {', '.join(INT8_CPU_MODES)}")
    return text


def _positive_int(value: Any, name: str) -> int:
    number = _whole_number(value)
    if number is None:
        raise UsageError(f"{name} {value!r}: not a whole number")
    if number < 1:
        raise UsageError(f"{name} {value!r}: must be at least 1")
    return number


def _whole_number(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _emulated_cpus(text: Any, name: str) -> tuple[str, ...]:
    """'arm64:cortex-a53,arm64:cortex-a76' -> each checked, in order, once."""
    from distilforge.validate.arm64 import parse_cpu

    cpus = tuple(dict.fromkeys(c.strip() for c in _text(text, name, "arm64:cortex-a76").split(",") if c.strip()))
    for cpu in cpus:
        try:
            parse_cpu(cpu)
        except UsageError as e:
            raise UsageError(f"{name} {text!r}: {e}") from None
    return cpus


def _text(value: Any, name: str, example: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{name} {value!r}: give a text, e.g. {example!r}")
    return value


USER_OPTIONS = (
    UserOption("tolerances", "--tolerance", "tolerance", _tolerances, "CLASS.FIELD=VALUE",
               "override a pass rule, e.g. fp32.max_abs=2e-4 or int8.min_cosine=0.98 (repeatable)", repeatable=True),
    UserOption("tflite_shapes", "--tflite-shapes", "tflite_shapes", _shapes, "BxS,...",
               "fixed shapes for TFLite signatures, e.g. 1x128,1x384 (multiple choice: BxCxS; default 1x128, or the "
               "model's maximum if shorter)"),
    UserOption("executorch_max_shape", "--executorch-max-shape", "executorch_max_shape", _max_shape, "BxS",
               "the largest input an ExecuTorch program takes, e.g. 1x256 (multiple choice: BxCxS); its activation "
               "memory is planned for it (default 4x the model's maximum positions; multiple choice 4x4x it)"),
    UserOption("int8_cpu", "--int8-cpu", "int8_cpu", _int8_cpu, "portable|native",
               "INT8 recipes right on every CPU class, x86 with and without VNNI and ARM (portable, the default), or "
               "only on this machine's class (native: e.g. full 8-bit weights on a VNNI CPU)"),
    UserOption("validate_on", "--validate-on", "validate_on", _emulated_cpus, "CPU,...",
               "also judge every artifact on these emulated ARM64 CPUs (arm64:cortex-a53, arm64:cortex-a55, "
               "arm64:cortex-a76, arm64:neoverse-n2) under qemu-aarch64; a failure there fails the artifact and climbs "
               "an INT8 ladder as one here does (TFLite and ONNX; the runtime is set up on first use)"),
    UserOption("calibration_samples", "--calibration-samples", "calibration_samples", _positive_int, "N",
               "how many calibration samples to use (default: 128)"),
)
PLAN_KEYS = frozenset(o.key for o in USER_OPTIONS)


def flag_for(field: str) -> str:
    """The `build` flag that sets a BuildOptions field."""
    return next(o.flag for o in USER_OPTIONS if o.field == field)


def options_from(written: dict[str, Any], *, by: str, **fixed: Any) -> BuildOptions:
    """BuildOptions from what the user wrote, keyed by flag (`by="flag"`) or by plan key (`by="key"`); a value
    left empty (None, "", []) keeps its default. `fixed`: the fields the caller sets itself (threads,
    calibration_file)."""
    values = dict(fixed)
    for option in USER_OPTIONS:
        name = getattr(option, by)
        value = written.get(name)
        if value is not None and value != "" and value != []:
            values[option.field] = option.parse(value, name)
    return BuildOptions(**values)
