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
