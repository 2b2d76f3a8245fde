import torch

from cifar_sweep.batches import Augment, Normalize, training_batches
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


def test_batches_cover_each_image_once_per_epoch():
    split = Split((torch.arange(130) % 256).to(torch.uint8).view(130, 1, 1, 1).expand(130, 3, 2, 2).clone(),
                  torch.arange(130))
    norm = Normalize([0, 0, 0], [1, 1, 1], torch.device("cpu"))
    seen = torch.cat([y for _, y in training_batches(split, 64, norm, None, torch.Generator(),
                                                     chunk_images=64)])
    # 130 = 64 + 64 + 2: every image once, in a shuffled order
    assert sorted(seen.tolist()) == list(range(130))
    assert seen.tolist() != list(range(130))
