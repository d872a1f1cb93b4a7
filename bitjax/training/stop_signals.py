"""Stop signals: SIGTERM (a preempted VM, `kill`) and Ctrl-C ask the loop to save a checkpoint and stop.

The loop checks the request after each step, so the state saved is a consistent one.
"""

from __future__ import annotations

import signal

import jax


def install(checkpointer):
    """step -> the name of the signal that asks to save and stop now, or None.

    Several processes must agree on the step, so a multi-host run asks JAX's preemption sync point (all
    workers get the notice, all stop at the same step). One process handles SIGTERM and SIGINT (Ctrl-C) itself.
    """
    if jax.process_count() > 1:
        return (lambda step: "SIGTERM" if checkpointer.manager.reached_preemption(step) else None), (lambda: None)
    return _install_handlers()


def _install_handlers():
    """SIGTERM and SIGINT set a flag the loop checks after each step, so the state saved is a consistent one.

    After the first Ctrl-C, a second one interrupts at once (Python's default), for a user who will not wait
    for the save.
    """
    requested: dict = {"signal": None}

    def handler(signum, frame):
        requested["signal"] = signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread (e.g. called from a notebook worker): no handler
        return (lambda step: None), (lambda: None)

    def restore():
        for s, h in previous.items():
            signal.signal(s, h)

    return (lambda step: requested["signal"]), restore
