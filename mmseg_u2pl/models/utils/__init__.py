# Copyright (c) mmseg_u2pl contributors. All rights reserved.
