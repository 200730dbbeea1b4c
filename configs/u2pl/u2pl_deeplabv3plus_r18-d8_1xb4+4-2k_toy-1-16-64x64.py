# Full U2PL (with the unreliable-pixel contrastive loss), 1/16 toy labels.
_base_ = './u2pl-nocontrast_deeplabv3plus_r18-d8_1xb4+4-2k_toy-1-16-64x64.py'
model = dict(
    representation_head=dict(
        type='RepresentationHead', channels=64, out_channels=64),
    contrastive_loss=dict(
        type='UnreliableContrastiveLoss',
        memory_size=8000,
        num_anchors=256,
        num_negatives=50,
        temperature=0.5,
        delta_p=0.3,
        rank_low=3,
        rank_high=20,
        loss_weight=0.1))
