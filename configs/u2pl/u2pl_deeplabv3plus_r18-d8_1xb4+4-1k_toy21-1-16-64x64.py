# Full U2PL on ToyShapes21, 1/16 of the labels: with 21 classes an
# unlabeled pixel has the paper's candidate negatives, ranks 3-19.
_base_ = './u2pl-nocontrast_deeplabv3plus_r18-d8_1xb4+4-1k_toy21-1-16-64x64.py'
model = dict(
    # one teacher pass gives pseudo-labels and contrastive targets, as in
    # the toy's U2PL config
    semi_train_cfg=dict(reuse_teacher_forward=True),
    representation_head=dict(
        type='RepresentationHead', channels=64, out_channels=64),
    # the paper's values (the loss's defaults: 256 anchors per class, 50
    # negatives, tau 0.5, delta_p 0.3, ranks 3-19, lambda_c 0.1); banks of
    # 8000 per class as in the toy
    contrastive_loss=dict(
        type='UnreliableContrastiveLoss',
        memory_size=8000,
        negative_source='unreliable'))
