"""FundusCNN: shapes for several input sizes, argument checks, and a tiny model that learns."""
import pytest
import torch

from retina_fgvis.models.fundus_cnn import FundusCNN


@pytest.mark.parametrize("size", [32, 48, 64, 100])
def test_logits_shape_for_input_sizes(size):
    model = FundusCNN(width=4).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 3, size, size))
    assert logits.shape == (3, 2)
    assert torch.isfinite(logits).all()


def _layers(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("layout, calls", [("plain", 5), ("compact", 5), ("o_O", 13)])
def test_layouts_build_binary_classifiers_with_their_number_of_defended_calls(layout, calls):
    model = FundusCNN(layout=layout).eval()
    assert model.arch_kwargs == {"width": 32, "num_classes": 2, "in_channels": 3, "dropout": 0.5, "layout": layout,
                                 "activation": "leaky_relu", "batch_norm": True, "downsample": "pool"}
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2)
    leaky, convs = _layers(model, torch.nn.LeakyReLU), _layers(model, torch.nn.Conv2d)
    assert len(convs) == len(_layers(model, torch.nn.BatchNorm2d)) == len(leaky) == calls
    assert all(m.negative_slope == 0.01 for m in leaky)
    stem = {(5, 5), (3, 3)} if layout != "plain" else {(3, 3)}
    assert {m.kernel_size for m in convs} == stem
    assert [m.stride for m in convs[:1]] == ([(2, 2)] if layout != "plain" else [(1, 1)])


def test_default_layout_is_plain():
    assert FundusCNN().arch_kwargs["layout"] == "plain"


def test_network_options_change_the_trunk():
    plain = FundusCNN(width=4, activation="relu", batch_norm=False, downsample="stride").eval()
    assert not _layers(plain, torch.nn.LeakyReLU) and len(_layers(plain, torch.nn.ReLU)) == 5
    assert not _layers(plain, torch.nn.BatchNorm2d) and not _layers(plain, torch.nn.MaxPool2d)
    assert all(conv.bias is not None for conv in _layers(plain, torch.nn.Conv2d))
    with torch.no_grad():
        assert plain(torch.randn(2, 3, 64, 64)).shape == (2, 2)


@pytest.mark.parametrize("kwargs, name", [({"width": 0}, "width"), ({"num_classes": 1}, "num_classes"),
                                          ({"dropout": 1.0}, "dropout"), ({"width": 2.5}, "width"),
                                          ({"layout": "deep"}, "layout"), ({"activation": "gelu"}, "activation"),
                                          ({"downsample": "avg"}, "downsample")])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        FundusCNN(**kwargs)


def test_wrong_input_shape_is_one_clear_error():
    with pytest.raises(ValueError, match=r"x: expected N×3×H×W"):
        FundusCNN(width=4)(torch.randn(2, 1, 64, 64))


def test_tiny_model_loss_falls_in_a_few_steps():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only contend
    try:
        losses = _train_a_few_steps()
    finally:
        torch.set_num_threads(threads)
    assert losses[-1] < 0.5 * losses[0]


def _train_a_few_steps(steps: int = 15) -> list[float]:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    y = torch.tensor([0, 1] * 4)
    x[y == 1, 0] += 1.5  # class 1 is redder
    model = FundusCNN(width=4, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
