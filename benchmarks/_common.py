"""Helpers shared by the bench_*.py scripts."""
import gc
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_cfutures(attr="Future"):
    """cfutures as installed (the README's main job), else the in-place
    build of the source tree; None if neither imports."""
    try:
        import cfutures
        getattr(cfutures, attr)
        return cfutures
    except (ImportError, AttributeError):
        pass
    for name in [m for m in sys.modules if m.startswith("cfutures")]:
        del sys.modules[name]
    sys.path.insert(0, REPO)
    try:
        import cfutures
        getattr(cfutures, attr)
        return cfutures
    except (ImportError, AttributeError) as e:
        print("cfutures is not importable (%s): stdlib numbers only" % e)
        return None


def run_alternating(fn, mods, rounds, arg):
    """Median of fn(mod, arg) per implementation over `rounds` rounds,
    alternating which implementation goes first; gc off while timing."""
    samples = {name: [] for name in mods}
    for r in range(rounds):
        order = list(mods.items()) if r % 2 == 0 else list(mods.items())[::-1]
        for name, mod in order:
            gc.collect()
            was = gc.isenabled()
            gc.disable()
            try:
                samples[name].append(fn(mod, arg))
            finally:
                if was:
                    gc.enable()
    return {name: statistics.median(v) for name, v in samples.items()}
