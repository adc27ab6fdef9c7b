"""Several sources at once: two captures of one path (same_traffic), a capture
before and after a change (compare), and the peers' own logs (logs).

Each module works on what the earlier stages produced (segments, the analysis
model); none of them feeds anything back into those stages.
"""
