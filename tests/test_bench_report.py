"""benchmarks/run.py, the main job: it runs, prints its one table style,
writes the report, reports a crashed part with a non-zero status, and goes
quietly when its reader leaves.  No timing is asserted."""

import json
import os
import subprocess
import sys
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks")
RUN = os.path.join(BENCH, "run.py")
HEADER = ["workload", "unit", "stdlib", "cfutures", "ratio", "target",
          "result", "loky", "mpire", "pebble"]
TINY = ["--quick", "--rounds", "1", "--only", "futures"]


@pytest.fixture
def run_module(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    import run
    return run


def test_tiny_run_writes_table_and_report(tmp_path):
    report, js = tmp_path / "r.md", tmp_path / "r.json"
    p = subprocess.run([sys.executable, RUN] + TINY + [
        "--report", str(report), "--json", str(js), "--no-chart"],
        capture_output=True, text=True, timeout=90, cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert out.count("ratio = stdlib time / cfutures time") == 1
    header = [line.split() for line in out.splitlines()
              if line.startswith("workload")]
    assert header == [HEADER]
    assert "Summary (quick run" in out and "targets:" in out
    assert "[3/3] futures:" in p.stderr          # the progress line
    md = report.read_text()
    assert "| " + " | ".join(HEADER) + " |" in md
    rows = [line for line in md.splitlines()
            if line.startswith("| ") and not line.startswith("| workload")]
    assert len(rows) == 3 and all(line.count("|") == 11 for line in rows)
    assert "| us/op |" in rows[0]
    data = json.loads(js.read_text())
    (part,) = data["parts"]
    assert part["name"] == "futures" and part["error"] is None
    assert [r["unit"] for r in part["rows"]] == ["us/op"] * 3
    assert all(r["stdlib"] > 0 and r["cfutures"] > 0 for r in part["rows"])
    assert set(data["env"]["libraries"]) == {"loky", "mpire", "pebble"}


def test_help_is_one_text():
    p = subprocess.run([sys.executable, RUN, "--help"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0
    for opt in ("--quick", "--rounds", "--only", "--report", "--no-report",
                "--chart", "--no-chart", "--json"):
        assert opt in p.stdout
    p = subprocess.run([sys.executable, RUN, "--only", "nosuch"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "unknown part nosuch" in p.stderr


def test_closed_pipe_ends_quietly():
    p = subprocess.Popen([sys.executable, RUN] + TINY + ["--no-report"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdout.close()                         # like `| head -0`
        _, err = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = err.decode()
    assert p.returncode == 1
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_crashed_part_is_reported_and_fails(run_module, monkeypatch, capsys,
                                            tmp_path):
    def boom():
        raise RuntimeError("part blew up")
    fake = types.ModuleType("bench_boom")
    fake.__doc__ = "A part that crashes.\n\nIt raises."
    fake.TITLE = "crashes"
    fake.plan = lambda ctx: [("first", lambda: [ctx.row(
        "fine", "us/op", 2.0, 1.0, 1.5)]), ("second", boom),
        ("never", lambda: pytest.fail("ran after the crash"))]
    monkeypatch.setitem(sys.modules, "bench_boom", fake)
    monkeypatch.setattr(run_module, "PARTS", run_module.PARTS + ["boom"])
    report = tmp_path / "r.md"
    rc = run_module.main(TINY[:3] + ["--only", "boom,futures", "--report",
                                     str(report), "--no-chart"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "CRASHED: RuntimeError: part blew up" in out
    assert "fine" in out and "2.00x" in out      # the rows before the crash
    assert "create+set_result+result" in out      # the parts after it ran
    assert "RuntimeError: part blew up" in err
    assert "This part crashed" in report.read_text()


def test_no_matplotlib_no_chart(run_module, monkeypatch, tmp_path):
    import _report
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    part = run_module.Part("futures")
    part.rows.append(_report.Row("futures", "x", "us/op", 2.0, 1.0))
    why = _report.write_chart(str(tmp_path / "c.png"), [part],
                              _report.environment({}, None), True)
    assert "matplotlib is not installed" in why
    assert not (tmp_path / "c.png").exists()


def test_row_ratio_is_stdlib_time_over_its_time(run_module):
    import _report
    t = _report.Row("p", "t", "us/task", 10.0, 2.0, 4.0, {"loky": 20.0})
    assert t.ratio == 5.0 and t.met is True
    assert t.speedup(t.others["loky"]) == 0.5
    rate = _report.Row("p", "r", "MB/s", 100.0, 300.0, 4.0)   # higher is faster
    assert rate.ratio == 3.0 and rate.met is False
    assert _report.cells(t)[-3:] == ["0.50x", "-", "-"]


def test_chart_is_a_png(run_module, tmp_path):
    pytest.importorskip("matplotlib")
    import _report
    part = run_module.Part("futures")
    part.rows.append(_report.Row("futures", "x", "us/op", 2.0, 1.0))
    part.rows.append(_report.Row("futures", "y", "us/op", 1.0, 2.0,
                                 others={"loky": 4.0}))
    path = tmp_path / "c.png"
    assert _report.write_chart(str(path), [part],
                               _report.environment({}, None), True) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failing_output_keeps_the_others(run_module, monkeypatch, capsys,
                                         tmp_path):
    import _report

    def broken(*args):
        raise OSError("disk full")
    monkeypatch.setattr(_report, "write_chart", broken)
    report, js = tmp_path / "r.md", tmp_path / "new" / "dir" / "r.json"
    rc = run_module.main(TINY + ["--report", str(report), "--json", str(js),
                                 "--chart", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    assert rc == 1
    assert "Summary (quick run" in out
    assert "chart: not written: " in out and "disk full" in out
    assert "report: %s" % report in out and "json: %s" % js in out
    assert "| create+set_result+result" in report.read_text()
    assert "c.png" not in report.read_text()     # no link to a missing chart
    assert json.loads(js.read_text())["parts"][0]["name"] == "futures"


def test_broken_third_party_import_is_said(run_module, monkeypatch,
                                           tmp_path):
    pkg = tmp_path / "pebble"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('bad build')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pebble", raising=False)
    libs, failed = run_module.third_party()
    assert "pebble" not in libs
    assert failed["pebble"] == "import failed: RuntimeError: bad build"
    import _report
    env = _report.environment(libs, None, failed)
    assert "pebble import failed: RuntimeError: bad build" in \
        _report.libs_line(env)


def test_failing_pebble_leaves_the_thread_part_running(run_module,
                                                       monkeypatch):
    import concurrent.futures
    fake = types.ModuleType("pebble")

    def no_pool(max_workers):
        raise RuntimeError("no threads for pebble")
    fake.ThreadPool = no_pool
    opts = run_module.parse_args(TINY)
    part = run_module.Part("thread")
    monkeypatch.syspath_prepend(BENCH)
    import bench_thread
    monkeypatch.setattr(bench_thread, "calibrate_hash", lambda: (1, 1e-6))
    ctx = run_module.Context(opts, part, bench_thread, {"pebble": fake},
                             concurrent.futures)
    steps = bench_thread.plan(ctx)
    label, first = steps[2]                     # the small latency case
    (row,) = first()
    assert row.stdlib > 0 and row.cfutures > 0 and "pebble" not in row.others
    assert any("pebble failed, left out: RuntimeError: no threads for pebble"
               in n for n in part.notes)
    (row,) = steps[3][1]()                      # pebble stays out
    assert "pebble" not in row.others
