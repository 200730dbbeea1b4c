# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Two gloo processes, each with half of a global batch, against one process
holding the whole batch.

The data make the loss and its gradient independent of which negatives are
drawn: anchors (student features) of class ``c`` live in ``span(e_c, dims
5-7)`` while every negative candidate has a teacher feature ``s * e_4``
(``s > 0`` random), so all negative similarities are exactly 0 and their
gradient direction is the same. Prototypes mix ``e_4`` (labeled pixels) and
``e_c`` (reliable unlabeled pixels) with random weights. With
``num_anchors=None`` (all anchors) the per-rank values must then average to
the single-process value.

Unlabeled teacher probabilities take three exact entropy levels (one-hot,
two classes at 0.5, uniform) in the same proportions on every image, so the
entropy percentiles split pixels the same way per rank and globally.
"""
import socket

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

NUM_CLASSES = 4
CHANNELS = 8
HEIGHT, WIDTH = 4, 4
IGNORE = 255
WORLD_SIZE = 2
NUM_STEPS = 3
ALPHA = 20.
# classes 0-2 never overflow; class 3 overflows and exercises the quota
MEMORY_SIZE = [200, 200, 200, 3]


def loss_configs():
    common = dict(
        num_classes=NUM_CLASSES,
        feat_channels=CHANNELS,
        memory_size=MEMORY_SIZE,
        num_negatives=6,
        temperature=0.5,
        delta_p=0.3,
        rank_low=1,
        rank_high=3,
        loss_weight=0.1)
    return dict(
        exact=dict(common, num_anchors=None),
        sampled=dict(
            common,
            num_anchors=8,
            prototype_momentum=0.5,
            bank_dtype='bfloat16'))


def unlabeled_probs(generator):
    """One image: 6 one-hot, 4 two-way and 6 uniform pixels, shuffled."""
    rows = []
    for _ in range(6):
        row = torch.zeros(NUM_CLASSES)
        row[torch.randint(NUM_CLASSES, (1, ), generator=generator)] = 1.
        rows.append(row)
    for _ in range(4):
        row = torch.zeros(NUM_CLASSES)
        row[torch.randperm(NUM_CLASSES, generator=generator)[:2]] = 0.5
        rows.append(row)
    rows += [torch.full((NUM_CLASSES, ), 1. / NUM_CLASSES)] * 6
    order = torch.randperm(len(rows), generator=generator)
    probs = torch.stack(rows)[order]
    return probs.t().reshape(NUM_CLASSES, HEIGHT, WIDTH)


def make_global_batch(step):
    """``[labeled_0, labeled_1, unlabeled_0, unlabeled_1]`` of one step."""
    generator = torch.Generator().manual_seed(100 + step)
    num_images = 2 * WORLD_SIZE
    shape = (WORLD_SIZE, HEIGHT, WIDTH)
    probs_l = torch.softmax(
        3 * torch.randn(
            (WORLD_SIZE, NUM_CLASSES, HEIGHT, WIDTH), generator=generator),
        dim=1)
    labels_l = torch.randint(NUM_CLASSES, shape, generator=generator)
    ignored = torch.rand(shape, generator=generator) < 0.2
    labels_l = torch.where(ignored, torch.full_like(labels_l, IGNORE),
                           labels_l)
    probs_u = torch.stack(
        [unlabeled_probs(generator) for _ in range(WORLD_SIZE)])
    # pseudo-label: the rank-0 class (first of ties, like argmax)
    labels_u = probs_u.argmax(dim=1)
    probs = torch.cat([probs_l, probs_u])
    labels = torch.cat([labels_l, labels_u])

    one_hot = torch.nn.functional.one_hot(
        labels.clamp(max=NUM_CLASSES - 1), NUM_CLASSES).permute(0, 3, 1, 2)
    size = (num_images, 1, HEIGHT, WIDTH)
    student = torch.zeros(num_images, CHANNELS, HEIGHT, WIDTH)
    student[:, :NUM_CLASSES] = one_hot * (
        0.5 + torch.rand(size, generator=generator))
    student[:, 5:8] = torch.randn((num_images, 3, HEIGHT, WIDTH),
                                  generator=generator)
    teacher = torch.zeros(num_images, CHANNELS, HEIGHT, WIDTH)
    teacher[:, 4:5] = 0.5 + torch.rand(size, generator=generator)
    # reliable (one-hot) unlabeled pixels add their class direction
    confident = (probs.max(dim=1, keepdim=True).values == 1.) \
        & (torch.arange(num_images) >= WORLD_SIZE).reshape(-1, 1, 1, 1)
    teacher[:, :NUM_CLASSES] = one_hot * confident * (
        0.5 + torch.rand(size, generator=generator))
    return student, teacher, probs, labels


def rank_slice(tensor, rank):
    """Labeled image ``rank`` and unlabeled image ``rank``."""
    return torch.stack([tensor[rank], tensor[WORLD_SIZE + rank]])


def run_steps(losses, batches, rank=None):
    """Run every loss on every step; returns values, gradients, banks."""
    record = {name: dict(values=[], grads=[]) for name in losses}
    for batch in batches:
        if rank is not None:
            batch = [rank_slice(tensor, rank) for tensor in batch]
        student, teacher, probs, labels = batch
        num_labeled = 1 if rank is not None else WORLD_SIZE
        for name, loss in losses.items():
            student_in = student.clone().requires_grad_()
            value, _ = loss(student_in, teacher, probs, labels, num_labeled,
                            ALPHA)
            value.backward()
            record[name]['values'].append(value.detach())
            record[name]['grads'].append(student_in.grad)
    for name, loss in losses.items():
        record[name]['state'] = {
            key: value.clone()
            for key, value in loss.state_dict().items()
        }
        record[name]['bank'] = [
            loss.memory_bank.get(c).clone() for c in range(NUM_CLASSES)
        ]
    return record


def _worker(rank, port, out_dir, batches):
    torch.set_num_threads(1)
    torch_dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=WORLD_SIZE)
    try:
        from mmseg_u2pl.models.losses.contrastive_loss import \
            UnreliableContrastiveLoss
        torch.manual_seed(rank)  # ranks draw different random numbers
        losses = {
            name: UnreliableContrastiveLoss(**cfg)
            for name, cfg in loss_configs().items()
        }
        record = run_steps(losses, batches, rank=rank)
        torch.save(record, f'{out_dir}/rank{rank}.pt')
    finally:
        torch_dist.destroy_process_group()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    from mmseg_u2pl.models.losses.contrastive_loss import \
        UnreliableContrastiveLoss
    out_dir = tmp_path_factory.mktemp('contrastive_dist')
    batches = [make_global_batch(step) for step in range(NUM_STEPS)]
    mp.spawn(
        _worker,
        args=(free_port(), str(out_dir), batches),
        nprocs=WORLD_SIZE,
        join=True)
    ranks = [
        torch.load(out_dir / f'rank{rank}.pt', weights_only=False)
        for rank in range(WORLD_SIZE)
    ]
    torch.manual_seed(0)
    single = run_steps(
        {
            name: UnreliableContrastiveLoss(**cfg)
            for name, cfg in loss_configs().items()
        }, batches)
    return ranks, single


@pytest.mark.parametrize('name', ['exact', 'sampled'])
def test_banks_identical_on_all_ranks(results, name):
    ranks, _ = results
    state_0, state_1 = ranks[0][name]['state'], ranks[1][name]['state']
    assert set(state_0) == set(state_1)
    for key in state_0:
        assert torch.equal(state_0[key], state_1[key]), key
    # something was pushed, and class 3 overflowed its capacity of 3
    assert state_0['memory_bank.fill'].tolist()[3] == 3
    assert min(state_0['memory_bank.fill'].tolist()[:3]) > 0


def test_bank_holds_the_global_candidates(results):
    ranks, single = results
    for c in range(3):  # classes that never overflow
        dist_rows = ranks[0]['exact']['bank'][c]
        single_rows = single['exact']['bank'][c]
        assert dist_rows.shape == single_rows.shape
        # same rows, possibly in another order
        dist_sorted = dist_rows[torch.argsort(dist_rows[:, 4])]
        single_sorted = single_rows[torch.argsort(single_rows[:, 4])]
        torch.testing.assert_close(dist_sorted, single_sorted)


def test_mean_over_ranks_equals_single_process_loss(results):
    ranks, single = results
    values = single['exact']['values']
    assert all(value > 0 for value in values)
    for step in range(NUM_STEPS):
        per_rank = [rank['exact']['values'][step] for rank in ranks]
        mean = sum(per_rank) / WORLD_SIZE
        torch.testing.assert_close(mean, values[step], atol=1e-6, rtol=1e-5)
        # DDP averages gradients over ranks: the result must be the
        # single-process gradient of the whole batch
        grad = single['exact']['grads'][step]
        for rank in range(WORLD_SIZE):
            torch.testing.assert_close(
                ranks[rank]['exact']['grads'][step] / WORLD_SIZE,
                rank_slice(grad, rank),
                atol=1e-7,
                rtol=1e-5)


def test_momentum_prototypes_agree(results):
    ranks, single = results
    # prototypes only depend on all-reduced sums: equal to one process
    torch.testing.assert_close(ranks[0]['sampled']['state']['prototype'],
                               single['sampled']['state']['prototype'])
