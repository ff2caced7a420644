"""The one signal router: what Ctrl-C does before, during and after a run."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from omar_bulk.run import SignalRouter, StopSignal


@pytest.fixture
def router() -> Iterator[SignalRouter]:
    saved = {n: signal.getsignal(n) for n in SignalRouter.SIGNALS}
    router = SignalRouter()
    router.install()
    try:
        yield router
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def test_before_a_run_is_armed_ctrl_c_unwinds(router: SignalRouter) -> None:
    """A password prompt or certificate loading is abandoned the ordinary way."""
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    stop = StopSignal()
    with router.routing(stop), pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)
    assert not stop.requested


def test_an_armed_run_is_asked_to_stop(router: SignalRouter) -> None:
    stop = StopSignal()
    with router.routing(stop):
        stop.armed = True
        signal.raise_signal(signal.SIGINT)
        assert stop.requested


def test_a_signal_after_the_run_is_absorbed_not_a_traceback(router: SignalRouter) -> None:
    """A second Ctrl-C landing while the summary prints and the process leaves: the run's
    exit code is settled, so no late KeyboardInterrupt may replace it."""
    stop = StopSignal()
    with router.routing(stop):
        stop.armed = True
    signal.raise_signal(signal.SIGINT)  # must not raise
    signal.raise_signal(signal.SIGTERM)
    assert stop.requested


def test_a_library_call_restores_the_handlers_it_found() -> None:
    before = {n: signal.getsignal(n) for n in SignalRouter.SIGNALS}
    router = SignalRouter()  # not installed: a library caller's process
    with router.routing(StopSignal()):
        assert all(signal.getsignal(n) != before[n] for n in SignalRouter.SIGNALS)
    assert {n: signal.getsignal(n) for n in SignalRouter.SIGNALS} == before
