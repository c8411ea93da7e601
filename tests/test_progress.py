"""The progress helper: plain, throttled lines in a log file; a tqdm bar on a terminal."""

from __future__ import annotations

import io

from vitdistill.utils.progress import Progress, fmt_duration


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_plain_lines_at_most_every_30_s_and_at_the_end():
    clock, out = Clock(), io.StringIO()
    bar = Progress(100, "analyze m", unit="img", file=out, clock=clock)
    for _ in range(10):  # 10 updates within 29 s: nothing yet
        clock.t += 2.9
        bar.update(2)
    assert out.getvalue() == ""
    clock.t += 1.0  # 30 s since the start
    bar.update(2)
    assert out.getvalue().splitlines() == ["analyze m: 22/100 img (22%), 0.733 img/s, ETA 1m46s"]
    clock.t += 29.0
    bar.update(8)
    assert len(out.getvalue().splitlines()) == 1  # 29 s since the last line
    clock.t += 1.0
    bar.set_postfix("loss 2.5")
    bar.update(10)
    assert out.getvalue().splitlines()[-1] == "analyze m: 40/100 img (40%), 0.667 img/s, ETA 1m30s, loss 2.5"
    clock.t += 5.0
    bar.update(60)
    bar.close()
    bar.close()  # closing twice prints once
    lines = out.getvalue().splitlines()
    assert (
        len(lines) == 3 and lines[-1] == "analyze m: 100/100 img (100%), 1.54 img/s, loss 2.5; done in 1m05s"
    )


def test_resumed_counts_rate_from_the_initial_position_and_no_final_line_when_asked():
    clock, out = Clock(), io.StringIO()
    bar = Progress(10, "epoch 2/5", unit="step", initial=4, file=out, clock=clock, final_line=False)
    clock.t += 40.0
    bar.update(2)  # 2 steps in 40 s since the resume
    assert out.getvalue() == "epoch 2/5: 6/10 step (60%), 0.05 step/s, ETA 1m20s\n"
    bar.close()
    assert out.getvalue().count("\n") == 1


def test_disabled_or_unknown_total_and_terminal_bar():
    clock, out = Clock(), io.StringIO()
    bar = Progress(None, "x", file=out, clock=clock, enabled=False)
    clock.t += 100
    bar.update(5)
    bar.close()
    assert out.getvalue() == "" and bar.n == 5
    bar = Progress(None, "x", file=out, clock=clock)
    clock.t += 40
    bar.update(4)
    assert out.getvalue() == "x: 4 it, 0.1 it/s\n"
    tty = io.StringIO()
    bar = Progress(3, "bar", file=tty, clock=clock, tty=True)  # a terminal: tqdm draws, no plain lines
    clock.t += 100
    bar.update(3)
    bar.close()
    assert bar.bar is not None and "bar" in tty.getvalue() and "ETA" not in tty.getvalue()


def test_fmt_duration():
    assert [fmt_duration(s) for s in (0, 59.4, 60, 425, 3599, 3600, 11520, -3)] == [
        "0s",
        "59s",
        "1m00s",
        "7m05s",
        "59m59s",
        "1h00m",
        "3h12m",
        "0s",
    ]
