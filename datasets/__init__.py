"""Corpus and mismatch builders."""
