"""Study loading: CT sorted along the slice normal, bad files skipped with the rest shown."""
from __future__ import annotations

import numpy as np
import pytest

from dicom_node import samples
from workstation.core.study import StudyLoadError, load_study_files


def test_ct_sorted_by_position_not_instance_number(tmp_path):
    series = samples.ct_series(n_slices=5, size=64, seed=1)
    rng = np.random.default_rng(0)
    for ds, n in zip(series, rng.permutation(5)):
        ds.InstanceNumber = int(n) + 1  # instance numbers unrelated to position
    paths = [samples.save(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate(series)]
    study = load_study_files(list(reversed(paths)))
    s = study.series[0]
    assert s.positions == sorted(s.positions) and len(set(s.positions)) == 5
    by_uid = {str(ds.SOPInstanceUID): float(ds.ImagePositionPatient[2]) for ds in series}
    assert [by_uid[u] for u in s.sop_uids] == s.positions
    assert s.frames.dtype == np.float32 and s.frames.min() >= -1024  # HU via the modality LUT


def test_unreadable_file_is_skipped(tmp_path):
    good = samples.save(samples.dx_chest(size=64, seed=2), tmp_path / "good.dcm")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom file at all")
    study = load_study_files([bad, good])
    assert len(study.series) == 1 and study.series[0].modality == "DX"
    with pytest.raises(StudyLoadError, match="no displayable image"):
        load_study_files([bad])
