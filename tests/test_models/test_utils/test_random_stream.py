# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Tests of ``separate_random_stream``: draws aside from the main stream."""
import pytest
import torch
from mmengine.logging import MessageHub

from mmseg_u2pl.models.heads.representation_head import RepresentationHead
from mmseg_u2pl.models.utils.random_stream import (current_iteration,
                                                   derived_seed,
                                                   separate_random_stream)


@pytest.fixture
def seeded():
    state = torch.get_rng_state()
    torch.manual_seed(7)
    yield
    torch.set_rng_state(state)


def test_main_stream_continues_as_if_nothing_was_drawn(seeded):
    expected = torch.rand(5)  # what the main stream draws next
    torch.manual_seed(7)
    with separate_random_stream('branch', 3):
        inside = torch.rand(5)
        torch.nn.functional.dropout(torch.ones(100), 0.5)
    assert torch.equal(torch.rand(5), expected)
    assert not torch.equal(inside, expected)
    assert torch.initial_seed() == 7


def test_stream_depends_on_run_seed_and_keys_only(seeded):
    with separate_random_stream('branch', 3):
        first = torch.rand(4)
    torch.rand(10)  # the main stream moved on: no effect on the branch
    with separate_random_stream('branch', 3):
        again = torch.rand(4)
    with separate_random_stream('branch', 4):
        next_iter = torch.rand(4)
    with separate_random_stream('other', 3):
        other_key = torch.rand(4)
    torch.manual_seed(8)
    with separate_random_stream('branch', 3):
        other_seed = torch.rand(4)
    assert torch.equal(first, again)
    for different in (next_iter, other_key, other_seed):
        assert not torch.equal(first, different)
    # a 63-bit seed, a pure function of (run seed, keys)
    torch.manual_seed(7)
    seed = derived_seed('branch', 3)
    assert 0 <= seed < 2**63 and seed == derived_seed('branch', 3)


def test_current_iteration_reads_the_message_hub():
    hub = MessageHub.get_instance('test_random_stream_iter')
    hub.update_info('iter', 41)
    assert current_iteration() == 41


def test_representation_head_initialisation_keeps_main_stream(seeded):
    """An ``init_cfg`` draws from the head's own stream, twice the same."""
    heads = [
        RepresentationHead(
            in_channels=4,
            channels=8,
            out_channels=3,
            init_cfg=dict(type='Normal', std=0.5, layer='Conv2d'))
        for _ in range(2)
    ]
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    for head in heads:
        head.init_weights()
    assert torch.equal(torch.rand(3), expected)
    first, second = (head.conv_rep.weight for head in heads)
    assert torch.equal(first, second)
    assert first.std() > 0.3  # the Normal(std=0.5) init ran


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_generator_is_forked_too(seeded):
    torch.cuda.manual_seed(7)
    expected = torch.rand(5, device='cuda')
    torch.cuda.manual_seed(7)
    with separate_random_stream('branch', 0, device='cuda'):
        torch.rand(5, device='cuda')
    assert torch.equal(torch.rand(5, device='cuda'), expected)


def test_per_rank_streams_differ_between_ranks_only(seeded, monkeypatch):
    from mmseg_u2pl.models.utils import random_stream

    def draw(world_size, rank, per_rank=True):
        monkeypatch.setattr(random_stream, 'get_world_size',
                            lambda: world_size)
        monkeypatch.setattr(random_stream, 'get_rank', lambda: rank)
        with separate_random_stream('branch', 3, per_rank=per_rank):
            return torch.rand(4)

    single = draw(1, 0, per_rank=False)
    # one process: the same stream as without per_rank
    assert torch.equal(draw(1, 0), single)
    # several: every rank its own, reproducible, stream
    rank0, rank1 = draw(2, 0), draw(2, 1)
    assert not torch.equal(rank0, rank1)
    assert torch.equal(draw(2, 1), rank1)
    # without per_rank all ranks share the stream
    assert torch.equal(draw(2, 1, per_rank=False), single)
