"""Arrays to batches (core/data.py): the fixed input scaling, rows of the prepared arrays,
batches in order with the last one dropped only in training, seeded orders and positive-share
sampling, and augmentation that moves the image and its mask together."""

import numpy as np
import pytest
import torch

from pneumo.core import data


@pytest.mark.parametrize(("pixel", "value"), [(0, -2.0), (255, 2.0), (51, -1.2), (153, 0.4)])
def test_to_input_scales_pixels_by_the_recorded_mean_and_std(pixel, value):
    for images in (torch.full((2, 3, 3), pixel, dtype=torch.uint8), torch.full((2, 1, 3, 3), pixel, dtype=torch.uint8)):
        x = data.to_input(images)
        assert x.shape == (2, 1, 3, 3) and x.dtype == torch.float32
        assert torch.allclose(x, torch.full_like(x, value), atol=1e-6)
    assert data.INPUT_SCALING == {"mean": data.MEAN, "std": data.STD, "of": "pixel / 255"}


def test_arrays_give_the_rows_of_the_indices_and_an_empty_target_without_masks():
    images = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2)
    masks = (images % 2).astype(np.uint8)
    rows = data.Arrays(images, masks, np.array([4, 1]))
    assert len(rows) == 2
    image, target = rows[0]
    assert torch.equal(image, torch.from_numpy(images[4])) and torch.equal(target, torch.from_numpy(masks[4]))
    image, target = data.Arrays(images, None, [1])[0]
    assert torch.equal(image, torch.from_numpy(images[1])) and target.shape == () and target == 0


@pytest.mark.parametrize(
    ("n", "batch_size", "train", "sizes"),
    [
        (10, 4, False, [4, 4, 2]),  # every image once
        (10, 4, True, [4, 4]),  # training drops the incomplete batch
        (3, 4, True, [3]),  # ... unless the data is smaller than one batch
        (8, 4, True, [4, 4]),
        (0, 4, False, []),
    ],
)
def test_loader_batches_in_order_and_drops_the_last_only_in_training(n, batch_size, train, sizes):
    images = np.arange(n, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    batches = list(data.loader(data.Arrays(images, None, np.arange(n)), batch_size, train=train))
    assert [len(x) for x, _ in batches] == sizes
    seen = [int(v) for x, _ in batches for v in x[:, 0, 0]]
    assert seen == list(range(sum(sizes)))  # sequential by default


def test_shuffled_orders_are_seeded_and_new_every_epoch():
    rows = data.Arrays(np.zeros((20, 1, 1), np.uint8), None, np.arange(20))
    a, b, c = data.shuffled(rows, seed=3), data.shuffled(rows, seed=3), data.shuffled(rows, seed=4)
    first, second = list(a), list(a)
    assert sorted(first) == sorted(second) == list(range(20)) and first != second
    assert list(b) == first and list(c) != first


@pytest.mark.parametrize(("share", "low", "high"), [(0.5, 0.45, 0.55), (0.2, 0.16, 0.24), (1.0, 1.0, 1.0)])
def test_positive_share_sampler_draws_about_the_share_of_positives(share, low, high):
    positive = np.arange(200) < 20  # 10% positive
    sampler = data.positive_share_sampler(positive, share, seed=0, samples=4000)
    drawn = list(sampler)
    assert len(drawn) == 4000 and low <= positive[drawn].mean() <= high
    assert drawn == list(data.positive_share_sampler(positive, share, seed=0, samples=4000))
    assert len(list(data.positive_share_sampler(positive, share, seed=0))) == 200  # default: one per image


def test_augment_without_any_change_is_the_identity_and_a_flip_mirrors_both():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 8, 8, generator=generator)
    mask = (torch.rand(3, 1, 8, 8, generator=generator) > 0.5).float()
    still = {"rotate_deg": 0.0, "scale": 0.0, "shift": 0.0, "contrast": 0.0}
    same, same_mask = data.augment(x, mask, generator, flip=0.0, **still)
    assert torch.allclose(same, x, atol=1e-5) and torch.equal(same_mask, mask)
    flipped, flipped_mask = data.augment(x, mask, generator, flip=1.0, **still)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5) and torch.equal(flipped_mask, mask.flip(-1))
    image_only, none = data.augment(x, None, generator, flip=1.0, **still)
    assert none is None and torch.allclose(image_only, x.flip(-1), atol=1e-5)


def test_augment_moves_image_and_mask_together():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 1, 32, 32)
    x[:, :, 4:12, 4:12] = 3.0
    mask = (x > 0).float()
    xa, ma = data.augment(x, mask, g, contrast=0.0)
    assert ma.shape == mask.shape and set(ma.unique().tolist()) <= {0.0, 1.0}
    assert ((xa > 1.5) == (ma > 0.5)).float().mean() > 0.97  # same warp for both
