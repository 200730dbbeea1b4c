# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Teacher updates: match the two networks' tensors, copy, average."""
from typing import List, Tuple

import torch
from torch import Tensor, nn


def paired_tensors(teacher: nn.Module, student: nn.Module,
                   kind: str) -> List[Tuple[Tensor, Tensor]]:
    """Match the teacher's and the student's tensors by name.

    Args:
        teacher (nn.Module): The teacher network.
        student (nn.Module): The student network.
        kind (str): ``'parameters'`` or ``'buffers'``.

    Returns:
        list[tuple[Tensor, Tensor]]: ``(teacher_tensor, student_tensor)``
        pairs in the teacher's order.

    Raises:
        ValueError: If the two networks differ in names or shapes.
    """
    named = f'named_{kind}'
    teacher_named = dict(getattr(teacher, named)())
    student_named = dict(getattr(student, named)())
    if teacher_named.keys() != student_named.keys():
        only_teacher = sorted(teacher_named.keys() - student_named.keys())
        only_student = sorted(student_named.keys() - teacher_named.keys())
        raise ValueError(
            f'MeanTeacherHook: teacher and student {kind} differ by name; '
            f'only in teacher: {only_teacher[:10]}, only in student: '
            f'{only_student[:10]}. The teacher must be built from the same '
            'segmentor config as the student.')
    pairs = []
    for name, teacher_tensor in teacher_named.items():
        student_tensor = student_named[name]
        if teacher_tensor.shape != student_tensor.shape:
            raise ValueError(
                f'MeanTeacherHook: {kind[:-1]} "{name}" has shape '
                f'{tuple(teacher_tensor.shape)} in the teacher but '
                f'{tuple(student_tensor.shape)} in the student. The teacher '
                'must be built from the same segmentor config as the '
                'student.')
        pairs.append((teacher_tensor, student_tensor))
    return pairs


@torch.no_grad()
def copy_tensors(pairs: List[Tuple[Tensor, Tensor]]) -> None:
    """Copy each student tensor into its teacher tensor, in place.

    Args:
        pairs (list[tuple[Tensor, Tensor]]): ``(teacher, student)`` pairs.
    """
    if not pairs:
        return
    teacher, student = zip(*pairs)
    if hasattr(torch, '_foreach_copy_'):
        torch._foreach_copy_(list(teacher), list(student))
    else:  # pragma: no cover - old torch
        for teacher_tensor, student_tensor in pairs:
            teacher_tensor.copy_(student_tensor)


@torch.no_grad()
def ema_tensors(pairs: List[Tuple[Tensor, Tensor]], decay: float) -> None:
    """``teacher = decay * teacher + (1 - decay) * student``, in place.

    Written as ``teacher.lerp_(student, 1 - decay)``, which gives the student
    exactly when ``decay == 0``.

    Args:
        pairs (list[tuple[Tensor, Tensor]]): ``(teacher, student)`` pairs of
            floating-point tensors.
        decay (float): The EMA decay ``d`` in ``[0, 1)``.
    """
    if not pairs:
        return
    weight = 1. - decay
    teacher = [t for t, _ in pairs]
    student = [s.to(t.dtype) for t, s in pairs]
    if hasattr(torch, '_foreach_lerp_'):
        torch._foreach_lerp_(teacher, student, weight)
    else:  # pragma: no cover - old torch
        for teacher_tensor, student_tensor in zip(teacher, student):
            teacher_tensor.lerp_(student_tensor, weight)
