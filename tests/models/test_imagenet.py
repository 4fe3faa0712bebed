"""ImageNet model loading: names, weights sources and their errors, preprocessing, GoogLeNet's input space."""
import numpy as np
import pytest
import skimage.data
import torch
import torchvision

from retina_fgvis.models.imagenet import (IMAGENET_MODELS, ImageNetModelError, image_names, imagenet_class_names,
                                          load_imagenet_model)


@pytest.fixture(scope="module")
def lite():
    return load_imagenet_model("efficientnet_lite0", image_size=96)


def test_unknown_model_name_is_one_clear_error():
    with pytest.raises(ImageNetModelError, match="model: unknown ImageNet model 'resnet18'"):
        load_imagenet_model("resnet18", weights=None)
    assert issubclass(ImageNetModelError, ValueError)


def test_missing_weights_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ImageNetModelError, match=f"weights: {missing} does not exist"):
        load_imagenet_model("alexnet", weights=missing)


def test_uncached_pretrained_weights_fail_fast_without_download(tmp_path):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))  # an empty cache: nothing may be fetched
    try:
        with pytest.raises(ImageNetModelError, match="not in the torch hub cache.*--weights PATH"):
            load_imagenet_model("googlenet")
        with pytest.raises(ImageNetModelError, match="neither a file nor a torchvision weights entry"):
            load_imagenet_model("resnet50", weights="IMAGENET9K")
    finally:
        torch.hub.set_dir(previous)
    assert not any(tmp_path.rglob("*.pth"))


def test_corrupt_or_foreign_weights_files_are_rejected(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ImageNetModelError, match=f"weights: {garbage} is not a readable torch state_dict"):
        load_imagenet_model("efficientnet_lite0", weights=garbage)
    foreign = tmp_path / "foreign.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(ImageNetModelError, match=f"weights: {foreign} does not fit the architecture"):
        load_imagenet_model("efficientnet_lite0", weights=foreign)


def test_googlenet_state_dict_runs_in_its_own_input_space(tmp_path):
    """A torchvision-pretrained-style GoogLeNet file (aux heads, transform_input) loads with the input
    transform folded into the normalisation: the same logits as torchvision's model on the same pixels."""
    torch.manual_seed(0)
    original = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True)
    path = tmp_path / "googlenet.pth"
    torch.save({"state_dict": original.state_dict()}, path)
    loaded = load_imagenet_model("googlenet", weights=path, image_size=64)
    assert loaded.mean == loaded.std == (0.5, 0.5, 0.5)
    assert loaded.model.transform_input is False and loaded.model.aux1 is None
    original.eval()
    image = skimage.data.chelsea()
    pixels = torch.from_numpy(loaded.to_pixels(loaded.preprocess(image))).permute(0, 3, 1, 2)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = original((pixels - mean) / std)
        got = loaded.model(loaded.from_pixels(pixels))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_pretrained_efficientnet_lite0_recognises_the_photos():
    model = load_imagenet_model("efficientnet_lite0")
    with torch.no_grad():
        probs = model.model(model.preprocess_batch([skimage.data.chelsea(), skimage.data.coffee()])).softmax(1)
    top = probs.argmax(1).tolist()
    assert 281 <= top[0] <= 285, model.class_names[top[0]]   # a domestic cat class
    assert model.class_names[top[1]] == "espresso"
    assert model.weights.endswith("efficientnet-lite0-57934424.pth")


def test_preprocess_shapes_inverse_and_bad_images(lite, tmp_path):
    image = skimage.data.coffee()
    x = lite.preprocess(image)
    assert x.shape == (1, 3, 96, 96) and x.dtype == torch.float32
    pixels = lite.to_pixels(x)
    assert pixels.shape == (1, 96, 96, 3) and 0 <= pixels.min() and pixels.max() <= 1
    torch.testing.assert_close(lite.from_pixels(torch.from_numpy(pixels).permute(0, 3, 1, 2)), x, atol=1e-5, rtol=0)
    assert lite.preprocess(image[..., 0]).shape == (1, 3, 96, 96)        # grey becomes RGB
    with pytest.raises(ImageNetModelError, match="image: expected uint8"):
        lite.preprocess(image.astype(np.float32))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"nope")
    with pytest.raises(ImageNetModelError, match=f"image: {bad} is not a readable image"):
        lite.preprocess(bad)


def test_class_names_and_lookup(lite):
    names = imagenet_class_names()
    assert len(names) == 1000 and names[285] == "Egyptian cat"
    assert lite.class_index("egyptian cat") == 285 == lite.class_index("285") == lite.class_index(285)
    for bad in ("not a class", 1000, -1):
        with pytest.raises(ImageNetModelError, match="target"):
            lite.class_index(bad)
    assert set(IMAGENET_MODELS) == {"googlenet", "vgg16", "alexnet", "resnet50", "efficientnet_lite0"}


def test_image_names_are_unique():
    assert image_names(["a/cat.png", "b/cat.png", np.zeros((2, 2, 3), np.uint8)]) == ["cat", "cat-1", "image2"]
