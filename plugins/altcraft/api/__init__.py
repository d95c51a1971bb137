"""Altcraft HTTP API: request/response models, errors and the retry policy shared by both hooks."""
