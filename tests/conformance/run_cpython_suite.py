#!/usr/bin/env python3
"""Run CPython's own test_concurrent_futures against cfutures.

The suite that ships with the running interpreter (``test.test_concurrent_futures``,
a package on 3.12+, one module on 3.10) is copied twice into a temporary
directory: once unchanged (the reference run, against the stdlib) and once
with its imports of ``concurrent.futures`` rewritten to ``cfutures``.  Both
copies run in subprocesses, one per test module and executor flavour, in
parallel.  A parent-side watchdog gives every test ``--test-timeout``
seconds: a test that hangs is reported as a failure (with the traceback of
every thread) and its job restarts with the tests not yet run, so one hang
never hides the rest or blocks CI; a test that crashes the interpreter is
handled the same way.

A test fails the run ("unexpected") if it passes against the stdlib but
not against cfutures and is not listed in ``excused.txt`` (next to this
file).  Excused tests that now pass are reported as stale.  Exit status:
0 on success or when the interpreter has no such suite (2 with
``--require``), 1 on unexpected failures, 2 on setup errors.

Usage: python tests/conformance/run_cpython_suite.py [-j N] [-k SUBSTR]
       [--test-timeout S] [--excused FILE] [--require] [--keep] [-v]
"""
import argparse
import ast
import concurrent.futures
import fnmatch
import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = 'test_concurrent_futures'
FLAVOURS = ('ProcessPoolForkserver', 'ProcessPoolFork', 'ProcessPoolSpawn',
            'ThreadPool')
# Known slow modules first, so that the parallel run ends together.
SLOW_FIRST = ('test_interpreter_pool', 'test_wait', 'test_process_pool', 'test_shutdown',
              'test_deadlock', 'executor', 'test_as_completed', 'test_init')

# --------------------------------------------------------------------------
# The driver: runs selected tests of one module in a subprocess and writes
# one JSON line per event to a results file, flushed, for the watchdog.
DRIVER = r'''
import faulthandler, gc, json, os, signal, sys, time, traceback, unittest

# Spawned workers import this file as __mp_main__: only __main__ runs tests.
out = None

def emit(**kw):
    out.write(json.dumps(kw) + '\n')
    out.flush()

def fmt(err, test=None):
    return ''.join(traceback.format_exception(*err))[-6000:]

class Result(unittest.TestResult):
    def startTest(self, test):
        super().startTest(test)
        self._outcome_ = None
        self._t0_ = time.monotonic()
        emit(ev='start', id=test.id())

    def _set(self, outcome, detail=''):
        if self._outcome_ is None or self._outcome_[0] in ('pass', 'skip'):
            self._outcome_ = (outcome, detail)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._set('pass')

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set('pass')

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set('fail', 'unexpected success')

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if isinstance(test, unittest.TestCase):
            self._set('skip', str(reason))
        else:   # SkipTest raised by setUpModule/setUpClass
            emit(ev='fixture', id=str(test), outcome='skip', detail=str(reason))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._set('fail', '%s\n%s' % (subtest.id(), fmt(err)))

    def _err(self, kind, test, err):
        if isinstance(test, unittest.TestCase):
            self._set(kind, fmt(err))
        else:   # setUpModule/setUpClass/cleanups: not a started test
            emit(ev='fixture', id=str(test), outcome=kind, detail=fmt(err))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._err('fail', test, err)

    def addError(self, test, err):
        super().addError(test, err)
        self._err('error', test, err)

    def stopTest(self, test):
        super().stopTest(test)
        # A failed test's frames (its executor, its workers) sit in a cycle
        # with the exception: collect them now, as regrtest would, or live
        # workers block multiprocessing's module cleanup until the watchdog.
        gc.collect()
        outcome, detail = self._outcome_ or ('error', 'no outcome recorded')
        emit(ev='end', id=test.id(), outcome=outcome, detail=detail,
             dur=round(time.monotonic() - self._t0_, 2))
        self._outcome_ = None

def flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from flatten(t)
        else:
            yield t

def main():
    global out
    results_path, select_path, modname = sys.argv[1:4]
    out = open(results_path, 'a', buffering=1)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    from test import support
    support.verbose = 0
    with open(select_path) as f:
        wanted = set(f.read().split())
    suite = unittest.defaultTestLoader.loadTestsFromName(modname)
    tests = list(flatten(suite))
    failed = [t for t in tests if t.id().startswith('unittest.loader.')]
    if failed:
        err = getattr(failed[0], '_exception', None)
        emit(ev='import_error', detail=str(err) if err else failed[0].id())
        return
    if wanted != {'*'}:
        tests = [t for t in tests if t.id() in wanted]
    emit(ev='list', ids=[t.id() for t in tests])
    if select_path.endswith('.list'):
        return
    unittest.TestSuite(tests).run(Result())
    emit(ev='done')

if __name__ == '__main__':
    main()
'''


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# Locating and rewriting the suite.

def find_suite():
    """Path of the running interpreter's test_concurrent_futures, or None."""
    try:
        spec = importlib.util.find_spec('test.' + SUITE)
        importlib.import_module('test.support')
    except ImportError:
        return None
    if spec is None or not spec.origin:
        return None
    if spec.submodule_search_locations:
        return os.path.dirname(spec.origin)
    return spec.origin


# 'concurrent.futures' as an exact string literal is the logger's name,
# which cfutures shares with the stdlib: keep it.
_DOTTED = re.compile(r"""(?<![\w.])concurrent\.futures(?!['"])\b""")
_KEEP = '\x00'   # marks the dots of names kept on the stdlib
_FROM_PKG = re.compile(r'\bfrom concurrent import futures\b')


def rewrite_source(src, fallbacks):
    """Return src with concurrent.futures imports pointing at cfutures.

    Real ``from concurrent.futures[.x] import a, b`` statements are rewritten
    name by name: a name the cfutures module lacks (stdlib-private helpers
    such as _check_system_limits) is still taken from the stdlib, so that
    the test module imports and each test stands or falls on its own; such
    names are collected in ``fallbacks``.  Everything else (code, and the
    scripts that tests run in subprocesses) is rewritten textually.
    """
    lines = src.splitlines(keepends=True)
    edits = []
    for node in ast.walk(ast.parse(src)):
        if not (isinstance(node, ast.ImportFrom) and node.module and
                node.level == 0 and
                (node.module + '.').startswith('concurrent.futures.')):
            continue
        cfmod = 'cfutures' + node.module[len('concurrent.futures'):]
        try:
            mod = importlib.import_module(cfmod)
        except ImportError:
            mod = None      # a submodule cfutures does not have: all stdlib
        ours, theirs = [], []
        for alias in node.names:
            text = alias.name + (' as ' + alias.asname if alias.asname else '')
            if mod is not None and (alias.name == '*' or hasattr(mod, alias.name)):
                ours.append(text)
            else:
                theirs.append(text)
                fallbacks.add('%s.%s' % (node.module, alias.name))
        indent = re.match(r'\s*', lines[node.lineno - 1]).group()
        new = []
        if ours:
            new.append('%sfrom %s import %s\n' % (indent, cfmod, ', '.join(ours)))
        if theirs:
            new.append('%sfrom %s import %s  # not in cfutures\n'
                       % (indent, node.module.replace('.', _KEEP), ', '.join(theirs)))
        edits.append((node.lineno - 1, node.end_lineno, new))
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = new
    out = ''.join(lines)
    out = _FROM_PKG.sub('import cfutures as futures', out)
    return _DOTTED.sub('cfutures', out).replace(_KEEP, '.')


def copy_suite(src, dest, rewrite, fallbacks):
    """Copy the suite to dest/test_concurrent_futures[.py]; return module names."""
    os.makedirs(dest)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    if os.path.isdir(src):
        target = os.path.join(dest, SUITE)
        shutil.copytree(src, target, ignore=ignore)
        files = [os.path.join(target, f) for f in sorted(os.listdir(target))
                 if f.endswith('.py')]
        modules = ['%s.%s' % (SUITE, f[:-3]) for f in sorted(os.listdir(target))
                   if f.startswith('test') and f.endswith('.py')]
    else:
        target = os.path.join(dest, SUITE + '.py')
        shutil.copy(src, target)
        files, modules = [target], [SUITE]
    if rewrite:
        for path in files:
            with open(path, encoding='utf-8') as f:
                src_text = f.read()
            with open(path, 'w', encoding='utf-8') as f:
                f.write(rewrite_source(src_text, fallbacks))
    return modules


# --------------------------------------------------------------------------
# Running one job (some tests of one module, in one tree) under a watchdog.

class Job:
    def __init__(self, side, tree, module, flavour, ids, workdir):
        self.side, self.tree, self.module, self.flavour = side, tree, module, flavour
        self.ids = list(ids)
        self.workdir = workdir
        self.results = {}       # test id -> (outcome, detail)
        self.durations = {}     # test id -> seconds
        self.elapsed = 0.0

    @property
    def name(self):
        return '%s:%s' % (self.side, self.module)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_job(job, args, driver, stop):
    t0 = time.monotonic()
    remaining = list(job.ids)
    attempt = 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [job.tree] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    env.pop('PYTHONFAULTHANDLER', None)
    logfile = os.path.join(job.workdir, 'output.log')
    while remaining and not stop.is_set():
        attempt += 1
        results_path = os.path.join(job.workdir, 'results-%d.jsonl' % attempt)
        select_path = os.path.join(job.workdir, 'select-%d.txt' % attempt)
        with open(select_path, 'w') as f:
            f.write('\n'.join(remaining))
        open(results_path, 'w').close()
        logpath = logfile
        with open(logpath, 'ab') as logf:
            logf.write(b'\n===== attempt %d =====\n' % attempt)
            logf.flush()
            proc = subprocess.Popen(
                [sys.executable, driver, results_path, select_path, job.module],
                cwd=job.workdir, env=env, stdout=logf, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        current, last_event, done, pos = None, time.monotonic(), False, 0
        hung, fixtures = None, []
        while True:
            rc = proc.poll()
            with open(results_path) as f:
                f.seek(pos)
                chunk = f.read()
            # Only whole lines; keep a partial one for the next read.
            cut = chunk.rfind('\n') + 1
            pos += len(chunk[:cut].encode())
            for line in chunk[:cut].splitlines():
                ev = json.loads(line)
                last_event = time.monotonic()
                kind = ev['ev']
                if kind == 'start':
                    current = ev['id']
                elif kind == 'end':
                    job.results[ev['id']] = (ev['outcome'], ev['detail'])
                    job.durations[ev['id']] = ev['dur']
                    current = None
                    remaining.remove(ev['id'])
                elif kind == 'fixture':
                    fixtures.append(ev)
                    if ev['outcome'] != 'skip':
                        job.results['%s [%s]' % (ev['id'], job.flavour)] = (
                            ev['outcome'], ev['detail'])
                elif kind == 'import_error':
                    for tid in remaining:
                        job.results[tid] = ('error', 'module import failed: '
                                            + ev['detail'])
                    remaining = []
                elif kind == 'done':
                    done = True
            if rc is not None and not chunk[cut:]:
                break
            now = time.monotonic()
            limit = args.exit_timeout if done else args.test_timeout
            if now - last_event > limit or stop.is_set():
                hung = current or ('<process exit>' if done else '<between tests>')
                os.kill(proc.pid, signal.SIGUSR1)   # faulthandler: all threads
                time.sleep(1.0)
                _kill_group(proc)
                proc.wait()
                rc = proc.returncode
                break
            time.sleep(0.1)
        _kill_group(proc)    # stray workers of this run
        if hung is not None or (current and rc != 0):
            # The temporary directory goes away: keep the thread dump.
            with open(logpath, 'rb') as f:
                tail = f.read().decode(errors='replace').rsplit('=====\n', 1)[-1]
            logpath = 'its output (last 80 lines):\n' + '\n'.join(tail.splitlines()[-80:])
        exit_id = '%s [%s: process exit]' % (job.module, job.flavour)
        teardown_id = '%s [%s: teardown]' % (job.module, job.flavour)
        if hung is not None:
            what = 'timeout: no progress for %ds' % (
                args.exit_timeout if done else args.test_timeout)
            if current:
                job.results[current] = ('timeout', what + '; see ' + logpath)
                remaining.remove(current)
            elif done:
                job.results[exit_id] = ('timeout', 'hang at interpreter exit; see ' + logpath)
            elif remaining:
                # Hung in a fixture: the tests not yet run are lost.
                for tid in remaining:
                    job.results[tid] = ('timeout', what + ' outside a test; see ' + logpath)
                remaining = []
            else:
                job.results[teardown_id] = ('timeout', what + ' after the last test '
                                            '(module/class teardown); see ' + logpath)
        elif current:
            job.results[current] = ('crash', 'process exited with %s during the test; see %s'
                                    % (rc, logpath))
            remaining.remove(current)
        elif not done and remaining:
            for tid in remaining:
                job.results[tid] = ('error', 'not run: process exited with %s; see %s'
                                    % (rc, logpath))
            remaining = []
        else:
            if done and rc != 0:
                job.results[exit_id] = ('error', 'process exited with %s; see %s'
                                        % (rc, logpath))
            # Tests a failing or skipping setUpClass/setUpModule kept from running.
            skipped = fixtures and all(ev['outcome'] == 'skip' for ev in fixtures)
            for tid in remaining:
                job.results[tid] = ('skip' if skipped else 'error', 'not run: ' + '; '.join(
                    '%s %s' % (ev['id'], ev['outcome']) for ev in fixtures))
            remaining = []
        if time.monotonic() - t0 > args.job_timeout and remaining:
            for tid in remaining:
                job.results[tid] = ('timeout', 'not run: job over --job-timeout')
            remaining = []
    job.elapsed = time.monotonic() - t0
    return job


def list_tests(tree, module, driver, workdir):
    os.makedirs(workdir, exist_ok=True)
    results = os.path.join(workdir, 'list.jsonl')
    select = os.path.join(workdir, 'all.list')
    with open(select, 'w') as f:
        f.write('*')
    env = dict(os.environ, PYTHONPATH=tree)
    proc = subprocess.run([sys.executable, driver, results, select, module],
                          cwd=workdir, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=120)
    with open(results) as f:
        for line in f:
            ev = json.loads(line)
            if ev['ev'] == 'list':
                return ev['ids']
            if ev['ev'] == 'import_error':
                raise RuntimeError('%s: %s' % (module, ev['detail']))
    raise RuntimeError('%s: listing failed:\n%s' % (module, proc.stdout.decode(errors='replace')))


def flavour_of(test_id):
    cls = test_id.split('.')[-2] if test_id.count('.') >= 2 else ''
    for fl in FLAVOURS:
        if cls.startswith(fl):
            return fl
    return 'other'


# --------------------------------------------------------------------------

def read_excused(path):
    excused = {}
    if not os.path.exists(path):
        return excused
    with open(path) as f:
        for n, line in enumerate(f, 1):
            text, _, why = line.partition('#')
            text = text.strip()
            if text:
                excused[text] = why.strip() or '(no reason given, line %d)' % n
    return excused


def is_excused(test_id, excused):
    return any(fnmatch.fnmatchcase(test_id, pat) for pat in excused)


def short(detail, lines):
    d = detail.strip().splitlines()
    if len(d) > lines:
        d = ['...'] + d[-lines:]
    return '\n'.join('      ' + x for x in d)


def main(argv=None):
    ver = '%d.%d' % sys.version_info[:2]
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('-j', '--jobs', type=int, default=4,
                   help='parallel test processes (default 4; the suite mostly sleeps)')
    p.add_argument('-k', dest='pattern', action='append', default=[],
                   help='only tests whose id contains this (repeatable)')
    p.add_argument('--test-timeout', type=float, default=60,
                   help='seconds without progress before a test counts as hung '
                        '(default 60; the suite\'s own timeouts are 30 s)')
    p.add_argument('--chunk', type=int, default=12,
                   help='at most this many tests per subprocess (default 12)')
    p.add_argument('--exit-timeout', type=float, default=30,
                   help='seconds allowed for a test process to exit (default 30)')
    p.add_argument('--job-timeout', type=float, default=900,
                   help='seconds after which a job stops starting its remaining tests')
    p.add_argument('--excused', default=os.path.join(HERE, 'excused.txt'))
    p.add_argument('--require', action='store_true',
                   help='exit 2, not 0, when the interpreter has no such suite')
    p.add_argument('--keep', action='store_true', help='keep the temporary directory')
    p.add_argument('--durations', type=int, default=0, metavar='N',
                   help='print the N slowest tests of each side')
    p.add_argument('-v', '--verbose', action='store_true',
                   help='print every test that does not pass on either side')
    args = p.parse_args(argv)

    src = find_suite()
    if src is None:
        log('CPython %s (%s): test.%s is not available for this interpreter; '
            'conformance run skipped.' % (ver, sys.executable, SUITE))
        if args.require:
            log('--require: failing (Debian/Ubuntu ship it in libpython%s-testsuite)' % ver)
            return 2
        return 0
    try:
        import cfutures  # noqa: F401
    except ImportError as e:
        log('cannot import cfutures: %s' % e)
        return 2

    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix='cfutures-conformance-')
    stop = threading.Event()
    try:
        # Nothing named cfutures may sit next to the driver (sys.path[0]).
        os.mkdir(os.path.join(tmp, 'driver'))
        driver = os.path.join(tmp, 'driver', 'conformance_driver.py')
        with open(driver, 'w') as f:
            f.write(DRIVER)
        fallbacks = set()
        trees = {'stdlib': os.path.join(tmp, 'tree-stdlib'),
                 'cfutures': os.path.join(tmp, 'tree-cfutures')}
        modules = copy_suite(src, trees['stdlib'], False, fallbacks)
        copy_suite(src, trees['cfutures'], True, fallbacks)
        log('CPython %s: %s' % (sys.version.split()[0], src))
        log('cfutures from %s' % os.path.dirname(sys.modules['cfutures'].__file__))
        if fallbacks:
            log('names cfutures lacks, imported from the stdlib: %s'
                % ', '.join(sorted(fallbacks)))

        ids = {}
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
            listed = {m: ex.submit(list_tests, trees['stdlib'], m, driver,
                                   os.path.join(tmp, 'list', m))
                      for m in modules}
            for m in modules:
                try:
                    found = listed[m].result()
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    log('cannot list the tests of the unmodified suite: %s' % e)
                    return 2
                ids[m] = [t for t in found
                          if not args.pattern or any(k in t for k in args.pattern)]

        jobs = []
        for m in modules:
            groups = {}
            for t in ids[m]:
                groups.setdefault(flavour_of(t), []).append(t)
            for fl, group in groups.items():
                # Chunks of at most --chunk tests balance the load and
                # bound what one hang costs.
                n = -(-len(group) // args.chunk)
                for k in range(n):
                    chunk = group[k * len(group) // n:(k + 1) * len(group) // n]
                    part = '%s.%d' % (fl, k + 1) if n > 1 else fl
                    for side in ('cfutures', 'stdlib'):
                        wd = os.path.join(tmp, 'run', side, '%s-%s' % (m, part))
                        os.makedirs(wd)
                        job = Job(side, trees[side], m, part, chunk, wd)
                        job.label = '%s:%s[%s]' % (side, m.rsplit('.', 1)[-1], part)
                        jobs.append(job)

        def rank(job):
            short_mod = job.module.rsplit('.', 1)[-1]
            slow = SLOW_FIRST.index(short_mod) if short_mod in SLOW_FIRST else len(SLOW_FIRST)
            return (slow, -len(job.ids))
        jobs.sort(key=rank)
        log('%d tests in %d modules; %d jobs, %d at a time'
            % (sum(map(len, ids.values())), len(modules), len(jobs), args.jobs))

        with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
            futs = [ex.submit(run_job, job, args, driver, stop) for job in jobs]
            try:
                for fut in concurrent.futures.as_completed(futs):
                    job = fut.result()
                    bad = sum(1 for o, _ in job.results.values() if o not in ('pass', 'skip'))
                    log('  %-55s %3d tests %6.1fs%s' % (job.label, len(job.ids), job.elapsed,
                                                          '  %d not passing' % bad if bad else ''))
            except BaseException:
                stop.set()
                raise

        std, cf = {}, {}
        for job in jobs:
            (std if job.side == 'stdlib' else cf).update(job.results)
        if args.durations:
            for side in ('stdlib', 'cfutures'):
                durs = sorted(((d, t) for job in jobs if job.side == side
                               for t, d in job.durations.items()), reverse=True)
                log('slowest tests against %s:' % side)
                for d, t in durs[:args.durations]:
                    log('  %6.1fs %s' % (d, t))
        return report(std, cf, read_excused(args.excused), args, ver,
                      time.monotonic() - t_start)
    finally:
        if args.keep:
            log('kept %s' % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def report(std, cf, excused, args, ver, wall):
    all_ids = sorted(set(std) | set(cf))
    # Fixture pseudo-tests ("setUpClass (...)", "[process exit]") only
    # appear when something happened; absent means fine.
    def outcome(results, tid):
        return results.get(tid, ('pass', ''))[0]
    std_pass = [t for t in all_ids if outcome(std, t) == 'pass']
    std_skip = [t for t in all_ids if outcome(std, t) == 'skip']
    std_fail = [t for t in all_ids if outcome(std, t) not in ('pass', 'skip')]
    cf_pass = [t for t in std_pass if outcome(cf, t) == 'pass']
    failing = [t for t in std_pass if outcome(cf, t) != 'pass']
    excused_fail = [t for t in failing if is_excused(t, excused)]
    unexpected = [t for t in failing if not is_excused(t, excused)]
    stale = [t for t in all_ids if is_excused(t, excused) and outcome(cf, t) == 'pass'
             and outcome(std, t) == 'pass']

    log('')
    if args.verbose:
        for t in std_fail:
            log('  note: fails against the stdlib too (%s): %s' % (std[t][0], t))
            log(short(std[t][1], 8))
    for t in stale:
        log('WARNING: stale excuse, passes against cfutures now: %s' % t)
    for t in excused_fail:
        log('  excused (%s): %s' % (outcome(cf, t), t))
    for t in unexpected:
        o, d = cf.get(t, ('pass', ''))
        log('UNEXPECTED %s: %s' % (o.upper(), t))
        log(short(d, 200 if args.verbose else 40 if o in ('timeout', 'crash') else 6))
    log('')
    if unexpected:
        log('Unexpected failures (passing against the stdlib, not excused in %s):'
            % os.path.relpath(args.excused))
        for t in unexpected:
            log('  %-8s %s' % (outcome(cf, t), t))
    log('CPython %s conformance: %d tests; %d pass against the stdlib (%d skipped, '
        '%d fail there too); against cfutures %d of those pass, %d excused, '
        '%d unexpected failures, %d stale excuses; %.0f s'
        % (ver, len(all_ids), len(std_pass), len(std_skip), len(std_fail),
           len(cf_pass), len(excused_fail), len(unexpected), len(stale), wall))
    return 1 if unexpected else 0


if __name__ == '__main__':
    sys.exit(main())
