"""Seeded augmentation views: view 0 is the image, views 1..K are reproducible Keras-style affine variants."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from featcache.ingest.augment import AugmentParams, augment_view

DIGEST = hashlib.blake2b(b"some image", digest_size=16).hexdigest()
OTHER_DIGEST = hashlib.blake2b(b"another image", digest_size=16).hexdigest()
NOTHING = AugmentParams(rotation=0, width_shift=0, height_shift=0, shear=0, zoom=0, channel_shift=0,
                        horizontal_flip=False, vertical_flip=False)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A non-square, asymmetric, textured image (48 rows x 64 columns)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:48, 0:64]
    arr = np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.float32) + rng.normal(0, 8, (48, 64, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def views(image, params, digest=DIGEST, n=20) -> list[np.ndarray]:
    return [augment_view(image, params, digest, v) for v in range(1, n + 1)]


def only(**changes) -> AugmentParams:
    """Every transformation off except the given ones."""
    return replace(NOTHING, **changes)


def test_defaults_are_the_innolitics_recipe():
    p = AugmentParams()
    assert (p.rotation, p.width_shift, p.height_shift, p.shear, p.zoom, p.channel_shift) == (15, .15, .15, .15, .15, 1)
    assert p.horizontal_flip and not p.vertical_flip
    assert p.augmented_views == 0 and p.views == 1 and AugmentParams(augmented_views=4).views == 5
    assert AugmentParams(**p.to_dict()) == p


def test_view_0_is_the_input_unchanged(photo):
    out = augment_view(photo, AugmentParams(augmented_views=3, seed=9), DIGEST, 0)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, photo)


def test_views_keep_shape_and_dtype(photo):
    for out in views(photo, AugmentParams(), n=5):
        assert out.shape == photo.shape and out.dtype == np.uint8


def test_same_seed_digest_and_view_give_identical_pixels(photo):
    params = AugmentParams(seed=7)
    forward = views(photo, params, n=6)
    backward = [augment_view(photo.copy(), AugmentParams(seed=7), DIGEST, v) for v in range(6, 0, -1)][::-1]
    for a, b in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(a, b)


def test_views_seeds_and_digests_each_change_the_result(photo):
    base = augment_view(photo, AugmentParams(seed=0), DIGEST, 1)
    assert not np.array_equal(base, photo)
    assert not np.array_equal(base, augment_view(photo, AugmentParams(seed=0), DIGEST, 2))
    assert not np.array_equal(base, augment_view(photo, AugmentParams(seed=1), DIGEST, 1))
    assert not np.array_equal(base, augment_view(photo, AugmentParams(seed=0), OTHER_DIGEST, 1))
    distinct = {v.tobytes() for v in views(photo, AugmentParams(), n=10)}
    assert len(distinct) == 10


def test_no_transformation_leaves_every_view_exact(photo):
    """The affine maths is centred correctly: an identity transform moves no pixel."""
    for out in views(photo, NOTHING, n=3):
        np.testing.assert_array_equal(out, photo)


def test_horizontal_flip_mirrors_about_half_the_views_and_never_flips_vertically(photo):
    outs = views(photo, only(horizontal_flip=True), n=40)
    mirrored = sum(np.array_equal(o, photo[:, ::-1]) for o in outs)
    unchanged = sum(np.array_equal(o, photo) for o in outs)
    assert mirrored + unchanged == 40 and 10 <= mirrored <= 30
    assert not any(np.array_equal(o, photo[::-1]) for o in views(photo, AugmentParams(), n=40))


def test_vertical_flip_when_asked(photo):
    outs = views(photo, only(vertical_flip=True), n=40)
    assert 10 <= sum(np.array_equal(o, photo[::-1]) for o in outs) <= 30


def bright_line(axis: int, shape=(48, 64)) -> np.ndarray:
    img = np.zeros(shape + (3,), np.uint8)
    if axis == 1:
        img[:, shape[1] // 2] = 255  # a vertical line: moves with width shift
    else:
        img[shape[0] // 2] = 255
    return img


@pytest.mark.parametrize("axis, param", [(1, "width_shift"), (0, "height_shift")])
def test_shift_is_a_fraction_of_its_own_axis(axis, param):
    img = bright_line(axis)
    length = img.shape[axis]
    moves = []
    for out in views(img, only(**{param: 0.15}), n=40):
        profile = out[..., 0].astype(float).mean(axis=1 - axis)  # brightness along the shifted axis
        assert profile.max() > 100, "the line moved along the wrong axis or vanished"
        moves.append(float((profile * np.arange(length)).sum() / profile.sum()) - length // 2)
    assert max(abs(m) for m in moves) <= 0.15 * length + 1
    assert min(moves) < -0.05 * length and max(moves) > 0.05 * length  # both directions, a real spread


def test_zoom_scales_each_axis_within_its_range():
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 16:48] = 255  # a centred 32-pixel square
    sides = []
    for out in views(img, only(zoom=0.15), n=20):
        sides += [(out[..., 0] > 127).sum(axis=1).max(), (out[..., 0] > 127).sum(axis=0).max()]
    assert all(32 / 1.15 - 1.5 <= side <= 32 / 0.85 + 1.5 for side in sides)
    assert min(sides) <= 30 and max(sides) >= 34  # zoom out and zoom in both happen


def centroid(img: np.ndarray) -> np.ndarray:
    w = img[..., 0].astype(float)
    r, c = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    return np.array([(w * r).sum(), (w * c).sum()]) / w.sum()


def test_rotation_and_zoom_turn_about_the_image_centre():
    img = np.zeros((40, 40, 3), np.uint8)
    img[14:26, 14:26] = 255  # centred square: its centroid is the centre, (19.5, 19.5)
    for out in views(img, only(rotation=180, zoom=0.3), n=20):
        np.testing.assert_allclose(centroid(out), (19.5, 19.5), atol=0.25)


def test_rotation_stays_within_its_range():
    img = bright_line(0, (65, 65))  # a horizontal line through the centre
    angles = []
    for out in views(img, only(rotation=15), n=30):
        r, c = np.nonzero(out[..., 0] > 127)
        angles.append(np.degrees(np.arctan(np.polyfit(c - 32, r - 32, 1)[0])))
    assert max(abs(a) for a in angles) <= 15.5
    assert min(angles) < -3 and max(angles) > 3


def test_channel_shift_adds_one_offset_to_every_pixel(photo):
    inner = (slice(1, -1), slice(1, -1))  # keep away from values clipped at 0 or 255
    for out in views(photo, only(channel_shift=1.0), n=10):
        diff = out[inner].astype(int) - photo[inner].astype(int)
        assert np.abs(diff).max() <= 1


def test_edges_are_filled_with_the_nearest_pixel_not_black():
    flat = np.full((40, 40, 3), 120, np.uint8)
    for out in views(flat, AugmentParams(rotation=15, width_shift=0.15, height_shift=0.15, zoom=0.15), n=10):
        assert np.abs(out.astype(int) - 120).max() <= 1  # only the +-1 channel shift
