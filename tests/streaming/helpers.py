"""What the streaming tests share."""
import torch


def randomise_bn(model):
    """Random BatchNorm statistics and affine parameters (seeded), so that the
    norms are not identities; returns the model in eval mode."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.normal_(1, 0.2)
            m.bias.data.normal_(0, 0.2)
    return model.eval()
