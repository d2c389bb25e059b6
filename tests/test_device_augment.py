"""Batched augmentation against torchvision's per-image transforms: the same distribution of crop boxes and flips."""
import pytest
import torch
from torchvision import transforms as T

from imlca.data.device_augment import crop_boxes, train_batch

DRAWS = 4000


def torchvision_boxes(height: int, width: int, scale) -> torch.Tensor:
    torch.manual_seed(0)
    image = torch.empty(3, height, width)
    return torch.tensor([T.RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3]) for _ in range(DRAWS)],
                        dtype=torch.float64)


@pytest.mark.parametrize("height, width, scale", [(32, 32, (0.05, 1.0)), (24, 60, (0.08, 1.0)), (48, 30, (0.5, 1.0))])
def test_crop_boxes_match_random_resized_crop_in_distribution(height, width, scale):
    ours = crop_boxes(torch.tensor([[height, width]] * DRAWS), scale, torch.Generator().manual_seed(1)).double()
    theirs = torchvision_boxes(height, width, scale)
    for boxes in (ours, theirs):
        assert (boxes[:, 2:] >= 1).all() and (boxes[:, 0] + boxes[:, 2] <= height).all()
        assert (boxes[:, 1] + boxes[:, 3] <= width).all() and (boxes[:, :2] >= 0).all()

    def stats(boxes):
        area = boxes[:, 2] * boxes[:, 3] / (height * width)  # fraction of the image kept
        aspect = (boxes[:, 3] / boxes[:, 2]).log()
        centre = (boxes[:, 0] + boxes[:, 2] / 2) / height
        return area, aspect, centre

    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    for a, b in zip(stats(ours), stats(theirs)):
        # 4000 draws: standard error of a mean ≈ 0.3/√4000 ≈ 0.005; quantiles within a few hundredths
        assert abs(a.mean() - b.mean()) < 0.02
        assert (a.quantile(q) - b.quantile(q)).abs().max() < 0.04


def test_fallback_is_the_ratio_clamped_centre_crop():
    # a 4×100 strip: no try fits a 3/4..4/3 box of ≥ 90% of the area, so both fall back to the centre 4×5 box
    boxes = crop_boxes(torch.tensor([[4, 100]] * 50), (0.9, 1.0), torch.Generator().manual_seed(0))
    assert boxes.tolist() == [[0, 47, 4, 5]] * 50
    torch.manual_seed(0)
    assert T.RandomResizedCrop.get_params(torch.empty(3, 4, 100), [0.9, 1.0], [3 / 4, 4 / 3]) == (0, 47, 4, 5)


def test_flip_fraction_and_full_image_crop():
    images = torch.arange(2 * 3 * 5 * 5, dtype=torch.uint8).view(2, 3, 5, 5).repeat(DRAWS // 2, 1, 1, 1)
    sizes = torch.tensor([[5, 5]] * DRAWS)
    out = train_batch(images, sizes, 5, (1.0, 1.0), True, torch.Generator().manual_seed(0))  # box = whole image
    plain, flipped = images.float() / 255, images.flip(-1).float() / 255
    is_plain = (out - plain).abs().amax((1, 2, 3)) < 1e-6
    is_flipped = (out - flipped).abs().amax((1, 2, 3)) < 1e-6
    assert bool((is_plain ^ is_flipped).all())  # every output is the image or its mirror, exactly
    assert abs(is_flipped.double().mean().item() - 0.5) < 0.03  # RandomHorizontalFlip(p=0.5): 0.5 ± 2σ (σ ≈ 0.008)
    no_flip = train_batch(images[:8], sizes[:8], 5, (1.0, 1.0), False, torch.Generator().manual_seed(0))
    assert torch.allclose(no_flip, plain[:8], atol=1e-6)


def test_crop_resize_averages_the_box():
    # the whole 8×8 ramp resized to 1×1 is the mean of its 64 pixels (area averaging, not one bilinear sample)
    ramp = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).expand(1, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    whole = train_batch(ramp, torch.tensor([[8, 8]]), 1, (1.0, 1.0), False, generator)
    assert whole.flatten().tolist() == pytest.approx([ramp.float().mean().item() / 255] * 3)
