"""Test-support code shared by test areas (real peers: DCMTK, Orthanc; DICOM factories)."""
