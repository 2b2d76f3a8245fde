import torch

from cifar_sweep.batches import Augment, Loader, Normalize
from cifar_sweep.data import Split


def images(n=8):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_flip_only_flips_some_images_exactly():
    x = images(64)
    out = Augment(hflip=True, rotate_degrees=0, translate_px=0)(x, torch.Generator().manual_seed(0))
    flipped = [(o == xi.flip(2)).all().item() for o, xi in zip(out, x)]
    same = [(o == xi).all().item() for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 10 < sum(flipped) < 54  # per-image randomness, not one coin for the batch


def test_pure_shift_moves_whole_pixels():
    x = images(16)
    out = Augment(hflip=False, rotate_degrees=0, translate_px=2)(x, torch.Generator().manual_seed(0))
    for o, xi in zip(out, x):
        matches = [
            (dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)
            if torch.allclose(o[:, 2:-2, 2:-2], xi[:, 2 - dy:30 - dy, 2 - dx:30 - dx], atol=1e-5)
        ]
        assert matches, "each image is an exact integer shift of the input"


def test_rotation_changes_images_but_keeps_centre_content():
    x = images(8)
    out = Augment(hflip=False, rotate_degrees=10)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert not torch.allclose(out, x)
    centre = (slice(None), slice(None), slice(14, 18), slice(14, 18))
    assert (out[centre] - x[centre]).abs().mean() < (out - x).abs().mean()


def split_of(n: int) -> Split:
    return Split((torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone(),
                 torch.arange(n))


NORM = Normalize([0, 0, 0], [1, 1, 1], torch.device("cpu"))


def test_training_loader_covers_each_image_once_per_epoch_and_knows_its_length():
    loader = Loader(split_of(130), 64, NORM, None, torch.Generator(), chunk_images=64)
    batches = list(loader)
    seen = torch.cat([y for _, y in batches])
    # 130 = 64 + 64 + 2: every image once, in a shuffled order
    assert sorted(seen.tolist()) == list(range(130))
    assert seen.tolist() != list(range(130))
    assert len(loader) == len(batches) == 3
    # a final batch of one image is dropped: BatchNorm cannot train on it
    loader = Loader(split_of(129), 64, NORM, None, torch.Generator(), chunk_images=64)
    assert len(loader) == len(list(loader)) == 2


def test_evaluation_loader_keeps_the_order_and_every_image():
    loader = Loader(split_of(129), 50, NORM)
    labels = torch.cat([y for _, y in loader])
    assert labels.tolist() == list(range(129)) and len(loader) == 3
