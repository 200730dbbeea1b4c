# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .teacher_student_val_loop import TeacherStudentValLoop

__all__ = ['TeacherStudentValLoop']
