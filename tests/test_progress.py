"""Progress that tells time: plain lines with elapsed seconds off a terminal, a live display on one, nothing
with --quiet or --json; the summary ends with the wall time."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from distilforge import cli
from distilforge.progress import (
    LineProgress,
    LiveProgress,
    SilentProgress,
    as_progress,
    format_duration,
    make_progress,
)

SHOW_CURSOR = "\x1b[?25h"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _a_build(progress, clock: FakeClock) -> None:
    """What pipeline.build reports for three targets, one failing."""
    progress.step("checkpoint", "loading")
    clock.tick(2)
    progress.phase("build", 3)
    progress.step("onnx:fp32", "exporting")
    clock.tick(3)
    progress.step("onnx:fp32", "validating")
    clock.tick(1)
    progress.advance("onnx:fp32", "passed")
    progress.step("onnx:int8-dynamic", "exporting (recipe 1/3: all-int8)")
    clock.tick(2)
    progress.note("onnx:int8-dynamic: recipe all-int8 failed; trying ffn-out-float")
    progress.advance("onnx:int8-dynamic", "FAILED")


def test_plain_lines_give_one_line_per_step_with_elapsed_seconds() -> None:
    clock, lines = FakeClock(), []
    _a_build(LineProgress(lines.append, clock=clock), clock)
    assert lines == [
        "0.0s checkpoint: loading",
        "2.0s build: 3 to do",
        "2.0s onnx:fp32: exporting",
        "5.0s onnx:fp32: validating",
        "6.0s onnx:fp32: passed (1/3, 4.0s, eta 8.0s)",
        "6.0s onnx:int8-dynamic: exporting (recipe 1/3: all-int8)",
        "8.0s onnx:int8-dynamic: recipe all-int8 failed; trying ffn-out-float",
        "8.0s onnx:int8-dynamic: FAILED (2/3, 2.0s, eta 3.0s)",
    ]


def test_a_plain_callable_gets_the_bare_messages_as_before() -> None:
    said: list[str] = []
    progress = as_progress(said.append)
    progress.step("onnx:fp32", "exporting")
    progress("timing 8 rounds x 5 candidates")  # the bench's say(str)
    assert said == ["onnx:fp32: exporting", "timing 8 rounds x 5 candidates"]


def test_the_silent_one_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    for progress in (SilentProgress(), as_progress(None), make_progress(Tty(), quiet=True)):
        assert isinstance(progress, SilentProgress)
        _a_build(progress, clock)
        progress("a note")
        progress.close()
    assert capfd.readouterr() == ("", "")


def test_a_terminal_gets_the_live_display_and_anything_else_plain_lines() -> None:
    assert isinstance(make_progress(Tty(), quiet=False), LiveProgress)
    assert isinstance(make_progress(io.StringIO(), quiet=False), LineProgress)
    stream = io.StringIO()
    make_progress(stream, quiet=False, prefix="[distilforge] ").step("onnx:fp32", "validating")
    assert re.fullmatch(r"\[distilforge\] \d+\.\ds onnx:fp32: validating\n", stream.getvalue())


def test_the_live_display_shows_target_done_of_total_elapsed_and_eta() -> None:
    clock, out = FakeClock(), io.StringIO()
    live = LiveProgress(Console(file=out, force_terminal=True, width=160), prefix="[distilforge] ", clock=clock)
    _a_build(live, clock)
    live.step("torchscript:fp32", "validating")
    clock.tick(1)
    live.display.refresh()
    frame = _text(out.getvalue()).split("\r")[-1]
    assert "build" in frame and "2/3" in frame
    assert "0:00:07" in frame  # the phase's elapsed time
    assert "eta 0:00:02" in frame  # 3 s an item so far, and the last one has run for 1 s
    assert "torchscript:fp32: validating 1s" in frame  # the step, with its own timer
    assert "[distilforge] 6.0s onnx:fp32: passed (1/3, 4.0s, eta 8.0s)" in _text(out.getvalue())
    live.close()
    assert live.display is None and _stopped_and_erased(out.getvalue())
    live.close()  # closing twice is harmless


def test_the_display_stops_when_the_command_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Tty()
    monkeypatch.setattr(cli.terminal, "user_err", terminal)
    args = cli.parser.build_parser().parse_args(["build", "--out", "x"])
    with pytest.raises(KeyboardInterrupt), cli.terminal.progress_for(args) as progress:
        progress.phase("build", 2)
        progress.step("onnx:fp32", "exporting")
        raise KeyboardInterrupt
    assert progress.display is None and _stopped_and_erased(terminal.getvalue())


def test_durations_read_naturally() -> None:
    assert [format_duration(s) for s in (4.25, 59.9, 60, 192, 3725)] == ["4.2s", "59.9s", "1m00s", "3m12s",
                                                                        "1h02m05s"]


def test_build_prints_timed_lines_and_the_wall_time_quiet_nothing_json_only_json(
        tiny_checkpoints, tmp_path, capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["build", str(tiny_checkpoints["seq-single"]), "--out", str(tmp_path / "out"), "--targets", "onnx:fp32"]
    code, out, err = _main(argv, capfd)  # stderr here is a file, not a terminal: plain lines
    assert code == 0
    progress = [line for line in err.splitlines() if line.startswith("[distilforge]")]
    assert any(re.fullmatch(r"\[distilforge\] \d+\.\ds onnx:fp32: validating", line) for line in progress)
    assert any(re.fullmatch(r"\[distilforge\] \d+\.\ds onnx:fp32: passed \(1/1, \d+\.\ds\)", line)
               for line in progress)
    assert "onnx:fp32" in out and re.fullmatch(r"wall time (\d+\.\ds|\d+m\d\ds)", out.splitlines()[-1])

    assert _main([*argv, "--quiet"], capfd) == (0, "", "")  # the rerun reuses the artifact: quick

    code, out, err = _main([*argv, "--json"], capfd)
    assert code == 0 and err == "" and json.loads(out)["passed"] is True  # stdout is the JSON, and only it


def _main(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capfd.readouterr()
    code = cli.main(argv)
    out, err = capfd.readouterr()
    return code, out, err


def _stopped_and_erased(rendered: str) -> bool:
    """The display's last act: the cursor shown again, then its lines erased (nothing left to garble the table)."""
    return SHOW_CURSOR in rendered and _text(rendered.rsplit(SHOW_CURSOR, 1)[1]).strip() == ""


def _text(rendered: str) -> str:
    """Without the colour and cursor codes."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", rendered)


def test_eta_weighs_each_target_by_its_kind_and_lays_the_rest_out_on_the_workers() -> None:
    """The ETA of a build is each target left at its own cost, scaled by what targets of its format took here
    (else by all finished ones), on as many lanes as there are workers; not the mean target so far."""
    from distilforge.progress import Phase

    costs = {"executorch:int8-static": 100.0, "executorch:fp32": 80.0, "onnx:fp32": 20.0, "onnx:fp16": 4.0}
    phase = Phase("build", 4, started=0.0, costs=costs, workers=1)
    assert phase.eta(0.0) == pytest.approx(204.0)  # nothing measured yet: the costs as they are
    phase.begin_item("onnx:fp32", 0.0)
    phase.finish_item("onnx:fp32", 10.0)  # ONNX runs at half its cost here; nothing else measured
    assert phase.eta(10.0) == pytest.approx(2.0 + 50.0 + 40.0)
    phase.begin_item("executorch:fp32", 10.0)
    phase.finish_item("executorch:fp32", 170.0)  # ExecuTorch at twice its cost: its own rate from now on
    assert phase.eta(170.0) == pytest.approx(2.0 + 200.0)
    phase.begin_item("executorch:int8-static", 170.0)
    assert phase.eta(220.0) == pytest.approx(2.0 + 150.0)  # what the running one has left

    two = Phase("build", 3, started=0.0, costs={"a:x": 10.0, "b:x": 6.0, "c:x": 5.0}, workers=2)
    assert two.eta(0.0) == pytest.approx(11.0)  # 10 on one lane, 6 then 5 on the other
    two.begin_item("a:x", 0.0)
    two.begin_item("b:x", 0.0)
    assert two.eta(4.0) == pytest.approx(7.0)  # b ends at 6, then c's 5: 11 - 4


def test_eta_without_costs_is_the_mean_item_so_far() -> None:
    from distilforge.progress import Phase

    phase = Phase("bench: timing", 3, started=0.0)
    assert phase.eta(0.0) is None
    phase.begin_item("a", 0.0)
    phase.finish_item("a", 6.0)
    phase.begin_item("b", 6.0)
    assert phase.eta(8.0) == pytest.approx(6.0 + 4.0)
