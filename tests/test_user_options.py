"""`distilforge build`'s flags and a build-many plan's [options] keys go through one parser (user_options.py):
the same value is taken or refused alike, with the same one-line error but for the option's name."""

import json

import pytest

from distilforge.errors import UsageError
from distilforge.many.plan import PlanError, read_plan
from distilforge.user_options import USER_OPTIONS, options_from

BY_FIELD = {o.field: o for o in USER_OPTIONS}
BAD = [("tolerances", ["fp32.max_abs"]), ("tolerances", ["int8.min_cosine=lots"]), ("tolerances", "int8.x=1"),
       ("tflite_shapes", "4x"), ("tflite_shapes", 128), ("executorch_max_shape", "1x16,2x32"),
       ("executorch_max_shape", "0x16"), ("int8_cpu", "fast"), ("calibration_samples", 0),
       ("calibration_samples", "many"), ("validate_on", "arm64:cortex-a76,arm64:pixel")]
GOOD = [("tolerances", ["int8.min_cosine=0.98"]), ("tflite_shapes", "1x128,1x64"), ("executorch_max_shape", "1x256"),
        ("int8_cpu", "native"), ("calibration_samples", 16), ("validate_on", "arm64:cortex-a53")]


def _plan(tmp_path, key, value):
    plan = tmp_path / "plan.toml"
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir(exist_ok=True)
    plan.write_text(f"[options]\n{key} = {json.dumps(value)}\n[[checkpoint]]\npath = \"{checkpoint}\"\n")
    return plan


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v}" for f, v in BAD])
def test_a_bad_value_gets_the_same_error_from_a_flag_and_a_plan_key(field, value, tmp_path):
    option = BY_FIELD[field]
    with pytest.raises(UsageError) as from_flag:
        options_from({option.flag: value}, by="flag")
    plan = _plan(tmp_path, option.key, value)
    with pytest.raises(PlanError) as from_plan:
        read_plan(plan)
    message = str(from_flag.value)
    assert "\n" not in message and message.startswith(f"{option.flag} ")
    assert str(from_plan.value) == f"{plan}: [options]: {option.key}{message[len(option.flag):]}"


@pytest.mark.parametrize(("field", "value"), GOOD, ids=[f"{f}={v}" for f, v in GOOD])
def test_a_good_value_gives_the_same_options_from_a_flag_and_a_plan_key(field, value, tmp_path):
    option = BY_FIELD[field]
    from_flag = options_from({option.flag: value}, by="flag", threads=2)
    plan = read_plan(_plan(tmp_path, option.key, value))
    assert plan.build_options(plan.checkpoints[0]) == from_flag
    assert getattr(from_flag, field) != getattr(options_from({}, by="flag"), field)  # not the default


def test_every_user_option_has_a_flag_and_a_plan_key():
    import argparse

    from distilforge.cli.parser import build_parser as _parser

    flags = {a for action in _parser()._subparsers._group_actions[0].choices["build"]._actions
             for a in action.option_strings}
    assert {o.flag for o in USER_OPTIONS} <= flags
    assert all(o.key == o.flag.lstrip("-").replace("-", "_") for o in USER_OPTIONS)
    assert isinstance(_parser(), argparse.ArgumentParser)
