"""dicomtrace: a DICOM network analyzer."""

__version__ = "0.1.0"
