# The toy's DeepLabV3+ on a narrow ResNet-18-V1c, for the 21 ToyShapes21
# classes, starting from a pretrained backbone as the paper's configs start
# from ImageNet weights. The checkpoint comes from a disjoint source task
# (scenes of 8 outlines that no target class uses, labelled per pixel by
# outline, hue, tone and texture, never a target image); make it once:
#   python tools/analysis/pretrain_toy_backbone.py
# Another file: --cfg-options model.backbone.init_cfg.checkpoint=PATH
# (model.segmentor.backbone... in U2PL configs); from scratch:
# ...backbone.init_cfg=None.
_base_ = './deeplabv3plus_r18-d8_toy.py'
model = dict(
    backbone=dict(
        init_cfg=dict(
            type='Pretrained',
            checkpoint='~/.cache/mmseg_u2pl/pretrained/'
            'resnet18-v1c-c32_toy-source-attributes.pth')),
    decode_head=dict(num_classes=21))
