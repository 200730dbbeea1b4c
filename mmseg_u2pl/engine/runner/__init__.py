# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .atomic_checkpoint import AtomicCheckpointHook
from .exact_resume_runner import ExactResumeRunner
from .teacher_student_val_loop import TeacherStudentValLoop

__all__ = [
    'AtomicCheckpointHook', 'ExactResumeRunner', 'TeacherStudentValLoop'
]
