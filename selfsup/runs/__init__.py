"""Run files: atomic writes, checksummed checkpoints, run locks, provenance and the refusal to overwrite.
Below both training and evaluation, which read and write the same run directories."""
