# CutMix mean teacher on ToyShapes21, 1/16 of the labels (the baseline of
# paper Table 6): U2PL without the contrastive term and with alpha_0 = 0,
# so the unsupervised loss keeps every valid pixel's pseudo-label. (At
# alpha_t = 0 the entropy partition still marks the pixels tied at the
# batch's maximum entropy as unreliable: usually one or two of the
# 4 x 64 x 64 = 16,384 pixels of a batch.)
_base_ = './u2pl-nocontrast_deeplabv3plus_r18-d8_1xb4+4-1k_toy21-1-16-64x64.py'
model = dict(semi_train_cfg=dict(alpha_0=0))
