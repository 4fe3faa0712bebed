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


def test_defaults_build_the_o_o_width_binary_classifier():
    model = FundusCNN().eval()
    assert model.arch_kwargs == {"width": 32, "num_classes": 2, "in_channels": 3, "dropout": 0.5}
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2)
    leaky = [m for m in model.modules() if isinstance(m, torch.nn.LeakyReLU)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == len(norms) == len(leaky) == 13
    assert all(m.negative_slope == 0.01 for m in leaky)
    assert {m.kernel_size for m in convs} == {(5, 5), (3, 3)}


@pytest.mark.parametrize("kwargs, name", [({"width": 0}, "width"), ({"num_classes": 1}, "num_classes"),
                                          ({"dropout": 1.0}, "dropout"), ({"width": 2.5}, "width")])
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
