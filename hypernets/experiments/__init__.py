"""Experiments of the book's chapters: training, evaluation into tables, and figures."""
