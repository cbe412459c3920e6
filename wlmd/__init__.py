"""wlmd: a DICOM Modality Worklist server, drop-in successor to DCMTK's wlmscpfs."""

__version__ = "0.1.0"
