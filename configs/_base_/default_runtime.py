# Runtime settings shared by every config of this repository.
default_scope = 'mmseg'
custom_imports = dict(imports=['mmseg_u2pl'], allow_failed_imports=False)
# Exact resume and atomic checkpoints: saves the random states of all ranks,
# adds default_hooks.random_state (RandomStateHook; set it to None to switch
# it off) and uses AtomicCheckpointHook for the CheckpointHook.
runner_type = 'ExactResumeRunner'
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
# Add dict(type='TensorboardVisBackend') or dict(type='WandbVisBackend')
# to log to TensorBoard / Weights & Biases.
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='SegTTAModel')
randomness = dict(seed=0)
