# The parameters of a UFO-ViT model that take no weight decay, one spelling for every
# config (real recipes and demos): optim_wrapper = dict(..., paramwise_cfg=_base_.no_decay)
no_decay = dict(
    # every norm layer by module type: LayerNorm, BN/SyncBN in backbone, neck and heads
    norm_decay_mult=0.,
    custom_keys={
        # layer scales blocks.N.gamma1/2/3 and XNorm's attn.gamma_q / attn.gamma_kv
        '.gamma': dict(decay_mult=0.),
        # Fourier position encoding projection (pos_embed.token_projection)
        'backbone.pos_embed': dict(decay_mult=0.),
    })
# The classifier's (ImageNet pretraining and the classification demo), as XCiT's optimizer
# has them: the rules above, plus every bias and other 1-D tensor, and the class token.
#   optim_wrapper = dict(..., paramwise_cfg=_base_.cls_no_decay)
cls_no_decay = dict(
    norm_decay_mult=no_decay['norm_decay_mult'],
    bias_decay_mult=0.,
    flat_decay_mult=0.,
    custom_keys=dict(no_decay['custom_keys'], **{'.cls_token': dict(decay_mult=0.)}))
