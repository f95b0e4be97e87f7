"""Running the two networks at the same time gives exactly what running them in turn gives."""
from __future__ import annotations

import numpy as np


def test_concurrent_predict_equals_sequential(cxr_data):
    from models.cxr.pipeline import CxrPipeline
    from models.imaging import load_radiograph

    both = CxrPipeline(threads=2)
    one = CxrPipeline(threads=2, concurrent=False)
    assert both.concurrent and not one.concurrent
    assert both.lung.threads == both.lesion.threads == 1 and one.lesion.threads == 2
    prepared = both.pre_process(load_radiograph(cxr_data / "samples" / "00000001_000.png"))
    a, b = both.predict(prepared), one.predict(prepared)
    np.testing.assert_allclose(a.lung, b.lung, atol=1e-5)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_allclose(a.seg, b.seg, atol=1e-5)
    assert abs(a.abnormality - b.abnormality) < 1e-5


def test_fine_nodule_model_gives_the_nodule_score_and_map(cxr_data):
    from models.cxr.nodule import coarse_map, lung_support, nodule_score
    from models.cxr.pipeline import CxrPipeline
    from models.imaging import load_radiograph

    pipe = CxrPipeline(threads=2)
    coarse_only = CxrPipeline(threads=2, nodule_version="none")
    assert pipe.nodule is not None and coarse_only.nodule is None
    assert set(pipe.models) == {"cxr-lung", "cxr-lesions", "cxr-nodule"}
    radiograph = load_radiograph(cxr_data / "samples" / "00000001_000.png")
    prepared = pipe.pre_process(radiograph)
    assert prepared.fine.shape == (1, 1, 512, 512) and coarse_only.pre_process(radiograph).fine is None
    raw = pipe.predict(prepared)
    seq = CxrPipeline(threads=2, concurrent=False).predict(prepared)
    np.testing.assert_allclose(raw.nodule, seq.nodule, atol=1e-5)  # beside or in turn: same map
    result = pipe.post_process(prepared, raw)
    want = nodule_score(raw.nodule, lung_support(raw.lung, raw.nodule.shape[0]))
    assert abs(result.scores["nodule_mass"] - want) < 1e-6
    assert pipe.thresholds["nodule_mass"] == pipe.nodule_entry.card.thresholds["nodule_mass"]
    # the other classes are the coarse model's, untouched
    old = coarse_only.post_process(coarse_only.pre_process(radiograph), coarse_only.predict(coarse_only.pre_process(radiograph)))
    for c in ("consolidation", "pleural_effusion"):
        assert abs(result.scores[c] - old.scores[c]) < 1e-5
    # nodule/mass outlines come from the fine map (max-pooled to the coarse grid)
    assert coarse_map(raw.nodule, raw.seg.shape[-1]).shape == raw.seg.shape[1:]
