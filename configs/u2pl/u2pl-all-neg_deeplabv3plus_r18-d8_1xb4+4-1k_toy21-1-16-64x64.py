# Ablation of paper Table 4: full U2PL with unlabeled negatives from every
# valid unlabeled pixel (the rank condition still applies).
_base_ = './u2pl_deeplabv3plus_r18-d8_1xb4+4-1k_toy21-1-16-64x64.py'
model = dict(contrastive_loss=dict(negative_source='all'))
