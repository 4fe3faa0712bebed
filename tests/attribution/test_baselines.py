import pytest
import torch
from torch import nn

from retina_fgvis.attribution import GradCAM, Occlusion, default_target_layer

METHODS = {
    "gradcam": lambda model: GradCAM(model),
    "occlusion": lambda model: Occlusion(model, window=8, stride=4),
}


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


@pytest.mark.parametrize("name", sorted(METHODS))
def test_user_model_is_left_untouched(name, spot_model, spot_images):
    x, _ = spot_images
    spot_model.train()
    spot_model.features[1].eval()  # a frozen batch norm stays frozen
    spot_model.head.weight.requires_grad_(False)
    before = {key: value.clone() for key, value in spot_model.state_dict().items()}
    modes = [module.training for module in spot_model.modules()]
    METHODS[name](spot_model).attribute(x, target=[1, 0])
    assert [module.training for module in spot_model.modules()] == modes
    assert [p.requires_grad for p in spot_model.parameters()] == [True, True, True, True, False, True]
    assert all(p.grad is None for p in spot_model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in spot_model.modules())
    for key, value in spot_model.state_dict().items():
        torch.testing.assert_close(value, before[key])


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
