"""Synthetic lesions: masks are pixel-exact, lesions stay in the lungs, sizes follow the spec."""
from __future__ import annotations

import numpy as np
import pytest

from training.synthesis.cxr_lesions import KINDS, SynthesisError, insert, insert_nodule_mass, synthesize


@pytest.mark.parametrize("kind", KINDS)
def test_mask_is_exactly_where_the_image_changed(openist_case, kind):
    img, lung = openist_case
    ins = insert(kind, img, lung, 0.7, np.random.default_rng(7))
    assert ins.mask.any()
    assert np.array_equal(ins.delta != 0, ins.mask)  # delta non-zero exactly on the mask
    assert np.array_equal(ins.image[~ins.mask], img[~ins.mask])  # nothing else touched
    assert (ins.image != img).sum() > 0.5 * ins.mask.sum()  # visible change (clipping aside)
    assert not (ins.mask & ~lung).any()  # inside the lung fields


def test_nodule_diameter_in_mm(openist_case):
    img, lung = openist_case
    for d in (5.0, 30.0):
        ins = insert_nodule_mass(img, lung, 0.5, np.random.default_rng(1), diameter_mm=d)
        equiv_d_mm = 2 * np.sqrt(ins.mask.sum() / np.pi) * 0.5
        assert 0.6 * d <= equiv_d_mm <= 1.3 * d


def test_pneumothorax_is_darker_with_a_bright_pleural_line(openist_case):
    img, lung = openist_case
    ins = insert("pneumothorax", img, lung, 0.7, np.random.default_rng(3))
    assert (ins.delta[ins.mask] < 0).mean() > 0.6  # lucent rim (no markings)
    assert (ins.delta[ins.mask] > 0).any()  # visceral pleural line


def test_effusion_sits_at_the_lung_base(openist_case):
    img, lung = openist_case
    ins = insert("pleural_effusion", img, lung, 0.7, np.random.default_rng(5))
    rows = np.nonzero(lung)[0]
    assert np.nonzero(ins.mask)[0].mean() > rows.min() + 0.6 * (rows.max() - rows.min())
    assert ins.delta[ins.mask].min() > 0


def test_several_kinds_and_bad_inputs(openist_case):
    img, lung = openist_case
    out, masks = synthesize(img, lung, 0.7, ["nodule_mass", "consolidation"], np.random.default_rng(0))
    assert set(masks) == {"nodule_mass", "consolidation"} and out.shape == img.shape
    with pytest.raises(SynthesisError):
        insert("nodule_mass", img, np.zeros_like(lung), 0.7, np.random.default_rng(0))
    with pytest.raises(SynthesisError):
        insert("fracture", img, lung, 0.7, np.random.default_rng(0))
