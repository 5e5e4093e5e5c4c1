"""The main job: cfutures against concurrent.futures (and loky, mpire,
pebble when installed), every part, one table style, a Markdown report and
a PNG chart.

Parts: futures (Future, wait, as_completed), thread (ThreadPoolExecutor),
process (ProcessPoolExecutor), load (light load, an oversubscribed machine,
large payloads), interpreter (InterpreterPoolExecutor, 3.13+).  Each
workload runs every implementation in one process, alternating, over
several rounds; the tables show the median (interpreter jobs: the best).
Timings only report: the exit status is 0 unless a part crashed or an
output could not be written."""
import argparse
import os
import sys
import textwrap
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _report  # noqa: E402
from _common import import_cfutures  # noqa: E402

# interpreter last: CPython 3.13.0 aborts a fork() child while a
# sub-interpreter exists, and the other parts fork process pools
PARTS = ["futures", "thread", "process", "load", "interpreter"]
DEFAULT_REPORT = os.path.join(HERE, "out", "report.md")


class Skip(Exception):
    """A part that cannot run here (e.g. no interpreter pool on 3.12)."""


class Part:
    def __init__(self, name):
        self.name = name
        self.title = name
        self.about = ""
        self.notes = []
        self.rows = []
        self.error = None
        self.skipped = None
        self.steps = []
        self.cleanups = []


class Context:
    """What a part's plan() gets: the options, the implementations."""

    def __init__(self, opts, part, module, libs, cfutures):
        full, quick = getattr(module, "ROUNDS", (5, 3))
        self.quick = opts.quick
        self.rounds = opts.rounds or (quick if opts.quick else full)
        self.libs = libs             # name -> module, for the installed ones
        self.cf = cfutures           # None when it does not import
        self.part = part

    def note(self, text):
        self.part.notes.append(text)

    def row(self, *args, **kwargs):
        return _report.Row(self.part.name, *args, **kwargs)

    def cleanup(self, fn):
        """fn() runs when the part is over, even if it crashed."""
        self.part.cleanups.append(fn)

    def skip(self, reason):
        raise Skip(reason)


def parse_args(argv, part=None):
    alone = part is not None
    ap = argparse.ArgumentParser(
        prog=None if not alone else "bench_%s.py" % part,
        description=textwrap.fill(
            __doc__.split("\n\n")[0].replace("\n", " ")
            + (" This script: the %s part alone (benchmarks/run.py runs "
               "every part), with the same options." % part if alone else ""),
            78),
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smaller workloads, fewer rounds (CI's smoke run)")
    ap.add_argument("--rounds", type=int, metavar="N",
                    help="rounds per workload in every part (default: each "
                    "part's own, 3 to 5, fewer with --quick)")
    ap.add_argument("--only", metavar="PART[,PART]",
                    default=part or ",".join(PARTS),
                    help="parts to run, in this order (default: %s)"
                    % ",".join(PARTS))
    ap.add_argument("--report", metavar="PATH",
                    default=None if alone else DEFAULT_REPORT,
                    help="write the Markdown report there (default: %s)"
                    % ("none" if alone else "benchmarks/out/report.md"))
    ap.add_argument("--no-report", action="store_true",
                    help="write no Markdown report")
    ap.add_argument("--chart", metavar="PATH",
                    help="write the PNG chart there (needs matplotlib; "
                    "default: chart.png beside the report)")
    ap.add_argument("--no-chart", action="store_true",
                    help="draw no chart")
    ap.add_argument("--json", metavar="PATH",
                    help="also write every row as JSON there")
    opts = ap.parse_args(argv)
    if opts.rounds is not None and opts.rounds < 1:
        ap.error("--rounds must be >= 1")
    opts.parts = [p.strip() for p in opts.only.split(",") if p.strip()]
    bad = [p for p in opts.parts if p not in PARTS]
    if bad or not opts.parts:
        ap.error("--only: unknown part %s (parts: %s)"
                 % (", ".join(bad) or "''", ", ".join(PARTS)))
    if opts.no_report:
        opts.report = None
    if opts.no_chart:
        opts.chart = None
    elif opts.chart is None and opts.report:
        opts.chart = os.path.join(os.path.dirname(opts.report) or ".",
                                  "chart.png")
    return opts


def third_party():
    """name -> module for the pools that import, name -> why for those
    that are installed but fail to import."""
    libs, failed = {}, {}
    for name in _report.THIRD_PARTY:
        try:
            libs[name] = __import__(name)
        except ModuleNotFoundError as e:
            if e.name != name:          # the library is there, a dependency not
                failed[name] = "import failed: %s" % e
        except Exception as e:          # broken: the column shows "-"
            failed[name] = "import failed: %s: %s" % (type(e).__name__, e)
    return libs, failed


def out(text=""):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(opts):
    t_start = time.monotonic()
    libs, failed = third_party()
    cf = import_cfutures()
    env = _report.environment(libs, cf, failed)
    out("cfutures benchmarks: " + _report.env_line(env))
    out("third-party pools: " + _report.libs_line(env))
    out(_report.RATIO_SAID + (_report.INTERP_SAID if "interpreter" in
                              opts.parts else "") + ".")

    parts = []
    for name in opts.parts:
        part = Part(name)
        parts.append(part)
        try:
            module = __import__("bench_" + name)
            part.title = module.TITLE
            part.about = "\n\n".join(
                para for para in module.__doc__.split("\n\n")[1:]
                if "benchmarks/" not in para)
            ctx = Context(opts, part, module, libs, cf)
            part.steps = module.plan(ctx)
        except Skip as e:
            part.skipped = str(e)
        except Exception:
            part.error = traceback.format_exc()

    total = sum(len(p.steps) for p in parts)
    progress = _report.Progress(total)
    i = 0
    for part in parts:
        out()
        out("## %s: %s" % (part.name, part.title))
        for note in part.notes:
            out(textwrap.fill(note, 100))
        known = len(part.notes)
        if part.skipped:
            out("skipped: " + part.skipped)
        if part.steps:
            out()
            out(_report.text_header())
        for label, fn in part.steps:
            i += 1
            if part.error:
                continue
            progress.step(i, "%s: %s" % (part.name, label))
            try:
                rows = fn()
            except Skip as e:
                part.skipped = str(e)
                rows = []
            except Exception:
                part.error = traceback.format_exc()
                rows = []
            progress.clear()
            for row in rows:
                part.rows.append(row)
                out(_report.text_line(_report.cells(row)))
        for fn in part.cleanups:
            try:
                fn()
            except Exception:
                part.error = part.error or traceback.format_exc()
        for note in part.notes[known:]:
            out(textwrap.fill(note, 100))
        if part.error:
            out("CRASHED: %s (traceback on stderr)"
                % part.error.splitlines()[-1])
            sys.stderr.write("%s part crashed:\n%s" % (part.name, part.error))
            sys.stderr.flush()
    progress.clear()

    env["load_average_end"] = _report.load_average()
    outputs = []
    rounds_note = ("Rounds per workload: %d" % opts.rounds if opts.rounds
                   else "Each part's default number of rounds")
    # the report and the JSON first: a chart that fails must not lose them
    writers = []
    if opts.report:
        writers.append(("report", opts.report, lambda chart: (
            _report.write_markdown(opts.report, parts, env, chart, opts.quick,
                                   rounds_note))))
    if opts.json:
        writers.append(("json", opts.json, lambda chart: (
            _report.write_json(opts.json, parts, env, opts.quick))))
    if opts.chart:
        writers.append(("chart", opts.chart, lambda chart: (
            _report.write_chart(opts.chart, parts, env, opts.quick))))
    failed_outputs = []
    chart_ok = False
    for kind, path, write in writers:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            why = write(opts.chart)
        except Exception as e:
            why = "%s: %s" % (type(e).__name__, e)
            failed_outputs.append(kind)
            outputs.append((kind, "not written: %s (%s)" % (path, why)))
            continue
        if why:                 # the chart's "matplotlib is not installed"
            outputs.append((kind, "not drawn: " + why))
        else:
            outputs.append((kind, path))
            chart_ok = chart_ok or kind == "chart"
    if opts.chart and not chart_ok and opts.report \
            and "report" not in failed_outputs:
        try:                    # no chart after all: drop the link to it
            _report.write_markdown(opts.report, parts, env, None, opts.quick,
                                   rounds_note)
        except Exception:
            pass
    out(_report.summary(parts, env, outputs, time.monotonic() - t_start,
                        opts.quick))
    crashed = [p.name for p in parts if p.error]
    status = 0
    if crashed:
        out("parts that crashed: %s (exit status 1)" % ", ".join(crashed))
        status = 1
    if failed_outputs:
        out("outputs not written: %s (exit status 1)"
            % ", ".join(failed_outputs))
        status = 1
    return status


def main(argv=None, part=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv, part)
    try:
        return run(opts)
    except BrokenPipeError:
        # the reader went away (| head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.dup2(devnull, sys.stderr.fileno())
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
