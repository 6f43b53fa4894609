"""The record contract: ``store`` writes and reads run records and study manifests; ``reader``
turns a study's manifest and records into the tables that the report and the claims read.
Torch-free; the engine writes through it, the report reads through it."""
