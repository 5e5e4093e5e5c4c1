"""The CPU-bound job for bench_interpreter.py.

A module of its own: InterpreterPoolExecutor workers (and spawned
processes) import the function by name, which they cannot do for
functions defined in a script's __main__.
"""


def spin(n):
    """Pure-Python CPU work: a loop of n iterations."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def noop():
    return None


def noop_arg(_):
    return None
