"""Sub-commands that decode DICOM (analyze, ...); filled in by the DICOM layers."""


def add_commands(sub, add_capture_args) -> None:
    return None
