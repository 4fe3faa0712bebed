import pytest
import torch
from torch import nn

from retina_fgvis.attribution import (GradCAM, GradCAMpp, Occlusion, RandomMap, SmoothGradient, VanillaGradient,
                                      default_target_layer, resolution_target_layer)

METHODS = {
    "gradcam": lambda model: GradCAM(model),
    "gradcampp": lambda model: GradCAMpp(model),
    "gradient": lambda model: VanillaGradient(model),
    "smoothgrad": lambda model: SmoothGradient(model, n_samples=4),
    "occlusion": lambda model: Occlusion(model, window=8, stride=4),
}


def planted(batch_size: int) -> tuple[torch.Tensor, list[tuple[slice, slice]]]:
    """``batch_size`` 32×32 images on a faint noisy background, each with one bright 4×4 square elsewhere."""
    x = 0.1 * torch.rand(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(batch_size))
    squares = []
    for row in range(batch_size):
        top, left = 4 + (7 * row) % 22, 24 - (9 * row) % 20
        x[row, :, top:top + 4, left:left + 4] = 3.0
        squares.append((slice(top, top + 4), slice(left, left + 4)))
    return x, squares


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_baseline_ranks_the_planted_patch_above_the_background(name, batch_size, spot_model):
    x, squares = planted(batch_size)
    maps = METHODS[name](spot_model).attribute(x, target=1)
    assert maps.shape == (batch_size, 1, 32, 32) and maps.dtype == torch.float32 and maps.device == x.device
    for image_map, (rows, cols) in zip(maps[:, 0], squares):
        inside = torch.zeros(32, 32, dtype=torch.bool)
        inside[rows, cols] = True
        assert image_map[inside].mean() > 2 * image_map[~inside].mean(), name


@pytest.mark.parametrize("name", sorted(METHODS))
def test_maps_peak_on_the_evidence_in_unit_range(name, spot_model, spot_images):
    x, squares = spot_images
    maps = METHODS[name](spot_model).attribute(x, target=1)
    assert maps.shape == (2, 1, 32, 32) and maps.dtype == torch.float32 and maps.device == x.device
    assert float(maps.min()) >= 0.0 and float(maps.amax(dim=(1, 2, 3)).min()) == pytest.approx(1.0)
    for image_map, (rows, cols) in zip(maps[:, 0], squares):
        peak = divmod(int(image_map.argmax()), 32)
        assert rows.start - 4 <= peak[0] < rows.stop + 4 and cols.start - 4 <= peak[1] < cols.stop + 4
        inside = image_map[rows, cols].mean()
        assert inside > 2 * image_map.mean()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_batch_equals_single_images_and_targets_resolve(name, spot_model, spot_images):
    x, _ = spot_images
    method = METHODS[name](spot_model)
    batch = method.attribute(x, target=torch.tensor([1, 1]))
    singles = torch.cat([method.attribute(x[i:i + 1], target=1) for i in range(2)])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)
    torch.testing.assert_close(method.attribute(x), batch)  # None = top-1 class, which is class 1 here


class BrokenInEval(nn.Module):
    """Fails as soon as it is run in eval mode (every method evaluates there)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten())

    def forward(self, x):
        if not self.training:
            raise RuntimeError("broken")
        return self.net(x)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_user_model_is_restored_after_an_error(name):
    model = BrokenInEval().train()
    model.net[0].bias.requires_grad_(False)
    with pytest.raises(RuntimeError, match="broken"):
        METHODS[name](model).attribute(torch.rand(2, 3, 32, 32), target=1)
    assert all(module.training for module in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [True, False]
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_random_map_is_seeded_per_image_and_blind_to_the_evidence():
    x, squares = planted(3)
    maps = RandomMap(cell=4, seed=1).attribute(x)
    assert maps.shape == (3, 1, 32, 32) and float(maps.min()) >= 0 and float(maps.amax()) == pytest.approx(1.0)
    torch.testing.assert_close(RandomMap(cell=4, seed=1).attribute(x[1:2]), maps[1:2])   # batch-independent
    assert not torch.equal(maps[0], maps[1])                                             # one map per image
    assert not torch.equal(RandomMap(cell=4, seed=2).attribute(x), maps)
    planted_mean = torch.stack([m[0, rows, cols].mean() for m, (rows, cols) in zip(maps, squares)])
    assert planted_mean.mean() < 2 * maps.mean()                                         # no evidence seen


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("batch_size", [1, 2])
def test_user_model_is_left_untouched(name, batch_size, spot_model, spot_images):
    x, _ = spot_images
    x = x[:batch_size]
    spot_model.train()
    spot_model.features[1].eval()  # a frozen batch norm stays frozen
    spot_model.head.weight.requires_grad_(False)
    before = {key: value.clone() for key, value in spot_model.state_dict().items()}
    modes = [module.training for module in spot_model.modules()]
    METHODS[name](spot_model).attribute(x, target=[1, 0][:batch_size])
    assert [module.training for module in spot_model.modules()] == modes
    assert [p.requires_grad for p in spot_model.parameters()] == [True, True, True, True, False, True]
    assert all(p.grad is None for p in spot_model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in spot_model.modules())
    for key, value in spot_model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_default_gradcam_layer_is_the_deepest_with_a_sixteenth_of_the_side():
    from retina_fgvis.models.fundus_cnn import FundusCNN
    for layout, expected in (("plain", "features.4.0"), ("compact", "features.2.0"), ("o_O", "features.2.2")):
        model = FundusCNN(width=2, layout=layout).train()
        assert resolution_target_layer(model, (1, 3, 256, 256)) == expected
        assert model.training and not any(m._forward_hooks for m in model.modules())
        sides = {}
        handle = dict(model.named_modules())[expected].register_forward_hook(
            lambda _m, _i, out: sides.update(side=out.shape[-1]))
        model.eval()(torch.zeros(1, 3, 256, 256))
        handle.remove()
        assert sides["side"] == 16                                     # 256 / 16
        assert GradCAM(model).layer_for((2, 3, 256, 256)) == expected
        assert GradCAM(model, target_layer="last").target_layer == default_target_layer(model)


def test_default_target_layer_reads_the_last_conv_block():
    assert default_target_layer(nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))) == "0"
    from retina_fgvis.models.fundus_cnn import FundusCNN
    assert default_target_layer(FundusCNN(width=2)) == "features.4.0"
    assert default_target_layer(FundusCNN(width=2, layout="o_O")) == "features.4.1"
    with pytest.raises(ValueError, match="Conv2d"):
        default_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))


def test_bad_inputs_raise_one_clear_error(spot_model, spot_images):
    x, _ = spot_images
    with pytest.raises(ValueError, match="target_layer"):
        GradCAM(spot_model, target_layer="nope")
    with pytest.raises(ValueError, match="target"):
        GradCAM(spot_model).attribute(x, target=2)
    with pytest.raises(ValueError, match="target"):
        GradCAM(spot_model).attribute(x, target=[1, 1, 1])
    with pytest.raises(ValueError, match="inputs"):
        Occlusion(spot_model, window=8).attribute(x[0])
    with pytest.raises(ValueError, match="inputs"):
        Occlusion(spot_model, window=8).attribute(torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="stride"):
        Occlusion(spot_model, window=8, stride=9)
    with pytest.raises(ValueError, match="window"):
        Occlusion(spot_model, window=64).attribute(x)
    with pytest.raises(TypeError, match="model"):
        GradCAM(lambda t: t)
