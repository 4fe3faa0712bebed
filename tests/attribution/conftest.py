import pytest
import torch
from torch import nn


class SpotNet(nn.Module):
    """Class-1 logit = brightest local mean: evidence lives exactly where the image is bright."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.features[0].weight.fill_(1 / 27)
            self.features[0].bias.zero_()
            self.head.weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def spot_model():
    return SpotNet()


@pytest.fixture
def spot_images():
    """Two 32×32 images, each with one bright 4×4 square at a different place."""
    x = torch.zeros(2, 3, 32, 32)
    x[0, :, 20:24, 8:12] = 3.0
    x[1, :, 4:8, 24:28] = 3.0
    return x, [(slice(20, 24), slice(8, 12)), (slice(4, 8), slice(24, 28))]
