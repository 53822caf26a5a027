"""Training progress: live rich bars in a terminal, plain lines in a log; one line per epoch either way."""
import io

from rich.console import Console

from qat.progress import TrainProgress


def no_live_display(console: Console) -> bool:
    """rich allows one live display per console: starting one fails while the bars are still up."""
    from rich.live import Live

    live = Live(console=console)
    live.start()
    live.stop()
    return True


def run_two_epochs(console: Console) -> str:
    with TrainProgress("tfc-w1a1", epochs=2, done=0, console=console) as bars:
        for epoch in (1, 2):
            assert list(bars.batches(3)) == [0, 1, 2]
            bars.epoch_done(f"epoch {epoch}/2: loss 0.1234, train 90.00%, test 89.00%, 1.0 s [x]")
    return console.file.getvalue()


def test_a_log_gets_plain_lines_and_no_bars():
    out = run_two_epochs(Console(file=io.StringIO(), force_terminal=False, width=40))
    assert out.splitlines() == [f"epoch {e}/2: loss 0.1234, train 90.00%, test 89.00%, 1.0 s [x]" for e in (1, 2)]


def test_a_terminal_gets_bars_that_leave_only_the_epoch_lines():
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    out = run_two_epochs(console)
    assert "train tfc-w1a1" in out and out.count("epoch 1/2: loss") >= 1  # the bars were drawn
    assert no_live_display(console)  # and removed on exit


def test_bars_close_when_training_stops_early():
    console = Console(file=io.StringIO(), force_terminal=True)
    try:
        with TrainProgress("tfc-w1a1", epochs=2, done=0, console=console) as bars:
            next(iter(bars.batches(3)))
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert no_live_display(console)
