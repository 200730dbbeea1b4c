# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""tools/analysis/gpu_check.py: its CPU dry run end to end, the plan of the
GPU run, and what keeps one part from losing the others."""
import argparse
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import time

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO_ROOT, 'tools', 'analysis', 'gpu_check.py')
spec = importlib.util.spec_from_file_location('gpu_check', TOOL)
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)

PARTS = gpu_check.PART_NAMES


def test_cuda_only_tests_are_found():
    ids = gpu_check.cuda_only_tests()
    for test in ('tests/test_models/test_segmentors/test_u2pl.py::'
                 'test_semi_step_on_cuda',
                 'tests/test_models/test_losses/test_memory_bank.py::'
                 'test_move_to_cuda',
                 'tests/test_engine/test_mean_teacher_hook.py::'
                 'test_update_on_cuda'):
        assert test in ids, ids
    # CPU-only tests (skipped *with* CUDA) are not among them
    assert not any('test_train_test.py' in test for test in ids), ids


def plan_of(dry_run, tmp_path):
    args = argparse.Namespace(dry_run=dry_run)
    return [
        part for phase in gpu_check.plan(args, str(tmp_path)) for lane in phase
        for part in lane
    ]


def test_gpu_plan_uses_what_the_dry_run_runs(tmp_path):
    """The GPU commands exist and pass no option the dry run leaves out."""
    gpu, dry = plan_of(False, tmp_path), plan_of(True, tmp_path)
    assert [p.name for p in gpu] == [p.name for p in dry]
    assert sorted(p.name for p in gpu) == sorted(PARTS)
    for gpu_part, dry_part in zip(gpu, dry):
        assert len(gpu_part.commands) == len(dry_part.commands)
        for gpu_cmd, dry_cmd in zip(gpu_part.commands, dry_part.commands):
            assert gpu_cmd[1] == dry_cmd[1]  # the same script
            assert osp.isfile(osp.join(REPO_ROOT, gpu_cmd[1])) or \
                gpu_cmd[1] == '-m', gpu_cmd
            options = {a for a in gpu_cmd if a.startswith('--')}
            assert options - {'--preset'} <= set(dry_cmd), (gpu_cmd, dry_cmd)
            for arg in gpu_cmd:
                if arg.startswith('configs/'):
                    assert osp.isfile(osp.join(REPO_ROOT, arg)), arg
    step = next(p for p in gpu if p.name == 'step').commands[0]
    assert step[step.index('--crop') + 1] == '513'
    assert step[step.index('--batch') + 1] == '4'


def test_a_slow_part_is_stopped_and_the_next_one_runs(tmp_path):
    args = argparse.Namespace(out=str(tmp_path), budget=60, dry_run=True)
    check = gpu_check.Check(args)
    # a child that would outlive its parent, were the group not killed
    slow = gpu_check.Part('slow', 'Slow',
                          [['sh', '-c', 'sleep 60 & echo $!; wait']], 3)
    start = time.time()
    result = check.run_part(slow)
    assert time.time() - start < 20
    assert result['status'] == 'timed out after 3 s'
    assert result['returncodes'] == [None]
    child = int(result['stdout'].split()[0])
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f'the child {child} of the stopped part still runs')
    fast = gpu_check.Part('fast', 'Fast',
                          [gpu_check.python('-c', 'print("| a |\\n|---|")')],
                          30)
    assert check.run_part(fast)['status'] == 'ok'
    with open(tmp_path / gpu_check.RESULTS) as f:
        data = json.load(f)
    assert [(p['name'], p['status'])
            for p in data['parts']] == [('slow', 'timed out after 3 s'),
                                        ('fast', 'ok')]
    assert data['parts'][1]['tables'] == [dict(header=['a'], rows=[])]
    report = (tmp_path / gpu_check.REPORT).read_text()
    assert '| slow | timed out after 3 s |' in report
    # what is left of the budget limits a part; none left: not run
    check.deadline = time.time() + 8
    assert check.run_part(fast)['status'] == 'not run: budget spent'


def test_stand_in_ops_raise(tmp_path):
    path = gpu_check.write_stand_in_ext(str(tmp_path))
    spec = importlib.util.spec_from_file_location('_ext', path)
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    # mmcv's ext_loader only checks that the functions exist
    assert hasattr(ext, 'nms') and hasattr(ext, 'roi_align_forward')
    with pytest.raises(NotImplementedError, match="mmcv op 'nms'.*stand-in"):
        ext.nms()
    assert not hasattr(ext, '__wrapped__')


def test_dry_run(tmp_path):
    """Every part runs on the CPU at tiny sizes and is reported."""
    out = tmp_path / 'out'
    env = dict(os.environ)
    env.pop('CUDA_VISIBLE_DEVICES', None)
    start = time.time()
    proc = subprocess.run([
        sys.executable, TOOL, '--dry-run', '--out',
        str(out), '--budget', '500'
    ],
                          cwd=REPO_ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
    seconds = time.time() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == sorted(
        [gpu_check.REPORT, gpu_check.RESULTS, gpu_check.LOG])
    with open(out / gpu_check.RESULTS) as f:
        data = json.load(f)
    parts = {p['name']: p for p in data['parts']}
    assert sorted(parts) == sorted(PARTS)
    assert {
        name: p['status']
        for name, p in parts.items()
    } == {
        name: 'ok'
        for name in PARTS
    }
    assert data['elapsed_s'] <= seconds

    # setup: everything imports here, nothing to build, no stand-in
    setup = data['setup']
    assert setup['status'] == 'ok' and setup['stand_in'] is None
    assert setup['mmcv'].startswith('already installed')
    assert parts['environment']['measured']['mmcv_ops'] == 'compiled ops'
    assert parts['environment']['measured']['device'].startswith('CPU only')

    # every CUDA-only test ran and skipped (the dry run hides CUDA)
    counts = parts['cuda_tests']['measured']['counts']
    assert counts['skipped'] == len(gpu_check.cuda_only_tests()), counts
    assert not {'passed', 'failed', 'error', 'errors'} & set(counts), counts

    # the trainings: all iterations, finite losses; deterministic twice:
    # the same losses
    for run in parts['training']['measured'].values():
        assert run['iterations'] == 2 and run['finite'], run
    assert sorted(
        parts['training']['measured']) == ['amp', 'amp_channels_last']
    determinism = parts['determinism']['measured']
    assert determinism['identical_losses'] is True, determinism

    # benchmarks: AMP off and on (and both layouts for the step time)
    step = parts['step']['stdout']
    assert step.count('device: cpu, AMP:') == 4
    assert 'AMP: on, channels-last: on' in step
    assert sum(t['header'][0] == 'step' for t in parts['step']['tables']) == 4
    for name in ('memory_voc', 'memory_cityscapes'):
        results = parts[name]['measured']['results']
        runs = sorted((r['variant'], r['amp']) for r in results)
        assert runs == [('u2pl', False), ('u2pl', True)]
    assert parts['contrastive']['stdout'].count('| one U2PL iteration |') \
        == 2
    syncs = parts['syncs']['stdout']
    assert 'u2pl (cpu, AMP off' in syncs and 'u2pl (cpu, AMP on' in syncs

    report = (out / gpu_check.REPORT).read_text()
    assert report.startswith('# GPU check\n\ndry run (CPU, tiny sizes)')
    assert '- stand-in: none' in report
    for name in PARTS:
        assert f'| {name} | ok |' in report
    assert '| floor (supervised + teacher forward on B_u) |' in report


def test_mmcv_source_is_unpacked_and_switched_to_cxx20(tmp_path):
    import tarfile
    line = "            extra_compile_args['cxx'] = ['-std=c++17']\n"
    src = tmp_path / 'mmcv-2.1.0'
    src.mkdir()
    (src / 'setup.py').write_text('import os\n' + line + 'x = 1\n')
    archive = tmp_path / 'mmcv-2.1.0.tar.gz'
    with tarfile.open(archive, 'w:gz') as tar:
        tar.add(src, arcname='mmcv-2.1.0')
    folder = gpu_check.unpack_mmcv_source(str(archive))
    with open(osp.join(folder, 'setup.py')) as f:
        text = f.read()
    assert "['-std=c++20']" in text and 'c++17' not in text
    # a source without the line is refused, naming the file
    (src / 'setup.py').write_text('import os\n')
    with pytest.raises(ValueError, match='setup.py'):
        gpu_check.unpack_mmcv_source(str(src))
