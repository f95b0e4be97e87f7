"""Rigid (and optional affine) registration of contrast phases to the portal-venous phase
(SimpleITK: Mattes mutual information, multi-resolution, regular-step gradient descent)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from models.ct.volume import CTVolume

logger = logging.getLogger(__name__)


@dataclass
class Registration:
    moved: CTVolume  # the moving volume resampled onto the fixed grid
    transform: object  # SimpleITK transform (fixed physical point → moving physical point)
    metric: float

    def map_point(self, xyz_fixed) -> np.ndarray:
        """Where a fixed-image point (LPS mm) lies in the moving image."""
        return np.asarray(self.transform.TransformPoint(tuple(float(v) for v in xyz_fixed)))


def register(fixed: CTVolume, moving: CTVolume, affine: bool = False, fill: float = -1024.0,
             iterations: int = 100, seed: int = 0, sampling: float = 0.1) -> Registration:
    """Register ``moving`` to ``fixed``; HU are clipped to [-200, 400] for the metric so
    contrast differences between phases weigh less than anatomy."""
    import SimpleITK as sitk

    def prep(v: CTVolume):
        return CTVolume(np.clip(v.hu, -200, 400).astype(np.float32), v.spacing, v.origin, v.direction).to_sitk()

    f, m = prep(fixed), prep(moving)
    init = sitk.CenteredTransformInitializer(f, m, sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=iterations,
                                                 relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    tx = reg.Execute(f, m)
    if affine:
        aff = sitk.AffineTransform(3)
        aff.SetMatrix(sitk.CompositeTransform(tx).GetNthTransform(0).GetMatrix()
                      if isinstance(tx, sitk.CompositeTransform) else tx.GetMatrix())
        reg.SetInitialTransform(sitk.CompositeTransform([tx, sitk.AffineTransform(3)]), inPlace=False)
        tx = reg.Execute(f, m)
    metric = float(reg.GetMetricValue())
    out = sitk.Resample(moving.to_sitk(), fixed.to_sitk(), tx, sitk.sitkLinear, fill, sitk.sitkFloat32,
                        useNearestNeighborExtrapolator=True)
    moved = CTVolume.from_sitk(out, moving.meta)
    return Registration(moved, tx, metric)
