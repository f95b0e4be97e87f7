"""CT analyses: series → HU volume, phases, registration, coronary calcium (Agatston),
lung nodules and multi-phase liver lesions.  numpy / SimpleITK / pydicom / ONNX Runtime only."""
