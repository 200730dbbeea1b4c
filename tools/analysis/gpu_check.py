# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""One prepared check of the CUDA paths on a GPU machine.

Started in the repository root of a machine with a GPU, torch and no
OpenMMLab packages (and no network), it runs, within ``--budget`` seconds:

1. ``setup``: installs the wheels of ``--carry`` (made by
   ``tools/analysis/prepare_gpu_carry.sh``) whose packages are missing and
   builds mmcv 2.1.0 from the carried source with its compiled CPU ops
   (``--jobs`` parallel compilations, the GPU hidden from the build: the
   models here use no mmcv op). Skipped where mmcv with its ops, mmengine
   and mmseg already import. Should that build fail or outrun its limit,
   mmcv's Python code is installed without ops and a stand-in ``mmcv._ext``
   whose every function raises is written; the report says so.
2. ``environment``: versions, the GPU, whether mmcv's ops are compiled.
3. One after another, alone on the GPU, at the paper's VOC size (513
   crops, 4 + 4 images): the step time against the supervised step (AMP
   off/on, default and channels-last weights), the contrastive loss as a
   share of an iteration and the host synchronisations of a step (AMP off
   and on).
4. At the same time: the tests that skip without CUDA, then short toy
   U2PL trainings through ``tools/train.py`` (AMP fp16; AMP with
   channels-last weights; twice with ``randomness.deterministic=True``,
   compared) ‖ peak memory at the VOC size ‖ at the Cityscapes size (769,
   2 + 2), AMP off and on (peak memory is measured per process).

Each part runs under its own time limit (and what is left of the budget);
the report ``gpu_check.md``, ``gpu_check.json`` and the full output
``gpu_check.log`` in ``--out`` are rewritten after every part, so a part
that fails or runs out of time loses only itself. ``--dry-run`` runs the
same parts on the CPU at tiny sizes (the test suite does, so that this
script cannot rot).

Examples::

    # GPU machine, repository root, .gpu_carry carried
    python3 tools/analysis/gpu_check.py --out $OUT
    # again on the same machine: the setup finds mmcv and skips the build
    python3 tools/analysis/gpu_check.py --out $OUT --budget 230 \\
        --parts step syncs
    # CPU, tiny sizes, a few minutes at most
    python tools/analysis/gpu_check.py --dry-run --out /tmp/gpu_check
"""
import argparse
import ast
import datetime
import glob
import importlib.metadata
import importlib.util
import json
import math
import os
import os.path as osp
import shutil
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional

if osp.dirname(osp.abspath(__file__)) not in sys.path:
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import (  # noqa: E402
    ROOT, TOY_U2PL_CONFIG, VOC_U2PL_CONFIG)
from label_efficiency import (  # noqa: E402
    FULL, METHODS, RunSpec, config_settings, read_scalars, train_command)

ANALYSIS = osp.join('tools', 'analysis')
MMCV_VERSION = '2.1.0'
#: what must import for the parts to run (``mmcv.ops`` needs ``mmcv._ext``)
IMPORT_CHECK = ('import mmcv, mmcv.ops, mmengine, mmseg; '
                f'assert mmcv.__version__ == {MMCV_VERSION!r}, '
                'mmcv.__version__')
#: compiler flags of the mmcv build: no debug information, light
#: optimisation (the ops are compiled so that mmcv imports; no model here
#: calls them)
BUILD_CFLAGS = '-O1 -g0'
STAND_IN_EXT = '''\
"""Stand-in for mmcv's compiled ops, written by tools/analysis/gpu_check.py.

mmcv was installed without its compiled ops; every op raises here.
"""


def __getattr__(name):
    if name.startswith('__'):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise NotImplementedError(
            f'mmcv op {name!r}: this mmcv has no compiled ops (a stand-in '
            'written by tools/analysis/gpu_check.py).')

    return missing
'''
REPORT, RESULTS, LOG = 'gpu_check.md', 'gpu_check.json', 'gpu_check.log'
#: the parts after the setup, in the order they start (see :func:`plan`)
PART_NAMES = ('environment', 'step', 'contrastive', 'syncs', 'cuda_tests',
              'training', 'determinism', 'memory_voc', 'memory_cityscapes')
#: sizes of the parts, ``name: (on the GPU, in the dry run)``: the paper's
#: per-GPU sizes on the GPU, tiny ones on the CPU
SETTINGS = dict(
    config=(VOC_U2PL_CONFIG, TOY_U2PL_CONFIG),
    crop=(513, 32),
    batch=(4, 2),
    rounds=(5, 1),
    warmup=(2, 0),
    loss_sizes=('paper', 'small'),
    loss_repeats=(10, 1),
    loss_warmup=(3, 0),
    amp_dtype=('float16', 'bfloat16'),
    memory_voc=((['--preset', 'voc'], 'VOC 513, 4 + 4'),
                (['--preset', 'toy', '--crop', '32', '--batch',
                  '2'], 'toy 32, 2 + 2')),
    memory_cityscapes=((['--preset', 'cityscapes'], 'Cityscapes 769, 2 + 2'),
                       (['--preset', 'toy', '--crop', '48', '--batch',
                         '2'], 'toy 48, 2 + 2')),
    memory_steps=(2, 1),
    variants=(['supervised', 'supervised-x2', 'u2pl-nocontrast',
               'u2pl'], ['u2pl']),
    train_iters=(40, 2),
    train_workers=(2, 0),
    toy=(['--num-train', '128', '--num-val',
          '16'], ['--num-train', '32', '--num-val', '8', '--img-size', '64']),
    # the dry run checks the script, not speed: room for a busy CPU
    limit_scale=(1, 10))


# ---------------------------------------------------------------------------
# what runs
# ---------------------------------------------------------------------------
class Part:
    """One part of the check: commands run one after another.

    Args:
        name (str): Short name (``--parts``).
        title (str): Heading in the report.
        commands (list[list[str]]): Run in order; the first that fails
            ends the part.
        limit_s (float): Time limit of the whole part.
        env (dict, optional): Extra environment variables.
        show (str): ``'markdown'``: the output goes into the report as it
            is (the benchmarks print Markdown); ``'tail'``: its last lines.
        collect (callable, optional): ``collect(result) -> dict`` of
            measured values, called after the commands.
    """

    def __init__(self,
                 name: str,
                 title: str,
                 commands: List[List[str]],
                 limit_s: float,
                 env: Optional[Dict[str, str]] = None,
                 show: str = 'markdown',
                 collect: Optional[Callable[[dict], dict]] = None):
        self.name, self.title, self.commands = name, title, commands
        self.limit_s, self.env, self.show = limit_s, env or {}, show
        self.collect = collect


def python(*args: str) -> List[str]:
    return [sys.executable] + list(args)


def tool(name: str, *args) -> List[str]:
    return python(osp.join(ANALYSIS, name), *[str(a) for a in args])


def cuda_only_tests(tests_dir: str = osp.join(ROOT, 'tests')) -> List[str]:
    """pytest ids of the tests that skip without CUDA.

    Those whose ``skipif`` decorator tests ``torch.cuda.is_available()``.
    """
    ids = []
    for path in sorted(
            glob.glob(osp.join(tests_dir, '**', 'test_*.py'), recursive=True)):
        with open(path) as f:
            source = f.read()
        if 'cuda.is_available' not in source:
            continue
        rel = osp.relpath(path, ROOT)
        for node in ast.walk(ast.parse(source, path)):
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                continue
            if any('skipif' in ast.unparse(d)
                   and 'cuda.is_available' in ast.unparse(d)
                   for d in node.decorator_list):
                ids.append(f'{rel}::{node.name}')
    return ids


def plan(args, work: str) -> List[List[List[Part]]]:
    """The parts after the setup: phases of lanes of parts.

    The lanes of a phase run at the same time, the parts of a lane one
    after another, the phases one after another. Every part gets its own
    limit or what is left of the budget, whichever is less.
    """
    size = {key: value[bool(args.dry_run)] for key, value in SETTINGS.items()}
    config, amp_dtype = size['config'], size['amp_dtype']
    step_args = [
        '--config', config, '--crop', size['crop'], '--batch', size['batch']
    ]
    loss_args = [
        '--sizes', size['loss_sizes'], '--repeats', size['loss_repeats'],
        '--warmup', size['loss_warmup'], '--iteration', config
    ]
    iters = size['train_iters']

    data_root = osp.join(work, 'toy')
    # the toy U2PL config (label_efficiency.py's), supervised for the first
    # half of the iterations, its own labeled split
    settings = config_settings(METHODS['u2pl'])

    def train(run: str, *extra: str) -> List[str]:
        command = train_command(
            RunSpec('u2pl', FULL, 0), settings, osp.join(work, 'train', run),
            iters, iters // 2, size['train_workers'], data_root)
        return command + [
            f'default_hooks.logger.interval={max(1, iters // 8)}'
        ] + list(extra)

    deterministic = 'randomness.deterministic=True'

    def memory(name: str) -> Part:
        preset, label = size[name]
        out = osp.join(work, name + '.json')
        return Part(
            name,
            f'Peak memory, {label}, AMP off and on', [
                tool('benchmark_memory.py', *preset, '--amp', 'both',
                     '--steps', size['memory_steps'], '--timeout', 150,
                     '--variants', *size['variants'], '--out', out)
            ],
            240,
            collect=read_json(out))

    timing = [
        Part('step', 'Step time against the supervised step', [
            tool('benchmark_step.py', *step_args, '--rounds', size['rounds'],
                 '--warmup', size['warmup'], '--amp', 'both',
                 '--channels-last', 'both')
        ], 150),
        Part(
            'contrastive', 'Contrastive loss as a share of the iteration '
            '(AMP off, then on)', [
                tool('benchmark_contrastive_loss.py', *loss_args),
                tool('benchmark_contrastive_loss.py', *loss_args, '--amp',
                     '--input-dtype', amp_dtype)
            ], 90),
        Part('syncs', 'Host synchronisations of one step (AMP off, then on)', [
            tool('count_host_syncs.py', *step_args),
            tool('count_host_syncs.py', *step_args, '--amp')
        ], 90),
    ]
    checks = [
        Part(
            'cuda_tests',
            'Tests that skip without CUDA', [
                python('-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-rA',
                       *cuda_only_tests())
            ],
            120,
            show='tail',
            collect=pytest_summary),
        Part(
            'training',
            'Toy U2PL training: AMP fp16, then AMP with channels-last weights',
            [
                python('tools/dataset_converters/make_toy_dataset.py', '--out',
                       data_root, *size['toy']),
                train('amp', '--amp'),
                train('amp_channels_last', 'model.channels_last=True', '--amp')
            ],
            150,
            show='tail',
            collect=training_of(osp.join(work, 'train'))),
        Part(
            'determinism',
            'Toy U2PL training twice with randomness.deterministic=True', [
                train('deterministic_1', deterministic),
                train('deterministic_2', deterministic)
            ],
            120,
            env={'CUBLAS_WORKSPACE_CONFIG': ':4096:8'},
            show='tail',
            collect=determinism_of(osp.join(work, 'train'))),
    ]
    environment = Part(
        'environment',
        'Environment', [python(osp.abspath(__file__), '--environment')],
        60,
        show='tail',
        collect=environment_of)
    # the timings alone on the GPU first, then the rest side by side (peak
    # memory is per process)
    phases = [[[environment]], [timing],
              [checks, [memory('memory_voc')], [memory('memory_cityscapes')]]]
    for part in (p for phase in phases for lane in phase for p in lane):
        part.limit_s *= size['limit_scale']
    return phases


# ---------------------------------------------------------------------------
# what the parts measured
# ---------------------------------------------------------------------------
def read_json(path: str) -> Callable[[dict], dict]:

    def collect(result):
        if not osp.isfile(path):
            return {}
        with open(path) as f:
            return json.load(f)

    return collect


def environment_of(result: dict) -> dict:
    for line in reversed(result['stdout'].splitlines()):
        if line.startswith('{'):
            return json.loads(line)
    return {}


def pytest_summary(result: dict) -> dict:
    """Counts of the last pytest line (``2 passed, 3 skipped in 4.0s``)."""
    lines = [line for line in result['stdout'].splitlines() if line.strip()]
    counts = {}
    if lines:
        for item in lines[-1].strip('= ').split(' in ')[0].split(', '):
            parts = item.split()
            if len(parts) == 2 and parts[0].isdigit():
                counts[parts[1]] = int(parts[0])
    return dict(counts=counts, tests=cuda_only_tests())


def summarise_run(work_dir: str) -> dict:
    """Iterations, losses, time, GPU memory and mIoU of one toy run."""
    records = read_scalars(work_dir)
    train = [r for r in records if 'loss' in r and 'iter' in r]
    val = [r for r in records if 'teacher/mIoU' in r]
    if not train:
        return dict(iterations=0)
    times = sorted(r['time'] for r in train if 'time' in r)
    return dict(
        iterations=train[-1]['iter'],
        losses=[r['loss'] for r in train],
        finite=all(math.isfinite(r['loss']) for r in train),
        median_time_s=times[len(times) // 2] if times else None,
        memory_mb=max((r.get('memory', 0) for r in train), default=None),
        teacher_miou=val[-1]['teacher/mIoU'] if val else None)


def training_of(train_dir: str) -> Callable[[dict], dict]:

    def collect(result):
        return {
            run: summarise_run(osp.join(train_dir, run))
            for run in ('amp', 'amp_channels_last')
            if osp.isdir(osp.join(train_dir, run))
        }

    return collect


def determinism_of(train_dir: str) -> Callable[[dict], dict]:

    def collect(result):
        runs = [
            summarise_run(osp.join(train_dir, f'deterministic_{i}'))
            for i in (1, 2)
        ]
        errors = [
            line.strip() for line in result['stderr'].splitlines()
            if 'Error' in line.split(':')[0]
        ]
        identical = None
        if all(run.get('losses') for run in runs):
            identical = runs[0]['losses'] == runs[1]['losses']
        return dict(
            runs=runs, identical_losses=identical, error=errors[-1:] or None)

    return collect


def parse_tables(text: str) -> List[dict]:
    """The Markdown tables of a tool's output, as header and rows."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith('|'):
            cells = [
                cell.strip() for cell in line.strip().strip('|').split('|')
            ]
            if current is None:
                current = dict(header=cells, rows=[])
                tables.append(current)
            elif not all(set(cell) <= set('-: ') for cell in cells):
                current['rows'].append(cells)
        else:
            current = None
    return tables


# ---------------------------------------------------------------------------
# setup
# ---------------------------------------------------------------------------
def imports_ok(env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        python('-c', IMPORT_CHECK),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300)


def distribution_of(wheel: str) -> str:
    return osp.basename(wheel).split('-')[0]


def is_installed(distribution: str) -> bool:
    if distribution == 'setuptools':  # an older one keeps pkg_resources
        return importlib.util.find_spec('pkg_resources') is not None
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def unpack_mmcv_source(source: str) -> str:
    """The mmcv source folder to build: a ``.tar.gz`` is unpacked into a
    temporary folder; its ``setup.py`` is switched to C++20 (torch >= 2.14's
    headers need it; ``tools/patch_mmcv_source.py``)."""
    if osp.isdir(source):
        folder = source
    else:
        import tarfile
        target = tempfile.mkdtemp(prefix='mmcv_src_')
        with tarfile.open(source) as archive:
            archive.extractall(target, filter='data')
        [folder] = glob.glob(osp.join(target, 'mmcv-*'))
    tools = osp.dirname(osp.dirname(osp.abspath(__file__)))
    if tools not in sys.path:
        sys.path.insert(0, tools)
    from patch_mmcv_source import patch_setup
    patch_setup(osp.join(folder, 'setup.py'))
    return folder


def write_stand_in_ext(package_dir: str) -> str:
    """Write the stand-in ``_ext.py`` into mmcv's package folder."""
    path = osp.join(package_dir, '_ext.py')
    with open(path, 'w') as f:
        f.write(STAND_IN_EXT)
    return path


#: the commands running now, each in a process group of its own; once
#: STOPPING is set, no command starts
RUNNING, STOPPING, RUNNING_LOCK = set(), threading.Event(), threading.RLock()


def stop(proc: subprocess.Popen) -> None:
    """End a command's process group: SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def stop_all_and_exit(signum, frame) -> None:
    """Stopped from outside: end the commands' groups too (they run in
    sessions of their own and would outlive this process)."""
    with RUNNING_LOCK:
        STOPPING.set()
        running = list(RUNNING)
    for proc in running:
        stop(proc)
    os._exit(128 + signum)  # the lanes' threads end with the process


class Check:
    """Runs the parts, keeps their results and writes the report."""

    def __init__(self, args):
        self.args = args
        self.start = time.time()
        self.deadline = self.start + args.budget
        self.lock = threading.Lock()
        self.results: List[dict] = []
        self.setup_info: dict = {}
        self.env = dict(
            os.environ,
            PYTHONUNBUFFERED='1',
            PYTHONPATH=os.pathsep.join(
                [ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
        if args.dry_run:
            # no CUDA, one thread per process: the CPU is shared
            self.env.update(
                CUDA_VISIBLE_DEVICES='',
                OMP_NUM_THREADS='1',
                MKL_NUM_THREADS='1')
        os.makedirs(args.out, exist_ok=True)
        self.log_path = osp.join(args.out, LOG)
        open(self.log_path, 'w').close()

    # -- running ----------------------------------------------------------
    def remaining(self) -> float:
        return self.deadline - time.time()

    def run_command(self, cmd: List[str], env: Dict[str, str], timeout: float,
                    stdout, stderr) -> Optional[int]:
        """Exit code, or None when ``timeout`` passed (process group
        killed)."""
        with RUNNING_LOCK:
            if STOPPING.is_set():
                return None
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True)
            RUNNING.add(proc)
        try:
            return proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            stop(proc)
            return None
        finally:
            RUNNING.discard(proc)

    def run_part(self, part: Part) -> dict:
        limit = min(part.limit_s, self.remaining() - 5)
        result = dict(
            name=part.name,
            title=part.title,
            show=part.show,
            limit_s=round(limit),
            commands=[shlex.join(cmd) for cmd in part.commands],
            returncodes=[],
            stdout='',
            stderr='')
        if limit < min(part.limit_s, 10):
            result.update(status='not run: budget spent', seconds=0, limit_s=0)
            return self.record(result)
        print(
            f'[gpu_check] {part.name}: started (limit {limit:.0f} s)',
            flush=True)
        env = dict(self.env, **part.env)
        start = time.time()
        status = 'ok'
        with tempfile.TemporaryFile('w+') as out, \
                tempfile.TemporaryFile('w+') as err:
            for cmd in part.commands:
                code = self.run_command(cmd, env, start + limit - time.time(),
                                        out, err)
                result['returncodes'].append(code)
                if code is None:
                    status = f'timed out after {limit:.0f} s'
                    break
                if code != 0:
                    status = f'failed (exit code {code})'
                    break
            for stream, key in ((out, 'stdout'), (err, 'stderr')):
                stream.seek(0)
                result[key] = stream.read()
        result.update(status=status, seconds=round(time.time() - start, 1))
        if part.collect is not None:
            try:
                result['measured'] = part.collect(result)
            except Exception as e:  # the report must still be written
                result['measured'] = dict(error=f'{type(e).__name__}: {e}')
        with self.lock, open(self.log_path, 'a') as log:
            log.write(f'\n===== {part.name}: {status} =====\n')
            for key in ('stdout', 'stderr'):
                log.write(f'----- {key} -----\n{result[key]}\n')
        print(
            f'[gpu_check] {part.name}: {status} ({result["seconds"]} s)',
            flush=True)
        return self.record(result)

    def record(self, result: dict) -> dict:
        result['tables'] = parse_tables(result['stdout']) \
            if result['stdout'] else []
        with self.lock:
            self.results.append(result)
            self.write_report()
        return result

    def run_phase(self, lanes: List[List[Part]]) -> None:

        def run_lane(parts):
            for part in parts:
                self.run_part(part)

        threads = [
            threading.Thread(target=run_lane, args=(lane, )) for lane in lanes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # -- setup ------------------------------------------------------------
    def setup(self) -> None:
        """Install the missing carried wheels; build mmcv unless it
        imports."""
        args, info = self.args, self.setup_info
        start = time.time()
        info.update(
            carry=args.carry, wheels_installed=[], mmcv='', stand_in=None)
        limit = min(args.setup_limit, self.remaining() - 10)
        wheels = sorted(glob.glob(osp.join(args.carry, 'wheels', '*.whl')))
        missing = [w for w in wheels if not is_installed(distribution_of(w))]
        pip = python('-m', 'pip', 'install', '--disable-pip-version-check',
                     '--no-index', '--no-deps', '--no-cache-dir')
        log = open(self.log_path, 'a')
        log.write('===== setup =====\n')
        log.flush()
        try:
            if missing:
                code = self.run_command(pip + ['--no-compile'] + missing,
                                        self.env, limit, log, log)
                if code != 0:
                    raise RuntimeError('installing the carried wheels failed '
                                       f'({code}); see {LOG}')
                info['wheels_installed'] = [
                    distribution_of(w) for w in missing
                ]
            check = imports_ok(self.env)
            if check.returncode == 0:
                info['mmcv'] = ('already installed (mmcv.ops imports): '
                                'build skipped')
            else:
                self.build_mmcv(pip, limit - (time.time() - start), log)
                check = imports_ok(self.env)
                if check.returncode != 0:
                    raise RuntimeError('mmcv, mmengine or mmseg does not '
                                       f'import:\n{check.stderr[-2000:]}')
            status = 'ok'
        except Exception as e:  # the report must still be written
            status = f'failed: {e}'
        finally:
            log.close()
        info.update(status=status, seconds=round(time.time() - start, 1))
        print(
            f'[gpu_check] setup: {status}; mmcv: {info["mmcv"]} '
            f'({info["seconds"]} s)',
            flush=True)
        with self.lock:
            self.write_report()

    def build_mmcv(self, pip: List[str], limit: float, log) -> None:
        args, info = self.args, self.setup_info
        sources = glob.glob(osp.join(args.carry, f'mmcv-{MMCV_VERSION}.*'))
        if not sources:
            raise FileNotFoundError(
                f'mmcv does not import and {args.carry} holds no '
                f'mmcv-{MMCV_VERSION} source: run '
                'tools/analysis/prepare_gpu_carry.sh on a machine with PyPI '
                'access and carry its folder.')
        env = dict(
            self.env,
            CUDA_VISIBLE_DEVICES='',  # else setup.py compiles the CUDA ops
            FORCE_CUDA='0',
            MMCV_WITH_OPS='1',
            MAX_JOBS=str(args.jobs),
            CFLAGS=BUILD_CFLAGS,
            PATH=osp.dirname(sys.executable) + os.pathsep +
            os.environ.get('PATH', ''))
        start = time.time()
        source = unpack_mmcv_source(sources[0])
        build = pip + ['--no-build-isolation', source]
        code = self.run_command(build, env, limit - 30, log, log)
        info['build_s'] = round(time.time() - start, 1)
        info['build'] = (f'MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS={args.jobs} '
                         f'CFLAGS="{BUILD_CFLAGS}", GPU hidden')
        if code == 0:
            info['mmcv'] = (f'built from source with its compiled CPU ops in '
                            f'{info["build_s"]:.0f} s ({args.jobs} jobs)')
            return
        why = 'timed out' if code is None else f'failed ({code})'
        env['MMCV_WITH_OPS'] = '0'
        code = self.run_command(build, env, 60, log, log)
        if code != 0:
            raise RuntimeError(f'the mmcv build {why}, and so did mmcv '
                               f'without ops ({code}); see {LOG}')
        importlib.invalidate_caches()
        spec = importlib.util.find_spec('mmcv')
        path = write_stand_in_ext(list(spec.submodule_search_locations)[0])
        info['stand_in'] = (
            f'the build with compiled ops {why} after {info["build_s"]:.0f} '
            f's: mmcv {MMCV_VERSION} is installed without ops and {path} is '
            'a stand-in whose every op raises (no model here calls one)')
        info['mmcv'] = 'Python code only, stand-in ops'

    # -- report -----------------------------------------------------------
    def write_report(self) -> None:
        env = next((r.get('measured', {})
                    for r in self.results if r['name'] == 'environment'), {})
        data = dict(
            mode='dry run (CPU, tiny sizes)' if self.args.dry_run else 'GPU',
            started_utc=datetime.datetime.fromtimestamp(
                self.start, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M'),
            elapsed_s=round(time.time() - self.start, 1),
            budget_s=self.args.budget,
            environment=env,
            setup=self.setup_info,
            parts=self.results)
        with open(osp.join(self.args.out, RESULTS), 'w') as f:
            json.dump(data, f, indent=1)
        with open(osp.join(self.args.out, REPORT), 'w') as f:
            f.write(format_report(data))


def format_report(data: dict) -> str:
    setup, env = data['setup'], data['environment']
    lines = [
        '# GPU check', '',
        f"{data['mode']}; started {data['started_utc']} UTC; "
        f"{data['elapsed_s']:.0f} s of a {data['budget_s']:.0f} s budget.", ''
    ]
    if env:
        lines += [
            f"Machine: {env.get('device')}; Python {env.get('python')}, "
            f"torch {env.get('torch')} (CUDA {env.get('cuda')}, cuDNN "
            f"{env.get('cudnn')}), mmcv {env.get('mmcv')} "
            f"({env.get('mmcv_ops')}), mmengine {env.get('mmengine')}, "
            f"mmsegmentation {env.get('mmseg')}.", ''
        ]
    lines += ['| part | status | seconds | limit (s) |', '|---|---|---|---|']
    if setup:
        lines.append(f"| setup | {setup.get('status', 'running')} | "
                     f"{setup.get('seconds', '')} | |")
    lines += [
        f"| {r['name']} | {r['status']} | {r['seconds']} | {r['limit_s']} |"
        for r in data['parts']
    ]
    if setup:
        lines += [
            '', '## Setup', '', f"- wheels installed from {setup['carry']}: "
            f"{', '.join(setup['wheels_installed']) or 'none needed'}",
            f"- mmcv: {setup['mmcv']}"
        ]
        if 'build' in setup:
            lines.append(f"- build: {setup['build']}, {setup['build_s']} s")
        lines.append(f"- stand-in: {setup['stand_in'] or 'none'}")
    for result in data['parts']:
        lines += [
            '', f"## {result['title']}", '', f"Status: {result['status']}"
            f" ({result['seconds']} s).", ''
        ]
        lines += [f'    {cmd}' for cmd in result['commands']]
        measured = result.get('measured')
        if measured and result['name'] not in ('environment', ):
            lines += [
                '', 'Measured:', '', '```json',
                json.dumps(measured, indent=1), '```'
            ]
        if result['show'] == 'markdown' and result['stdout'].strip():
            lines += ['', result['stdout'].strip()]
        elif result['stdout'].strip() or result['stderr'].strip():
            tail = (result['stdout'] + result['stderr']).strip()
            lines += ['', '```', *tail.splitlines()[-25:], '```']
        if result['status'] != 'ok' and result['stderr'].strip():
            lines += [
                '', 'Last lines of its error output:', '', '```',
                *result['stderr'].strip().splitlines()[-15:], '```'
            ]
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------
def print_environment() -> None:
    """One JSON line: versions, the GPU and how mmcv's ops were made."""
    import platform

    import mmcv
    import mmengine
    import mmseg
    import torch
    ext = importlib.util.find_spec('mmcv._ext')
    ops = 'compiled ops' if ext and not ext.origin.endswith('.py') \
        else 'stand-in ops'
    cuda = torch.cuda.is_available()
    info = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if cuda else None,
        device=(
            f'{torch.cuda.get_device_name(0)}, '
            f'{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f}'
            f' GiB' if cuda else 'CPU only') + f', {os.cpu_count()} CPUs',
        mmcv=mmcv.__version__,
        mmcv_ops=ops,
        mmengine=mmengine.__version__,
        mmseg=mmseg.__version__)
    print(json.dumps(info))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        '--out', help='folder of the report')
    parser.add_argument(
        '--carry',
        default='.gpu_carry',
        help='folder made by tools/analysis/prepare_gpu_carry.sh')
    parser.add_argument(
        '--budget',
        type=float,
        default=480,
        help='seconds for everything (default: 480)')
    parser.add_argument(
        '--setup-limit',
        type=float,
        default=240,
        help='seconds for the setup, the mmcv build included')
    parser.add_argument(
        '--jobs',
        type=int,
        default=os.cpu_count(),
        help='parallel compilations of the mmcv build')
    parser.add_argument(
        '--parts', nargs='+', help='run only these parts (after the setup)')
    parser.add_argument(
        '--dry-run',
        action='store_true',
        help='the same parts on the CPU at tiny sizes')
    parser.add_argument(
        '--environment', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.environment and not args.out:
        parser.error('--out is required: the folder of the report')
    args.carry = osp.join(ROOT, args.carry)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.environment:
        print_environment()
        return 0
    unknown = sorted(set(args.parts or []) - set(PART_NAMES))
    if unknown:
        raise SystemExit(f'--parts: unknown {unknown}; the parts are '
                         f'{list(PART_NAMES)}')
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop_all_and_exit)
    work = tempfile.mkdtemp(prefix='gpu_check_')
    check = Check(args)
    try:
        check.setup()
        try:  # after the setup: the plan reads the toy config with mmengine
            phases = plan(args, work)
        except Exception as e:  # the report must still say why
            phases = []
            check.setup_info['status'] += f'; no part can run: {e!r}'
            check.write_report()
        for phase in phases:
            lanes = [[
                p for p in lane
                if not args.parts or p.name in args.parts + ['environment']
            ] for lane in phase]
            check.run_phase([lane for lane in lanes if lane])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    statuses = [('setup', check.setup_info['status'])]
    statuses += [(r['name'], r['status']) for r in check.results]
    failed = [name for name, status in statuses if status != 'ok']
    print(
        f'[gpu_check] report: {osp.join(args.out, REPORT)}; '
        f'{len(statuses) - len(failed)} of {len(statuses)} parts ok' +
        (f', not ok: {failed}' if failed else ''),
        flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
