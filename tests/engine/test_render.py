"""The warp: its map is the exact piecewise-affine inverse of the mesh's motion, checked
pixel by pixel against barycentric coordinates computed independently in float64."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest

from libs.talkface import face as F
from libs.talkface import render as R
from libs.talkface.api import PortraitJob


@pytest.fixture(scope="module")
def portrait(engine, portrait_path, tmp_path_factory):
    """The 256 px portrait the engine would animate and its rest mesh."""
    job = PortraitJob(image_path=portrait_path, audio_path="", out_path=str(tmp_path_factory.mktemp("r") / "x.mp4"),
                      width=256, height=256, crop=True)
    img, rest, _ = engine.prepare_portrait(job)
    return img, rest


def reference_map(warper: R.Warper, dest: np.ndarray) -> tuple:
    """Source position of every ROI pixel inside exactly one sound (not squeezed) moving
    triangle of the frame, by barycentrics; NaN elsewhere. Also how many such triangles
    hold each pixel."""
    pts = warper.all_rest.astype(np.float64).copy()
    pts[:warper.n_mesh] = dest[warper.vert]
    x, y = warper.ident[..., 0].astype(np.float64), warper.ident[..., 1].astype(np.float64)
    ref = np.full(warper.ident.shape, np.nan)
    count = np.zeros(x.shape, int)
    for k in warper.moving:
        a, b, c = pts[warper.simplices[k]]
        ra, rb, rc = warper.all_rest[warper.simplices[k]].astype(np.float64)
        d = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
        if abs(d) < 0.05 * abs((rb[1] - rc[1]) * (ra[0] - rc[0]) + (rc[0] - rb[0]) * (ra[1] - rc[1])):
            continue
        l0 = ((b[1] - c[1]) * (x - c[0]) + (c[0] - b[0]) * (y - c[1])) / d
        l1 = ((c[1] - a[1]) * (x - c[0]) + (a[0] - c[0]) * (y - c[1])) / d
        l2 = 1 - l0 - l1
        inside = (l0 > 1e-6) & (l1 > 1e-6) & (l2 > 1e-6)
        ref[inside] = (l0[..., None] * ra + l1[..., None] * rb + l2[..., None] * rc)[inside]
        count[inside] += 1
    return ref, count


def moved(rest: np.ndarray) -> np.ndarray:
    """A frame's mesh: the head turned 3 degrees and shifted, the jaw dropped, lips apart."""
    pts = rest[:, :2].astype(np.float64).copy()
    centre = pts.mean(0)
    a = np.radians(3.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = (pts - centre) @ rot.T + centre + (4.0, -2.5)
    lower = sorted(set(F.LIPS_INNER_LOWER + F.LIPS_OUTER_LOWER) - set(F.MOUTH_CORNERS))
    pts[lower, 1] += 7.0
    return pts.astype(np.float32)


def test_rest_pose_leaves_the_portrait_untouched(portrait):
    img, rest = portrait
    warper = R.Warper(img, rest)
    out = warper.warp(warper.clamp(rest))
    assert np.array_equal(out, img)


def test_map_is_the_exact_inverse_of_the_mesh_motion(portrait):
    img, rest = portrait
    warper = R.Warper(img, rest)
    dest = warper.clamp(moved(rest))
    m = warper.backward_map(dest)
    ref, count = reference_map(warper, dest)
    one = count == 1
    assert one.sum() > 0.5 * one.size  # the face region is mostly moving triangles
    err = np.abs(m - ref).max(-1)[one]
    assert err.max() < 0.01, f"map off by up to {err.max():.3f} px"
    # outside every moving triangle nothing moves
    outside = count == 0
    near_sound = np.zeros_like(outside)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near_sound |= np.roll(np.roll(count > 0, dy, 0), dx, 1)
    still = outside & ~near_sound
    assert np.abs(m - warper.ident).max(-1)[still].max() < 1e-3
    # and the picture follows: a pixel of the moved frame shows what its source showed
    out = warper.warp(dest)
    x0, y0 = warper.roi[:2]
    ys, xs = np.nonzero(one)
    pick = np.random.default_rng(0).choice(len(ys), 200, replace=False)
    for i in pick:
        sx, sy = np.rint(ref[ys[i], xs[i]]).astype(int)
        if abs(ref[ys[i], xs[i], 0] - sx) < 0.02 and abs(ref[ys[i], xs[i], 1] - sy) < 0.02:
            assert np.array_equal(out[y0 + ys[i], x0 + xs[i]], img[sy, sx])


@pytest.mark.parametrize("left", [0.0, 0.02])
def test_lips_pressed_shut_sample_nothing_from_afar(portrait, left):
    """Squeezing the lips together (to nothing, or to a sliver of 2 % of their gap) collapses
    triangles whose inverse is unbounded; no pixel may then sample farther from itself
    than the farthest any mesh point moved, plus the way from there to the nearest lip
    (a lip pixel that would sample the picture's open mouth takes the lip's edge instead)."""
    img, rest = portrait
    warper = R.Warper(img, rest)
    dest = rest[:, :2].astype(np.float32).copy()
    upper, lower = list(F.LIPS_INNER_UPPER), list(F.LIPS_INNER_LOWER)
    mid = (dest[upper] + dest[lower]) / 2
    half_gap = left / 2 * (dest[upper] - dest[lower])
    dest[upper], dest[lower] = mid + half_gap, mid - half_gap
    dest = warper.clamp(dest)
    reach = float(np.abs(dest - rest[:, :2]).max())
    assert reach > 1.0
    m = warper.backward_map(dest)
    far = np.abs(m - warper.ident).max()
    assert far <= 2 * reach + 1.0, f"a pixel samples {far:.1f} px away; mesh points moved at most {reach:.1f}"


def test_closed_lips_show_nothing_of_the_open_mouth_behind_them(portrait):
    """The portrait shows its teeth; pressed shut, no pixel outside the (now closed)
    opening samples from the picture's opening: the lips cover it with their own texture."""
    img, rest = portrait
    warper = R.Warper(img, rest)
    dest = rest[:, :2].astype(np.float32).copy()
    upper, lower = list(F.LIPS_INNER_UPPER), list(F.LIPS_INNER_LOWER)
    mid = (dest[upper] + dest[lower]) / 2
    dest[upper], dest[lower] = mid, mid
    m = warper.backward_map(warper.clamp(dest))
    opening = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(opening, [np.round(rest[list(F.LIPS_INNER), :2]).astype(np.int32)], 1)
    # (a pixel in from its edge: the edge itself is lip as much as opening)
    opening = cv2.erode(opening, np.ones((5, 5), np.uint8)).astype(bool)
    assert opening.sum() > 100  # the astronaut smiles with her teeth
    sx = np.clip(np.rint(m[..., 0]).astype(int), 0, img.shape[1] - 1)
    sy = np.clip(np.rint(m[..., 1]).astype(int), 0, img.shape[0] - 1)
    assert not opening[sy, sx].any(), f"{int(opening[sy, sx].sum())} pixels show the mouth's inside"


def test_warp_compiles_where_no_cache_can_be_written():
    """A read-only install without a writable home: numba cannot cache, the engine still loads."""
    code = ("import numba.core.caching as c\n"
            "def read_only(self):\n"
            "    raise OSError('read-only file system')\n"
            "c._CacheLocator.ensure_cache_path = read_only\n"
            "from libs.talkface import render\n"
            "render.compile_kernels()\n"
            "print('compiled')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=pathlib.Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "compiled"
