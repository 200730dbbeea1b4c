# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import collections

import pytest
import torch

from mmseg_u2pl.models.losses.memory_bank import CategoryMemoryBank


def rows(*values, dim=2):
    """Feature rows whose entries all equal the given values."""
    return torch.tensor(
        values, dtype=torch.float32).unsqueeze(1).repeat(1, dim)


def ids(*values):
    return torch.tensor(values, dtype=torch.long)


def live_values(bank, class_id):
    """First coordinate of every live entry of a class, oldest first."""
    return bank.get(class_id)[:, 0].tolist()


def test_fifo_order_and_wraparound():
    bank = CategoryMemoryBank(num_classes=1, feat_channels=2, capacity=3)
    bank.push(ids(0, 0), rows(1, 2))
    assert live_values(bank, 0) == [1, 2]
    assert bank.fill.tolist() == [2] and bank.ptr.tolist() == [2]
    bank.push(ids(0, 0), rows(3, 4))
    # the oldest entry (1) was overwritten, order stays oldest first
    assert live_values(bank, 0) == [2, 3, 4]
    assert bank.fill.tolist() == [3] and bank.ptr.tolist() == [1]
    bank.push(ids(0), rows(5))
    assert live_values(bank, 0) == [3, 4, 5]


def test_per_class_capacities_with_interleaved_rows():
    bank = CategoryMemoryBank(
        num_classes=4, feat_channels=2, capacity=[3, 1, 2, 2])
    bank.push(ids(0, 1, 2, 1, 0), rows(10, 11, 12, 13, 14))
    assert live_values(bank, 0) == [10, 14]
    # two rows for a class of capacity 1: the last one is kept
    assert live_values(bank, 1) == [13]
    assert live_values(bank, 2) == [12]
    assert bank.get(3).shape == (0, 2)
    assert bank.fill.tolist() == [2, 1, 1, 0]
    torch.testing.assert_close(bank.fill_ratio(),
                               torch.tensor([2 / 3, 1., 0.5, 0.]))
    # queues are independent regions of one flat buffer
    assert bank.features.shape == (8, 2)


def test_overflow_within_one_push_keeps_last_rows():
    bank = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=3)
    bank.push(ids(0, 0), rows(1, 2))
    bank.push(ids(0, 1, 0, 0, 0, 0), rows(3, 100, 4, 5, 6, 7))
    assert live_values(bank, 0) == [5, 6, 7]
    assert live_values(bank, 1) == [100]
    bank.push(ids(0), rows(8))
    assert live_values(bank, 0) == [6, 7, 8]


def test_matches_a_deque_on_random_pushes():
    generator = torch.Generator().manual_seed(0)
    capacities = [4, 1, 7]
    bank = CategoryMemoryBank(
        num_classes=3, feat_channels=3, capacity=capacities)
    queues = [collections.deque(maxlen=size) for size in capacities]
    counter = 0
    for _ in range(30):
        num = int(torch.randint(0, 12, (1, ), generator=generator))
        class_ids = torch.randint(0, 3, (num, ), generator=generator)
        values = torch.arange(counter, counter + num, dtype=torch.float32)
        counter += num
        bank.push(class_ids, values.unsqueeze(1).repeat(1, 3))
        for class_id, value in zip(class_ids.tolist(), values.tolist()):
            queues[class_id].append(value)
        for class_id, queue in enumerate(queues):
            assert live_values(bank, class_id) == list(queue)
        assert bank.fill.tolist() == [len(queue) for queue in queues]


def test_sample_draws_only_live_entries():
    bank = CategoryMemoryBank(num_classes=3, feat_channels=2, capacity=4)
    bank.push(ids(0, 0, 0, 0, 0, 0, 1), rows(1, 2, 3, 4, 5, 6, 9))
    feats, valid = bank.sample(400)
    assert feats.shape == (3, 400, 2)
    assert valid.tolist() == [True, True, False]
    # class 0 is full (3..6): uniform draws cover all four entries
    assert set(feats[0, :, 0].tolist()) == {3., 4., 5., 6.}
    assert set(feats[1, :, 0].tolist()) == {9.}
    # a partly filled queue never yields its empty slots
    bank.push(ids(2, 2), rows(7, 8))
    feats, valid = bank.sample_for(ids(2, 2, 1), 300)
    assert feats.shape == (3, 300, 2) and valid.all()
    assert set(feats[:2, :, 0].flatten().tolist()) == {7., 8.}


def test_sample_with_generator_is_reproducible():
    bank = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=8)
    bank.push(ids(*[0] * 8 + [1] * 5), rows(*range(13)))
    first, _ = bank.sample(16, generator=torch.Generator().manual_seed(3))
    second, _ = bank.sample(16, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, second)


def test_state_dict_round_trip():
    bank = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=[3, 2])
    bank.push(ids(0, 1, 0, 0, 0, 1, 1), rows(1, 2, 3, 4, 5, 6, 7))
    state = bank.state_dict()
    assert set(state) == {'features', 'ptr', 'fill'}
    fresh = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=[3, 2])
    fresh.load_state_dict(state)
    for class_id in range(2):
        torch.testing.assert_close(fresh.get(class_id), bank.get(class_id))
    # the restored ring continues exactly where the original stopped
    bank.push(ids(0, 1), rows(8, 9))
    fresh.push(ids(0, 1), rows(8, 9))
    assert live_values(fresh, 0) == live_values(bank, 0) == [4, 5, 8]
    assert live_values(fresh, 1) == live_values(bank, 1) == [7, 9]


def test_state_dict_with_other_capacity_is_rejected():
    bank = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=3)
    other = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=4)
    with pytest.raises(RuntimeError, match='features'):
        other.load_state_dict(bank.state_dict())


def test_dtype_conversion_and_storage_dtype():
    bank = CategoryMemoryBank(
        num_classes=2, feat_channels=2, capacity=3, dtype=torch.float16)
    bank.push(ids(1, 1), rows(1.5, 2.5))
    assert bank.features.dtype == torch.float16
    bank = bank.to(torch.float64)
    assert bank.dtype == torch.float64
    assert bank.ptr.dtype == torch.long and bank.fill.dtype == torch.long
    assert live_values(bank, 1) == [1.5, 2.5]
    bank.push(ids(1), rows(3.5))
    assert live_values(bank, 1) == [1.5, 2.5, 3.5]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_move_to_cuda():
    bank = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=3)
    bank.push(ids(0, 1), rows(1, 2))
    bank = bank.cuda()
    for name in ('features', 'ptr', 'fill', 'capacity', 'offsets'):
        assert getattr(bank, name).is_cuda
    bank.push(ids(0, 0, 0).cuda(), rows(3, 4, 5).cuda())
    assert live_values(bank, 0) == [3, 4, 5]
    feats, valid = bank.sample(5)
    assert feats.is_cuda and valid.tolist() == [True, True]


@pytest.mark.parametrize('kwargs, match', [
    (dict(capacity=[3, 3, 3]), 'capacity'),
    (dict(capacity=0), 'capacity'),
    (dict(feat_channels=0), 'feat_channels'),
])
def test_bad_arguments(kwargs, match):
    args = dict(num_classes=2, feat_channels=2, capacity=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        CategoryMemoryBank(**args)


def test_bad_push_inputs():
    bank = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=3)
    with pytest.raises(ValueError, match=r'class ids must lie in \[0, 2\)'):
        bank.push(ids(0, 2), rows(1, 2))
    with pytest.raises(ValueError, match='feats must have shape'):
        bank.push(ids(0, 1), rows(1, 2, dim=3))
    with pytest.raises(TypeError, match='integer'):
        bank.push(torch.zeros(2), rows(1, 2))
    with pytest.raises(ValueError, match='class_id'):
        bank.get(5)


# ----------------------------------------------------------------------
# numerical safety: non-finite rows, reverted pushes


def test_non_finite_rows_never_enter_the_bank():
    bank = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=3)
    nan, inf = float('nan'), float('inf')
    feats = rows(1, nan, 2, 3, inf, 4)
    feats[5, 1] = -inf  # one bad channel is enough
    bank.push(ids(0, 0, 1, 0, 1, 1), feats)
    # class 0 keeps 1, 3; class 1 keeps 2 (4 had -inf in a channel)
    assert live_values(bank, 0) == [1, 3]
    assert live_values(bank, 1) == [2]
    assert bank.fill.tolist() == [2, 1] and bank.ptr.tolist() == [2, 1]
    assert torch.isfinite(bank.features).all()
    # a finite value that overflows the storage dtype is dropped too
    half = CategoryMemoryBank(
        num_classes=1, feat_channels=2, capacity=2, dtype=torch.float16)
    half.push(ids(0, 0), rows(1e6, 5))
    assert live_values(half, 0) == [5]
    # only bad rows: nothing moves
    bank.push(ids(0, 1), rows(nan, inf))
    assert bank.fill.tolist() == [2, 1] and bank.ptr.tolist() == [2, 1]


def test_push_is_sampled_at_once():
    bank = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=3)
    bank.push(ids(0, 0, 0), rows(1, 2, 3))
    bank.push(ids(0, 1), rows(7, 8))
    # sampling sees the queues after the push: 7 replaced the oldest (1)
    feats, valid = bank.sample(300)
    assert valid.tolist() == [True, True]
    assert set(feats[0, :, 0].tolist()) == {2., 3., 7.}
    assert set(feats[1, :, 0].tolist()) == {8.}
    torch.testing.assert_close(bank.fill_ratio(), torch.tensor([1., 1 / 3]))
    bank.end_step(keep=True)
    assert live_values(bank, 0) == [2, 3, 7] and live_values(bank, 1) == [8]
    assert bank.ptr.tolist() == [1, 1]
    bank.end_step(keep=False)  # nothing left to revert: no-op
    assert live_values(bank, 0) == [2, 3, 7] and live_values(bank, 1) == [8]


def test_reverted_push_leaves_the_bank_bytewise_unchanged():
    bank = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=2)
    bank.push(ids(0, 1), rows(1, 2))
    bank.end_step(keep=True)
    before = {k: v.clone() for k, v in bank.state_dict().items()}
    # class 0 wraps around its ring, overwriting 1
    bank.push(ids(0, 0, 1), rows(5, 6, 7))
    assert live_values(bank, 0) == [5, 6]
    bank.end_step(keep=False)
    for key, value in bank.state_dict().items():
        assert torch.equal(value, before[key]), key
    feats, _ = bank.sample(50)
    assert set(feats[0, :, 0].tolist()) == {1.}
    assert live_values(bank, 0) == [1] and live_values(bank, 1) == [2]
    # only the last push is reverted
    bank.push(ids(1), rows(3))
    bank.push(ids(1), rows(4))
    bank.end_step(keep=False)
    assert live_values(bank, 1) == [2, 3]


def test_push_from_a_table_by_index():
    """``push(ids, table, index)`` equals pushing ``table[index]``."""
    table = rows(10, 20, float('nan'), 40)
    class_ids, index = ids(0, 1, 0, 1, 0), ids(3, 0, 2, 3, 1)
    by_index = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=2)
    by_index.push(class_ids, table, index)
    by_rows = CategoryMemoryBank(num_classes=2, feat_channels=2, capacity=2)
    by_rows.push(class_ids, table[index])
    for key, value in by_rows.state_dict().items():
        assert torch.equal(by_index.state_dict()[key].nan_to_num(-1),
                           value.nan_to_num(-1)), key
    # class 0 got 40, NaN (dropped), 20; class 1 got 10, 40
    assert live_values(by_index, 0) == [40, 20]
    assert live_values(by_index, 1) == [10, 40]
    with pytest.raises(
            ValueError,
            match='index must be an integer tensor '
            r'of shape \(2,\)'):
        by_index.push(ids(0, 1), table, ids(0))
    with pytest.raises(ValueError, match=r'feats must have shape \(R, 2\)'):
        by_index.push(ids(0), torch.zeros(4, 3), ids(0))
