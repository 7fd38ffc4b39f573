"""ufo_mm.analysis.stage_profile (tools/profile_backbone.py): per-stage times
of a UFO-ViT forward at several sizes."""
import torch

from ufo_mm.analysis import stage_profile
from ufo_mm.models import UFOViT


def test_stages_compose_the_forward():
    """embed -> forward_blocks -> forward_pyramid, the stages the tool times, is
    the backbone's forward (odd size: the pyramid crops to ceil(H / s))."""
    torch.manual_seed(0)
    model = UFOViT(arch='tiny_12_p16').eval()
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        k = model.kernels_for(x)
        tokens, shape = model.embed(x, k)
        outs = model.forward_pyramid(model.forward_blocks(tokens, *shape, kernels=k),
                                     x.shape[-2:], k)
        ref = model(x)
    assert [o.shape[-2:] for o in outs] == [(18, 23), (9, 12), (5, 6), (3, 3)]
    for o, r in zip(outs, ref):
        torch.testing.assert_close(o, r)


def test_report_per_stage_and_growth():
    torch.set_num_threads(1)
    medians, ops = stage_profile.profile_stages('tiny_12_p16', [128, 64], rounds=1, ops=True)
    out = '\n'.join(stage_profile.stage_report(medians, ops, top=5))
    assert sorted(medians) == [64, 128]
    for times in medians.values():
        assert len(times) == len(stage_profile.STAGES) and min(times) > 0
        # the total is timed around the three stages
        assert sum(times[:3]) <= times[3] * 1.001
    lines = {line.split('  ')[0]: line for line in out.splitlines()}
    for stage in stage_profile.STAGES:
        assert stage in lines, out
        assert len(lines[stage].split()[-3:]) == 3  # 64 ms, 128 ms, growth
    assert 'operator self time' in out
    assert 'x128/64' in out
