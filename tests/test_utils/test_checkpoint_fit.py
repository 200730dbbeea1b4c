# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Checkpoint fit: a checkpoint of another architecture or class count is
refused before mmengine would load it partially."""
import copy

import pytest
import torch
from toy_fixtures import build_model, tiny_segmentor_cfg, tiny_u2pl_cfg

from mmseg_u2pl.utils.checkpoint_fit import (CheckpointMismatchError,
                                             check_checkpoint_file,
                                             check_checkpoint_fits,
                                             compare_checkpoint)


@pytest.fixture(scope='module')
def networks():
    """Tiny U2PL (with representation head and memory bank) and plain
    ResNet-18 / ResNet-34 / 3-class mmseg segmentors of the same shape."""
    r34 = tiny_segmentor_cfg()
    r34['backbone']['depth'] = 34
    return dict(
        u2pl=build_model(tiny_u2pl_cfg(with_contrast=True)),
        r18=build_model(tiny_segmentor_cfg()),
        r34=build_model(r34),
        three_classes=build_model(tiny_segmentor_cfg(num_classes=3)))


def test_own_and_plain_checkpoints_fit(networks):
    u2pl, r18 = networks['u2pl'], networks['r18']
    own = check_checkpoint_fits(u2pl, dict(state_dict=u2pl.state_dict()),
                                'u2pl.pth')
    assert own.absent_components == []
    assert own.num_matched == len(u2pl.state_dict())
    # DDP's `module.` prefix is removed as mmengine does
    wrapped = {'module.' + k: v for k, v in r18.state_dict().items()}
    assert check_checkpoint_fits(r18, wrapped,
                                 'ddp.pth').num_matched == len(wrapped)
    # a plain mmseg checkpoint fills student and teacher; the U2PL-only
    # components keep their initialisation
    plain = check_checkpoint_fits(u2pl, dict(state_dict=r18.state_dict()),
                                  'plain.pth')
    assert plain.absent_components == [
        'student.representation_head', 'teacher.representation_head',
        'contrastive_loss'
    ]
    assert plain.num_matched == 2 * len(r18.state_dict())
    # torch, really loading it, agrees
    result = copy.deepcopy(u2pl).load_state_dict(
        r18.state_dict(), strict=False)
    assert result.unexpected_keys == []
    absent = tuple(c + '.' for c in plain.absent_components)
    # (BN fills num_batches_tracked of a state without version metadata)
    assert sorted(result.missing_keys) == sorted(
        k for k in u2pl.state_dict()
        if k.startswith(absent) and 'num_batches_tracked' not in k)
    assert len(result.missing_keys) > 0


def test_checkpoint_of_a_deeper_backbone_is_refused(networks):
    # ResNet-34 has 8 BasicBlocks more than ResNet-18 (1 + 2 + 4 + 1), each
    # with 12 tensors (2 convs, 2 BNs of 5 tensors)
    diff = compare_checkpoint(networks['r18'], networks['r34'].state_dict())
    assert len(diff.unexpected) == 96 and not diff.missing
    assert diff.unexpected[0] == 'backbone.layer1.2.conv1.weight'
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(networks['r18'],
                              dict(state_dict=networks['r34'].state_dict()),
                              'work_dirs/r34.pth')
    message = str(info.value)
    assert message.startswith(
        "Checkpoint 'work_dirs/r34.pth' does not fit the model "
        '(EncoderDecoder)')
    assert ('96 weight(s) of the file have no place in the model: '
            'backbone.layer1.2.conv1.weight, backbone.layer1.2.bn1.weight, '
            'backbone.layer1.2.bn1.bias, backbone.layer1.2.bn1.running_mean, '
            'backbone.layer1.2.bn1.running_var, ... (91 more)') in message
    assert 'set `allow_checkpoint_mismatch=True`' in message


def test_checkpoint_of_a_shallower_backbone_is_refused(networks):
    # the other way round the blocks are missing (num_batches_tracked is
    # not counted: 8 x 10), inside a backbone the file does fill
    diff = compare_checkpoint(networks['r34'], networks['r18'].state_dict())
    assert len(diff.missing) == 80 and not diff.unexpected
    assert diff.absent_components == []
    with pytest.raises(
            CheckpointMismatchError,
            match=r'80 weight\(s\) of the model are missing from the file: '
            r'backbone\.layer1\.2\.conv1\.weight'):
        check_checkpoint_fits(networks['r34'], networks['r18'].state_dict(),
                              'r18.pth')


def test_other_class_count_names_the_shapes(networks):
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(
            networks['u2pl'],
            dict(state_dict=networks['three_classes'].state_dict()), 'voc.pth')
    message = str(info.value)
    assert ('4 weight(s) have another shape: '
            'student.decode_head.conv_seg.weight (3, 16, 1, 1) in the file, '
            '(6, 16, 1, 1) in the model; student.decode_head.conv_seg.bias '
            '(3,) in the file, (6,) in the model; teacher.') in message
    assert 'no place in the model' not in message


def test_mean_teacher_checkpoint_for_a_plain_model(networks):
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(networks['r18'],
                              dict(state_dict=networks['u2pl'].state_dict()),
                              'u2pl.pth')
    message = str(info.value)
    assert 'Not one weight of the model is in the file.' in message
    assert 'tools/model_converters/export_checkpoint.py' in message
    with pytest.raises(CheckpointMismatchError, match='Not one weight'):
        check_checkpoint_fits(networks['r18'], dict(state_dict={}), 'e.pth')


def test_check_checkpoint_file(networks, tmp_path):
    path = str(tmp_path / 'r18.pth')
    torch.save(dict(state_dict=networks['r18'].state_dict()), path)
    assert check_checkpoint_file(networks['u2pl'], path).num_matched == 2 * (
        len(networks['r18'].state_dict()))
    with pytest.raises(CheckpointMismatchError, match='r18.pth'):
        check_checkpoint_file(networks['r34'], path)
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        check_checkpoint_file(networks['r18'], str(tmp_path / 'absent.pth'))
