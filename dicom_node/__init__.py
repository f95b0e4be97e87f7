"""DICOM node: networking (pynetdicom), archive, peers, stability, jobs, result objects, outbox."""
