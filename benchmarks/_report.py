"""Rows, the one table style, progress line, summary, Markdown report and
chart shared by every benchmark part (benchmarks/run.py drives them)."""
import datetime
import json
import multiprocessing as mp
import os
import platform
import sys
import sysconfig

THIRD_PARTY = ("loky", "mpire", "pebble")
RATIO_SAID = ("ratio = stdlib time / cfutures time on the same workload, "
              "higher is better (loky, mpire, pebble columns: stdlib time / "
              "that library's time)")
INTERP_SAID = ("; in the interpreter part the stdlib column is the baseline "
               "the row names: a serial loop, or the stdlib's ThreadPool or "
               "ProcessPool")
# Row kinds and their units: every row of a kind is in the same unit.
UNITS = {
    "us/op": "microseconds per operation (one future, or one call)",
    "us/task": "microseconds per task (or per item of a map)",
    "us/trip": "microseconds per round trip: submit(), then wait for that "
               "result, one task at a time",
    "us CPU/req": "CPU microseconds (whole process, and its workers) per "
                  "request",
    "ms/job": "milliseconds per job (wall clock)",
    "ms/pool": "milliseconds from the pool's constructor to its first "
               "results (and, for process pools, shutdown)",
    "MB/s": "megabytes of payload per second (each task takes 1 MB in and "
            "returns it; a rate: higher is faster)",
}
RATE_UNITS = {"MB/s"}


class Row:
    """One workload: a value per implementation in `unit`."""

    def __init__(self, part, name, unit, stdlib, cfutures, target=None,
                 others=None):
        assert unit in UNITS, unit
        self.part, self.name, self.unit = part, name, unit
        self.stdlib, self.cfutures = stdlib, cfutures
        self.target = target
        self.others = dict(others or {})     # library name -> value

    def speedup(self, value):
        """stdlib time / that implementation's time (None if unknown)."""
        if value is None or self.stdlib is None or not value or not self.stdlib:
            return None
        if self.unit in RATE_UNITS:
            return value / self.stdlib
        return self.stdlib / value

    @property
    def ratio(self):
        return self.speedup(self.cfutures)

    @property
    def met(self):
        """True / False against the target, None without one."""
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target

    def as_dict(self):
        return {"part": self.part, "name": self.name, "unit": self.unit,
                "stdlib": self.stdlib, "cfutures": self.cfutures,
                "ratio": self.ratio, "target": self.target, "met": self.met,
                "others": self.others,
                "others_ratio": {k: self.speedup(v)
                                 for k, v in self.others.items()}}


def fmt_value(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 100:
        return "%.0f" % v
    if a >= 10:
        return "%.1f" % v
    if a >= 1:
        return "%.2f" % v
    return "%.3f" % v


def fmt_ratio(r):
    if r is None:
        return "-"
    if r >= 100:
        return "%.0fx" % r
    return ("%.1fx" if r >= 10 else "%.2fx") % r


def fmt_target(t):
    return "-" if t is None else ">=%gx" % t


def fmt_met(m):
    return {True: "met", False: "missed", None: "-"}[m]


# ----------------------------------------------------------- the table

COLUMNS = [("workload", 38, "<"), ("unit", 10, "<"), ("stdlib", 8, ">"),
           ("cfutures", 8, ">"), ("ratio", 7, ">"), ("target", 6, ">"),
           ("result", 6, "<")] + [(lib, 6, ">") for lib in THIRD_PARTY]


def cells(row):
    return [row.name, row.unit, fmt_value(row.stdlib), fmt_value(row.cfutures),
            fmt_ratio(row.ratio), fmt_target(row.target), fmt_met(row.met)] + [
        fmt_ratio(row.speedup(row.others.get(lib))) for lib in THIRD_PARTY]


def text_line(values):
    out = []
    for v, (_, w, a) in zip(values, COLUMNS):
        out.append(v.ljust(w) if a == "<" else v.rjust(w))
    return "  ".join(out).rstrip()


def text_header():
    head = text_line([c[0] for c in COLUMNS])
    return head + "\n" + "-" * len(head)


def md_table(rows):
    lines = ["| " + " | ".join(c[0] for c in COLUMNS) + " |",
             "|" + "|".join("---" if a == "<" else "---:"
                            for _, _, a in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cells(row)) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------ progress


class Progress:
    """'[3/27] thread: map ...' on stderr: rewritten in place on a tty,
    one plain line per step otherwise."""

    def __init__(self, total, stream=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.shown = False

    def step(self, i, text):
        line = "[%d/%d] %s ..." % (i, self.total, text)
        if self.tty:
            width = max(40, _term_width() - 1)
            self.stream.write("\r\033[K" + line[:width])
            self.shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self):
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False


def _term_width():
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns or 80
    except (OSError, ValueError):
        return 80


# ---------------------------------------------------------- environment


def environment(libs, cfutures, failed=None):
    """failed: name -> why, for the pools installed but not importable."""
    gil = "free-threaded" if sysconfig.get_config_var("Py_GIL_DISABLED") \
        else "GIL"
    if gil == "free-threaded" and hasattr(sys, "_is_gil_enabled") \
            and sys._is_gil_enabled():
        gil = "free-threaded build, GIL enabled"
    load = load_average()
    versions = {}
    for name in THIRD_PARTY:
        versions[name] = (failed or {}).get(name)
        if libs.get(name) is not None:
            try:
                from importlib.metadata import version
                versions[name] = version(name)
            except Exception:
                versions[name] = "installed"
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "build": gil,
        "machine": platform.machine(),
        "start_method": mp.get_start_method(),
        "cpus": os.cpu_count() or 1,
        "load_average": load,
        "load_average_end": None,
        "cfutures": cfutures.__file__ if cfutures is not None
        else "not importable",
        "libraries": versions,
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }


def load_average():
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "unknown"


def env_line(env):
    load = env["load_average"]
    if env.get("load_average_end"):
        load = "%s at the start, %s at the end" % (load, env["load_average_end"])
    return ("Python %s (%s, %s build) on %s, %d CPUs; process pools start "
            "with %r; load average %s" % (
                env["python"], env["implementation"], env["build"],
                env["machine"], env["cpus"], env["start_method"], load))


def libs_line(env):
    return "; ".join("%s %s" % (k, v if v else "not installed")
                     for k, v in env["libraries"].items())


# -------------------------------------------------------------- summary


def _brief(row, label):
    text = "%s %s" % (label, fmt_ratio(row.ratio))
    if row.target is not None:
        text += " (%s %s)" % (fmt_target(row.target), fmt_met(row.met))
    others = ["%s %s" % (k, fmt_ratio(row.speedup(v)))
              for k, v in row.others.items() if v is not None]
    if others:
        text += "; " + ", ".join(others)
    return text


def summary(parts, env, outputs, elapsed, quick):
    """One screen: per part its rows' ratio and target (rows named
    'prefix: what' share a line), then the machine."""
    lines = ["", "=" * 78,
             "Summary (%s run, %.0f s): each row's ratio, and its target "
             "(met or missed)" % ("quick" if quick else "full", elapsed)]
    met = sum(r.met is True for p in parts for r in p.rows)
    missed = sum(r.met is False for p in parts for r in p.rows)
    for p in parts:
        lines.append(p.name + ":")
        if p.skipped:
            lines.append("  skipped: %s" % p.skipped)
        groups = []             # [prefix, [(what, row)]]
        for r in p.rows:
            prefix, _, what = r.name.rpartition(": ")
            if prefix and groups and groups[-1][0] == prefix:
                groups[-1][1].append((what, r))
            else:
                groups.append([prefix, [(what, r)]])
        for prefix, items in groups:
            if len(items) == 1:         # a row alone: name, then figures
                r = items[0][1]
                lines.append("  %-38s %s" % (r.name, _brief(r, "").lstrip()))
                continue
            line = "  " + prefix + ": "
            for i, (what, r) in enumerate(items):
                piece = _brief(r, what) + (" | " if i < len(items) - 1 else "")
                if len(line) + len(piece) > 100:
                    lines.append(line.rstrip())
                    line = "      "
                line += piece
            lines.append(line.rstrip())
        if p.error:
            lines.append("  CRASHED: %s" % p.error.strip().splitlines()[-1])
    lines.append("targets: %d met, %d missed" % (met, missed))
    lines.append(env_line(env))
    lines.append("third-party: " + libs_line(env))
    for what, path in outputs:
        lines.append("%s: %s" % (what, path))
    return "\n".join(lines)


# --------------------------------------------------------------- report


def write_markdown(path, parts, env, chart_path, quick, rounds_note):
    out = ["# cfutures benchmark report", ""]
    out.append("%s run of `benchmarks/run.py` on %s. %s." % (
        "A quick (smaller, fewer rounds)" if quick else "A full", env["date"],
        rounds_note))
    out.append("")
    out.append("- " + env_line(env))
    out.append("- third-party pools: " + libs_line(env))
    out.append("- cfutures: " + env["cfutures"])
    out.append("- " + RATIO_SAID
               + (INTERP_SAID if any(p.name == "interpreter" for p in parts)
                  else "") + "; a target is met when the ratio reaches it.")
    out.append("")
    if chart_path:
        rel = os.path.relpath(chart_path, os.path.dirname(os.path.abspath(path)))
        out += ["![speed-up over the stdlib](%s)" % rel, ""]
    out += ["Units:", ""]
    used = {r.unit for p in parts for r in p.rows}
    for unit, text in UNITS.items():
        if unit in used:
            out.append("- `%s`: %s" % (unit, text))
    out.append("")
    for p in parts:
        out.append("## %s: %s" % (p.name, p.title))
        out.append("")
        if p.about:
            out += ["```text", p.about.strip("\n"), "```", ""]
        for note in p.notes:
            out += [note, ""]
        if p.skipped:
            out += ["Skipped: %s" % p.skipped, ""]
        if p.rows:
            out += [md_table(p.rows), ""]
        if p.error:
            out += ["**This part crashed:**", "", "```", p.error.rstrip(),
                    "```", ""]
    with open(path, "w") as f:
        f.write("\n".join(out).rstrip() + "\n")


def write_json(path, parts, env, quick):
    data = {"env": env, "quick": quick,
            "parts": [{"name": p.name, "title": p.title, "notes": p.notes,
                       "skipped": p.skipped, "error": p.error,
                       "rows": [r.as_dict() for r in p.rows]}
                      for p in parts]}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


COLOURS = {"cfutures": "#1f77b4", "loky": "#ff7f0e", "mpire": "#2ca02c",
           "pebble": "#9467bd"}


def write_chart(path, parts, env, quick):
    """Horizontal bars of speed-up over the stdlib, log scale, one colour
    per library.  Returns None, or why no chart was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.patches
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed (pip install \".[bench]\")"
    libs = ["cfutures"] + [k for k in THIRD_PARTY
                           if any(r.others.get(k) is not None
                                  for p in parts for r in p.rows)]
    groups = []          # (label, [(lib, ratio)])
    for p in parts:
        for r in p.rows:
            bars = [(lib, r.speedup(r.cfutures if lib == "cfutures"
                                    else r.others.get(lib)))
                    for lib in libs]
            bars = [(lib, v) for lib, v in bars if v is not None]
            if bars:
                groups.append(("%s: %s" % (p.name, r.name), bars))
    if not groups:
        return "no row has a ratio to draw"
    bar_h = 0.8
    heights = [len(b) * bar_h + 0.5 for _, b in groups]
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.16 * sum(heights)))
    y = 0.0
    ticks, labels = [], []
    values = [v for _, bars in groups for _, v in bars]
    part_of = None
    for (label, bars), h in zip(groups, heights):
        part = label.split(":", 1)[0]
        if part_of is not None and part != part_of:
            ax.axhline(y - 0.35, color="grey", linewidth=0.6)
        part_of = part
        top = y + 0.3
        for i, (lib, v) in enumerate(bars):
            yy = top + i * bar_h
            ax.barh(yy, v, height=bar_h * 0.9, color=COLOURS[lib])
            ax.text(v * 1.04, yy, fmt_ratio(v), va="center", fontsize=6.5)
        ticks.append(top + (len(bars) - 1) * bar_h / 2)
        labels.append(label)
        y += h
    ax.set_xscale("log")
    ax.set_xlim(min(min(values) * 0.7, 0.5), max(max(values) * 1.8, 2))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: "%gx" % v))
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_ylim(y, -0.2)
    ax.set_xlabel("speed-up over concurrent.futures: stdlib time / its time "
                  "(log scale; 1x = as fast as the stdlib, more is faster)",
                  fontsize=8)
    ax.set_title("cfutures vs concurrent.futures%s\nPython %s (%s build), "
                 "%d CPUs, process pools: %s%s" % (
                     "" if len(libs) == 1 else ", " + ", ".join(libs[1:]),
                     env["python"], env["build"], env["cpus"],
                     env["start_method"], "; quick run" if quick else ""),
                 fontsize=9)
    ax.grid(axis="x", which="major", linewidth=0.3, alpha=0.6)
    handles = [matplotlib.patches.Patch(color=COLOURS[lib], label=lib)
               for lib in libs]
    ax.legend(handles=handles, loc="lower center", ncol=len(libs),
              fontsize=8, bbox_to_anchor=(0.5, 1.0 + 0.35 / fig.get_figheight()),
              frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return None
