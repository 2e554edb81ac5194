"""Benchmarks: a vLLM-style load generator, a side-by-side runner against llama.cpp's and llama-cpp-python's
servers, and an in-process engine-vs-raw-loop check. Benchmarks print tables and save plots; tests never time.
"""
