# Ablation of paper Table 4: full U2PL with unlabeled negatives from the
# reliable (lowest-entropy alpha_t %) pixels instead of the unreliable ones.
_base_ = './u2pl_deeplabv3plus_r18-d8_1xb4+4-1k_toy21-1-16-64x64.py'
model = dict(contrastive_loss=dict(negative_source='reliable'))
