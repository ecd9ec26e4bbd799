"""Readers and writers of market-data files (I/O kept out of core/)."""
